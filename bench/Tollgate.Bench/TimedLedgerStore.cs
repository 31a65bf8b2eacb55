using System.Diagnostics;
using Tollgate.Features.Ledger;

namespace Tollgate.Bench;

/// <summary>
/// Forwards to the real store and times <see cref="ILedgerStore.Apply"/> (one call = one database
/// transaction = one group commit), so a run can say how big the batches were and how busy the writer loop was.
/// </summary>
internal sealed class TimedLedgerStore(ILedgerStore inner) : ILedgerStore, IAsyncDisposable
{
    private LatencyHistogram _apply = new();
    private long _transfers;
    private long _applyTicks;
    private Window _window = new(long.MaxValue, long.MaxValue, long.MaxValue);

    /// <summary>Counts only batches that finish inside <paramref name="window"/> from now on.</summary>
    public void Measure(Window window)
    {
        _apply = new LatencyHistogram();
        _transfers = 0;
        _applyTicks = 0;
        _window = window;
    }

    /// <summary>Batches that finished inside the window: how many, how many transfers, time inside Apply.</summary>
    public BatchStats Snapshot() => new(_apply.Count, _transfers, LatencyHistogram.ToMs(_applyTicks), _window.Seconds, _apply);

    public bool BeginsNextBatchEarly => inner.BeginsNextBatchEarly;

    public void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next)
    {
        var t0 = Stopwatch.GetTimestamp();
        inner.Apply(batch, nowMicros, next);
        var t1 = Stopwatch.GetTimestamp();
        if (!_window.Contains(t1)) return;
        // Only the single writer thread calls Apply, so nothing here needs locking.
        _apply.Record(t1 - t0);
        foreach (var c in batch) _transfers += c.Transfers.Count;
        _applyTicks += t1 - t0;
    }

    public Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount account, CancellationToken ct) => inner.CreateAccountAsync(account, ct);
    public Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount account, CancellationToken ct) => inner.EnsureAccountAsync(account, ct);
    public Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct) => inner.GetAccountAsync(id, ct);
    public Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct) => inner.SetCreditLimitAsync(id, creditLimitMicros, ct);
    public Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct) => inner.GetAccountsAsync(ids, ct);
    public Task<Transfer?> GetTransferAsync(string id, CancellationToken ct) => inner.GetTransferAsync(id, ct);
    public Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct) =>
        inner.GetStatementAsync(accountId, beforeVersion, limit, ct);
    public Task<IReadOnlyList<string>> GetExpiredPendingAsync(long nowMicros, int limit, CancellationToken ct) => inner.GetExpiredPendingAsync(nowMicros, limit, ct);
    public Task<LedgerAudit> AuditAsync(CancellationToken ct) => inner.AuditAsync(ct);

    public async ValueTask DisposeAsync()
    {
        if (inner is IAsyncDisposable d) await d.DisposeAsync();
    }
}

/// <summary>Group-commit statistics of one run; times in milliseconds.</summary>
internal sealed record BatchStats(long Batches, long Transfers, double ApplyMs, double WindowSeconds, LatencyHistogram Apply)
{
    public double MeanBatch => Batches == 0 ? 0 : Transfers / (double)Batches;

    /// <summary>Share of the window the writer loop spent inside Apply (1 = never idle).</summary>
    public double Busy => ApplyMs / (WindowSeconds * 1000);
}
