using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Analytics;

/// <summary>Analytics settings. Configuration section <c>Tollgate:Analytics</c>.</summary>
public sealed record AnalyticsOptions
{
    public const string Section = "Tollgate:Analytics";

    /// <summary>
    /// PostgreSQL: how often new usage records are folded into the daily rollups. Summaries are exact whatever this is
    /// (they add the records not folded yet); a longer interval only means more such records to add.
    /// </summary>
    [Range(50, 3_600_000)]
    public int RollupFoldIntervalMs { get; init; } = 1_000;
}

/// <summary>
/// PostgreSQL only: folds usage records into usage_rollups in the background, off the ledger's commit path (see
/// migration 0024_usage_rollup_fold.sql for the horizon that keeps this exact). Several processes may run it; the
/// cursor row lets one fold at a time and the others skip that round.
/// </summary>
internal sealed partial class UsageRollupFolder(Database db, IOptions<AnalyticsOptions> options, ILogger<UsageRollupFolder> logger) : BackgroundService
{
    /// <summary>One fold; the number of rollup rows it touched, or −1 if another fold held the cursor.</summary>
    public async Task<long> FoldOnceAsync(CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand("SELECT usage_rollups_fold()", connection);
        return (long)(await cmd.ExecuteScalarAsync(ct))!;
    }

    // Real time, not the app's TimeProvider: this is housekeeping whose pace does not change any answer.
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => db.Engine != DatabaseEngine.Postgres
        ? Task.CompletedTask
        : Infrastructure.PeriodicWork.RunAsync(TimeSpan.FromMilliseconds(options.Value.RollupFoldIntervalMs), TimeProvider.System,
            FoldOnceAsync, LogFoldFailed, stoppingToken);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Folding usage records into rollups failed; summaries stay exact and the next round retries")]
    private partial void LogFoldFailed(Exception e);
}
