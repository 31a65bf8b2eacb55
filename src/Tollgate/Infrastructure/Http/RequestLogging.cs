using System.Diagnostics;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;

namespace Tollgate.Infrastructure.Http;

/// <summary>
/// The request id of one HTTP request: the client's <c>x-request-id</c> when it is sane (1–128 characters of
/// <c>A–Z a–z 0–9 . _ : -</c>), else a new <c>req_…</c> id. <see cref="FromClient"/> tells the two apart: an id chosen
/// by a client is only a label (it may repeat), so nothing that must be unique (holds, usage records) is keyed on it.
/// </summary>
public sealed record RequestId(string Value, bool FromClient);

/// <summary>
/// Request ids, a logging scope carrying <c>request_id</c> around everything a request logs, and one access line per
/// request (method, route template, status, duration, key id and account id when known — never a credential).
/// </summary>
public static partial class RequestLogging
{
    public const string Header = "x-request-id";
    public const int MaxInboundLength = 128;
    private const string Item = "tollgate.request_id";

    /// <summary>The request's id, set by the middleware before anything else runs.</summary>
    public static RequestId GetRequestId(this HttpContext http) =>
        http.Items[Item] as RequestId ?? new RequestId(http.TraceIdentifier, FromClient: false);

    /// <summary>The matched route's template without a trailing slash (<c>/api/v1/keys</c>, not <c>/api/v1/keys/</c>), or null.</summary>
    public static string? RouteTemplate(this HttpContext http) =>
        (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText is { } raw ? raw.Length > 1 ? raw.TrimEnd('/') : raw : null;

    /// <summary>True for an inbound id we are willing to echo and log: bounded length, no characters that could forge a log line or header.</summary>
    public static bool IsAcceptable(string? value)
    {
        if (string.IsNullOrEmpty(value) || value.Length > MaxInboundLength) return false;
        foreach (var c in value)
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or ':' or '-')) return false;
        return true;
    }

    public static void UseRequestIds(WebApplication app)
    {
        var access = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Tollgate.Access");
        app.Use(async (http, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            var inbound = http.Request.Headers[Header];
            var id = inbound.Count == 1 && IsAcceptable(inbound[0])
                ? new RequestId(inbound[0]!, FromClient: true)
                : new RequestId(Features.Gateway.GatewayHandler.NewRequestId(), FromClient: false);
            http.Items[Item] = id;
            http.TraceIdentifier = id.Value;
            // OnStarting, not now: the exception handler clears headers before it writes an error response.
            http.Response.OnStarting(static state =>
            {
                var (h, v) = ((HttpContext, string))state;
                h.Response.Headers[Header] = v;
                return Task.CompletedTask;
            }, (http, id.Value));
            using var scope = access.BeginScope(new RequestScope(id.Value));
            try
            {
                await next(http);
            }
            finally
            {
                if (access.IsEnabled(LogLevel.Information))
                {
                    var caller = http.TryGetCaller();
                    LogAccess(access, http.Request.Method, http.RouteTemplate() ?? "unmatched",
                        http.Response.StatusCode, Math.Round(Stopwatch.GetElapsedTime(started).TotalMilliseconds, 3),
                        caller?.KeyId ?? (http.Items.TryGetValue(Features.Admin.AdminAuthFilter.ActorItem, out var admin) ? admin as string : null), caller?.AccountId);
                }
            }
        });
    }

    [LoggerMessage(EventId = 1, EventName = "access", Level = LogLevel.Information,
        Message = "{Method} {Route} {Status} {DurationMs} ms key={KeyId} account={AccountId}")]
    private static partial void LogAccess(ILogger logger, string method, string route, int status, double durationMs, string? keyId, string? accountId);

    /// <summary>The logging scope state: one pair, so JSON output carries <c>"request_id": "…"</c> in the scope object.</summary>
    private sealed class RequestScope(string requestId) : IReadOnlyList<KeyValuePair<string, object?>>
    {
        public KeyValuePair<string, object?> this[int index] =>
            index == 0 ? new("request_id", requestId) : throw new ArgumentOutOfRangeException(nameof(index));
        public int Count => 1;
        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() { yield return this[0]; }
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
        public override string ToString() => "request_id=" + requestId;
    }

    public const string FormatJson = "json", FormatText = "text";

    /// <summary>
    /// <c>Tollgate:Logging:Format</c>: <c>json</c> (default: one JSON object a line, scopes included, UTC timestamps)
    /// or <c>text</c> (single-line plain text for local development). Both carry the request id of the request in scope.
    /// </summary>
    public static void ConfigureConsole(WebApplicationBuilder builder)
    {
        var format = builder.Configuration["Tollgate:Logging:Format"] is { Length: > 0 } f ? f.Trim().ToLowerInvariant() : FormatJson;
        if (format is not (FormatJson or FormatText))
            throw new OptionsValidationException("Tollgate:Logging:Format", typeof(string), [$"Tollgate:Logging:Format must be '{FormatJson}' or '{FormatText}', not '{format}'."]);
        if (format == FormatJson)
            builder.Logging.AddJsonConsole(o =>
            {
                o.IncludeScopes = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";
                o.JsonWriterOptions = new System.Text.Json.JsonWriterOptions { Indented = false };
            });
        else
            builder.Logging.AddSimpleConsole(o =>
            {
                o.IncludeScopes = true;
                o.SingleLine = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z' ";
                o.ColorBehavior = LoggerColorBehavior.Disabled;
            });
    }
}
