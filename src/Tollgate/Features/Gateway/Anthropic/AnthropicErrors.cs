using System.Text;
using System.Text.Json;

namespace Tollgate.Features.Gateway.Anthropic;

/// <summary>
/// Anthropic error bodies (<c>{"type":"error","error":{"type","message"},"request_id"}</c>, over HTTP or as an
/// in-stream <c>error</c> event) → OpenAI error bodies (<c>{"error":{"message","type","code","param"}}</c>).
/// <list type="table">
/// <listheader><term>Anthropic error.type</term><description>OpenAI type / code</description></listheader>
/// <item><term>invalid_request_error</term><description>invalid_request_error / null (<c>context_length_exceeded</c>
/// when the message says the prompt is too long, so OpenAI clients' context handling works)</description></item>
/// <item><term>request_too_large</term><description>invalid_request_error / request_too_large</description></item>
/// <item><term>not_found_error</term><description>invalid_request_error / not_found</description></item>
/// <item><term>authentication_error</term><description>authentication_error / upstream_authentication_error</description></item>
/// <item><term>permission_error</term><description>permission_error / upstream_permission_error</description></item>
/// <item><term>billing_error</term><description>server_error / upstream_billing_error</description></item>
/// <item><term>rate_limit_error</term><description>rate_limit_error / rate_limit_exceeded</description></item>
/// <item><term>api_error</term><description>server_error / upstream_error</description></item>
/// <item><term>overloaded_error</term><description>server_error / overloaded</description></item>
/// <item><term>timeout_error</term><description>server_error / timeout</description></item>
/// <item><term>anything else, or a body that is not Anthropic JSON</term><description>by HTTP status: 429 →
/// rate_limit_error, other 4xx → invalid_request_error, else server_error; code = Anthropic's type or null; the
/// message quotes the start of the body</description></item>
/// </list>
/// The HTTP status the client gets is the gateway's decision; <see cref="IsOperatorProblem"/> tells it which upstream
/// failures are the operator's (bad or unfunded upstream key) and should not be passed through as the user's fault.
/// </summary>
public static class AnthropicErrors
{
    /// <summary>Longest piece of a non-JSON upstream body quoted in the message (characters).</summary>
    private const int MaxQuotedBody = 500;

    /// <summary>An upstream error response → OpenAI error JSON (UTF-8). Tolerates empty and non-JSON bodies.</summary>
    /// <param name="status">Upstream HTTP status (0 when unknown, e.g. an in-stream error).</param>
    public static byte[] ToOpenAiError(int status, ReadOnlySpan<byte> anthropicErrorBody)
    {
        var (type, message) = Parse(status, anthropicErrorBody);
        var (openAiType, code) = Map(type, status, message);
        return OpenAiJson.Write(w => WriteError(w, message, openAiType, code));
    }

    /// <summary>
    /// True when the failure is the gateway operator's to fix, not the caller's: the upstream key is invalid or lacks
    /// permission (401/403, authentication_error, permission_error) or the upstream account is out of credit (402,
    /// billing_error, or Anthropic's historical 400 "credit balance is too low"). The gateway should answer 502 and
    /// alert rather than pass these through.
    /// </summary>
    public static bool IsOperatorProblem(int status, ReadOnlySpan<byte> anthropicErrorBody)
    {
        if (status is 401 or 402 or 403) return true;
        var (type, message) = Parse(status, anthropicErrorBody);
        return type is "authentication_error" or "permission_error" or "billing_error"
               || (type == "invalid_request_error" && message.Contains("credit balance is too low", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Anthropic's <c>error.type</c> (null if the body is not Anthropic's error JSON) and a message.</summary>
    internal static (string? Type, string Message) Parse(int status, ReadOnlySpan<byte> body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            if (JsonDocument.TryParseValue(ref reader, out var doc))
            {
                using (doc)
                {
                    if (doc.RootElement.ValueKind == JsonValueKind.Object
                        && doc.RootElement.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object)
                        return FromErrorObject(error, status);
                }
            }
        }
        catch (JsonException)
        {
            // Not JSON (an HTML page from a proxy, a truncated body): quote it below.
        }
        var text = Encoding.UTF8.GetString(body).Trim();
        if (text.Length > MaxQuotedBody) text = text[..MaxQuotedBody] + "…";
        var statusText = status > 0 ? $" HTTP {status}" : "";
        return (null, text.Length == 0 ? $"The Anthropic upstream returned{statusText} with no error details." : $"The Anthropic upstream returned{statusText}: {text}");
    }

    /// <summary>The <c>error</c> object of an Anthropic error body or in-stream error event.</summary>
    internal static (string? Type, string Message) FromErrorObject(JsonElement error, int status)
    {
        var type = ChatToMessages.StringOrNull(error, "type");
        var message = ChatToMessages.StringOrNull(error, "message");
        if (string.IsNullOrEmpty(message)) message = $"The Anthropic upstream reported {type ?? "an error"}{(status > 0 ? $" (HTTP {status})" : "")}.";
        return (type, message);
    }

    /// <summary>Anthropic error type (and HTTP status, 0 if unknown) → OpenAI (type, code); see the class table.</summary>
    internal static (string Type, string? Code) Map(string? anthropicType, int status, string message) => anthropicType switch
    {
        "invalid_request_error" when message.Contains("prompt is too long", StringComparison.OrdinalIgnoreCase)
            => ("invalid_request_error", "context_length_exceeded"),
        "invalid_request_error" => ("invalid_request_error", null),
        "request_too_large" => ("invalid_request_error", "request_too_large"),
        "not_found_error" => ("invalid_request_error", "not_found"),
        "authentication_error" => ("authentication_error", "upstream_authentication_error"),
        "permission_error" => ("permission_error", "upstream_permission_error"),
        "billing_error" => ("server_error", "upstream_billing_error"),
        "rate_limit_error" => ("rate_limit_error", "rate_limit_exceeded"),
        "api_error" => ("server_error", "upstream_error"),
        "overloaded_error" => ("server_error", "overloaded"),
        "timeout_error" => ("server_error", "timeout"),
        _ => (status switch
        {
            429 => "rate_limit_error",
            >= 400 and < 500 => "invalid_request_error",
            _ => "server_error",
        }, anthropicType),
    };

    internal static void WriteError(Utf8JsonWriter w, string message, string type, string? code)
    {
        w.WriteStartObject();
        w.WriteStartObject("error");
        w.WriteString("message", message);
        w.WriteString("type", type);
        if (code is null) w.WriteNull("code");
        else w.WriteString("code", code);
        w.WriteNull("param");
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
