using Tollgate.Features.Gateway.Anthropic;
using Tollgate.Features.Pricing;
using static Tollgate.Tests.Gateway.Anthropic.AnthropicJson;

namespace Tollgate.Tests.Gateway.Anthropic;

/// <summary>Anthropic Messages response → OpenAI chat.completion, and Anthropic usage → Tollgate usage.</summary>
public sealed class ResponseTranslationTests
{
    private static string Translate(string anthropicJson) =>
        ParsedText(ChatToMessages.TranslateResponse(Element(anthropicJson), "anthropic/claude-sonnet-4-5", "chatcmpl-t1", 1_763_700_000));

    [Fact]
    public void TranslateResponse_TextWithCacheUsage_IsAChatCompletionWithPromptIncludingCacheTokens()
    {
        // The non-streaming example of the Anthropic reference: input 50, cache write 1,000, cache read 4,000, output 200.
        var actual = Translate("""
            {"id":"msg_01ABC","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
             "content":[{"type":"text","text":"Hello"},{"type":"text","text":" world!"}],
             "stop_reason":"end_turn","stop_sequence":null,
             "usage":{"input_tokens":50,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,"output_tokens":200,
                      "cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0},
                      "server_tool_use":{"web_search_requests":0},"service_tier":"standard"}}
            """);

        // prompt = 50 + 1,000 + 4,000 = 5,050; total = 5,050 + 200 = 5,250; cached = the 4,000 cache reads.
        Assert.Equal(Normalize("""
            {"id":"chatcmpl-t1","object":"chat.completion","created":1763700000,"model":"anthropic/claude-sonnet-4-5",
             "choices":[{"index":0,"message":{"role":"assistant","content":"Hello world!","refusal":null},
                         "logprobs":null,"finish_reason":"stop"}],
             "usage":{"prompt_tokens":5050,"completion_tokens":200,"total_tokens":5250,"prompt_tokens_details":{"cached_tokens":4000}}}
            """), actual);
    }

    [Fact]
    public void TranslateResponse_ToolUseAndThinking_ToolCallsWithJsonArgumentsAndThinkingDropped()
    {
        var actual = Element(Translate("""
            {"id":"msg_02","type":"message","role":"assistant","model":"claude-sonnet-4-5",
             "content":[
               {"type":"thinking","thinking":"The user wants weather; call the tool.","signature":"EqQBCgIYAhIM"},
               {"type":"text","text":"Checking both cities."},
               {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris","unit":"celsius"}},
               {"type":"tool_use","id":"toolu_01B","name":"now","input":{}}
             ],
             "stop_reason":"tool_use","stop_sequence":null,
             "usage":{"input_tokens":420,"output_tokens":96}}
            """));

        var choice = actual.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        var message = choice.GetProperty("message");
        Assert.Equal("Checking both cities.", message.GetProperty("content").GetString());
        Assert.DoesNotContain("call the tool", actual.GetRawText());
        var calls = message.GetProperty("tool_calls");
        Assert.Equal(2, calls.GetArrayLength());
        Assert.Equal("toolu_01A", calls[0].GetProperty("id").GetString());
        Assert.Equal("function", calls[0].GetProperty("type").GetString());
        Assert.Equal("get_weather", calls[0].GetProperty("function").GetProperty("name").GetString());
        // arguments is a JSON string (as in OpenAI), whose parse is Anthropic's input object.
        using var args = JsonDocument.Parse(calls[0].GetProperty("function").GetProperty("arguments").GetString()!);
        Assert.Equal("Paris", args.RootElement.GetProperty("city").GetString());
        Assert.Equal("celsius", args.RootElement.GetProperty("unit").GetString());
        Assert.Equal("{}", calls[1].GetProperty("function").GetProperty("arguments").GetString());
        Assert.Equal(Normalize("""{"prompt_tokens":420,"completion_tokens":96,"total_tokens":516,"prompt_tokens_details":{"cached_tokens":0}}"""),
            actual.GetProperty("usage").GetRawText());
    }

    [Fact]
    public void TranslateResponse_OnlyToolUse_ContentIsNull()
    {
        var actual = Element(Translate("""
            {"content":[{"type":"tool_use","id":"toolu_9","name":"now","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":3}}
            """));

        Assert.Equal(JsonValueKind.Null, actual.GetProperty("choices")[0].GetProperty("message").GetProperty("content").ValueKind);
    }

    [Theory]
    [InlineData("end_turn", "stop")]
    [InlineData("stop_sequence", "stop")]
    [InlineData("max_tokens", "length")]
    [InlineData("tool_use", "tool_calls")]
    [InlineData("refusal", "content_filter")]
    [InlineData("pause_turn", "stop")]
    [InlineData("model_context_window_exceeded", "length")]
    [InlineData("some_future_reason", "stop")]
    public void TranslateResponse_StopReason_MapsToFinishReason(string stopReason, string finishReason)
    {
        var actual = Element(Translate($$$"""
            {"content":[{"type":"text","text":"x"}],"stop_reason":"{{{stopReason}}}","usage":{"input_tokens":1,"output_tokens":1}}
            """));

        Assert.Equal(finishReason, actual.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public void UsageFromAnthropic_CacheReadAndWrite_InputIncludesBoth()
    {
        var usage = ChatToMessages.UsageFromAnthropic(Element("""
            {"input_tokens":1200,"cache_creation_input_tokens":2000,"cache_read_input_tokens":8000,"output_tokens":450}
            """));

        // 1,200 + 2,000 + 8,000 = 11,200: the shape RatingTests prices for claude-3-5-sonnet.
        Assert.Equal(new TokenUsage(InputTokens: 11_200, OutputTokens: 450, CacheReadTokens: 8_000, CacheWriteTokens: 2_000), usage);
        Assert.Null(usage.Validate());
    }

    [Fact]
    public void UsageFromAnthropic_NullCacheFields_CountAsZero()
    {
        var usage = ChatToMessages.UsageFromAnthropic(Element("""
            {"input_tokens":10,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"output_tokens":5}
            """));

        Assert.Equal(new TokenUsage(10, 5), usage);
    }
}
