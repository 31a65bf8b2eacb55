using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>
/// Ends Stripe subscriptions whose invoice stayed unpaid past the grace period (<c>PastDueGraceSeconds</c>): the
/// account goes back to the default plan. Several processes may run it at once: ending a subscription is idempotent.
/// </summary>
internal sealed partial class StripeGraceSweeper(StripeStore store, Plans.SubscriptionService subscriptions, IOptions<StripeOptions> options, TimeProvider time,
    ILogger<StripeGraceSweeper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        if (!o.Enabled) return;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await SweepAsync(stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogSweepFailed(logger, e);
            }
            try { await Task.Delay(TimeSpan.FromSeconds(o.GraceSweepSeconds), time, stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }

    public async Task<int> SweepAsync(CancellationToken ct)
    {
        var ended = 0;
        foreach (var state in await store.PastDueSinceAsync(time.GetUtcNow().AddSeconds(-options.Value.PastDueGraceSeconds), ct))
        {
            var live = await subscriptions.GetAsync(state.AccountId, ct);
            if (live is { IsLive: true } && live.StripeSubscriptionId == state.Id) await subscriptions.CancelAsync(state.AccountId, atPeriodEnd: false, ct);
            await store.MarkSubscriptionAsync(state.Id, Plans.SubscriptionStatuses.Canceled, ct);
            LogEnded(logger, state.Id, state.AccountId);
            ended++;
        }
        return ended;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stripe subscription {SubscriptionId} of {AccountId} stayed past due beyond the grace period; back to the default plan")]
    private static partial void LogEnded(ILogger logger, string subscriptionId, string accountId);

    [LoggerMessage(Level = LogLevel.Error, Message = "The Stripe grace sweep failed")]
    private static partial void LogSweepFailed(ILogger logger, Exception e);
}
