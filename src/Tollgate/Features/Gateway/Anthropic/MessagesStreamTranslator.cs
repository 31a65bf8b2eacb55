using System.Buffers;
using System.Text.Json;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway.Anthropic;

/// <summary>
/// Translates one Anthropic Messages SSE stream into OpenAI <c>chat.completion.chunk</c> SSE frames, event by event,
/// and keeps the usage for metering. One instance per upstream call; not thread-safe.
/// <code>
/// message_start                    → {"delta":{"role":"assistant","content":""}}       (input usage recorded)
/// content_block_start text         → (nothing unless it carries text)
/// content_block_delta text_delta   → {"delta":{"content":"…"}}
/// content_block_start tool_use     → {"delta":{"tool_calls":[{"index":k,"id","type":"function","function":{"name","arguments":""}}]}}
/// content_block_delta input_json   → {"delta":{"tool_calls":[{"index":k,"function":{"arguments":"…"}}]}}
/// content_block_stop tool_use      → arguments "{}" if no piece came (an argument-less call must still parse)
/// thinking / signature / citations → dropped (counted in OutputChars)
/// message_delta                    → usage fields overwritten (cumulative, never summed);
///                                    first stop_reason → {"delta":{},"finish_reason":…}
/// message_stop                     → finish chunk if none yet, [usage chunk with "choices":[]], data: [DONE]
/// error                            → data: {"error":{…}}, data: [DONE]
/// ping, unknown events             → nothing
/// </code>
/// The tool-call <c>index</c> counts tool_use blocks only (0, 1, …), whatever their Anthropic block index. With
/// <c>includeUsage</c> every chunk carries <c>"usage":null</c> and the last one before [DONE] the totals, as OpenAI does.
/// After message_stop or an error, further events are ignored.
/// </summary>
/// <param name="clientModel">Model name echoed to the client.</param>
/// <param name="completionId">The gateway's <c>chatcmpl-…</c> id, the same in every chunk.</param>
/// <param name="createdUnixSeconds">Echoed as <c>created</c>.</param>
/// <param name="includeUsage">The client asked for <c>stream_options.include_usage</c>.</param>
public sealed class MessagesStreamTranslator(string clientModel, string completionId, long createdUnixSeconds, bool includeUsage)
{
    private static ReadOnlySpan<byte> DataPrefix => "data: "u8;
    private static ReadOnlySpan<byte> FrameEnd => "\n\n"u8;
    private static ReadOnlySpan<byte> DoneFrame => "data: [DONE]\n\n"u8;

    private readonly JsonEncodedText _id = JsonEncodedText.Encode(completionId, OpenAiJson.WriterOptions.Encoder);
    private readonly JsonEncodedText _model = JsonEncodedText.Encode(clientModel, OpenAiJson.WriterOptions.Encoder);
    private Utf8JsonWriter? _writer;

    /// <summary>Open content blocks by Anthropic block index.</summary>
    private readonly Dictionary<int, OpenBlock> _blocks = [];
    private int _toolCalls;
    private bool _roleSent, _finishSent, _ended;

    // Anthropic's usage fields as last reported (message_start, then overwritten by each message_delta).
    private long? _inputTokens, _cacheReadTokens, _cacheWriteTokens, _outputTokens;

    /// <summary>
    /// Usage so far, in Tollgate's shape (InputTokens includes cache reads and writes); null until message_start (or a
    /// message_delta with usage) arrived. Before <see cref="OutputTokensReported"/> the output count is
    /// message_start's placeholder: estimate output from <see cref="OutputChars"/> instead.
    /// </summary>
    public TokenUsage? Usage => _inputTokens is null && _outputTokens is null && _cacheReadTokens is null && _cacheWriteTokens is null
        ? null
        : new TokenUsage(
            (_inputTokens ?? 0) + (_cacheReadTokens ?? 0) + (_cacheWriteTokens ?? 0),
            _outputTokens ?? 0,
            _cacheReadTokens ?? 0,
            _cacheWriteTokens ?? 0);

    /// <summary>A message_delta reported output_tokens, so <see cref="Usage"/> is the final count.</summary>
    public bool OutputTokensReported { get; private set; }

    /// <summary>message_stop was seen: the stream finished normally and [DONE] was written.</summary>
    public bool Completed { get; private set; }

    /// <summary>The OpenAI finish_reason sent to the client (null until a stop reason arrived or the stream ended).</summary>
    public string? FinishReason { get; private set; }

