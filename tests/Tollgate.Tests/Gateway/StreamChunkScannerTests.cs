using System.Text;
using System.Text.Json;
using Tollgate.Features.Gateway;
using Tollgate.Features.Gateway.Tokens;
using Tollgate.Features.Pricing;

namespace Tollgate.Tests.Gateway;

/// <summary>
/// <see cref="StreamChunkScanner"/> (the relays' per-event JSON reading) against the <see cref="JsonDocument"/> reading
/// it replaced: the same texts in the same order, the same finish and usage, the same exceptions.
/// </summary>
public sealed class StreamChunkScannerTests
{
    public static TheoryData<string> OpenAiChunks => new()
    {
        """{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}""",
        """{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}""",
        """{"choices":[{"delta":{"refusal":"no","reasoning":"r2","content":"c","reasoning_content":"r1"}}]}""",
        """{"choices":[{"delta":{"content":"first","content":"last"}}],"choices":[{"delta":{"content":"only the last choices"}}]}""",
        """{"choices":[{"delta":{"content":"tab\tquote\" e\u00e9 \ud83d\ude00 nl\n"}}]}""",
        """{"choices":[{"delta":{"con\u0074ent":"escaped name"}}]}""",
        """{"choices":[{"delta":{"content":"héllo wörld — ✓ 日本語"}}]}""",
        """{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"arguments":"{\"city\":","name":"get_weather"}},{"index":1,"function":{"arguments":"\"Paris\"}"}},{"index":2,"function":"not an object"}]}}]}""",
        """{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"},"finish_reason":"stop"}]}""",
        """{"choices":[{"delta":{},"finish_reason":"length"}]}""",
        """{"choices":[{"delta":"not an object","finish_reason":7}]}""",
        """{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":300,"total_tokens":312,"prompt_tokens_details":{"cached_tokens":2}}}""",
        """{"choices":{"not":"an array"},"usage":"not an object"}""",
        """{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":5,"completion_tokens":6}}""",
        """  {"choices":[{"delta":{"content":" padded "}}]}  """,
        """[{"choices":[{"delta":{"content":"root is an array"}}]}]""",
        "\"a string\"",
        "null",
    };

    [Theory, MemberData(nameof(OpenAiChunks))]
    public void OpenAiChunk_ReadsWhatJsonDocumentRead(string json)
    {
        var expected = ReferenceOpenAi(json);
        var counter = new OutputCounter(BpeEncoding.O200kBase);
        var bytes = Encoding.UTF8.GetBytes(json);
        var chunk = StreamChunkScanner.ScanOpenAiChunk(bytes, counter);
        TokenUsage? usage = null;
        if (chunk.UsageAt >= 0 && bytes[chunk.UsageAt] == (byte)'{')
        {
            using var doc = JsonDocument.Parse(bytes.AsMemory(chunk.UsageAt, chunk.UsageLength));
            usage = OpenAiWire.ReadUsage(doc.RootElement);
        }
        Assert.Equal(expected.Text, counter.KeptText);
        Assert.Equal(BpeEncoding.O200kBase.CountTokens(expected.Text), counter.Count);
        Assert.Equal(expected.Finished, chunk.Finished);
        Assert.Equal(expected.ChoicesEmpty, chunk.ChoicesEmpty);
        Assert.Equal(expected.Usage, usage);
    }

    [Fact]
    public void OpenAiChunk_UsageFound_ItsSliceIsTheWholeObject()
    {
        var bytes = """{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"""u8.ToArray();
        var chunk = StreamChunkScanner.ScanOpenAiChunk(bytes, new OutputCounter(BpeEncoding.O200kBase));
        Assert.Equal("""{"prompt_tokens":12,"completion_tokens":3}""", Encoding.UTF8.GetString(bytes, chunk.UsageAt, chunk.UsageLength));
    }

