using System.Text;
using System.Text.Json;
using Tollgate.Features.Gateway.Tokens;

namespace Tollgate.Tests.Gateway.Tokens;

public sealed class TokenEstimatorTests
{
    [Theory]
    [InlineData("openai", "gpt-4o", "o200k_base")]
    [InlineData("openai", "gpt-4o-mini-2024-07-18", "o200k_base")]
    [InlineData("OpenAI", "GPT-4.1-nano", "o200k_base")]
    [InlineData("openai", "gpt-4.5-preview", "o200k_base")]
    [InlineData("openai", "gpt-5", "o200k_base")]
    [InlineData("openai", "gpt-5-mini", "o200k_base")]
    [InlineData("openai", "o1-preview", "o200k_base")]
    [InlineData("openai", "o3-mini", "o200k_base")]
    [InlineData("openai", "o4-mini", "o200k_base")]
    [InlineData("openai", "chatgpt-4o-latest", "o200k_base")]
    [InlineData("openai", "gpt-oss-120b", "o200k_base")]
    [InlineData("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base")]
    [InlineData("openai", "gpt-4", "cl100k_base")]
    [InlineData("openai", "gpt-4-turbo", "cl100k_base")]
    [InlineData("openai", "gpt-4-0613", "cl100k_base")]
    [InlineData("openai", "gpt-3.5-turbo", "cl100k_base")]
    [InlineData("openai", "text-embedding-3-small", "cl100k_base")]
    [InlineData("openai", "text-embedding-ada-002", "cl100k_base")]
    [InlineData("demo", "anything", "o200k_base")]
    [InlineData("openai", "davinci-002", null)]
    [InlineData("openai", "dall-e-3", null)]
    [InlineData("anthropic", "claude-sonnet-4-5", null)]
    [InlineData("anthropic", "gpt-4o", null)]
    [InlineData("google", "gemini-2.5-pro", null)]
    [InlineData("mistral", "mistral-large-latest", null)]
    public void ForModel_ProviderAndModel_PicksTiktokensEncodingOrNone(string provider, string model, string? expected)
    {
        Assert.Equal(expected, TokenEstimator.ForModel(provider, model)?.Name);
    }

