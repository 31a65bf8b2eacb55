using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Tollgate.Tests.Gateway.Fakes;

/// <summary>
/// A fake LLM provider on real Kestrel (127.0.0.1, free port) that speaks the real wire formats, so the official SDKs and
/// the gateway can be tested without the internet:
/// <list type="bullet">
/// <item><c>POST /v1/chat/completions</c> — OpenAI Chat Completions (JSON, or SSE <c>data: {chunk}</c> frames ending in
/// <c>data: [DONE]</c>; the usage chunk with <c>choices: []</c> is sent ONLY when the request has
/// <c>stream_options.include_usage = true</c>).</item>
/// <item><c>POST /v1/messages</c> — Anthropic Messages (JSON, or SSE named events message_start, content_block_start,
/// ping, content_block_delta, content_block_stop, message_delta, message_stop).</item>
/// </list>
/// Default answer: text <c>"echo: " + last user text</c>, one streamed chunk per word.
/// Default usage (deterministic, self-consistent, not a real tokenizer):
/// <list type="bullet">
/// <item>input tokens = number of whitespace-separated words in every text of the request (OpenAI: all messages'
/// string content or text parts; Anthropic: <c>system</c> plus all messages' string content or text blocks) —
/// <see cref="FakeRequest.PromptWords"/>, or <see cref="CountWords"/>;</item>
/// <item>output tokens = number of streamed content pieces: text chunks plus tool-argument fragments
/// (<see cref="ToolArgumentFragments"/>), the same number for streaming and non-streaming;</item>
/// <item>no cached tokens.</item>
/// </list>
/// max_tokens / max_completion_tokens cap the text chunks (finish_reason <c>length</c>, stop_reason <c>max_tokens</c>)
/// unless <see cref="FakeReply.OutputTokens"/> forces an overrun. <see cref="Script"/> changes any of this per request.
/// Failure modes (see <see cref="FakeReply"/>): error status + body, delay before headers, slow chunks, an in-band
/// error mid-stream, a dropped connection after N chunks, a reset before any byte, a raw (garbage, empty or malformed SSE) 200 body.
/// Unknown paths get 404 with an OpenAI error body. Every request (any path) is recorded in <see cref="Requests"/>.
/// </summary>
public sealed class FakeUpstream : IAsyncDisposable
{
    public const string OpenAiPath = "/v1/chat/completions";
    public const string AnthropicPath = "/v1/messages";

    /// <summary>Size of the pieces tool-call arguments are streamed in (and counted as output tokens by default).</summary>
    public const int ToolArgumentFragmentChars = 8;

    private readonly WebApplication _app;
    private readonly object _gate = new();
    private readonly List<FakeRequest> _requests = [];
    private readonly Dictionary<int, TaskCompletionSource<FakeOutcome>> _outcomes = [];
    private Func<FakeRequest, FakeReply>? _script;
    private long _sequence;