    [Theory]
    [InlineData("""{"choices":[{"delta":{"content":"cut""")]
    [InlineData("""{"choices":[]} trailing""")]
    [InlineData("")]
    [InlineData("[DONE]")]
    public void OpenAiChunk_InvalidJson_ThrowsJsonExceptionBeforeCountingAnything(string json)
    {
        Assert.ThrowsAny<JsonException>(() => JsonDocument.Parse(json));
        var counter = new OutputCounter(BpeEncoding.O200kBase);
        Assert.ThrowsAny<JsonException>(() => StreamChunkScanner.ScanOpenAiChunk(Encoding.UTF8.GetBytes(json), counter));
        Assert.Equal("", counter.KeptText);
    }

    [Theory]
    [InlineData("""{"choices":[1]}""")]
    [InlineData("""{"choices":[{"delta":{"tool_calls":["x"]}}]}""")]
    [InlineData("""{"choices":[{"delta":{"content":"\udc00 lone surrogate"}}]}""")]
    public void OpenAiChunk_WhereJsonElementThrewInvalidOperation_ThrowsTheSame(string json)
    {
        Assert.Throws<InvalidOperationException>(() => ReferenceOpenAi(json));
        Assert.Throws<InvalidOperationException>(() => StreamChunkScanner.ScanOpenAiChunk(Encoding.UTF8.GetBytes(json), new OutputCounter(BpeEncoding.O200kBase)));
    }

    public static TheoryData<string> AnthropicDeltas => new()
    {
        """{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there"}}""",
        """{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}""",
        """{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}""",
        """{"type":"content_block_delta","index":0,"delta":{"thinking":"second","text":"first wins"}}""",
        """{"type":"content_block_delta","index":0,"delta":{"text":1,"partial_json":"the string one"}}""",
        """{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}""",
        """{"type":"content_block_delta","delta":{"text":"a"},"delta":{"text":"last delta"}}""",
        """{"type":"content_block_delta","index":0}""",
    };

    [Theory, MemberData(nameof(AnthropicDeltas))]
    public void AnthropicContentDelta_ReadsWhatJsonDocumentRead(string json)
    {
        var expected = new OutputCounter(BpeEncoding.O200kBase);
        using (var doc = JsonDocument.Parse(json))
            if (doc.RootElement.TryGetProperty("delta", out var delta)) expected.Append(AnthropicWire.DeltaText(delta));
        var actual = new OutputCounter(BpeEncoding.O200kBase);
        StreamChunkScanner.ScanAnthropicContentDelta(Encoding.UTF8.GetBytes(json), actual);
        Assert.Equal(expected.KeptText, actual.KeptText);
        Assert.Equal(expected.Count, actual.Count);
    }

    [Theory]
    [InlineData("""["not an object"]""")]
    [InlineData("""{"type":"content_block_delta","delta":"not an object"}""")]
    public void AnthropicContentDelta_NotAnObject_ThrowsInvalidOperationLikeJsonElement(string json)
    {
        Assert.Throws<InvalidOperationException>(() =>
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.TryGetProperty("delta", out var delta)) AnthropicWire.DeltaText(delta);
        });
        Assert.Throws<InvalidOperationException>(() => StreamChunkScanner.ScanAnthropicContentDelta(Encoding.UTF8.GetBytes(json), new OutputCounter(BpeEncoding.O200kBase)));
    }

    private sealed record Reference(string Text, bool Finished, bool ChoicesEmpty, TokenUsage? Usage);

    /// <summary>The relay's former reading of a chunk, with JsonDocument.</summary>
    private static Reference ReferenceOpenAi(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        var text = new StringBuilder();
        bool finished = false, choicesEmpty = true;
        TokenUsage? usage = null;
        if (root.ValueKind != JsonValueKind.Object) return new Reference("", false, true, null);
        if (root.TryGetProperty("choices", out var choices) && choices.ValueKind == JsonValueKind.Array)
            foreach (var choice in choices.EnumerateArray())
            {
                choicesEmpty = false;
                if (choice.TryGetProperty("delta", out var delta)) OpenAiWire.ForEachText(delta, t => text.Append(t));
                if (choice.TryGetProperty("finish_reason", out var fr) && fr.ValueKind == JsonValueKind.String) finished = true;
            }
        if (root.TryGetProperty("usage", out var u)) usage = OpenAiWire.ReadUsage(u);
        return new Reference(text.ToString(), finished, choicesEmpty, usage);
    }
}
