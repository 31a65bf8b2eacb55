using System.Text;
using Tollgate.Features.Gateway.Anthropic;
using static Tollgate.Tests.Gateway.Anthropic.AnthropicJson;

namespace Tollgate.Tests.Gateway.Anthropic;

public sealed class AnthropicErrorsTests
{
    private static string ToOpenAi(int status, string body) => ParsedText(AnthropicErrors.ToOpenAiError(status, Encoding.UTF8.GetBytes(body)));

    [Theory]
    [InlineData(400, "invalid_request_error", "max_tokens: Field required", "invalid_request_error", null)]
    [InlineData(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", "invalid_request_error", "context_length_exceeded")]
    [InlineData(401, "authentication_error", "invalid x-api-key", "authentication_error", "upstream_authentication_error")]
    [InlineData(402, "billing_error", "Your credit balance is too low", "server_error", "upstream_billing_error")]
    [InlineData(403, "permission_error", "Your API key does not have permission", "permission_error", "upstream_permission_error")]
    [InlineData(404, "not_found_error", "model: claude-9", "invalid_request_error", "not_found")]
    [InlineData(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", "invalid_request_error", "request_too_large")]
    [InlineData(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", "rate_limit_error", "rate_limit_exceeded")]
    [InlineData(500, "api_error", "Internal server error", "server_error", "upstream_error")]
    [InlineData(529, "overloaded_error", "Overloaded", "server_error", "overloaded")]
    [InlineData(418, "teapot_error", "short and stout", "invalid_request_error", "teapot_error")]
    public void ToOpenAiError_AnthropicErrorBody_MapsTypeAndCodeAndKeepsMessage(int status, string type, string message, string openAiType, string? code)
    {
        var body = $$"""{"type":"error","error":{"type":"{{type}}","message":"{{message}}"},"request_id":"req_011CS"}""";

        var actual = ToOpenAi(status, body);

        var expectedCode = code is null ? "null" : $"\"{code}\"";
        Assert.Equal($$$"""{"error":{"message":"{{{message}}}","type":"{{{openAiType}}}","code":{{{expectedCode}}},"param":null}}""", actual);
    }

    [Fact]
    public void ToOpenAiError_HtmlFromAProxy_QuotesTheBodyWithTheStatus()
    {
        var actual = Element(ToOpenAi(502, "<html><body>Bad Gateway</body></html>")).GetProperty("error");

        Assert.Equal("The Anthropic upstream returned HTTP 502: <html><body>Bad Gateway</body></html>", actual.GetProperty("message").GetString());
        Assert.Equal("server_error", actual.GetProperty("type").GetString());
        Assert.Equal(JsonValueKind.Null, actual.GetProperty("code").ValueKind);
    }

    [Theory]
    [InlineData(429, "", "rate_limit_error")]
    [InlineData(400, "   ", "invalid_request_error")]
    [InlineData(503, "{\"unexpected\":true}", "server_error")]
    [InlineData(400, "{\"type\":\"error\",\"error\":", "invalid_request_error")]
    public void ToOpenAiError_EmptyOrForeignBody_FallsBackOnStatus(int status, string body, string openAiType)
    {
        var actual = Element(ToOpenAi(status, body)).GetProperty("error");

        Assert.Equal(openAiType, actual.GetProperty("type").GetString());
        Assert.Contains($"HTTP {status}", actual.GetProperty("message").GetString());
    }

    [Fact]
    public void ToOpenAiError_HugeNonJsonBody_IsTruncated()
    {
        var actual = Element(ToOpenAi(500, new string('x', 10_000))).GetProperty("error").GetProperty("message").GetString()!;

        Assert.True(actual.Length < 600, actual.Length.ToString());
        Assert.EndsWith("…", actual);
    }

    [Theory]
    [InlineData(401, """{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}""", true)]
    [InlineData(400, """{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}""", true)]
    [InlineData(402, """{"type":"error","error":{"type":"billing_error","message":"x"}}""", true)]
    [InlineData(400, """{"type":"error","error":{"type":"permission_error","message":"x"}}""", true)]
    [InlineData(400, """{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}""", false)]
    [InlineData(429, """{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}""", false)]
    [InlineData(529, "not json", false)]
    public void IsOperatorProblem_UpstreamKeyOrCreditFailures_AreTheOperators(int status, string body, bool expected)
    {
        Assert.Equal(expected, AnthropicErrors.IsOperatorProblem(status, Encoding.UTF8.GetBytes(body)));
    }
}
