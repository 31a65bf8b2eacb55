using System.Diagnostics;
using Tollgate.Features.Admin;

namespace Tollgate.Infrastructure.Metrics;

internal static class MetricsEndpoints
{
    /// <summary>Counts every request by route template (not raw path: bounded labels), method and status, and times it.</summary>
    public static void UseRequestMetrics(WebApplication app)
    {
        var metrics = app.Services.GetRequiredService<TollgateMetrics>();
        app.Use(async (http, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            try
            {
                await next(http);
            }
            finally
            {
                var route = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
                metrics.HttpRequests.Add(1, new("route", route), new("method", http.Request.Method),
                    new("status", http.Response.StatusCode.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                metrics.HttpDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, new KeyValuePair<string, object?>("route", route));
            }
        });
    }

    /// <summary><c>GET /metrics</c>: Prometheus text format 0.0.4, for operators (admin key).</summary>
    public static void MapMetrics(IEndpointRouteBuilder routes) =>
        routes.MapGroup("/metrics").RequireAdminKey().WithTags("Operations").MapGet("/", async (PrometheusExporter exporter, Features.Ledger.HoldGauges holds, CancellationToken ct) =>
        {
            await holds.RefreshIfStaleAsync(ct);
            var writer = new StringWriter { NewLine = "\n" };
            exporter.Write(writer);
            return Results.Text(writer.ToString(), "text/plain; version=0.0.4; charset=utf-8");
        });
}
