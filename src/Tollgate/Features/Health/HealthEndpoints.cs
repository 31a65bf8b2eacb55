using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Health;

public sealed record HealthResponse(string Status, string Database, bool DatabaseReachable, string Version);

public sealed record ReadyResponse(string Status, bool DatabaseReachable, int SchemaVersion, int ExpectedSchemaVersion);

internal static class HealthEndpoints
{
    public static IEndpointRouteBuilder MapHealth(this IEndpointRouteBuilder routes)
    {
        routes.MapGet("/health", Health).WithTags("Health");
        // Liveness: the process answers. No dependency is checked, so a database outage never gets the process restarted.
        routes.MapGet("/health/live", () => TypedResults.Ok(new Dictionary<string, string> { ["status"] = "ok" })).WithTags("Health");
        routes.MapGet("/health/ready", Ready).WithTags("Health");
        return routes;
    }

    /// <summary>Readiness: the database answers and its schema is the one this build expects (every migration applied).</summary>
    private static async Task<Results<Ok<ReadyResponse>, JsonHttpResult<ReadyResponse>>> Ready(Database db, Migrator migrator, CancellationToken ct)
    {
        var expected = Migrator.Load(db.Engine)[^1].Version;
        try
        {
            var applied = await migrator.AppliedVersionsAsync(ct);
            var current = applied.Count == 0 ? 0 : applied[^1];
            var ready = current == expected;
            var body = new ReadyResponse(ready ? "ready" : "migrations_pending", true, current, expected);
            return ready ? TypedResults.Ok(body) : TypedResults.Json(body, statusCode: StatusCodes.Status503ServiceUnavailable);
        }
        catch (Exception e) when (DbErrors.Classify(e) != DbErrorKind.Other || e is InvalidOperationException or System.Net.Sockets.SocketException)
        {
            return TypedResults.Json(new ReadyResponse("database_unreachable", false, 0, expected), statusCode: StatusCodes.Status503ServiceUnavailable);
        }
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