    /// <summary>Anthropic's stop_reason as received (for logs).</summary>
    public string? StopReason { get; private set; }

    /// <summary>UTF-16 characters of assistant text sent as <c>delta.content</c>.</summary>
    public long OutputTextChars { get; private set; }

    /// <summary>
    /// UTF-16 characters of everything generated: text, tool-call arguments and thinking (all billed as output tokens).
    /// For estimating output tokens when the stream ends without a final usage.
    /// </summary>
    public long OutputChars { get; private set; }

    /// <summary>Anthropic's error type when the stream carried an <c>error</c> event (e.g. <c>overloaded_error</c>).</summary>
    public string? ErrorType { get; private set; }

    /// <summary>The message of that error event.</summary>
    public string? ErrorMessage { get; private set; }

    /// <summary>Anthropic's message id from message_start (<c>msg_…</c>), for logs.</summary>
    public string? UpstreamMessageId { get; private set; }

    /// <summary>The model Anthropic says answered (from message_start), for audit.</summary>
    public string? UpstreamModel { get; private set; }

    /// <summary>[DONE] has been written (after message_stop or an error); further events are ignored.</summary>
    public bool Ended => _ended;

    /// <summary>
    /// Consumes one Anthropic SSE event and writes zero or more complete OpenAI SSE frames to <paramref name="output"/>.
    /// </summary>
    /// <param name="eventName">The SSE <c>event:</c> field; when empty, the JSON's <c>type</c> is used.</param>
    /// <param name="data">The event's <c>data:</c> payload (UTF-8 JSON).</param>
    /// <exception cref="JsonException">The data is not JSON (the gateway treats the upstream as broken).</exception>
    public void OnEvent(string eventName, ReadOnlySpan<byte> data, IBufferWriter<byte> output)
    {
        if (_ended || eventName == "ping") return;
        var reader = new Utf8JsonReader(data);
        using var doc = JsonDocument.ParseValue(ref reader);
        var root = doc.RootElement;
        var type = eventName is { Length: > 0 } ? eventName : root.ValueKind == JsonValueKind.Object ? ChatToMessages.StringOrNull(root, "type") : null;
        if (root.ValueKind != JsonValueKind.Object) return;
        switch (type)
        {
            case "message_start":
                OnMessageStart(root, output);
                break;
            case "content_block_start":
                OnBlockStart(root, output);
                break;
            case "content_block_delta":
                OnBlockDelta(root, output);
                break;
            case "content_block_stop":
                OnBlockStop(root, output);
                break;
            case "message_delta":
                OnMessageDelta(root, output);
                break;
            case "message_stop":
                OnMessageStop(output);
                break;
            case "error":
                OnError(root, output);
                break;
        }
    }

    private void OnMessageStart(JsonElement root, IBufferWriter<byte> output)
    {
        if (root.TryGetProperty("message", out var message) && message.ValueKind == JsonValueKind.Object)
        {
            UpstreamMessageId = ChatToMessages.StringOrNull(message, "id");
            UpstreamModel = ChatToMessages.StringOrNull(message, "model");
            if (message.TryGetProperty("usage", out var usage)) MergeUsage(usage, fromDelta: false);
        }
        EnsureRole(output);
    }

    private void OnBlockStart(JsonElement root, IBufferWriter<byte> output)
    {
        if (!TryIndex(root, out var index) || !root.TryGetProperty("content_block", out var block) || block.ValueKind != JsonValueKind.Object) return;
        EnsureRole(output);
        switch (ChatToMessages.StringOrNull(block, "type"))
        {
            case "text":
                _blocks[index] = new OpenBlock(BlockKind.Text, -1);
                if (ChatToMessages.StringOrNull(block, "text") is { Length: > 0 } initial) WriteText(initial, output);
                break;
            case "tool_use":
                var toolIndex = _toolCalls++;
                _blocks[index] = new OpenBlock(BlockKind.ToolUse, toolIndex);
                var w = BeginChunk(output);
                w.WriteStartArray("tool_calls");
                w.WriteStartObject();
                w.WriteNumber("index", toolIndex);
                w.WriteString("id", ChatToMessages.StringOrNull(block, "id") ?? "");
                w.WriteString("type", "function");
                w.WriteStartObject("function");
                w.WriteString("name", ChatToMessages.StringOrNull(block, "name") ?? "");
                w.WriteString("arguments", "");
                w.WriteEndObject();
                w.WriteEndObject();
                w.WriteEndArray();
                EndChunk(w, null, output);
                break;
            default:
                // thinking, redacted_thinking, server_tool_use, web_search_tool_result…: nothing to show in chat chunks.
                _blocks[index] = new OpenBlock(BlockKind.Other, -1);
                break;
        }
    }

