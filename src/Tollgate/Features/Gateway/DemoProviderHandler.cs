using System.Net;
using System.Text;
using System.Text.Json;
using Tollgate.Features.Gateway.Tokens;

namespace Tollgate.Features.Gateway;

/// <summary>
/// The built-in <c>demo</c> provider: an in-process HTTP handler that speaks the OpenAI chat completions and Anthropic
/// Messages wire formats (streaming included), so a newcomer's first call needs no network and no provider key, and
/// travels the same relay, metering and billing code as a real provider. It answers deterministically from the
/// prompt ("echo: " + the last user message, cut to max tokens) and reports real o200k token counts.
/// </summary>
internal sealed class DemoProviderHandler : HttpMessageHandler
{
    public const string Prefix = "echo: ";

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        var body = request.Content is null ? [] : await request.Content.ReadAsByteArrayAsync(ct);
        using var doc = JsonDocument.Parse(body);
        var root = doc.RootElement;
        var anthropic = request.RequestUri!.AbsolutePath.EndsWith("/messages", StringComparison.Ordinal);
        var stream = root.TryGetProperty("stream", out var s) && s.ValueKind == JsonValueKind.True;
        var model = root.TryGetProperty("model", out var m) ? m.GetString() ?? "echo" : "echo";
        long? max = null;
        foreach (var field in (ReadOnlySpan<string>)["max_completion_tokens", "max_tokens"])
            if (root.TryGetProperty(field, out var mt) && mt.TryGetInt64(out var v)) { max = v; break; }

