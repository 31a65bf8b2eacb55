using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Tollgate.Features.Gateway;

/// <summary>Which wire format a gateway route speaks, for its error bodies.</summary>
public enum ApiDialect { OpenAi, Anthropic }

/// <summary>
/// A gateway error. On OpenAI routes the body is <c>{"error":{"message","type","code","param"}}</c>; on the Anthropic
/// route it is Anthropic's <c>{"type":"error","error":{"type","message"}}</c> (plus our <c>code</c>), because that
/// is what each SDK parses. Status codes follow the contract: 401 invalid_api_key, 402 insufficient_credits,
/// 403 model_not_allowed, 404 model_not_found, 429 rate_limited, 502 upstream_error, 503 provider_unavailable,
/// 504 upstream_timeout.
/// </summary>
public sealed record GatewayError(int Status, string Code, string Message, string? Param = null, IReadOnlyDictionary<string, object?>? Extra = null)
    : IResult
{
    public ApiDialect Dialect { get; init; } = ApiDialect.OpenAi;

    public string OpenAiType => Status switch
    {
        402 => "insufficient_quota",
        429 => "rate_limit_error",
        403 => "permission_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    public string AnthropicType => Status switch
    {
        400 or 413 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 or 503 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    };

    public byte[] ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            if (Dialect == ApiDialect.Anthropic)
            {
                w.WriteString("type", "error");
                w.WriteStartObject("error");
                w.WriteString("type", AnthropicType);
                w.WriteString("message", Message);
                w.WriteString("code", Code);
            }
            else
            {
                w.WriteStartObject("error");
                w.WriteString("message", Message);
                w.WriteString("type", OpenAiType);
                w.WriteString("code", Code);
                if (Param is null) w.WriteNull("param"); else w.WriteString("param", Param);
            }
            if (Extra is not null)
                foreach (var (k, v) in Extra)
                {
                    w.WritePropertyName(k);
                    JsonSerializer.Serialize(w, v);
                }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    public async Task ExecuteAsync(HttpContext http)
    {
        http.Response.StatusCode = Status;
        http.Response.ContentType = "application/json";
        await http.Response.Body.WriteAsync(ToJson(), http.RequestAborted);
    }

    public static GatewayError BadRequest(string message, string? param = null, string code = "invalid_request") => new(400, code, message, param);

    public static GatewayError InvalidApiKey() => new(401, "invalid_api_key",
        "A valid Tollgate API key is required: send 'Authorization: Bearer tg_…' (or 'x-api-key' on /v1/messages). The key may be missing, unknown or revoked.");

    /// <summary>True for paths whose errors use a gateway dialect instead of problem details.</summary>
    public static bool IsGatewayPath(PathString path) => path.StartsWithSegments("/v1");

    public static ApiDialect DialectFor(PathString path) => path.StartsWithSegments("/v1/messages") ? ApiDialect.Anthropic : ApiDialect.OpenAi;
}
