using System.Text.Json.Nodes;

namespace Tollgate.Tests.Gateway.Fakes;

/// <summary>
/// What <see cref="FakeUpstream"/> received: one entry per HTTP request, in arrival order.
/// Headers are keyed case-insensitively (first value only; use <see cref="Header"/>).
/// <see cref="Json"/> is <c>default</c> (ValueKind Undefined) when the body was not JSON.
/// </summary>
public sealed record FakeRequest(
    int Sequence,
    string Method,
    string Path,
    string Query,
    IReadOnlyDictionary<string, string> Headers,
    string RawBody,
    JsonElement Json,
    string? Model,
    bool Stream,
    bool IncludeUsage,
    long? MaxTokens,
    string LastUserText,
    int PromptWords)
{
    public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;

    /// <summary>The bearer token of <c>Authorization</c>, or null.</summary>
    public string? BearerToken => Header("Authorization") is { } auth && auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
        ? auth["Bearer ".Length..]
        : null;

    /// <summary>The provider key however it was sent: <c>x-api-key</c> (Anthropic API convention) or a bearer token.</summary>
    public string? ApiKey => Header("x-api-key") ?? BearerToken;

    public bool IsOpenAi => Path == FakeUpstream.OpenAiPath;
    public bool IsAnthropic => Path == FakeUpstream.AnthropicPath;
}

/// <summary>How the fake's side of one exchange ended.</summary>
public enum FakeEnd
{
    /// <summary>The whole response was written.</summary>
    Completed,
    /// <summary>The client (e.g. the gateway) went away first: request aborted or a write failed.</summary>
    ClientDisconnected,
    /// <summary>The reply's <see cref="FakeReply.DropAfterChunks"/> aborted the connection.</summary>
    Dropped,
    /// <summary>The reply's <see cref="FakeReply.ResetBeforeAnyByte"/> aborted the connection.</summary>
    Reset,
    /// <summary>A non-200 status with an error body was sent.</summary>
    ErrorStatus,
    /// <summary>The stream ended with an in-band error (<see cref="FakeReply.ErrorAfterChunks"/>).</summary>
    InBandError,
    /// <summary>Unknown path or method: 404.</summary>
    NotFound,
}

/// <summary>The end of an exchange and the number of content chunks (text deltas, tool-argument fragments) flushed before it.</summary>
public sealed record FakeOutcome(FakeEnd End, int ContentChunksSent);

/// <summary>One tool call to answer with. <see cref="ArgumentsJson"/> must be a JSON object text.</summary>
public sealed record FakeToolCall(string Id, string Name, string ArgumentsJson);

/// <summary>
/// Usage numbers written VERBATIM into the wire's own fields (no translation between the two formats):
/// <list type="table">
/// <item><term>OpenAI</term><description><c>prompt_tokens = Input</c>, <c>completion_tokens = Output</c>,
/// <c>total_tokens = Input + Output</c>, <c>prompt_tokens_details.cached_tokens = CacheRead</c> (a subset of Input on this wire),
/// <c>completion_tokens_details.reasoning_tokens = Reasoning</c> (a subset of Output). <see cref="CacheWrite"/> is not on this wire.</description></item>
/// <item><term>Anthropic</term><description><c>input_tokens = Input</c> (the uncached part on this wire),
/// <c>cache_read_input_tokens = CacheRead</c>, <c>cache_creation_input_tokens = CacheWrite</c>, <c>output_tokens = Output</c>.
/// <see cref="Reasoning"/> is not on this wire.</description></item>
/// </list>
/// </summary>
public sealed record FakeUsage(long Input, long Output, long CacheRead = 0, long CacheWrite = 0, long Reasoning = 0);

/// <summary>
/// How <see cref="FakeUpstream"/> answers one request. Every property is optional; <c>new FakeReply()</c> is the default
/// behaviour (echo answer, counted usage, 200).
/// </summary>
public sealed record FakeReply
{
    /// <summary>Answer text; default <c>"echo: " + last user text</c>. Streamed as one chunk per word (word + following space).</summary>
    public string? Text { get; init; }

    /// <summary>Answer with these tool calls (after <see cref="Text"/> if that is also set). finish_reason tool_calls / stop_reason tool_use.</summary>
    public IReadOnlyList<FakeToolCall>? ToolCalls { get; init; }

    /// <summary>Explicit usage to report; default is counted (see <see cref="FakeUpstream"/>).</summary>
    public FakeUsage? Usage { get; init; }

