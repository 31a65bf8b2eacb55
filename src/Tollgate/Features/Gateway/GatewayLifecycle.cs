using Microsoft.Extensions.Options;

namespace Tollgate.Features.Gateway;

/// <summary>Counts gateway calls in flight, so shutdown can wait until every admitted call has settled its hold.</summary>
internal sealed class GatewayCallTracker
{
    private readonly CancellationTokenSource _deadline = new();
    private int _inFlight;

    /// <summary>Cancelled when shutdown's grace period is (nearly) over: calls still running end then, charged for what they delivered.</summary>
    public CancellationToken ShutdownDeadline => _deadline.Token;

    public void BeginShutdown(TimeSpan deadline) => _deadline.CancelAfter(deadline);

    public int InFlight => Volatile.Read(ref _inFlight);

    public void Enter() => Interlocked.Increment(ref _inFlight);

    public void Exit() => Interlocked.Decrement(ref _inFlight);

    /// <summary>True once no call is in flight; false if some still are after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitIdleAsync(TimeSpan timeout, TimeProvider time)
    {
        var started = time.GetTimestamp();
        while (InFlight > 0)
        {
            if (time.GetElapsedTime(started) >= timeout) return false;
            await Task.Delay(TimeSpan.FromMilliseconds(20), time);
        }
        return true;
    }
}

/// <summary>
/// The gateway's part of start and stop. Start: the shared rate-limit sync loop (PostgreSQL). Stop (SIGTERM, Ctrl+C):
/// the host stops Kestrel, which refuses new connections and lets requests in flight finish for up to
/// <see cref="GatewayOptions.ShutdownGraceSeconds"/> (the host's shutdown timeout) before aborting them. Shortly before
/// that deadline the gateway ends the calls still running itself (<see cref="GatewayCallTracker.ShutdownDeadline"/>:
/// a clean end of stream with <c>server_shutting_down</c>, settled for what was delivered), so none is cut by the
/// abort. Once Kestrel has stopped, this waits (bounded) until every gateway call has settled, then stops the sync loop
/// and gives back this process's concurrency leases. The ledger's queue is drained after this, when the host disposes
/// the <see cref="Ledger.LedgerService"/>.
/// </summary>
internal sealed partial class GatewayLifecycle(
    GatewayCallTracker calls,
    RateLimitSync sync,
    IOptions<GatewayOptions> options,
    TimeProvider time,
    ILogger<GatewayLifecycle> logger) : IHostedLifecycleService
{
    /// <summary>Time allowed after the grace period for aborted calls to settle their holds (a few ledger batches).</summary>
    private static readonly TimeSpan SettleTime = TimeSpan.FromSeconds(10);

    public Task StartingAsync(CancellationToken ct) => Task.CompletedTask;

    public Task StartAsync(CancellationToken ct)
    {
        sync.Start();
        return Task.CompletedTask;
    }

    public Task StartedAsync(CancellationToken ct) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken ct)
    {
        // Calls still running near the end of the grace period are ended by the gateway itself (a clean end of stream,
        // charged for what was delivered) shortly before Kestrel would abort their connections.
        var grace = TimeSpan.FromSeconds(options.Value.ShutdownGraceSeconds);
        calls.BeginShutdown(grace - TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(2).Ticks, grace.Ticks / 4)));
        if (calls.InFlight > 0) LogDraining(calls.InFlight, options.Value.ShutdownGraceSeconds);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;

    // The host's token has usually fired by now (Kestrel used the grace period); settling is bounded by SettleTime instead.
    public async Task StoppedAsync(CancellationToken ct)
    {
        if (!await calls.WaitIdleAsync(SettleTime, time)) LogUnsettled(calls.InFlight);
        await sync.StopAsync();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Shutting down: waiting up to {Seconds} s for {Count} gateway call(s) in flight")]
    private partial void LogDraining(int count, int seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Shutting down with {Count} gateway call(s) still settling; their holds expire and are voided")]
    private partial void LogUnsettled(int count);
}

/// <summary>
/// PostgreSQL: the loop that exchanges this process's rate-limit counts with the other processes every
/// <see cref="GatewayRateLimitOptions.SyncIntervalMs"/> (sooner — but at most every 10 ms — when a scope is new here or a
/// share was used up), one round trip per sync
/// for all scopes. A failed sync keeps the deltas for the next one; the limiter falls back to its own counts meanwhile.
/// </summary>
internal sealed partial class RateLimitSync(
    GatewayRateLimiter limiter,
    IRateLimitStore store,
    IOptions<GatewayRateLimitOptions> options,
    TimeProvider time,
    ILogger<RateLimitSync> logger)
{
    private static readonly TimeSpan CleanupEvery = TimeSpan.FromSeconds(30);
    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;

    /// <summary>This process in the shared tables: host, pid and a random part (pids repeat across restarts and hosts).</summary>
    public string ProcessId { get; init; } = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid().ToString("N")[..8]}";

    public void Start()
    {
        if (!limiter.Shared) return;
        limiter.SyncWanted += Wake;
        _loop = Task.Run(() => RunAsync(_stop.Token));
    }

    private void Wake()
    {
        try { _wake.Release(); } catch (SemaphoreFullException) { /* a wake-up is already pending */ }
    }

    /// <summary>Runs one sync now (tests, and the loop).</summary>
    public async Task SyncOnceAsync(CancellationToken ct)
    {
        var batch = limiter.CollectSync();
        try
        {
            var result = await store.SyncAsync(ProcessId, batch, TimeSpan.FromSeconds(options.Value.LeaseSeconds), ct);
            limiter.ApplySync(batch, result);
        }
        catch
        {
            limiter.RevertSync(batch);
            throw;
        }
    }

    private async Task RunAsync(CancellationToken ct)
    {
        var interval = TimeSpan.FromMilliseconds(options.Value.SyncIntervalMs);
        var lastCleanup = time.GetTimestamp();
        // Without limits in use there is nothing to exchange: only the heartbeat, a few times per lease, so other
        // processes count this one when they split a limit.
        var heartbeat = TimeSpan.FromSeconds(options.Value.LeaseSeconds) / 3;
        var lastSync = 0L;
        var failures = 0;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                if (limiter.HasScopes || lastSync == 0 || time.GetElapsedTime(lastSync) >= heartbeat)
                {
                    await SyncOnceAsync(ct);
                    lastSync = time.GetTimestamp();
                }
                failures = 0;
                if (time.GetElapsedTime(lastCleanup) > CleanupEvery)
                {
                    lastCleanup = time.GetTimestamp();
                    await store.CleanupAsync(GatewayRateLimiter.Clock.From(time.GetUtcNow()).Minute, ct);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // One line per outage, not one per 100 ms.
                if (failures++ == 0) LogSyncFailed(e);
            }
            try
            {
                // Wait the interval, or less if the limiter wants a sync — but never sync more often than every 10 ms.
                await Task.Delay(TimeSpan.FromMilliseconds(10), time, ct);
                await _wake.WaitAsync(interval - TimeSpan.FromMilliseconds(10), ct);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    public async Task StopAsync()
    {
        if (!limiter.Shared) return;
        limiter.SyncWanted -= Wake;
        await _stop.CancelAsync();
        await _loop;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await store.ForgetProcessAsync(ProcessId, timeout.Token);
        }
        catch (Exception e)
        {
            LogForgetFailed(e);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rate-limit sync failed; limits use this process's counts until it succeeds again")]
    private partial void LogSyncFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not give back the rate-limit leases; they lapse on their own")]
    private partial void LogForgetFailed(Exception e);
}
