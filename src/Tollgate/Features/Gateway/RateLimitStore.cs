using Npgsql;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Gateway;

/// <summary>The shared state of the gateway rate limits (PostgreSQL, migration 0022).</summary>
internal interface IRateLimitStore
{
    /// <summary>
    /// One round trip: renews the process's heartbeat, adds its deltas to the shared minute windows, replaces its leases
    /// (calls in flight per scope), and reads back the global counts of <paramref name="batch"/>'s active scopes, the
    /// other processes' live leases on them and the number of live processes.
    /// </summary>
    Task<RateSyncResult> SyncAsync(string processId, RateSyncBatch batch, TimeSpan leaseTime, CancellationToken ct);

    /// <summary>Deletes minute windows older than the sliding window needs, and lapsed leases and processes.</summary>
    Task CleanupAsync(long currentMinute, CancellationToken ct);

    /// <summary>A process leaving cleanly gives back its leases at once instead of letting them lapse.</summary>
    Task ForgetProcessAsync(string processId, CancellationToken ct);
}

internal sealed class PostgresRateLimitStore(Database db) : IRateLimitStore
{
    public async Task<RateSyncResult> SyncAsync(string processId, RateSyncBatch batch, TimeSpan leaseTime, CancellationToken ct)
    {
        // Rows are written in one global order, so two processes adding to the same windows cannot deadlock.
        var deltas = batch.Deltas.OrderBy(d => d.Scope, StringComparer.Ordinal).ThenBy(d => d.Minute).ToList();
        await using var connection = await db.OpenPostgresAsync(ct);
        // One batch is one implicit transaction and one round trip; the reads see the writes before them.
        await using var sync = new NpgsqlBatch(connection);
        sync.BatchCommands.Add(Command("""
            INSERT INTO gateway_processes (process_id, started_at, heartbeat_at, expires_at) VALUES ($1, now(), now(), now() + $2)
            ON CONFLICT (process_id) DO UPDATE SET heartbeat_at = now(), expires_at = excluded.expires_at
            """, processId, leaseTime));
        if (deltas.Count > 0)
            sync.BatchCommands.Add(Command("""
                INSERT INTO rate_windows AS w (scope, window_minute, requests, tokens)
                SELECT scope, window_minute, requests, tokens FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                    WITH ORDINALITY AS d(scope, window_minute, requests, tokens, n)
                ORDER BY n
                ON CONFLICT (scope, window_minute) DO UPDATE SET requests = w.requests + excluded.requests, tokens = w.tokens + excluded.tokens
                """, deltas.Select(d => d.Scope).ToArray(), deltas.Select(d => d.Minute).ToArray(),
                deltas.Select(d => d.Requests).ToArray(), deltas.Select(d => d.Tokens).ToArray()));
        var leaseScopes = batch.Leases.Select(l => l.Scope).ToArray();
        sync.BatchCommands.Add(Command("DELETE FROM rate_leases WHERE process_id = $1 AND scope <> ALL($2)", processId, leaseScopes));
        if (leaseScopes.Length > 0)
            sync.BatchCommands.Add(Command("""
                INSERT INTO rate_leases (scope, process_id, in_flight, expires_at)
                SELECT scope, $1, in_flight, now() + $4 FROM unnest($2::text[], $3::int[]) AS l(scope, in_flight)
                ON CONFLICT (scope, process_id) DO UPDATE SET in_flight = excluded.in_flight, expires_at = excluded.expires_at
                """, processId, leaseScopes, batch.Leases.Select(l => l.InFlight).ToArray(), leaseTime));
        var active = batch.Active.ToArray();
        sync.BatchCommands.Add(Command(
            "SELECT scope, window_minute, requests, tokens FROM rate_windows WHERE scope = ANY($1) AND window_minute >= $2 AND window_minute <= $3",
            active, batch.Minute - 1, batch.Minute));
        sync.BatchCommands.Add(Command("""
            SELECT scope, sum(in_flight)::int FROM rate_leases
            WHERE scope = ANY($1) AND process_id <> $2 AND expires_at > now() GROUP BY scope
            """, active, processId));
        sync.BatchCommands.Add(Command(
            "SELECT count(*)::int, (count(*) FILTER (WHERE process_id < $1))::int FROM gateway_processes WHERE expires_at > now()", processId));

        var windows = new Dictionary<(string, long), (long, long)>();
        var inFlight = new Dictionary<string, int>(StringComparer.Ordinal);
        var (live, rank) = (1, 0);
        await using var reader = await sync.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) windows[(reader.GetString(0), reader.GetInt64(1))] = (reader.GetInt64(2), reader.GetInt64(3));
        await reader.NextResultAsync(ct);
        while (await reader.ReadAsync(ct)) inFlight[reader.GetString(0)] = reader.GetInt32(1);
        await reader.NextResultAsync(ct);
        if (await reader.ReadAsync(ct)) (live, rank) = (reader.GetInt32(0), reader.GetInt32(1));
        return new RateSyncResult(windows, inFlight, live, rank);
    }

    public async Task CleanupAsync(long currentMinute, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cleanup = new NpgsqlBatch(connection);
        cleanup.BatchCommands.Add(Command("DELETE FROM rate_windows WHERE window_minute < $1", currentMinute - 2));
        cleanup.BatchCommands.Add(Command("DELETE FROM rate_leases WHERE expires_at < now()"));
        cleanup.BatchCommands.Add(Command("DELETE FROM gateway_processes WHERE expires_at < now() - interval '1 hour'"));
        await cleanup.ExecuteNonQueryAsync(ct);
    }

    public async Task ForgetProcessAsync(string processId, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var forget = new NpgsqlBatch(connection);
        forget.BatchCommands.Add(Command("DELETE FROM rate_leases WHERE process_id = $1", processId));
        forget.BatchCommands.Add(Command("DELETE FROM gateway_processes WHERE process_id = $1", processId));
        await forget.ExecuteNonQueryAsync(ct);
    }

    private static NpgsqlBatchCommand Command(string sql, params object[] values)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var v in values) command.Parameters.Add(new NpgsqlParameter { Value = v });
        return command;
    }
}
