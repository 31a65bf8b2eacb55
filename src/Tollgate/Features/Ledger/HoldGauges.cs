using Dapper;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Metrics;

namespace Tollgate.Features.Ledger;

/// <summary>
/// Feeds the <c>tollgate_ledger_holds_open</c> and <c>tollgate_ledger_held_microusd</c> gauges from one query over the
/// open holds (the partial index <c>ledger_transfers_open_holds</c>, so its cost follows the number of open holds, not
/// the ledger's size), run at most once per <c>Tollgate:Metrics:HoldGaugeRefreshMs</c> however often /metrics is scraped. It reads the
/// database rather than this process's memory because holds of every process sharing it count.
/// </summary>
internal sealed class HoldGauges(Database db, TollgateMetrics metrics, TimeProvider time, IConfiguration configuration)
{
    /// <summary><c>Tollgate:Metrics:HoldGaugeRefreshMs</c> (default 5000): how old the gauges may be before a scrape re-reads them.</summary>
    private readonly TimeSpan MaxAge = TimeSpan.FromMilliseconds(configuration.GetValue("Tollgate:Metrics:HoldGaugeRefreshMs", 5000));

    private readonly SemaphoreSlim _refreshing = new(1, 1);
    private DateTimeOffset _refreshedAt = DateTimeOffset.MinValue;

    private sealed record Row(long holds, long micros);

    public async Task RefreshIfStaleAsync(CancellationToken ct)
    {
        if (time.GetUtcNow() - _refreshedAt < MaxAge) return;
        await _refreshing.WaitAsync(ct);
        try
        {
            if (time.GetUtcNow() - _refreshedAt < MaxAge) return;
            await using var c = await db.OpenAsync(ct);
            var row = await c.QuerySingleAsync<Row>(new CommandDefinition(
                "SELECT count(*) AS holds, CAST(coalesce(sum(amount), 0) AS bigint) AS micros FROM ledger_transfers WHERE status = 1", cancellationToken: ct));
            metrics.SetHolds(row.holds, row.micros);
            _refreshedAt = time.GetUtcNow();
        }
        finally
        {
            _refreshing.Release();
        }
    }
}