    private FakeUpstream(WebApplication app, Uri baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    /// <summary><c>http://127.0.0.1:port/</c> — the Anthropic SDK's base URL (it appends <c>v1/messages</c>).</summary>
    public Uri BaseUrl { get; }

    /// <summary><c>http://127.0.0.1:port/v1</c> — the OpenAI SDK's endpoint / a provider BaseUrl (it appends <c>/chat/completions</c>).</summary>
    public Uri OpenAiBaseUrl => new(BaseUrl, "v1");

    /// <summary>Per-request behaviour; null = default. Safe to set from any thread while requests are in flight.</summary>
    public Func<FakeRequest, FakeReply>? Script
    {
        get => Volatile.Read(ref _script);
        set => Volatile.Write(ref _script, value);
    }

    /// <summary>A snapshot of every request received so far, in arrival order.</summary>
    public IReadOnlyList<FakeRequest> Requests
    {
        get { lock (_gate) return _requests.ToArray(); }
    }

    public void ClearRequests()
    {
        lock (_gate) _requests.Clear();
    }

    /// <summary>
    /// How the fake's side of the exchange ended (completes when its handler returns): e.g. whether the gateway
    /// disconnected from a stream early, and how many content chunks had been flushed by then.
    /// </summary>
    public Task<FakeOutcome> OutcomeAsync(FakeRequest request)
    {
        lock (_gate) return _outcomes[request.Sequence].Task;
    }

    /// <summary>Waits until at least <paramref name="count"/> requests arrived (a gateway forwards asynchronously).</summary>
    public async Task<IReadOnlyList<FakeRequest>> WaitForRequestsAsync(int count, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            var requests = Requests;
            if (requests.Count >= count) return requests;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"Expected {count} upstream requests, got {requests.Count}.");
            await Task.Delay(10);
        }
    }

    public static async Task<FakeUpstream> StartAsync(Func<FakeRequest, FakeReply>? script = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        FakeUpstream? fake = null;
        app.Run(context => fake!.HandleAsync(context));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        fake = new FakeUpstream(app, new Uri(address.TrimEnd('/') + "/")) { Script = script };
        return fake;
    }

    public async ValueTask DisposeAsync()
    {
        // Long or hanging streams watch RequestAborted, so a short stop is enough.
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try { await _app.StopAsync(stop.Token); } catch (OperationCanceledException) { }
        await _app.DisposeAsync();
    }

    /// <summary>The deterministic token count the fake uses: whitespace-separated words.</summary>
    public static int CountWords(string? text) =>
        string.IsNullOrWhiteSpace(text) ? 0 : text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;

    /// <summary>How the fake splits one tool call's arguments when streaming (each piece counts one output token by default).</summary>
    public static IReadOnlyList<string> ToolArgumentFragments(string argumentsJson) =>
        argumentsJson.Chunk(ToolArgumentFragmentChars).Select(c => new string(c)).ToArray();

    private async Task HandleAsync(HttpContext context)
    {
        var sequence = (int)Interlocked.Increment(ref _sequence);
        var outcome = new TaskCompletionSource<FakeOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate) _outcomes[sequence] = outcome;
        var sent = new SentCounter();
        var end = FakeEnd.ClientDisconnected;
        try
        {
            var request = await ReadRequestAsync(context, sequence);
            lock (_gate) _requests.Add(request);
            end = await AnswerAsync(context, request, sent);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException || context.RequestAborted.IsCancellationRequested)
        {
            end = FakeEnd.ClientDisconnected;
        }
        finally
        {
            outcome.TrySetResult(new FakeOutcome(end, sent.ContentChunks));
        }
    }

    private async Task<FakeEnd> AnswerAsync(HttpContext context, FakeRequest request, SentCounter sent)
    {
        if (!request.IsOpenAi && !request.IsAnthropic || !HttpMethods.IsPost(request.Method))
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(
                FakeReply.OpenAiError(404, "invalid_request_error", $"Unknown path {request.Method} {request.Path}").ErrorBody!);
            return FakeEnd.NotFound;
        }

        var reply = Script?.Invoke(request) ?? new FakeReply();
        var aborted = context.RequestAborted;
        if (reply.DelayBeforeHeaders > TimeSpan.Zero && !await DelayAsync(reply.DelayBeforeHeaders, aborted)) return FakeEnd.ClientDisconnected;
        if (reply.ResetBeforeAnyByte)
        {
            context.Abort();
            return FakeEnd.Reset;
        }

        var response = context.Response;
        response.Headers[request.IsOpenAi ? "x-request-id" : "request-id"] = $"req_fake_{request.Sequence}";
        foreach (var (name, value) in reply.Headers ?? new Dictionary<string, string>()) response.Headers[name] = value;

        if (reply.StatusCode != StatusCodes.Status200OK)
        {
            response.StatusCode = reply.StatusCode;
            response.ContentType = "application/json";
            var body = reply.ErrorBody ?? (request.IsOpenAi
                ? FakeReply.OpenAiError(reply.StatusCode, reply.StatusCode >= 500 ? "server_error" : "invalid_request_error", $"fake upstream error {reply.StatusCode}").ErrorBody!
                : FakeReply.AnthropicError(reply.StatusCode, reply.StatusCode >= 500 ? "api_error" : "invalid_request_error", $"fake upstream error {reply.StatusCode}").ErrorBody!);
            await response.WriteAsync(body, aborted);
            return FakeEnd.ErrorStatus;
        }

        if (reply.RawBody is { } raw)
        {
            response.ContentType = reply.RawContentType ?? (request.Stream ? "text/event-stream" : "application/json");
            await response.WriteAsync(raw, aborted);
            return FakeEnd.Completed;
        }

        var plan = Plan.From(request, reply, request.Sequence);
        if (!request.Stream)
        {
            var json = request.IsOpenAi ? OpenAiCompletion(plan) : AnthropicMessage(plan);
            response.ContentType = "application/json";
            var bytes = Encoding.UTF8.GetBytes(json);
            if (reply.DropAfterChunks is not null)
            {
                response.ContentLength = bytes.Length;
                await response.Body.WriteAsync(bytes.AsMemory(0, bytes.Length / 2), aborted);
                await response.Body.FlushAsync(aborted);
                await LetTheClientReadAsync(aborted);
                context.Abort();
                return FakeEnd.Dropped;
            }
            await response.Body.WriteAsync(bytes, aborted);
            return FakeEnd.Completed;
        }

        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        await response.StartAsync(aborted);
        var sse = new SseWriter(context, reply, request.IsOpenAi, sent);
        try
        {
            if (request.IsOpenAi) await StreamOpenAiAsync(sse, plan);
            else await StreamAnthropicAsync(sse, plan);
            return FakeEnd.Completed;
        }
        catch (ConnectionDropped)
        {
            return FakeEnd.Dropped;
        }
        catch (StreamErrored)
        {
            return FakeEnd.InBandError;
        }
    }

    private sealed class SentCounter
    {
        public int ContentChunks;
    }

    // ---------------------------------------------------------------- request parsing

    private static async Task<FakeRequest> ReadRequestAsync(HttpContext context, int sequence)
    {
        using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
        var raw = await reader.ReadToEndAsync(context.RequestAborted);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, values) in context.Request.Headers) headers[name] = values.ToString();

        JsonElement json = default;
        try { if (raw.Length > 0) json = JsonDocument.Parse(raw).RootElement.Clone(); }
        catch (JsonException) { }

        string? model = null;
        var stream = false;
        var includeUsage = false;
        long? maxTokens = null;
        var lastUser = "";
        var words = 0;
        if (json.ValueKind == JsonValueKind.Object)
        {
            if (json.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String) model = m.GetString();
            stream = json.TryGetProperty("stream", out var s) && s.ValueKind == JsonValueKind.True;
            includeUsage = json.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object
                && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;
            foreach (var name in new[] { "max_completion_tokens", "max_tokens" })
                if (maxTokens is null && json.TryGetProperty(name, out var mt) && mt.ValueKind == JsonValueKind.Number) maxTokens = mt.GetInt64();
            if (json.TryGetProperty("system", out var system)) words += CountWords(TextOf(system));
            if (json.TryGetProperty("messages", out var messages) && messages.ValueKind == JsonValueKind.Array)
            {
                foreach (var message in messages.EnumerateArray())
                {
                    if (message.ValueKind != JsonValueKind.Object || !message.TryGetProperty("content", out var content)) continue;
                    var text = TextOf(content);
                    words += CountWords(text);
                    if (message.TryGetProperty("role", out var role) && role.ValueEquals("user")) lastUser = text;
                }
            }
        }

        return new FakeRequest(sequence, context.Request.Method, context.Request.Path.Value ?? "", context.Request.QueryString.Value ?? "",
            headers, raw, json, model, stream, includeUsage, maxTokens, lastUser, words);
    }

    /// <summary>Text of a content value: a string, or the concatenated <c>text</c> of text parts/blocks.</summary>
    private static string TextOf(JsonElement content) => content.ValueKind switch
    {
        JsonValueKind.String => content.GetString() ?? "",
        JsonValueKind.Array => string.Join(" ", content.EnumerateArray()
            .Where(p => p.ValueKind == JsonValueKind.Object && p.TryGetProperty("type", out var t) && t.ValueEquals("text")
                && p.TryGetProperty("text", out var x) && x.ValueKind == JsonValueKind.String)
            .Select(p => p.GetProperty("text").GetString())),
        _ => "",
    };

    // ---------------------------------------------------------------- what to answer

    private sealed record Plan(
        string Id, string Model, long Created, IReadOnlyList<string> TextChunks, IReadOnlyList<FakeToolCall> Tools,
        bool Truncated, FakeUsage? Usage, bool IncludeUsageChunk)
    {
        public string FullText => string.Concat(TextChunks);
        public bool HasText => TextChunks.Count > 0;

        public static Plan From(FakeRequest request, FakeReply reply, long id)
        {
            var tools = reply.ToolCalls ?? [];
            var text = reply.Text ?? (reply.ToolCalls is null ? "echo: " + request.LastUserText : "");
            var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var count = reply.Chunks ?? reply.OutputTokens ?? words.Length;
            if (words.Length == 0) count = 0;
            var truncated = false;
            if (reply.OutputTokens is null && request.MaxTokens is { } max && count > max)
            {
                count = (int)Math.Max(0, max);
                truncated = true;
            }
            var chunks = new List<string>(count);
            for (var i = 0; i < count; i++) chunks.Add(words[i % words.Length] + (i < count - 1 ? " " : ""));

            var output = reply.OutputTokens ?? (long)chunks.Count + tools.Sum(t => ToolArgumentFragments(t.ArgumentsJson).Count);
            var usage = reply.Usage ?? new FakeUsage(request.PromptWords, output);
            if (request.IsOpenAi && reply.OmitUsage) usage = null;
            return new Plan(
                request.IsOpenAi ? $"chatcmpl-fake{id}" : $"msg_fake{id}",
                reply.Model ?? request.Model ?? "fake-model",
                1_700_000_000 + id,
                chunks, tools, truncated, usage,
                IncludeUsageChunk: request.IncludeUsage && usage is not null);
        }

        public string OpenAiFinishReason => Truncated ? "length" : Tools.Count > 0 ? "tool_calls" : "stop";
        public string AnthropicStopReason => Truncated ? "max_tokens" : Tools.Count > 0 ? "tool_use" : "end_turn";
    }

    // ---------------------------------------------------------------- OpenAI wire

    private static JsonObject OpenAiUsage(FakeUsage u) => new()
    {
        ["prompt_tokens"] = u.Input,
        ["completion_tokens"] = u.Output,
        ["total_tokens"] = u.Input + u.Output,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = u.CacheRead, ["audio_tokens"] = 0 },
        ["completion_tokens_details"] = new JsonObject
        {
            ["reasoning_tokens"] = u.Reasoning, ["audio_tokens"] = 0,
            ["accepted_prediction_tokens"] = 0, ["rejected_prediction_tokens"] = 0,
        },
    };

    private static string OpenAiCompletion(Plan plan)
    {
        var message = new JsonObject
        {
            ["role"] = "assistant",
            ["content"] = plan.HasText || plan.Tools.Count == 0 ? plan.FullText : null,
            ["refusal"] = null,
        };
        if (plan.Tools.Count > 0)
        {
            message["tool_calls"] = new JsonArray(plan.Tools.Select(t => (JsonNode)new JsonObject
            {
                ["id"] = t.Id,
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = t.Name, ["arguments"] = t.ArgumentsJson },
            }).ToArray());
        }
        var body = new JsonObject
        {
            ["id"] = plan.Id,
            ["object"] = "chat.completion",
            ["created"] = plan.Created,
            ["model"] = plan.Model,
            ["choices"] = new JsonArray(new JsonObject
            {
                ["index"] = 0, ["message"] = message, ["logprobs"] = null, ["finish_reason"] = plan.OpenAiFinishReason,
            }),
        };
        if (plan.Usage is not null) body["usage"] = OpenAiUsage(plan.Usage);
        body["service_tier"] = "default";
        body["system_fingerprint"] = "fp_fake";
        return body.ToJsonString();
    }

    private static async Task StreamOpenAiAsync(SseWriter sse, Plan plan)
    {
        JsonObject Chunk(JsonObject? delta, string? finish)
        {
            var chunk = new JsonObject
            {
                ["id"] = plan.Id,
                ["object"] = "chat.completion.chunk",
                ["created"] = plan.Created,
                ["model"] = plan.Model,
                ["system_fingerprint"] = "fp_fake",
                ["choices"] = delta is null ? new JsonArray() : new JsonArray(new JsonObject
                {
                    ["index"] = 0, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finish,
                }),
            };
            // Real OpenAI streams carry "usage": null on every chunk only when include_usage was asked.
            if (plan.IncludeUsageChunk) chunk["usage"] = null;
            return chunk;
        }

        await sse.WriteAsync(null, Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "", ["refusal"] = null }, null), content: false);
        foreach (var text in plan.TextChunks)
            await sse.WriteAsync(null, Chunk(new JsonObject { ["content"] = text }, null), content: true);
        for (var i = 0; i < plan.Tools.Count; i++)
        {
            var tool = plan.Tools[i];
            await sse.WriteAsync(null, Chunk(new JsonObject
            {
                ["tool_calls"] = new JsonArray(new JsonObject
                {
                    ["index"] = i, ["id"] = tool.Id, ["type"] = "function",
                    ["function"] = new JsonObject { ["name"] = tool.Name, ["arguments"] = "" },
                }),
            }, null), content: false);
            foreach (var fragment in ToolArgumentFragments(tool.ArgumentsJson))
                await sse.WriteAsync(null, Chunk(new JsonObject
                {
                    ["tool_calls"] = new JsonArray(new JsonObject
                    {
                        ["index"] = i, ["function"] = new JsonObject { ["arguments"] = fragment },
                    }),
                }, null), content: true);
        }
        await sse.WriteAsync(null, Chunk(new JsonObject(), plan.OpenAiFinishReason), content: false);
        if (plan.IncludeUsageChunk)
        {
            var usageChunk = Chunk(null, null);
            usageChunk["usage"] = OpenAiUsage(plan.Usage!);
            await sse.WriteAsync(null, usageChunk, content: false);
        }
        await sse.WriteRawAsync(null, "[DONE]");
    }

    // ---------------------------------------------------------------- Anthropic wire

    private static JsonObject AnthropicUsage(FakeUsage u, long? outputOverride = null) => new()
    {
        ["input_tokens"] = u.Input,
        ["cache_creation_input_tokens"] = u.CacheWrite,
        ["cache_read_input_tokens"] = u.CacheRead,
        ["cache_creation"] = new JsonObject { ["ephemeral_5m_input_tokens"] = u.CacheWrite, ["ephemeral_1h_input_tokens"] = 0 },
        ["output_tokens"] = outputOverride ?? u.Output,
        ["service_tier"] = "standard",
    };

    private static JsonObject AnthropicToolUse(FakeToolCall tool, bool empty) => new()
    {
        ["type"] = "tool_use",
        ["id"] = tool.Id,
        ["name"] = tool.Name,
        ["input"] = empty ? new JsonObject() : JsonNode.Parse(tool.ArgumentsJson),
    };

    private static string AnthropicMessage(Plan plan)
    {
        var content = new JsonArray();
        if (plan.HasText || plan.Tools.Count == 0) content.Add(new JsonObject { ["type"] = "text", ["text"] = plan.FullText });
        foreach (var tool in plan.Tools) content.Add(AnthropicToolUse(tool, empty: false));
        return new JsonObject
        {
            ["id"] = plan.Id,
            ["type"] = "message",
            ["role"] = "assistant",
            ["model"] = plan.Model,
            ["content"] = content,
            ["stop_reason"] = plan.AnthropicStopReason,
            ["stop_sequence"] = null,
            ["usage"] = AnthropicUsage(plan.Usage!),
        }.ToJsonString();
    }

    private static async Task StreamAnthropicAsync(SseWriter sse, Plan plan)
    {
        var usage = plan.Usage!;
        await sse.WriteAsync("message_start", new JsonObject
        {
            ["type"] = "message_start",
            ["message"] = new JsonObject
            {
                ["id"] = plan.Id, ["type"] = "message", ["role"] = "assistant", ["model"] = plan.Model,
                ["content"] = new JsonArray(), ["stop_reason"] = null, ["stop_sequence"] = null,
                // The real API sends a placeholder output count here; the final count comes in message_delta.
                ["usage"] = AnthropicUsage(usage, outputOverride: 1),
            },
        }, content: false);

        var index = 0;
        var pinged = false;
        async Task PingOnceAsync()
        {
            if (pinged) return;
            pinged = true;
            await sse.WriteAsync("ping", new JsonObject { ["type"] = "ping" }, content: false);
        }

        if (plan.HasText || plan.Tools.Count == 0)
        {
            await sse.WriteAsync("content_block_start", new JsonObject
            {
                ["type"] = "content_block_start", ["index"] = index,
                ["content_block"] = new JsonObject { ["type"] = "text", ["text"] = "" },
            }, content: false);
            await PingOnceAsync();
            foreach (var text in plan.TextChunks)
                await sse.WriteAsync("content_block_delta", new JsonObject
                {
                    ["type"] = "content_block_delta", ["index"] = index,
                    ["delta"] = new JsonObject { ["type"] = "text_delta", ["text"] = text },
                }, content: true);
            await sse.WriteAsync("content_block_stop", new JsonObject { ["type"] = "content_block_stop", ["index"] = index }, content: false);
            index++;
        }
        foreach (var tool in plan.Tools)
        {
            await sse.WriteAsync("content_block_start", new JsonObject
            {
                ["type"] = "content_block_start", ["index"] = index, ["content_block"] = AnthropicToolUse(tool, empty: true),
            }, content: false);
            await PingOnceAsync();
            foreach (var fragment in ToolArgumentFragments(tool.ArgumentsJson))
                await sse.WriteAsync("content_block_delta", new JsonObject
                {
                    ["type"] = "content_block_delta", ["index"] = index,
                    ["delta"] = new JsonObject { ["type"] = "input_json_delta", ["partial_json"] = fragment },
                }, content: true);
            await sse.WriteAsync("content_block_stop", new JsonObject { ["type"] = "content_block_stop", ["index"] = index }, content: false);
            index++;
        }

        await sse.WriteAsync("message_delta", new JsonObject
        {
            ["type"] = "message_delta",
            ["delta"] = new JsonObject { ["stop_reason"] = plan.AnthropicStopReason, ["stop_sequence"] = null },
            // Cumulative counts, as the current API sends them (input side repeated, final output count).
            ["usage"] = sse.Reply.LegacyAnthropicDeltaUsage
                ? new JsonObject { ["output_tokens"] = usage.Output }
                : new JsonObject
                {
                    ["input_tokens"] = usage.Input,
                    ["cache_creation_input_tokens"] = usage.CacheWrite,
                    ["cache_read_input_tokens"] = usage.CacheRead,
                    ["output_tokens"] = usage.Output,
                },
        }, content: false);
        await sse.WriteAsync("message_stop", new JsonObject { ["type"] = "message_stop" }, content: false);
    }

    // ---------------------------------------------------------------- SSE plumbing

    private sealed class ConnectionDropped : Exception;

    private sealed class StreamErrored : Exception;

    /// <summary>Writes and flushes one SSE event at a time; applies the reply's chunk delay, in-band error and connection drop.</summary>
    private sealed class SseWriter(HttpContext context, FakeReply reply, bool openAi, SentCounter sent)
    {
        private int _contentChunks;

        public FakeReply Reply => reply;

        public Task WriteAsync(string? eventName, JsonObject data, bool content) => WriteRawAsync(eventName, data.ToJsonString(), content);

        public async Task WriteRawAsync(string? eventName, string data, bool content = false)
        {
            var aborted = context.RequestAborted;
            if (content)
            {
                if (reply.DropAfterChunks is { } drop && _contentChunks >= drop)
                {
                    await LetTheClientReadAsync(aborted);
                    context.Abort();
                    throw new ConnectionDropped();
                }
                if (reply.ErrorAfterChunks is { } failAt && _contentChunks >= failAt)
                {
                    var error = reply.MidStreamErrorJson ?? (openAi
                        ? """{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"""
                        : """{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}""");
                    await context.Response.WriteAsync(openAi ? $"data: {error}\n\n" : $"event: error\ndata: {error}\n\n", aborted);
                    await context.Response.Body.FlushAsync(aborted);
                    throw new StreamErrored();
                }
                if (_contentChunks > 0 && reply.DelayBetweenChunks > TimeSpan.Zero)
                    await Task.Delay(reply.DelayBetweenChunks, aborted);
                _contentChunks++;
            }
            var frame = eventName is null ? $"data: {data}\n\n" : $"event: {eventName}\ndata: {data}\n\n";
            await context.Response.WriteAsync(frame, aborted);
            await context.Response.Body.FlushAsync(aborted);
            if (content) sent.ContentChunks = _contentChunks;
        }
    }

    /// <summary>
    /// Abort resets the TCP connection, and a reset makes the peer's kernel drop bytes it received but has not read yet;
    /// a short pause lets the client consume the chunks that were "sent before the upstream died".
    /// </summary>
    private static Task LetTheClientReadAsync(CancellationToken cancellation) => DelayAsync(TimeSpan.FromMilliseconds(150), cancellation);

    private static async Task<bool> DelayAsync(TimeSpan delay, CancellationToken cancellation)
    {
        try
        {
            await Task.Delay(delay, cancellation);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
