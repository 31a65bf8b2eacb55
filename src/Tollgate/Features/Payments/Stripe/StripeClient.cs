using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>A Stripe API error: the HTTP status and Stripe's <c>error</c> object (or a transport failure, status 0).</summary>
public sealed class StripeException(int status, string? type, string? code, string message) : Exception(message)
{
    public int Status { get; } = status;
    public string? Type { get; } = type;
    public string? Code { get; } = code;
}

/// <summary>
/// Stripe's REST API by hand: form-encoded POSTs with bracket nesting, a Bearer secret key, a pinned
/// <c>Stripe-Version</c>, and an <c>Idempotency-Key</c> on every POST. A connection failure, 429 or 5xx is retried
/// with the same key (Stripe replays the first result for it), so a retry never creates a second object; so is a 409
/// (the same key in use by a concurrent request).
/// </summary>
internal sealed partial class StripeClient(IHttpClientFactory http, IOptions<StripeOptions> options, ILogger<StripeClient> logger)
{
    public const string HttpClientName = "stripe";
    private readonly StripeOptions _options = options.Value;

    public Task<JsonElement> PostAsync(string path, IReadOnlyList<KeyValuePair<string, string>> form, string idempotencyKey, CancellationToken ct) =>
        SendAsync(HttpMethod.Post, path, form, idempotencyKey, ct);

    public Task<JsonElement> GetAsync(string path, CancellationToken ct) => SendAsync(HttpMethod.Get, path, null, null, ct);

    private async Task<JsonElement> SendAsync(HttpMethod method, string path, IReadOnlyList<KeyValuePair<string, string>>? form, string? idempotencyKey, CancellationToken ct)
    {
        var client = http.CreateClient(HttpClientName);
        for (var attempt = 1; ; attempt++)
        {
            using var request = new HttpRequestMessage(method, new Uri(new Uri(_options.ApiBaseUrl.TrimEnd('/') + "/"), path.TrimStart('/')));
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.ResolvedSecretKey);
            request.Headers.TryAddWithoutValidation("Stripe-Version", _options.ApiVersion);
            if (idempotencyKey is not null) request.Headers.TryAddWithoutValidation("Idempotency-Key", idempotencyKey);
            if (form is not null) request.Content = new FormUrlEncodedContent(form);
            HttpResponseMessage response;
            try
            {
                response = await client.SendAsync(request, ct);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                if (attempt < _options.MaxAttempts) { await BackoffAsync(attempt, ct); continue; }
                throw new StripeException(0, "api_connection_error", null, $"Stripe could not be reached: {e.Message}");
            }
            using (response)
            {
                var body = await response.Content.ReadAsStringAsync(ct);
                if (response.IsSuccessStatusCode) return JsonDocument.Parse(body).RootElement.Clone();
                var status = (int)response.StatusCode;
                LogError(logger, method.Method, path, status, response.Headers.TryGetValues("Request-Id", out var ids) ? ids.FirstOrDefault() : null);
                // 409 with a key: another request with the same key is still executing (two first checkouts of one account
                // creating its customer at once). Stripe saved nothing for this one, so the same key is retried and then
                // answered with the first request's result.
                var retryable = status >= 500 || response.StatusCode == HttpStatusCode.TooManyRequests
                                || response.StatusCode == HttpStatusCode.Conflict && idempotencyKey is not null;
                if (retryable && attempt < _options.MaxAttempts)
                {
                    await BackoffAsync(attempt, ct);
                    continue;
                }
                throw Error(status, body);
            }
        }
    }

    private static Task BackoffAsync(int attempt, CancellationToken ct) => Task.Delay(TimeSpan.FromMilliseconds(200 * (1 << (attempt - 1))), ct);

    private static StripeException Error(int status, string body)
    {
        try
        {
            var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
            string? S(string name) => error.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            return new StripeException(status, S("type"), S("code"), S("message") ?? "Stripe refused the request.");
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return new StripeException(status, null, null, $"Stripe answered {status}.");
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stripe {Method} {Path} answered {Status} (request {RequestId})")]
    private static partial void LogError(ILogger logger, string method, string path, int status, string? requestId);
}
