using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway.Anthropic;

/// <summary>Writer settings and the OpenAI usage object shared by the response and stream translations.</summary>
internal static class OpenAiJson
{
    /// <summary>
    /// Relaxed escaping: model text is full of non-ASCII and <c>&lt;&gt;&amp;'</c>, which the default encoder turns into
    /// <c>\uXXXX</c> (valid, but several times larger). The bodies are JSON API payloads, never embedded in HTML.
    /// </summary>
    public static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>OpenAI <c>usage</c>: prompt_tokens includes cache reads and writes, cached_tokens is the cache reads.</summary>
    public static void WriteUsage(Utf8JsonWriter w, TokenUsage usage)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", usage.InputTokens);
        w.WriteNumber("completion_tokens", usage.OutputTokens);
        w.WriteNumber("total_tokens", usage.InputTokens + usage.OutputTokens);
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", usage.CacheReadTokens);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    public static byte[] Write(Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer, WriterOptions)) body(w);
        return buffer.WrittenSpan.ToArray();
    }
}
