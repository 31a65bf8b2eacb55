using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using Tollgate.Features.Gateway.Anthropic;

namespace Tollgate.Tests.Gateway.Anthropic;

/// <summary>Helpers for the translation tests: JSON normalisation and a minimal splitter for recorded SSE text.</summary>
internal static class AnthropicJson
{
    private static readonly JsonWriterOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Re-serialises JSON compactly, so a readable expected literal compares with the translator's output.</summary>
    public static string Normalize(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, Compact)) doc.RootElement.WriteTo(w);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Parses <paramref name="utf8"/> (so invalid JSON fails the test) and returns it as text.</summary>
    public static string ParsedText(byte[] utf8)
    {
        using var _ = JsonDocument.Parse(utf8);
        return Encoding.UTF8.GetString(utf8);
    }

    public static JsonElement Element(string json) => JsonDocument.Parse(json).RootElement;

    /// <summary>
    /// Splits a recorded Anthropic stream (<c>event: x\ndata: {...}\n\n</c> …) into (event, data) pairs. Test-only:
    /// the gateway has its own SSE reader.
    /// </summary>
    public static List<(string Event, string Data)> Events(string transcript)
    {
        var events = new List<(string, string)>();
        foreach (var block in transcript.Replace("\r\n", "\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            string? name = null, data = null;
            foreach (var line in block.Split('\n'))
            {
                if (line.StartsWith("event:", StringComparison.Ordinal)) name = line["event:".Length..].Trim();
                else if (line.StartsWith("data:", StringComparison.Ordinal)) data = line["data:".Length..].TrimStart();
            }
            if (data is not null) events.Add((name ?? "", data));
        }
        return events;
    }

    /// <summary>Feeds every event of <paramref name="transcript"/> to the translator; returns what it wrote.</summary>
    public static string Run(MessagesStreamTranslator translator, string transcript)
    {
        var output = new ArrayBufferWriter<byte>();
        foreach (var (name, data) in Events(transcript)) translator.OnEvent(name, Encoding.UTF8.GetBytes(data), output);
        return Encoding.UTF8.GetString(output.WrittenSpan);
    }

    /// <summary>
    /// The payloads of OpenAI SSE frames (<c>data: …\n\n</c>); asserts the framing and that every payload but
    /// <c>[DONE]</c> is JSON.
    /// </summary>
    public static List<string> Frames(string output)
    {
        Assert.EndsWith("\n\n", output);
        var frames = new List<string>();
        foreach (var frame in output[..^2].Split("\n\n"))
        {
            Assert.StartsWith("data: ", frame);
            Assert.DoesNotContain('\n', frame);
            var payload = frame["data: ".Length..];
            if (payload != "[DONE]") JsonDocument.Parse(payload).Dispose();
            frames.Add(payload);
        }
        return frames;
    }
}
