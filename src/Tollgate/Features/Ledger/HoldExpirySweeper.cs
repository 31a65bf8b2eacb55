using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Ledger;

/// <summary>Voids holds whose timeout passed, so no funds stay reserved after a crashed caller.</summary>
internal sealed partial class HoldExpirySweeper(LedgerService ledger, IOptions<LedgerOptions> options, TimeProvider time, ILogger<HoldExpirySweeper> logger)
    : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Infrastructure.PeriodicWork.RunAsync(TimeSpan.FromMilliseconds(options.Value.ExpirySweepIntervalMs), time, async ct =>
        {
            var expired = await ledger.ExpireDueHoldsAsync(ct);
            if (expired > 0) LogExpired(expired);
        }, LogSweepFailed, stoppingToken);

    [LoggerMessage(Level = LogLevel.Information, Message = "Voided {Count} expired hold(s)")]
    private partial void LogExpired(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Hold expiry sweep failed; retrying on the next tick")]
    private partial void LogSweepFailed(Exception e);
}
