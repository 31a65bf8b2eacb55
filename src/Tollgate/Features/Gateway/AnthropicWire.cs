using System.Buffers;
using System.Text.Json;
using Tollgate.Features.Gateway.Tokens;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway;

/// <summary>Reading Anthropic Messages usage (non-streaming bodies and stream events).</summary>
internal static class AnthropicWire
{
    /// <summary>
    /// Anthropic <c>usage</c> → Tollgate usage. Anthropic's <c>input_tokens</c> excludes cache reads and writes, which it
    /// reports separately; Tollgate's input is the whole prompt, so the three are added (see <see cref="TokenUsage"/>).
    /// </summary>
    public static TokenUsage? ReadUsage(JsonElement usage)
    {
        if (usage.ValueKind != JsonValueKind.Object) return null;
        var input = Int(usage, "input_tokens");
        var cacheRead = Int(usage, "cache_read_input_tokens");
        var cacheWrite = Int(usage, "cache_creation_input_tokens");
        return OpenAiWire.Clamp(input + cacheRead + cacheWrite, Int(usage, "output_tokens"), cacheRead, cacheWrite, 0);
    }

    private static long Int(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n : 0;

    /// <summary>Tokens of text, thinking and tool input in a non-streaming Messages response, for when it reports no usage.</summary>
    public static long CountContent(JsonElement message, BpeEncoding? encoding)
    {
        long tokens = 0;
        if (!message.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.Array) return 0;
        foreach (var block in content.EnumerateArray())
        {
            if (block.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String) tokens += TokenEstimator.CountText(t.GetString(), encoding);
            if (block.TryGetProperty("thinking", out var th) && th.ValueKind == JsonValueKind.String) tokens += TokenEstimator.CountText(th.GetString(), encoding);
            if (block.TryGetProperty("input", out var input)) tokens += TokenEstimator.CountText(input.GetRawText(), encoding);
        }
        return tokens;
    }

    /// <summary>The generated text in one <c>content_block_delta</c> event's delta (text, tool input JSON, thinking).</summary>
    public static string? DeltaText(JsonElement delta)
    {
        foreach (var name in (ReadOnlySpan<string>)["text", "partial_json", "thinking"])
            if (delta.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String) return v.GetString();
        return null;
    }

    /// <summary>
    /// Usage carried by a stream: <c>message_start</c> has the prompt side, <c>message_delta</c> the cumulative output
    /// (and, in newer API versions, cumulative input figures too, which then replace the start's).
    /// </summary>
    public sealed class StreamUsage
    {
        public TokenUsage? Start { get; private set; }
        public TokenUsage? Final { get; private set; }

        /// <summary>Reads usage from one parsed event; true when the event was a <c>message_stop</c>.</summary>
        public void Observe(string? eventType, JsonElement root)
        {
            switch (eventType)
            {
                case "message_start" when root.TryGetProperty("message", out var m) && m.TryGetProperty("usage", out var u):
                    Start = ReadUsage(u);
                    break;
                case "message_delta" when root.TryGetProperty("usage", out var u):
                    var delta = ReadUsage(u);
                    if (delta is not { } d) break;
                    var s = Start ?? default;
                    var hasInput = u.TryGetProperty("input_tokens", out _) || u.TryGetProperty("cache_read_input_tokens", out _);
                    Final = hasInput ? d : OpenAiWire.Clamp(s.InputTokens, d.OutputTokens, s.CacheReadTokens, s.CacheWriteTokens, 0);
                    break;
            }
        }
    }
}

/// <summary>Relays an Anthropic Messages stream to an Anthropic client unchanged, reading usage and counting output on the way.</summary>
internal sealed class AnthropicNativeRelay(BpeEncoding encoding) : IStreamRelay
{
    public OutputCounter Output { get; } = new(encoding);

    public void WriteError(IBufferWriter<byte> output, string code, string message)
    {
        output.Write("event: error\n"u8);
        OpenAiStreamRelay.Frame(output, new GatewayError(code == "hold_exhausted" ? 402 : 502, code, message) { Dialect = ApiDialect.Anthropic }.ToJson());
    }

    private readonly AnthropicWire.StreamUsage _usage = new();

    public bool IsFinal(in SseEvent e) => e.Name == "message_stop";

    public TokenUsage? Usage => _usage.Final;
    public TokenUsage? StartUsage => _usage.Start;
    public bool Completed { get; private set; }

    public void OnEvent(in SseEvent e, IBufferWriter<byte> output)
    {
        var type = e.Name;
        try
        {
            if (type == "content_block_delta")
            {
                // The bulk of a stream: scanned without a document (the same reading as ObserveParsed's).
                StreamChunkScanner.ScanAnthropicContentDelta(e.Data.Span, Output);
            }
            else ObserveParsed(type, e.Data);
        }
        catch (JsonException error)
        {
            // As on the OpenAI wire: a frame no client can parse ends the stream with an error event.
            throw new InvalidDataException("The provider sent a stream event that is not valid JSON.", error);
        }
        if (e.Name is not null)
        {
            output.Write("event: "u8);
            output.Advance(System.Text.Encoding.UTF8.GetBytes(e.Name, output.GetSpan(System.Text.Encoding.UTF8.GetMaxByteCount(e.Name.Length))));
            output.Write("\n"u8);
        }
        OpenAiStreamRelay.Frame(output, e.Data.Span);
    }

    private void ObserveParsed(string? type, ReadOnlyMemory<byte> data)
    {
        using var doc = JsonDocument.Parse(data);
        var root = doc.RootElement;
        if (type is null && root.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String) type = t.GetString();
        _usage.Observe(type, root);
        if (type == "content_block_delta" && root.TryGetProperty("delta", out var delta)) Output.Append(AnthropicWire.DeltaText(delta));
        if (type == "message_stop") Completed = true;
    }
}

/// <summary>
/// Relays an Anthropic Messages stream to an OpenAI client as chat completion chunks (through
/// <see cref="Anthropic.MessagesStreamTranslator"/>), counting output on the way for estimates and the cut-off.
/// </summary>
internal sealed class AnthropicTranslatedRelay(Anthropic.MessagesStreamTranslator translator, BpeEncoding encoding) : IStreamRelay
{
    public TokenUsage? Usage => translator.OutputTokensReported ? translator.Usage : null;
    public TokenUsage? StartUsage => translator.Usage;
    public OutputCounter Output { get; } = new(encoding);
    public bool Completed => translator.Completed;

    public bool IsFinal(in SseEvent e) => e.Name == "message_stop";

    public void OnEvent(in SseEvent e, IBufferWriter<byte> output)
    {
        if (e.Name == "content_block_delta")
        {
            try
            {
                StreamChunkScanner.ScanAnthropicContentDelta(e.Data.Span, Output);
            }
            catch (JsonException)
            {
                // The translator reports it below.
            }
        }
        translator.OnEvent(e.Name ?? "", e.Data.Span, output);
    }

    public void WriteError(IBufferWriter<byte> output, string code, string message) =>
        translator.WriteError(message, code == "hold_exhausted" ? "insufficient_quota" : "server_error", code, output);
}