    private void OnBlockDelta(JsonElement root, IBufferWriter<byte> output)
    {
        if (!TryIndex(root, out var index) || !root.TryGetProperty("delta", out var delta) || delta.ValueKind != JsonValueKind.Object) return;
        switch (ChatToMessages.StringOrNull(delta, "type"))
        {
            case "text_delta":
                if (ChatToMessages.StringOrNull(delta, "text") is { Length: > 0 } text)
                {
                    EnsureRole(output);
                    WriteText(text, output);
                }
                break;
            case "input_json_delta":
                if (_blocks.TryGetValue(index, out var tool) && tool.Kind == BlockKind.ToolUse
                    && ChatToMessages.StringOrNull(delta, "partial_json") is { Length: > 0 } piece)
                {
                    tool.ArgumentsSent = true;
                    OutputChars += piece.Length;
                    WriteArguments(tool.ToolIndex, piece, output);
                }
                break;
            case "thinking_delta":
                OutputChars += ChatToMessages.StringOrNull(delta, "thinking")?.Length ?? 0;
                break;
            // signature_delta, citations_delta: nothing the chat shape can carry.
        }
    }

    private void OnBlockStop(JsonElement root, IBufferWriter<byte> output)
    {
        if (!TryIndex(root, out var index) || !_blocks.Remove(index, out var block)) return;
        // A tool without arguments streams no input_json_delta; OpenAI clients JSON-parse the concatenation.
        if (block.Kind == BlockKind.ToolUse && !block.ArgumentsSent) WriteArguments(block.ToolIndex, "{}", output);
    }

    private void OnMessageDelta(JsonElement root, IBufferWriter<byte> output)
    {
        if (root.TryGetProperty("usage", out var usage)) MergeUsage(usage, fromDelta: true);
        if (root.TryGetProperty("delta", out var delta) && delta.ValueKind == JsonValueKind.Object
            && ChatToMessages.StringOrNull(delta, "stop_reason") is { } stopReason && !_finishSent)
        {
            StopReason = stopReason;
            WriteFinish(ChatToMessages.MapStopReason(stopReason), output);
        }
    }

    private void OnMessageStop(IBufferWriter<byte> output)
    {
        EnsureRole(output);
        if (!_finishSent) WriteFinish(ChatToMessages.MapStopReason(null), output);
        if (includeUsage && Usage is { } usage)
        {
            var w = BeginFrame(output);
            WriteChunkHeader(w);
            w.WriteStartArray("choices");
            w.WriteEndArray();
            OpenAiJson.WriteUsage(w, usage);
            w.WriteEndObject();
            EndFrame(w, output);
        }
        output.Write(DoneFrame);
        Completed = true;
        _ended = true;
    }

    private void OnError(JsonElement root, IBufferWriter<byte> output)
    {
        var (type, message) = root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object
            ? AnthropicErrors.FromErrorObject(error, 0)
            : (null, "The Anthropic upstream reported an error in the stream.");
        ErrorType = type ?? "error";
        ErrorMessage = message;
        var (openAiType, code) = AnthropicErrors.Map(type, 0, message);
        var w = BeginFrame(output);
        AnthropicErrors.WriteError(w, message, openAiType, code);
        EndFrame(w, output);
        output.Write(DoneFrame);
        _ended = true;
    }

    /// <summary>
    /// Ends the client's stream with an OpenAI error frame and <c>[DONE]</c>, for failures the gateway sees itself: the
    /// upstream connection dropped before message_stop, an idle timeout, or the caller's credit ran out mid-stream.
    /// Does nothing if the stream already ended. <see cref="Completed"/> stays false.
    /// </summary>
    /// <param name="message">Shown to the client.</param>
    /// <param name="type">OpenAI error type, e.g. <c>server_error</c> or <c>insufficient_quota</c>.</param>
    /// <param name="code">OpenAI error code or null, e.g. <c>upstream_stream_incomplete</c>.</param>
    public void WriteError(string message, string type, string? code, IBufferWriter<byte> output)
    {
        if (_ended) return;
        var w = BeginFrame(output);
        AnthropicErrors.WriteError(w, message, type, code);
        EndFrame(w, output);
        output.Write(DoneFrame);
        _ended = true;
    }