        var encoding = BpeEncoding.O200kBase;
        var promptTokens = anthropic ? AnthropicPromptTokens(root, encoding) : TokenEstimator.CountChatPrompt(root, encoding);
        var (answer, stopped) = Answer(LastUserText(root), max, encoding);
        var outputTokens = encoding.CountTokens(answer);
        var id = (anthropic ? "msg_demo_" : "chatcmpl-demo-") + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(body))[..24];
        var includeUsage = root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object
                           && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;

        var content = anthropic
            ? stream ? AnthropicStream(id, model, answer, promptTokens, outputTokens, stopped) : AnthropicMessage(id, model, answer, promptTokens, outputTokens, stopped)
            : stream ? OpenAiStream(id, model, answer, promptTokens, outputTokens, stopped, includeUsage) : OpenAiCompletion(id, model, answer, promptTokens, outputTokens, stopped);
        var response = new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(content), RequestMessage = request };
        response.Content.Headers.ContentType = new(stream ? "text/event-stream" : "application/json");
        return response;
    }

    private static long AnthropicPromptTokens(JsonElement root, BpeEncoding encoding)
    {
        long tokens = 0;
        if (root.TryGetProperty("system", out var system)) tokens += encoding.CountTokens(system.ValueKind == JsonValueKind.String ? system.GetString() : system.GetRawText());
        if (root.TryGetProperty("messages", out var messages) && messages.ValueKind == JsonValueKind.Array)
            foreach (var message in messages.EnumerateArray())
                tokens += 3 + (message.TryGetProperty("content", out var c) ? encoding.CountTokens(c.ValueKind == JsonValueKind.String ? c.GetString() : c.GetRawText()) : 0);
        return tokens + 3;
    }

    private static string LastUserText(JsonElement root)
    {
        var text = "";
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array) return text;
        foreach (var message in messages.EnumerateArray())
        {
            if (!message.TryGetProperty("role", out var role) || role.GetString() != "user" || !message.TryGetProperty("content", out var content)) continue;
            if (content.ValueKind == JsonValueKind.String) text = content.GetString() ?? "";
            else if (content.ValueKind == JsonValueKind.Array)
            {
                var sb = new StringBuilder();
                foreach (var part in content.EnumerateArray())
                    if (part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String) sb.Append(t.GetString());
                text = sb.ToString();
            }
        }
        return text;
    }

    /// <summary>The echo, shortened until it fits <paramref name="max"/> tokens; <c>stopped</c> is false when it was cut.</summary>
    private static (string Text, bool Stopped) Answer(string prompt, long? max, BpeEncoding encoding)
    {
        var answer = Prefix + prompt;
        if (max is not { } limit || encoding.CountTokens(answer) <= limit) return (answer, true);
        var words = answer.Split(' ');
        var count = words.Length;
        while (count > 0 && encoding.CountTokens(string.Join(' ', words, 0, count)) > limit) count--;
        return (string.Join(' ', words, 0, count), false);
    }

    private static IEnumerable<string> Pieces(string answer)
    {
        var start = 0;
        for (var i = 1; i <= answer.Length; i++)
            if (i == answer.Length || answer[i] == ' ')
            {
                yield return answer[start..i];
                start = i;
            }
    }

    private static byte[] Json(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer)) write(w);
        return buffer.ToArray();
    }

    private static void OpenAiUsage(Utf8JsonWriter w, long prompt, long output)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", prompt);
        w.WriteNumber("completion_tokens", output);
        w.WriteNumber("total_tokens", prompt + output);
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", 0);
        w.WriteEndObject();
        w.WriteStartObject("completion_tokens_details");
        w.WriteNumber("reasoning_tokens", 0);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static byte[] OpenAiCompletion(string id, string model, string answer, long prompt, long output, bool stopped) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteString("object", "chat.completion");
        w.WriteNumber("created", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        w.WriteString("model", model);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("message");
        w.WriteString("role", "assistant");
        w.WriteString("content", answer);
        w.WriteNull("refusal");
        w.WriteEndObject();
        w.WriteNull("logprobs");
        w.WriteString("finish_reason", stopped ? "stop" : "length");
        w.WriteEndObject();
        w.WriteEndArray();
        OpenAiUsage(w, prompt, output);
        w.WriteEndObject();
    });

    private static byte[] OpenAiStream(string id, string model, string answer, long prompt, long output, bool stopped, bool includeUsage)
    {
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        using var sse = new MemoryStream();
        void Chunk(Action<Utf8JsonWriter> choices, bool usage = false)
        {
            sse.Write("data: "u8);
            sse.Write(Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("id", id);
                w.WriteString("object", "chat.completion.chunk");
                w.WriteNumber("created", created);
                w.WriteString("model", model);
                w.WriteStartArray("choices");
                choices(w);
                w.WriteEndArray();
                if (usage) OpenAiUsage(w, prompt, output);
                else if (includeUsage) w.WriteNull("usage");
                w.WriteEndObject();
            }));
            sse.Write("\n\n"u8);
        }
        void Delta(Action<Utf8JsonWriter> delta, string? finish) => Chunk(w =>
        {
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            w.WriteStartObject("delta");
            delta(w);
            w.WriteEndObject();
            if (finish is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", finish);
            w.WriteEndObject();
        });
        Delta(w => { w.WriteString("role", "assistant"); w.WriteString("content", ""); }, null);
        foreach (var piece in Pieces(answer)) Delta(w => w.WriteString("content", piece), null);
        Delta(_ => { }, stopped ? "stop" : "length");
        if (includeUsage) Chunk(_ => { }, usage: true);
        sse.Write("data: [DONE]\n\n"u8);
        return sse.ToArray();
    }

    private static void AnthropicUsage(Utf8JsonWriter w, long input, long output)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("input_tokens", input);
        w.WriteNumber("cache_creation_input_tokens", 0);
        w.WriteNumber("cache_read_input_tokens", 0);
        w.WriteNumber("output_tokens", output);
        w.WriteEndObject();
    }

    private static byte[] AnthropicMessage(string id, string model, string answer, long prompt, long output, bool stopped) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteString("type", "message");
        w.WriteString("role", "assistant");
        w.WriteString("model", model);
        w.WriteStartArray("content");
        w.WriteStartObject();
        w.WriteString("type", "text");
        w.WriteString("text", answer);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteString("stop_reason", stopped ? "end_turn" : "max_tokens");
        w.WriteNull("stop_sequence");
        AnthropicUsage(w, prompt, output);
        w.WriteEndObject();
    });

    private static byte[] AnthropicStream(string id, string model, string answer, long prompt, long output, bool stopped)
    {
        using var sse = new MemoryStream();
        void Event(string name, Action<Utf8JsonWriter> data)
        {
            sse.Write(Encoding.UTF8.GetBytes($"event: {name}\ndata: "));
            sse.Write(Json(w => { w.WriteStartObject(); w.WriteString("type", name); data(w); w.WriteEndObject(); }));
            sse.Write("\n\n"u8);
        }
        Event("message_start", w =>
        {
            w.WriteStartObject("message");
            w.WriteString("id", id);
            w.WriteString("type", "message");
            w.WriteString("role", "assistant");
            w.WriteString("model", model);
            w.WriteStartArray("content");
            w.WriteEndArray();
            w.WriteNull("stop_reason");
            w.WriteNull("stop_sequence");
            AnthropicUsage(w, prompt, 1);
            w.WriteEndObject();
        });
        Event("content_block_start", w =>
        {
            w.WriteNumber("index", 0);
            w.WriteStartObject("content_block");
            w.WriteString("type", "text");
            w.WriteString("text", "");
            w.WriteEndObject();
        });
        Event("ping", _ => { });
        foreach (var piece in Pieces(answer))
            Event("content_block_delta", w =>
            {
                w.WriteNumber("index", 0);
                w.WriteStartObject("delta");
                w.WriteString("type", "text_delta");
                w.WriteString("text", piece);
                w.WriteEndObject();
            });
        Event("content_block_stop", w => w.WriteNumber("index", 0));
        Event("message_delta", w =>
        {
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", stopped ? "end_turn" : "max_tokens");
            w.WriteNull("stop_sequence");
            w.WriteEndObject();
            w.WriteStartObject("usage");
            w.WriteNumber("output_tokens", output);
            w.WriteEndObject();
        });
        Event("message_stop", _ => { });
        return sse.ToArray();
    }
}
