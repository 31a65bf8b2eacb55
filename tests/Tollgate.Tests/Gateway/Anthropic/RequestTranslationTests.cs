using Tollgate.Features.Gateway.Anthropic;
using static Tollgate.Tests.Gateway.Anthropic.AnthropicJson;

namespace Tollgate.Tests.Gateway.Anthropic;

/// <summary>OpenAI chat request → Anthropic Messages request. Expected bodies are written out in full.</summary>
public sealed class RequestTranslationTests
{
    private static string Translate(string openAiJson, long maxTokens = 1024, string model = "claude-sonnet-4-5") =>
        ParsedText(ChatToMessages.TranslateRequest(Element(openAiJson), model, maxTokens));

    private static TranslationException Rejected(string openAiJson) =>
        Assert.Throws<TranslationException>(() => ChatToMessages.TranslateRequest(Element(openAiJson), "claude-sonnet-4-5", 1024));

    [Fact]
    public void TranslateRequest_SystemAndMultiTurn_HoistsSystemAndMergesSameRoleTurns()
    {
        var actual = Translate("""
            {"model":"anthropic/claude-sonnet-4-5","max_completion_tokens":300,
             "messages":[
               {"role":"system","content":"You are terse."},
               {"role":"user","content":"Hi"},
               {"role":"assistant","content":"Hello."},
               {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
               {"role":"user","content":"How are you?"},
               {"role":"user","content":[{"type":"text","text":"And the weather?"}]}
             ]}
            """, maxTokens: 300);

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":300,
             "system":[{"type":"text","text":"You are terse."},{"type":"text","text":"Answer in French."}],
             "messages":[
               {"role":"user","content":[{"type":"text","text":"Hi"}]},
               {"role":"assistant","content":[{"type":"text","text":"Hello."}]},
               {"role":"user","content":[{"type":"text","text":"How are you?"},{"type":"text","text":"And the weather?"}]}
             ]}
            """), actual);
    }

    [Fact]
    public void TranslateRequest_OneSystemText_IsAPlainString()
    {
        var actual = Translate("""{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"}]}""");

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":1024,"system":"Be kind.",
             "messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}
            """), actual);
    }

    [Fact]
    public void TranslateRequest_SamplingStopStreamAndUser_AreMappedAndHarmlessExtrasDropped()
    {
        var actual = Translate("""
            {"messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"top_p":0.9,"stop":["END","","STOP"],
             "stream":true,"stream_options":{"include_usage":true},"user":"user-42","n":1,"logprobs":false,
             "presence_penalty":0.5,"frequency_penalty":0.2,"seed":7,"service_tier":"auto","store":false,
             "metadata":{"k":"v"},"reasoning_effort":"low","response_format":{"type":"text"},"logit_bias":{},
             "modalities":["text"],"parallel_tool_calls":true,"tool_choice":"auto","max_tokens":99}
            """, maxTokens: 2048);

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":2048,
             "messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],
             "temperature":0.7,"top_p":0.9,"stop_sequences":["END","STOP"],"stream":true,
             "metadata":{"user_id":"user-42"}}
            """), actual);
    }

    [Fact]
    public void TranslateRequest_StopAsString_BecomesOneStopSequence()
    {
        var actual = Translate("""{"messages":[{"role":"user","content":"Count"}],"stop":"\n\n","stream":false}""");

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"text","text":"Count"}]}],
             "stop_sequences":["\n\n"],"stream":false}
            """), actual);
    }

    [Fact]
    public void TranslateRequest_Tools_BecomeInputSchemasWithAnEmptySchemaWhenParametersAreAbsent()
    {
        var actual = Translate("""
            {"messages":[{"role":"user","content":"Weather in Paris?"}],
             "tools":[
               {"type":"function","function":{"name":"get_weather","description":"Current weather","strict":true,
                 "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
               {"type":"function","function":{"name":"now"}}
             ]}
            """);

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":1024,
             "messages":[{"role":"user","content":[{"type":"text","text":"Weather in Paris?"}]}],
             "tools":[
               {"name":"get_weather","description":"Current weather",
                "input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
               {"name":"now","input_schema":{"type":"object","properties":{}}}
             ]}
            """), actual);
    }

    [Theory]
    [InlineData("\"auto\"", null, """{"type":"auto"}""")]
    [InlineData("\"none\"", null, """{"type":"none"}""")]
    [InlineData("\"required\"", null, """{"type":"any"}""")]
    [InlineData("""{"type":"function","function":{"name":"get_weather"}}""", null, """{"type":"tool","name":"get_weather"}""")]
    [InlineData("\"required\"", "false", """{"type":"any","disable_parallel_tool_use":true}""")]
    [InlineData(null, "false", """{"type":"auto","disable_parallel_tool_use":true}""")]
    [InlineData("\"none\"", "false", """{"type":"none"}""")]
    [InlineData(null, "true", null)]
    [InlineData(null, null, null)]
    public void TranslateRequest_ToolChoice_MapsToAnthropicToolChoice(string? openAiChoice, string? parallelToolCalls, string? expected)
    {
        var extra = (openAiChoice is null ? "" : $",\"tool_choice\":{openAiChoice}") + (parallelToolCalls is null ? "" : $",\"parallel_tool_calls\":{parallelToolCalls}");
        var actual = Element(Translate("""
            {"messages":[{"role":"user","content":"Hi"}],
             "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]
            """ + extra + "}"));

        if (expected is null) Assert.False(actual.TryGetProperty("tool_choice", out _));
        else Assert.Equal(Normalize(expected), actual.GetProperty("tool_choice").GetRawText());
    }

    [Fact]
    public void TranslateRequest_ToolCallRoundTrip_AssistantToolCallsBecomeToolUseAndToolMessagesOneToolResultTurn()
    {
        var actual = Translate("""
            {"messages":[
               {"role":"user","content":"Weather in Paris and Rome?"},
               {"role":"assistant","content":null,"tool_calls":[
                 {"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                 {"id":"toolu_01B","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Rome\", \"unit\": \"c\"}"}}
               ]},
               {"role":"tool","tool_call_id":"toolu_01A","content":"18°C, sunny"},
               {"role":"tool","tool_call_id":"toolu_01B","content":[{"type":"text","text":"22°C"},{"type":"text","text":"light wind"}]},
               {"role":"user","content":"Which is warmer?"},
               {"role":"assistant","content":"Rome.","tool_calls":[]},
               {"role":"user","content":"Thanks"}
             ],
             "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}
            """);

        Assert.Equal(Normalize("""
            {"model":"claude-sonnet-4-5","max_tokens":1024,
             "messages":[
               {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"}]},
               {"role":"assistant","content":[
                 {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris"}},
                 {"type":"tool_use","id":"toolu_01B","name":"get_weather","input":{"city": "Rome", "unit": "c"}}
               ]},
               {"role":"user","content":[
                 {"type":"tool_result","tool_use_id":"toolu_01A","content":[{"type":"text","text":"18°C, sunny"}]},
                 {"type":"tool_result","tool_use_id":"toolu_01B","content":[{"type":"text","text":"22°C"},{"type":"text","text":"light wind"}]},
                 {"type":"text","text":"Which is warmer?"}
               ]},
               {"role":"assistant","content":[{"type":"text","text":"Rome."}]},
               {"role":"user","content":[{"type":"text","text":"Thanks"}]}
             ],
             "tools":[{"name":"get_weather","input_schema":{"type":"object"}}]}
            """), actual);
    }

    [Fact]
    public void TranslateRequest_AssistantTextWithToolCallAndEmptyArguments_KeepsTextFirstAndInputEmptyObject()
    {
        var actual = Element(Translate("""
            {"messages":[
               {"role":"user","content":"Time?"},
               {"role":"assistant","content":"Let me check.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"now","arguments":""}}]},
               {"role":"tool","tool_call_id":"call_1","content":""}
             ],
             "tools":[{"type":"function","function":{"name":"now"}}]}
            """));

        var messages = actual.GetProperty("messages");
        Assert.Equal(Normalize("""
            {"role":"assistant","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"call_1","name":"now","input":{}}]}
            """), messages[1].GetRawText());
        // An empty tool output has no content (Anthropic rejects empty text blocks).
        Assert.Equal(Normalize("""{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1"}]}"""), messages[2].GetRawText());
    }

    [Fact]
    public void TranslateRequest_Images_DataUrlBecomesBase64AndHttpsUrlBecomesUrlSource()
    {
        var actual = Element(Translate("""
            {"messages":[{"role":"user","content":[
               {"type":"text","text":"Compare these"},
               {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}},
               {"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}},
               {"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0x"}}
            ]}]}
            """));

        Assert.Equal(Normalize("""
            [{"type":"text","text":"Compare these"},
             {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
             {"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}},
             {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]
            """), actual.GetProperty("messages")[0].GetProperty("content").GetRawText());
    }

    [Fact]
    public void TranslateRequest_CacheControlOnParts_IsPassedThrough()
    {
        var actual = Element(Translate("""
            {"messages":[
               {"role":"system","content":[{"type":"text","text":"Long manual…","cache_control":{"type":"ephemeral"}}]},
               {"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}
            ]}
            """));

        Assert.Equal(Normalize("""[{"type":"text","text":"Long manual…","cache_control":{"type":"ephemeral"}}]"""),
            actual.GetProperty("system").GetRawText());
        Assert.Equal(Normalize("""[{"type":"text","text":"Q","cache_control":{"type":"ephemeral","ttl":"1h"}}]"""),
            actual.GetProperty("messages")[0].GetProperty("content").GetRawText());
    }

    [Theory]
    [InlineData("""{"n":2}""", "n")]
    [InlineData("""{"n":0}""", "n")]
    [InlineData("""{"logprobs":true}""", "logprobs")]
    [InlineData("""{"top_logprobs":3}""", "top_logprobs")]
    [InlineData("""{"response_format":{"type":"json_object"}}""", "response_format")]
    [InlineData("""{"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}""", "response_format")]
    [InlineData("""{"logit_bias":{"50256":-100}}""", "logit_bias")]
    [InlineData("""{"audio":{"voice":"alloy","format":"wav"}}""", "audio")]
    [InlineData("""{"modalities":["text","audio"]}""", "modalities")]
    [InlineData("""{"functions":[{"name":"f"}]}""", "functions")]
    [InlineData("""{"web_search_options":{}}""", "web_search_options")]
    [InlineData("""{"temperature":1.5}""", "temperature")]
    [InlineData("""{"tool_choice":"required"}""", "tool_choice")]
    public void TranslateRequest_ParameterAnthropicCannotHonour_IsRejectedNamingIt(string extra, string param)
    {
        var request = """{"messages":[{"role":"user","content":"Hi"}],""" + extra[1..];

        var error = Rejected(request);

        Assert.Equal(param, error.Param);
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }

    [Theory]
    [InlineData("""{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}""",
        "messages[1].tool_calls[0].function.arguments")]
    [InlineData("""{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}""",
        "messages[1].tool_calls[0].function.arguments")]
    [InlineData("""{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]}""",
        "messages[1].content[0].type")]
    [InlineData("""{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}""",
        "messages[1].content[0].image_url.url")]
    [InlineData("""{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,rawbytes"}}]}""",
        "messages[1].content[0].image_url.url")]
    [InlineData("""{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc"}}]}""",
        "messages[1].content[0].file")]
    [InlineData("""{"role":"tool","content":"x"}""", "messages[1].tool_call_id")]
    [InlineData("""{"role":"function","name":"f","content":"x"}""", "messages[1].role")]
    [InlineData("""{"role":"wizard","content":"x"}""", "messages[1].role")]
    public void TranslateRequest_MalformedOrUnsupportedMessage_IsRejectedWithItsPath(string message, string param)
    {
        var error = Rejected($$"""{"messages":[{"role":"user","content":"Hi"},{{message}}]}""");

        Assert.Equal(param, error.Param);
    }

    [Theory]
    [InlineData("""{"messages":[]}""", "messages")]
    [InlineData("""{"model":"x"}""", "messages")]
    [InlineData("""{"messages":[{"role":"user","content":""}]}""", "messages")]
    [InlineData("""[1,2]""", "")]
    public void TranslateRequest_NoUsableMessages_IsRejected(string body, string param)
    {
        Assert.Equal(param, Rejected(body).Param);
    }

    [Fact]
    public void TranslateRequest_EmptyAssistantMessage_IsSkippedAndNeighboursMerged()
    {
        var actual = Element(Translate("""
            {"messages":[{"role":"user","content":"a"},{"role":"assistant","content":""},{"role":"user","content":"b"}]}
            """));

        Assert.Equal(Normalize("""[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]"""),
            actual.GetProperty("messages").GetRawText());
    }

    [Fact]
    public void TranslateRequest_ConversationOpeningWithAssistant_GetsAPlaceholderUserTurnFirst()
    {
        var actual = Element(Translate("""
            {"messages":[{"role":"system","content":"Pirate."},{"role":"assistant","content":"Ahoy! How may I help?"},{"role":"user","content":"Hi"}]}
            """));

        Assert.Equal(Normalize("""
            [{"role":"user","content":[{"type":"text","text":"."}]},
             {"role":"assistant","content":[{"type":"text","text":"Ahoy! How may I help?"}]},
             {"role":"user","content":[{"type":"text","text":"Hi"}]}]
            """), actual.GetProperty("messages").GetRawText());
    }

    [Fact]
    public void TranslateRequest_NonAsciiAndQuotes_RoundTripThroughJson()
    {
        const string text = "Grüße \"quoted\" <tag> & 日本語 😀 \\ back";
        var request = JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = text } } });

        var actual = Element(Translate(request));

        Assert.Equal(text, actual.GetProperty("messages")[0].GetProperty("content")[0].GetProperty("text").GetString());
    }
}
