using System.Text.Json;

namespace Tollgate.Features.Gateway;

/// <summary>
/// The parts of a client's request body the gateway reads (model, streaming, output bound, n, tools); everything else
/// is passed through untouched. Parsed once; <see cref="Rewrite"/> writes the upstream body with the upstream model
/// name, forced usage reporting when streaming, and an optional lowered output bound.
/// </summary>
internal sealed class GatewayRequest : IDisposable
{
    public const int MaxN = 128;

    private GatewayRequest(JsonDocument document, ApiDialect dialect)
    {
        Document = document;
        Dialect = dialect;
    }

    public JsonDocument Document { get; }
    public JsonElement Root => Document.RootElement;
    public ApiDialect Dialect { get; }
    public required string Model { get; init; }
    public bool Stream { get; init; }
    /// <summary>The client asked for the final usage chunk (<c>stream_options.include_usage</c>).</summary>
    public bool ClientWantsUsage { get; init; }
    /// <summary><c>max_completion_tokens</c> ?? <c>max_tokens</c> (OpenAI) or <c>max_tokens</c> (Anthropic), if given.</summary>
    public long? MaxOutputTokens { get; init; }
    public int N { get; init; } = 1;
    public bool HasTools { get; init; }
    public int BodyLength { get; init; }
    /// <summary>The end user the client named: OpenAI's <c>user</c>, Anthropic's <c>metadata.user_id</c>.</summary>
    public string? User { get; init; }

    /// <summary>Parses an OpenAI chat completions or Anthropic messages body; null with <paramref name="error"/> if unusable.</summary>
    public static GatewayRequest? Parse(ReadOnlyMemory<byte> body, ApiDialect dialect, out GatewayError? error)
    {
        error = null;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 128 });
        }
        catch (JsonException e)
        {
            error = GatewayError.BadRequest($"The request body is not valid JSON ({e.Message.Split('.')[0]}).", code: "invalid_json") with { Dialect = dialect };
            return null;
        }
        var root = document.RootElement;
        GatewayError Fail(string message, string param)
        {
            document.Dispose();
            return GatewayError.BadRequest(message, param) with { Dialect = dialect };
        }
        if (root.ValueKind != JsonValueKind.Object) { error = Fail("The request body must be a JSON object.", "body"); return null; }
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.String || model.GetString() is not { Length: > 0 and <= 300 } modelName)
        { error = Fail("'model' is required: a model id such as 'openai/gpt-4o-mini' (see GET /v1/models).", "model"); return null; }
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
        { error = Fail("'messages' is required and must be an array.", "messages"); return null; }

        var stream = false;
        if (root.TryGetProperty("stream", out var s))
        {
            if (s.ValueKind is JsonValueKind.True or JsonValueKind.False) stream = s.GetBoolean();
            else if (s.ValueKind != JsonValueKind.Null) { error = Fail("'stream' must be a boolean.", "stream"); return null; }
        }
        var wantsUsage = false;
        if (root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object
            && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True)
            wantsUsage = true;

        long? maxOutput = null;
        foreach (var field in dialect == ApiDialect.OpenAi ? ["max_completion_tokens", "max_tokens"] : new[] { "max_tokens" })
        {
            if (!root.TryGetProperty(field, out var m) || m.ValueKind == JsonValueKind.Null) continue;
            if (m.ValueKind != JsonValueKind.Number || !m.TryGetInt64(out var v) || v < 1 || v > 10_000_000)
            { error = Fail($"'{field}' must be an integer from 1 to 10,000,000.", field); return null; }
            maxOutput ??= v;
        }
        if (dialect == ApiDialect.Anthropic && maxOutput is null) { error = Fail("'max_tokens' is required.", "max_tokens"); return null; }

        var n = 1;
        if (dialect == ApiDialect.OpenAi && root.TryGetProperty("n", out var nEl) && nEl.ValueKind != JsonValueKind.Null)
        {
            if (nEl.ValueKind != JsonValueKind.Number || !nEl.TryGetInt32(out n) || n < 1 || n > MaxN)
            { error = Fail($"'n' must be an integer from 1 to {MaxN}.", "n"); return null; }
        }
        var hasTools = root.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array && tools.GetArrayLength() > 0;
        string? user = null;
        if (dialect == ApiDialect.OpenAi && root.TryGetProperty("user", out var u) && u.ValueKind == JsonValueKind.String) user = u.GetString();
        if (dialect == ApiDialect.Anthropic && root.TryGetProperty("metadata", out var md) && md.ValueKind == JsonValueKind.Object
            && md.TryGetProperty("user_id", out var uid) && uid.ValueKind == JsonValueKind.String) user = uid.GetString();
        return new GatewayRequest(document, dialect)
        {
            User = user,
            Model = modelName, Stream = stream, ClientWantsUsage = wantsUsage, MaxOutputTokens = maxOutput, N = n, HasTools = hasTools, BodyLength = body.Length,
        };
    }

    /// <summary>
    /// The body to send upstream (OpenAI or Anthropic dialect unchanged): <c>model</c> replaced; for OpenAI streams
    /// <c>stream_options.include_usage</c> forced on (so the charge is exact); the output bound replaced by
    /// <paramref name="maxOutputTokens"/> when given.
    /// </summary>
    public byte[] Rewrite(string upstreamModel, long? maxOutputTokens)
    {
        using var buffer = new MemoryStream(BodyLength + 64);
        using (var w = new Utf8JsonWriter(buffer))
        {
            var forceUsage = Dialect == ApiDialect.OpenAi && Stream;
            var wroteUsage = false;
            var wroteMax = false;
            w.WriteStartObject();
            foreach (var p in Root.EnumerateObject())
            {
                if (p.NameEquals("model")) { w.WriteString("model", upstreamModel); continue; }
                if (forceUsage && p.NameEquals("stream_options"))
                {
                    w.WriteStartObject("stream_options");
                    if (p.Value.ValueKind == JsonValueKind.Object)
                        foreach (var o in p.Value.EnumerateObject())
                            if (!o.NameEquals("include_usage")) o.WriteTo(w);
                    w.WriteBoolean("include_usage", true);
                    w.WriteEndObject();
                    wroteUsage = true;
                    continue;
                }
                if (maxOutputTokens is { } max && (p.NameEquals("max_tokens") || p.NameEquals("max_completion_tokens")) && p.Value.ValueKind != JsonValueKind.Null)
                {
                    w.WriteNumber(p.Name, max);
                    wroteMax = true;
                    continue;
                }
                p.WriteTo(w);
            }
            if (forceUsage && !wroteUsage)
            {
                w.WriteStartObject("stream_options");
                w.WriteBoolean("include_usage", true);
                w.WriteEndObject();
            }
            if (maxOutputTokens is { } m && !wroteMax) w.WriteNumber("max_tokens", m);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    public void Dispose() => Document.Dispose();
}