    /// <summary>
    /// OpenAI only: report no usage at all (no <c>usage</c> in the non-streaming body, no usage chunk even when
    /// include_usage was asked) — a provider that ignores <c>stream_options</c>. Anthropic always reports usage.
    /// </summary>
    public bool OmitUsage { get; init; }

    /// <summary>
    /// Reported output tokens AND number of content chunks, ignoring max_tokens (an upstream that overruns the cap).
    /// Without it the fake honours max_tokens / max_completion_tokens: it stops after that many chunks with
    /// finish_reason <c>length</c> / stop_reason <c>max_tokens</c>.
    /// </summary>
    public int? OutputTokens { get; init; }

    /// <summary>Number of text content chunks (streamed pieces). The chunk texts cycle through the words of the answer text.</summary>
    public int? Chunks { get; init; }

    /// <summary>Delay between streamed chunks (a slow or long stream).</summary>
    public TimeSpan DelayBetweenChunks { get; init; }

    /// <summary>Delay before any response byte (headers included): a hanging upstream, for timeout tests.</summary>
    public TimeSpan DelayBeforeHeaders { get; init; }

    /// <summary>
    /// Streaming: abort the connection (HttpContext.Abort) after this many CONTENT chunks were flushed (the preamble —
    /// OpenAI role chunk, Anthropic message_start/content_block_start/ping — is always sent first). Non-streaming: send
    /// the headers and the first half of the body, then abort.
    /// </summary>
    public int? DropAfterChunks { get; init; }

    /// <summary>
    /// Streaming: after this many content chunks, send an in-band error (HTTP 200 is already out) and end the response
    /// normally, without the usual ending. OpenAI: <c>data: {"error":{...}}</c> (no <c>[DONE]</c>); Anthropic:
    /// <c>event: error</c> with <c>{"type":"error","error":{"type":"overloaded_error",...}}</c> (no message_delta/stop).
    /// </summary>
    public int? ErrorAfterChunks { get; init; }

    /// <summary>The JSON of the in-band error for <see cref="ErrorAfterChunks"/>; default is the wire's usual shape.</summary>
    public string? MidStreamErrorJson { get; init; }

    /// <summary>
    /// Anthropic streaming: <c>message_delta.usage</c> carries only <c>output_tokens</c>, as older API versions sent it
    /// (default: the cumulative input side too, as the current API does).
    /// </summary>
    public bool LegacyAnthropicDeltaUsage { get; init; }

    /// <summary>
    /// Status 200 with exactly this body and nothing else: garbage JSON, an empty body (<c>""</c>) or hand-written,
    /// possibly malformed SSE frames. Sent with <see cref="RawContentType"/>, default <c>text/event-stream</c> for a
    /// streaming request and <c>application/json</c> otherwise.
    /// </summary>
    public string? RawBody { get; init; }

    /// <summary>Content type of <see cref="RawBody"/>.</summary>
    public string? RawContentType { get; init; }

    /// <summary>Abort the connection before sending any byte.</summary>
    public bool ResetBeforeAnyByte { get; init; }

    /// <summary>HTTP status; anything other than 200 sends <see cref="ErrorBody"/> (or a generated error of the path's wire shape).</summary>
    public int StatusCode { get; init; } = 200;

    /// <summary>Raw error body (sent verbatim with <c>application/json</c>) for a non-200 <see cref="StatusCode"/>.</summary>
    public string? ErrorBody { get; init; }

    /// <summary>Extra response headers (e.g. <c>retry-after</c>).</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    /// <summary>Model name echoed in the response; default is the request's model.</summary>
    public string? Model { get; init; }

    /// <summary>OpenAI error shape <c>{"error":{"message","type","param","code"}}</c>.</summary>
    public static FakeReply OpenAiError(int status, string type, string message, string? code = null) => new()
    {
        StatusCode = status,
        ErrorBody = new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = null, ["code"] = code },
        }.ToJsonString(),
    };

    /// <summary>Anthropic error shape <c>{"type":"error","error":{"type","message"},"request_id"}</c>.</summary>
    public static FakeReply AnthropicError(int status, string type, string message) => new()
    {
        StatusCode = status,
        ErrorBody = new JsonObject
        {
            ["type"] = "error",
            ["error"] = new JsonObject { ["type"] = type, ["message"] = message },
            ["request_id"] = "req_fake_error",
        }.ToJsonString(),
    };
}
