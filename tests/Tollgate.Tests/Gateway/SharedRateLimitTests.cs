using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Tollgate.Features.Gateway;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Data;
using Tollgate.Tests.Ledger;

namespace Tollgate.Tests.Gateway;

/// <summary>
/// The shared rate limiter on a real PostgreSQL database: two limiters with their own sync loops stand for two gateway
/// processes (each sync is run by hand, so the interleaving is exact), exchanging counts only through the store.
/// </summary>
public sealed class SharedRateLimitTests
{
    private sealed record Process(GatewayRateLimiter Limiter, RateLimitSync Sync);

    /// <param name="id">The process id; ids order the processes for the remainder of a split (the lower id gets it).</param>
    /// <param name="clock">
    /// Wall clock of the limiter: fixed at a whole minute, so the windows do not roll during the test and the turn of
    /// the remainder (which rotates every second) is the process's rank. Leases still lapse on PostgreSQL's clock.
    /// </param>
    private static Process NewProcess(Database db, string id, int leaseSeconds = 5, TimeProvider? clock = null)
    {
        clock ??= new ManualTimeProvider(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero));
        var options = Options.Create(new GatewayRateLimitOptions { LeaseSeconds = leaseSeconds });
        var limiter = new GatewayRateLimiter(options, clock, db);
        Assert.True(limiter.Shared);
        return new Process(limiter, new RateLimitSync(limiter, new PostgresRateLimitStore(db), options, clock, NullLogger<RateLimitSync>.Instance) { ProcessId = id });
    }

    private static KeySettings Rpm(int rpm) => new() { RequestsPerMinute = rpm };

    private static int Admit(Process p, string key, int attempts, KeySettings settings)
    {
        var admitted = 0;
        for (var i = 0; i < attempts; i++)
            if (p.Limiter.TryAcquire(key, "acct_x", 10, settings) is null)
            {
                admitted++;
                p.Limiter.Release(key, "acct_x", 10);
            }
        return admitted;
    }

    [Fact]
    public async Task Requests_per_minute_add_up_across_processes_through_the_store()
    {
        await using var db = await TestDatabases.CreateMigratedAsync(TestDatabases.Postgres);
        var a = NewProcess(db, "p-a");
        var b = NewProcess(db, "p-b");
        // Both announce themselves, so each knows there are two live processes.
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);
        await a.Sync.SyncOnceAsync(default);

        // Limit 10, two processes: between syncs each may admit only its share of what was left at its last sync —
        // half, the odd one to the process whose turn it is (at this fixed second, the lower id: A) — so a burst arriving at both at once cannot be admitted twice over.
        Assert.Equal(1, Admit(b, "key_1", 1, Rpm(10)));
        await b.Sync.SyncOnceAsync(default);
        await a.Sync.SyncOnceAsync(default);
        // A has not used the scope before, so it knows nothing of B's call yet: its share is 10 / 2.
        Assert.Equal(5, Admit(a, "key_1", 8, Rpm(10)));
        var refused = a.Limiter.TryAcquire("key_1", "acct_x", 10, Rpm(10));
        Assert.Equal(("key", "requests_per_minute"), (refused!.Value.Scope, refused.Value.Limit));
        Assert.Equal(TimeSpan.FromSeconds(1), refused.Value.RetryAfter);

        // Each sync writes a process's counts and reads the others'; the shares of what is left shrink to the limit.
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);
        Assert.Equal(2, Admit(b, "key_1", 10, Rpm(10)));  // 4 left: 2 each
        await b.Sync.SyncOnceAsync(default);
        await a.Sync.SyncOnceAsync(default);
        Assert.Equal(1, Admit(a, "key_1", 10, Rpm(10)));  // 2 left: 1 each
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);
        Assert.Equal(0, Admit(b, "key_1", 10, Rpm(10)));  // 1 left: A's
        await b.Sync.SyncOnceAsync(default);
        await a.Sync.SyncOnceAsync(default);
        Assert.Equal(1, Admit(a, "key_1", 10, Rpm(10)));
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);

        // The minute's budget is spent everywhere: both refuse until the window slides, with a Retry-After to its end.
        var aRefused = a.Limiter.TryAcquire("key_1", "acct_x", 10, Rpm(10));
        var bRefused = b.Limiter.TryAcquire("key_1", "acct_x", 10, Rpm(10));
        Assert.NotNull(aRefused);
        Assert.NotNull(bRefused);
        Assert.InRange(aRefused.Value.RetryAfter, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(60));

        // The store holds the sum of both processes' counts for the scope.
        await using var connection = await db.OpenPostgresAsync(default);
        await using var cmd = new Npgsql.NpgsqlCommand("SELECT sum(requests)::int, count(*)::int FROM rate_windows WHERE scope = 'k:key_1'", connection);
        await using var reader = await cmd.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal(10, reader.GetInt32(0));
        // Another key is not affected (A's share of a fresh scope).
        Assert.Equal(5, Admit(a, "key_2", 8, Rpm(10)));
    }

    [Fact]
    public async Task Concurrency_slots_are_leased_and_a_process_that_stops_syncing_frees_them_when_its_lease_lapses()
    {
        await using var db = await TestDatabases.CreateMigratedAsync(TestDatabases.Postgres);
        var a = NewProcess(db, "p-a", leaseSeconds: 1);
        var b = NewProcess(db, "p-b", leaseSeconds: 1);
        var limits = new KeySettings { ConcurrentRequests = 3 };
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);

        // A holds two calls open; after the exchange B may start only one more.
        await a.Sync.SyncOnceAsync(default);
        Assert.Null(a.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
        await a.Sync.SyncOnceAsync(default);
        Assert.Null(a.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
        await a.Sync.SyncOnceAsync(default);
        await b.Sync.SyncOnceAsync(default);
        Assert.Null(b.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
        await b.Sync.SyncOnceAsync(default);
        var refused = b.Limiter.TryAcquire("key_c", "acct_x", 1, limits);
        Assert.Equal("concurrent_requests", refused!.Value.Limit);

        // A dies with its two calls open: it never syncs again. Its leases lapse after a second; B's stay renewed.
        await Task.Delay(TimeSpan.FromMilliseconds(1_300));
        await b.Sync.SyncOnceAsync(default);
        Assert.Null(b.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
        await b.Sync.SyncOnceAsync(default);
        Assert.Null(b.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
        await b.Sync.SyncOnceAsync(default);
        Assert.NotNull(b.Limiter.TryAcquire("key_c", "acct_x", 1, limits));

        // A clean stop gives the leases back at once.
        await b.Sync.StopAsync();
        var c = NewProcess(db, "p-c", leaseSeconds: 1);
        await c.Sync.SyncOnceAsync(default);
        for (var i = 0; i < 3; i++)
        {
            Assert.Null(c.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
            await c.Sync.SyncOnceAsync(default);
        }
        Assert.NotNull(c.Limiter.TryAcquire("key_c", "acct_x", 1, limits));
    }

    [Fact]
    public async Task The_remainder_turns_every_second_so_a_limit_below_the_process_count_shuts_no_process_out()
    {
        await using var db = await TestDatabases.CreateMigratedAsync(TestDatabases.Postgres);
        var clock = new ManualTimeProvider(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero));
        var processes = new[] { NewProcess(db, "p-a", clock: clock), NewProcess(db, "p-b", clock: clock), NewProcess(db, "p-c", clock: clock) };
        foreach (var p in processes) await p.Sync.SyncOnceAsync(default);
        foreach (var p in processes) await p.Sync.SyncOnceAsync(default);

        // Limit 1 request per minute across three processes: in any one second exactly one of them may take it, and
        // each gets that turn within three seconds. Only C sees traffic here.
        var c = processes[2];
        var admittedAt = -1;
        for (var second = 0; second < 3 && admittedAt < 0; second++)
        {
            if (c.Limiter.TryAcquire("key_t", "acct_x", 1, Rpm(1)) is null) admittedAt = second;
            clock.Advance(TimeSpan.FromSeconds(1));
        }
        // 12:00:00 is a multiple of three seconds: C's turn is (rank 2 + step) mod 3, and turn 0 holds the single unit.
        Assert.Equal(1, admittedAt);
        c.Limiter.Release("key_t", "acct_x", 1);
        await c.Sync.SyncOnceAsync(default);
        // The minute's one request is taken: refused now whatever the turn.
        for (var second = 0; second < 3; second++)
        {
            Assert.Equal("requests_per_minute", c.Limiter.TryAcquire("key_t", "acct_x", 1, Rpm(1))?.Limit);
            clock.Advance(TimeSpan.FromSeconds(1));
        }
    }

    [Fact]
    public async Task A_failed_sync_keeps_the_counts_for_the_next_one()
    {
        await using var db = await TestDatabases.CreateMigratedAsync(TestDatabases.Postgres);
        var a = NewProcess(db, "p-a");
        await a.Sync.SyncOnceAsync(default);
        Assert.Equal(4, Admit(a, "key_f", 4, Rpm(100)));
        using (var cancelled = new CancellationTokenSource())
        {
            await cancelled.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a.Sync.SyncOnceAsync(cancelled.Token));
        }
        await a.Sync.SyncOnceAsync(default);
        await using var connection = await db.OpenPostgresAsync(default);
        await using var cmd = new Npgsql.NpgsqlCommand("SELECT coalesce(sum(requests), 0)::int FROM rate_windows WHERE scope = 'k:key_f'", connection);
        Assert.Equal(4, (int)(await cmd.ExecuteScalarAsync())!);
    }
}
