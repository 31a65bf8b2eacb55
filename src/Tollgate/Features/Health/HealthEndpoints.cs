using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Health;

public sealed record HealthResponse(string Status, string Database, bool DatabaseReachable, string Version);

internal static class HealthEndpoints
{
    public static IEndpointRouteBuilder MapHealth(this IEndpointRouteBuilder routes)
    {
        routes.MapGet("/health", Health).WithTags("Health");
        return routes;
    }

    private static async Task<Results<Ok<HealthResponse>, JsonHttpResult<HealthResponse>>> Health(Database db, CancellationToken ct)
    {
        var engine = db.Engine == DatabaseEngine.Postgres ? "postgresql" : "sqlite";
        var version = typeof(HealthEndpoints).Assembly.GetName().Version?.ToString() ?? "0";
        try
        {
            await using var c = await db.OpenAsync(ct);
            await using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT 1";
            await cmd.ExecuteScalarAsync(ct);
            return TypedResults.Ok(new HealthResponse("ok", engine, true, version));
        }
        catch (Exception e) when (DbErrors.Classify(e) != DbErrorKind.Other || e is InvalidOperationException or System.Net.Sockets.SocketException)
        {
            return TypedResults.Json(new HealthResponse("degraded", engine, false, version), statusCode: StatusCodes.Status503ServiceUnavailable);
        }
    }
}
