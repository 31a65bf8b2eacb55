using System.Buffers;
using System.Text;
using Tollgate.Features.Gateway.Anthropic;
using Tollgate.Features.Pricing;
using static Tollgate.Tests.Gateway.Anthropic.AnthropicJson;

namespace Tollgate.Tests.Gateway.Anthropic;

/// <summary>
/// Anthropic SSE streams (recorded shapes from the Anthropic reference and streaming docs) → the exact OpenAI chunks
/// a client receives, and the usage the gateway meters.
/// </summary>
public sealed class StreamTranslationTests
{
    private const string Model = "anthropic/claude-sonnet-4-5";
    private const string Id = "chatcmpl-s1";
    private const long Created = 1_763_700_000;

    private static MessagesStreamTranslator Translator(bool includeUsage) => new(Model, Id, Created, includeUsage);

    /// <summary>The text-only stream of the Anthropic reference (§3), verbatim.</summary>
    private const string TextStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,"output_tokens":1}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type":"ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":200}}

        event: message_stop
        data: {"type":"message_stop"}


        """;

    /// <summary>Text, then a tool_use whose input arrives in several pieces (the first empty, as Anthropic sends),
    /// then an argument-less tool_use; the shape of Anthropic's streaming docs.</summary>
    private const string ToolStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":2},"content":[],"stop_reason":null}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check."}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: content_block_start
        data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", \"unit\": \"fahr"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"enheit\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":1}

        event: content_block_start
        data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":2}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

        event: message_stop
        data: {"type":"message_stop"}


        """;

    [Fact]
    public void OnEvent_TextStreamWithoutIncludeUsage_EmitsRoleTextFinishAndDone()
    {
        var translator = Translator(includeUsage: false);

        var frames = Frames(Run(translator, TextStream));

        Assert.Equal(
        [
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}]}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}""",
            "[DONE]",
        ], frames);
        Assert.True(translator.Completed);
        Assert.Equal("stop", translator.FinishReason);
        Assert.Equal("end_turn", translator.StopReason);
        Assert.Equal(6, translator.OutputTextChars);
        Assert.Equal("msg_1", translator.UpstreamMessageId);
        Assert.Equal("claude-sonnet-4-5", translator.UpstreamModel);
    }

    [Fact]
    public void OnEvent_TextStreamWithIncludeUsage_EveryChunkHasNullUsageAndTheLastChunkTheTotals()
    {
        var translator = Translator(includeUsage: true);

        var frames = Frames(Run(translator, TextStream));

        Assert.Equal(
        [
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}],"usage":null}""",
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}""",
            // 50 + 1,000 + 4,000 = 5,050 prompt tokens; 200 output (message_start's placeholder 1 replaced, not added).
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[],"usage":{"prompt_tokens":5050,"completion_tokens":200,"total_tokens":5250,"prompt_tokens_details":{"cached_tokens":4000}}}""",
            "[DONE]",
        ], frames);
        Assert.Equal(new TokenUsage(InputTokens: 5_050, OutputTokens: 200, CacheReadTokens: 4_000, CacheWriteTokens: 1_000), translator.Usage);
        Assert.True(translator.OutputTokensReported);
    }

    [Fact]
    public void OnEvent_ToolStream_EmitsToolCallChunksIndexedByToolWithArgumentsThatConcatenateToJson()
    {
        var translator = Translator(includeUsage: false);

        var frames = Frames(Run(translator, ToolStream));

        const string head = """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":""";
        Assert.Equal(
        [
            head + """{"role":"assistant","content":""},"finish_reason":null}]}""",
            head + """{"content":"Okay, let's check."},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":0,"function":{"arguments":" \"San Francisco, CA\""}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":0,"function":{"arguments":", \"unit\": \"fahr"}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":0,"function":{"arguments":"enheit\"}"}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":1,"id":"toolu_02","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}""",
            head + """{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]},"finish_reason":null}]}""",
            head + """{},"finish_reason":"tool_calls"}]}""",
            "[DONE]",
        ], frames);

        // What an OpenAI client accumulates per tool-call index must parse.
        var arguments = new Dictionary<int, StringBuilder>();
        foreach (var frame in frames.Where(f => f != "[DONE]"))
        {
            using var chunk = JsonDocument.Parse(frame);
            if (!chunk.RootElement.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("tool_calls", out var calls)) continue;
            foreach (var call in calls.EnumerateArray())
            {
                var index = call.GetProperty("index").GetInt32();
                if (!arguments.TryGetValue(index, out var sb)) arguments[index] = sb = new StringBuilder();
                sb.Append(call.GetProperty("function").GetProperty("arguments").GetString());
            }
        }
        using var weather = JsonDocument.Parse(arguments[0].ToString());
        Assert.Equal("San Francisco, CA", weather.RootElement.GetProperty("location").GetString());
        Assert.Equal("fahrenheit", weather.RootElement.GetProperty("unit").GetString());
        Assert.Equal("{}", arguments[1].ToString());

        Assert.Equal("tool_calls", translator.FinishReason);
        // 472 + 0 + 2,048 = 2,520 prompt tokens; output 89 from message_delta.
        Assert.Equal(new TokenUsage(InputTokens: 2_520, OutputTokens: 89, CacheReadTokens: 2_048), translator.Usage);
        Assert.Equal("Okay, let's check.".Length, translator.OutputTextChars);
        Assert.Equal("Okay, let's check.".Length + "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}".Length, translator.OutputChars);
    }

    [Fact]
    public void OnEvent_ToolStreamWithIncludeUsage_EndsWithTheUsageChunk()
    {
        var frames = Frames(Run(Translator(includeUsage: true), ToolStream));

        Assert.Equal("[DONE]", frames[^1]);
        Assert.Equal(
            """{"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1763700000,"model":"anthropic/claude-sonnet-4-5","choices":[],"usage":{"prompt_tokens":2520,"completion_tokens":89,"total_tokens":2609,"prompt_tokens_details":{"cached_tokens":2048}}}""",
            frames[^2]);
        Assert.Single(frames, f => f.Contains("\"usage\":{"));
    }

    [Fact]
    public void OnEvent_SeveralMessageDeltas_UsageFieldsAreOverwrittenNotSummedAndOneFinishChunk()
    {
        var translator = Translator(includeUsage: true);
        const string stream = """
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_3","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":50,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"pause_turn","stop_sequence":null},"usage":{"output_tokens":120}}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":60,"cache_read_input_tokens":null,"output_tokens":200}}

            event: message_stop
            data: {"type":"message_stop"}


            """;

        var frames = Frames(Run(translator, stream));

        // Reference vector 3: output 200 (not 320), input 60 (the later value wins; a null field keeps the old one).
        Assert.Equal(new TokenUsage(60, 200), translator.Usage);
        Assert.Single(frames, f => f.Contains("\"finish_reason\":\"") );
        Assert.Equal("stop", translator.FinishReason);
        Assert.Contains("\"usage\":{\"prompt_tokens\":60,\"completion_tokens\":200,\"total_tokens\":260,", frames[^2]);
    }

    [Fact]
    public void OnEvent_ErrorEventMidStream_EmitsOpenAiErrorThenDoneAndIgnoresTheRest()
    {
        var translator = Translator(includeUsage: true);
        const string stream = """
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_4","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}

            event: error
            data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}

            event: message_stop
            data: {"type":"message_stop"}


            """;

        var frames = Frames(Run(translator, stream));

        Assert.Equal(4, frames.Count);
        Assert.Contains("\"delta\":{\"content\":\"Hel\"}", frames[1]);
        Assert.Equal("""{"error":{"message":"Overloaded","type":"server_error","code":"overloaded","param":null}}""", frames[2]);
        Assert.Equal("[DONE]", frames[3]);
        Assert.False(translator.Completed);
        Assert.True(translator.Ended);
        Assert.Equal("overloaded_error", translator.ErrorType);
        Assert.Equal("Overloaded", translator.ErrorMessage);
        // Bill what was seen: the input side from message_start; output must be estimated (3 characters streamed).
        Assert.False(translator.OutputTokensReported);
        Assert.Equal(5_050, translator.Usage!.Value.InputTokens);
        Assert.Equal(3, translator.OutputTextChars);
    }

    [Fact]
    public void OnEvent_StreamCutBeforeMessageDelta_HasInputUsageButNoFinalOutputAndNoDone()
    {
        var translator = Translator(includeUsage: false);
        var cut = TextStream[..TextStream.IndexOf("event: message_delta", StringComparison.Ordinal)];

        var output = Run(translator, cut);

        Assert.DoesNotContain("[DONE]", output);
        Assert.DoesNotContain("finish_reason\":\"", output);
        Assert.False(translator.Completed);
        Assert.False(translator.OutputTokensReported);
        Assert.Null(translator.FinishReason);
        Assert.Equal(new TokenUsage(5_050, 1, 4_000, 1_000), translator.Usage);
        Assert.Equal(6, translator.OutputChars);
    }

    [Fact]
    public void WriteError_AfterAnUpstreamDrop_EndsTheStreamOnceAndIgnoresLateEvents()
    {
        var translator = Translator(includeUsage: false);
        var cut = TextStream[..TextStream.IndexOf("event: message_delta", StringComparison.Ordinal)];
        var output = new ArrayBufferWriter<byte>();
        foreach (var (name, data) in Events(cut)) translator.OnEvent(name, Encoding.UTF8.GetBytes(data), output);

        translator.WriteError("The upstream connection closed early.", "server_error", "upstream_stream_incomplete", output);
        translator.WriteError("again", "server_error", null, output);
        translator.OnEvent("message_stop", """{"type":"message_stop"}"""u8, output);

        var frames = Frames(Encoding.UTF8.GetString(output.WrittenSpan));
        Assert.Equal("""{"error":{"message":"The upstream connection closed early.","type":"server_error","code":"upstream_stream_incomplete","param":null}}""", frames[^2]);
        Assert.Equal("[DONE]", frames[^1]);
        Assert.Single(frames, f => f == "[DONE]");
        Assert.True(translator.Ended);
        Assert.False(translator.Completed);
    }

    [Fact]
    public void OnEvent_ThinkingBlocks_AreNotShownButCountAsOutputCharacters()
    {
        var translator = Translator(includeUsage: false);
        const string stream = """
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_5","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"2+2 is 4."}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: content_block_start
            data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"4"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":1}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":30}}

            event: message_stop
            data: {"type":"message_stop"}


            """;

        var frames = Frames(Run(translator, stream));

        Assert.Equal(4, frames.Count);
        Assert.DoesNotContain(frames, f => f.Contains("2+2") || f.Contains("EqQB"));
        Assert.Contains("\"delta\":{\"content\":\"4\"}", frames[1]);
        Assert.Contains("\"finish_reason\":\"length\"", frames[2]);
        Assert.Equal(1, translator.OutputTextChars);
        Assert.Equal("2+2 is 4.".Length + 1, translator.OutputChars);
    }

    [Fact]
    public void OnEvent_EmptyEventNames_UseTheJsonType()
    {
        var named = Run(Translator(includeUsage: true), TextStream);
        var output = new ArrayBufferWriter<byte>();
        var translator = Translator(includeUsage: true);
        foreach (var (_, data) in Events(TextStream)) translator.OnEvent("", Encoding.UTF8.GetBytes(data), output);

        Assert.Equal(named, Encoding.UTF8.GetString(output.WrittenSpan));
        Assert.True(translator.Completed);
    }

    [Fact]
    public void OnEvent_TextNeedingEscapes_IsValidJsonAndRoundTrips()
    {
        var translator = Translator(includeUsage: false);
        const string text = "Line 1\nQuote \" backslash \\ tab \t Grüße 日本 😀 </script>";
        var delta = JsonSerializer.Serialize(new { type = "content_block_delta", index = 0, delta = new { type = "text_delta", text } });
        var output = new ArrayBufferWriter<byte>();

        translator.OnEvent("content_block_delta", Encoding.UTF8.GetBytes(delta), output);

        var frames = Frames(Encoding.UTF8.GetString(output.WrittenSpan));
        using var chunk = JsonDocument.Parse(frames[^1]);
        Assert.Equal(text, chunk.RootElement.GetProperty("choices")[0].GetProperty("delta").GetProperty("content").GetString());
        Assert.Equal(text.Length, translator.OutputTextChars);
    }
}
