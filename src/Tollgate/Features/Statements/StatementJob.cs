using Microsoft.Extensions.Options;

namespace Tollgate.Features.Statements;

/// <summary>
/// Stores the statement of the period that just ended for every account that has none yet. Generating is idempotent
/// (stored once per account and period), so running on several instances or after a restart is harmless.
/// </summary>
internal sealed partial class StatementJob(StatementService statements, IOptions<StatementOptions> options, TimeProvider time, ILogger<StatementJob> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.JobIntervalSeconds;
        if (interval <= 0) return;
        // Let start-up (migrations) finish first.
        await Task.Delay(TimeSpan.FromSeconds(5), time, stoppingToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await RunOnceAsync(stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogFailed(logger, e);
            }
            await Task.Delay(TimeSpan.FromSeconds(interval), time, stoppingToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    /// <summary>Generates the missing statements of the last ended period; returns how many were stored.</summary>
    public async Task<int> RunOnceAsync(CancellationToken ct)
    {
        var period = StatementPeriod.Of(time.GetUtcNow()).Previous;
        var done = 0;
        while (true)
        {
            var missing = await statements.MissingAsync(period, 100, ct);
            if (missing.Count == 0) return done;
            foreach (var account in missing)
            {
                await statements.GetAsync(account, period, ct);
                done++;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Generating statements failed; retrying at the next interval.")]
    private static partial void LogFailed(ILogger logger, Exception e);
}