    [Fact]
    public void CountChatPrompt_CookbookExample_CountsFramingRoleAndContent()
    {
        using var request = JsonDocument.Parse("""
            {"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"hello world"}]}
            """);
        // o200k: system 1 + "You are a helpful assistant." 6 + user 1 + "hello world" 2 = 10 text tokens;
        // 2 messages × 3 + reply priming 3 = 9.
        Assert.Equal(19, TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.O200kBase));
        // Bound: 6 + 28 + 4 + 11 = 49 bytes + 9.
        Assert.Equal(58, TokenEstimator.CountChatPrompt(request.RootElement, null));
    }

    private const string ToolRequest = """
        {"model":"gpt-4o","messages":[
          {"role":"system","content":"You are a helpful assistant."},
          {"role":"user","name":"alice","content":"hello world"},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
          {"role":"tool","tool_call_id":"call_1","content":"18°C and sunny"},
          {"role":"user","content":[{"type":"text","text":"And tomorrow?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}],
         "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}
        """;

    [Fact]
    public void CountChatPrompt_ToolsNamesImages_HandCheckedTotal()
    {
        using var request = JsonDocument.Parse(ToolRequest);
        // o200k token counts of each counted text (js-tiktoken 1.0.21): system 1, "You are a helpful assistant." 6,
        // user 1, "alice" 1, "hello world" 2, assistant 1, "get_weather" 2, {"city":"Paris"} 5 (the unescaped
        // arguments), tool 1, "call_1" 3, "18°C and sunny" 4, user 1, "And tomorrow?" 3, the tools array's JSON 29
        // = 60; 5 messages × 3 = 15; name 1; image 4,000; reply priming 3.
        Assert.Equal(60 + 15 + 1 + 4_000 + 3, TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.O200kBase));
        // The same texts are 258 UTF-8 bytes.
        Assert.Equal(258 + 15 + 1 + 4_000 + 3, TokenEstimator.CountChatPrompt(request.RootElement, null));
    }

    [Fact]
    public void CountChatPrompt_ResponseFormatSchema_IsCounted()
    {
        using var plain = JsonDocument.Parse("""{"messages":[{"role":"user","content":"hi"}]}""");
        using var schema = JsonDocument.Parse("""
            {"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}
            """);
        var schemaText = """{"name":"x","schema":{"type":"object"}}""";
        Assert.Equal(TokenEstimator.CountChatPrompt(plain.RootElement, BpeEncoding.O200kBase) + BpeEncoding.O200kBase.CountTokens(schemaText),
            TokenEstimator.CountChatPrompt(schema.RootElement, BpeEncoding.O200kBase));
    }

    [Theory]
    [InlineData(@"line one\nline two\ttab \""quoted\"" back\\slash \/", "line one\nline two\ttab \"quoted\" back\\slash /")]
    [InlineData(@"caf\u00e9 \u65e5\u672c \ud83d\ude00 done", "café 日本 😀 done")]
    [InlineData(@"lone \ud800 surrogate", "lone \uFFFD surrogate")]
    public void CountChatPrompt_EscapedContent_CountsTheUnescapedText(string escaped, string text)
    {
        using var request = JsonDocument.Parse($$"""{"messages":[{"role":"user","content":"{{escaped}}"}]}""");
        foreach (var encoding in new[] { BpeEncoding.O200kBase, BpeEncoding.Cl100kBase })
            Assert.Equal(3 + 1 + encoding.CountTokens(text) + 3, TokenEstimator.CountChatPrompt(request.RootElement, encoding));
        Assert.Equal(3 + 4 + Encoding.UTF8.GetByteCount(text) + 3, TokenEstimator.CountChatPrompt(request.RootElement, null));
    }

    [Fact]
    public void CountChatPrompt_NotAnObject_Throws()
    {
        using var array = JsonDocument.Parse("[]");
        Assert.Throws<ArgumentException>(() => TokenEstimator.CountChatPrompt(array.RootElement, null));
    }

    [Fact]
    public void ByteBound_EveryVector_IsAtLeastTheExactCount()
    {
        foreach (var v in BpeEncodingTests.Vectors)
        {
            var bound = TokenEstimator.CountText(v.Text, null);
            Assert.Equal(Encoding.UTF8.GetByteCount(v.Text), bound);
            Assert.True(bound >= v.O200kBase.Length && bound >= v.Cl100kBase.Length, v.Text);
            Assert.Equal(v.O200kBase.Length, TokenEstimator.CountText(v.Text, BpeEncoding.O200kBase));

            using var request = JsonDocument.Parse(JsonSerializer.Serialize(new
            {
                messages = new object[] { new { role = "system", content = v.Text }, new { role = "user", content = new[] { new { type = "text", text = v.Text } } } },
            }));
            var promptBound = TokenEstimator.CountChatPrompt(request.RootElement, null);
            Assert.True(promptBound >= TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.O200kBase), v.Text);
            Assert.True(promptBound >= TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.Cl100kBase), v.Text);
            // 2 messages × 3 + "system" 1 + "user" 1 + the text twice + reply priming 3.
            Assert.Equal(2 * 3 + 1 + 1 + 2 * v.O200kBase.Length + 3, TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.O200kBase));
        }
    }

    [Fact]
    public void CountAnthropicPrompt_DocsExample_BoundsAnthropicsCount()
    {
        // Anthropic's token-counting docs: this request is 14 input tokens.
        using var request = JsonDocument.Parse("""
            {"model":"claude-opus-4-6","system":"You are a scientist","messages":[{"role":"user","content":"Hello, Claude"}]}
            """);
        var bound = TokenEstimator.CountAnthropicPrompt(request.RootElement);
        // system: 3 + 19 bytes; message: 3 + "user" 4 + 13 bytes; reply priming 3.
        Assert.Equal(45, bound);
        Assert.True(bound >= 14);
    }

    [Fact]
    public void CountAnthropicPrompt_BlocksToolsAndImages_HandCheckedBound()
    {
        using var request = JsonDocument.Parse("""
            {"model":"claude-sonnet-4-5","max_tokens":100,
             "system":[{"type":"text","text":"Be brief."}],
             "tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
             "messages":[
              {"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
              {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18°C"}]}]}
            """);
        // system: 3 + "Be brief." 9. tools: JSON 57 + 600.
        // user: 3 + 4 + "Weather?" 8 + image 4,000. assistant: 3 + 9 + "get_weather" 11 + {"city":"Paris"} 16.
        // user: 3 + 4 + "toolu_1" 7 + "18°C" 5. Reply priming 3.
        const int tools = 57;
        Assert.Equal(tools, """[{"name":"get_weather","input_schema":{"type":"object"}}]""".Length);
        Assert.Equal(3 + 9 + tools + 600 + 3 + 4 + 8 + 4_000 + 3 + 9 + 11 + 16 + 3 + 4 + 7 + 5 + 3,
            TokenEstimator.CountAnthropicPrompt(request.RootElement));
    }

    [Fact]
    public void CountText_WithoutEncoding_IsTheUtf8ByteCount()
    {
        Assert.Equal(2, TokenEstimator.CountText("hello world", BpeEncoding.O200kBase));
        Assert.Equal(11, TokenEstimator.CountText("hello world", null));
        Assert.Equal(5, TokenEstimator.CountText("é日", null));
        Assert.Equal(0, TokenEstimator.CountText("", null));
    }

    [Fact]
    public void Counting_SteadyState_AllocatesNothing()
    {
        // A long text (pooled UTF-8 buffer, heap merge for the 300-letter run) and a chat request with escapes.
        var text = string.Concat(BpeEncodingTests.Vectors.Select(v => v.Text)) + new string('q', 300);
        using var request = JsonDocument.Parse(ToolRequest);
        long Count() => BpeEncoding.O200kBase.CountTokens(text) + BpeEncoding.Cl100kBase.CountTokens(text) +
                        TokenEstimator.CountChatPrompt(request.RootElement, BpeEncoding.O200kBase) +
                        TokenEstimator.CountChatPrompt(request.RootElement, null) + TokenEstimator.CountText(text, null);
        var expected = Count();

        var before = GC.GetAllocatedBytesForCurrentThread();
        long sum = 0;
        for (var i = 0; i < 20; i++) sum += Count();
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(20 * expected, sum);
        Assert.Equal(0, allocated);
    }
}