    /// <summary>Overwrite each reported field: message_delta counts are cumulative, so adding them would over-bill.</summary>
    private void MergeUsage(JsonElement usage, bool fromDelta)
    {
        if (usage.ValueKind != JsonValueKind.Object) return;
        _inputTokens = Reported(usage, "input_tokens") ?? _inputTokens;
        _cacheReadTokens = Reported(usage, "cache_read_input_tokens") ?? _cacheReadTokens;
        _cacheWriteTokens = Reported(usage, "cache_creation_input_tokens") ?? _cacheWriteTokens;
        if (Reported(usage, "output_tokens") is { } output)
        {
            _outputTokens = output;
            if (fromDelta) OutputTokensReported = true;
        }
    }

    private static long? Reported(JsonElement usage, string name) =>
        usage.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? Math.Max(n, 0) : null;

    private static bool TryIndex(JsonElement root, out int index)
    {
        index = 0;
        return root.TryGetProperty("index", out var i) && i.ValueKind == JsonValueKind.Number && i.TryGetInt32(out index);
    }

    private void EnsureRole(IBufferWriter<byte> output)
    {
        if (_roleSent) return;
        _roleSent = true;
        var w = BeginChunk(output);
        w.WriteString("role", "assistant");
        w.WriteString("content", "");
        EndChunk(w, null, output);
    }

    private void WriteText(string text, IBufferWriter<byte> output)
    {
        OutputTextChars += text.Length;
        OutputChars += text.Length;
        var w = BeginChunk(output);
        w.WriteString("content", text);
        EndChunk(w, null, output);
    }

    private void WriteArguments(int toolIndex, string arguments, IBufferWriter<byte> output)
    {
        var w = BeginChunk(output);
        w.WriteStartArray("tool_calls");
        w.WriteStartObject();
        w.WriteNumber("index", toolIndex);
        w.WriteStartObject("function");
        w.WriteString("arguments", arguments);
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndArray();
        EndChunk(w, null, output);
    }

    private void WriteFinish(string finishReason, IBufferWriter<byte> output)
    {
        _finishSent = true;
        FinishReason = finishReason;
        EndChunk(BeginChunk(output), finishReason, output);
    }

    /// <summary>Writes <c>data: {id,object,created,model,"choices":[{"index":0,"delta":{</c>; the caller fills the delta.</summary>
    private Utf8JsonWriter BeginChunk(IBufferWriter<byte> output)
    {
        var w = BeginFrame(output);
        WriteChunkHeader(w);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        return w;
    }

    /// <summary>Closes the delta and the choice, then the chunk and the frame.</summary>
    private void EndChunk(Utf8JsonWriter w, string? finishReason, IBufferWriter<byte> output)
    {
        w.WriteEndObject();
        if (finishReason is null) w.WriteNull("finish_reason");
        else w.WriteString("finish_reason", finishReason);
        w.WriteEndObject();
        w.WriteEndArray();
        if (includeUsage) w.WriteNull("usage");
        w.WriteEndObject();
        EndFrame(w, output);
    }

    private void WriteChunkHeader(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("id", _id);
        w.WriteString("object", "chat.completion.chunk");
        w.WriteNumber("created", createdUnixSeconds);
        w.WriteString("model", _model);
    }

    private Utf8JsonWriter BeginFrame(IBufferWriter<byte> output)
    {
        output.Write(DataPrefix);
        if (_writer is null) _writer = new Utf8JsonWriter(output, OpenAiJson.WriterOptions);
        else _writer.Reset(output);
        return _writer;
    }

    private static void EndFrame(Utf8JsonWriter w, IBufferWriter<byte> output)
    {
        w.Flush();
        output.Write(FrameEnd);
    }

    private enum BlockKind { Text, ToolUse, Other }

    private sealed class OpenBlock(BlockKind kind, int toolIndex)
    {
        public BlockKind Kind { get; } = kind;
        /// <summary>OpenAI tool_calls index (tool_use blocks only), else −1.</summary>
        public int ToolIndex { get; } = toolIndex;
        public bool ArgumentsSent { get; set; }
    }
}
