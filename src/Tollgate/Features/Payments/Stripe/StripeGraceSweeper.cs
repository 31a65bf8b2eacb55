using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>
/// Ends Stripe subscriptions whose invoice stayed unpaid past the grace period (<c>PastDueGraceSeconds</c>, or the plan's
/// <c>PastDuePolicies:&lt;plan&gt;:GraceSeconds</c>): the account goes back to the default plan, or to the plan's
/// <c>DowngradeTo</c>. Several processes may run it at once: ending a subscription is idempotent.
/// </summary>
internal sealed partial class StripeGraceSweeper(StripeStore store, Plans.SubscriptionService subscriptions, Plans.PlanCatalog plans, Plans.PlanCreditsService planCredits,
    Accounts.IAccountStore accounts, IOptions<StripeOptions> options, TimeProvider time, ILogger<StripeGraceSweeper> logger) : BackgroundService
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
        var o = options.Value;
        var now = time.GetUtcNow();
        int Grace(string? plan) => plan is not null && o.PastDuePolicies.TryGetValue(plan, out var p) && p.GraceSeconds is { } g ? g : o.PastDueGraceSeconds;
        var shortest = o.PastDuePolicies.Values.Select(p => p.GraceSeconds ?? o.PastDueGraceSeconds).Append(o.PastDueGraceSeconds).Min();
        var ended = 0;
        foreach (var state in await store.PastDueSinceAsync(now.AddSeconds(-shortest), ct))
        {
            if (state.PastDueSince is { } since && since > now.AddSeconds(-Grace(state.PlanId))) continue;
            var live = await subscriptions.GetAsync(state.AccountId, ct);
            var ours = live is { IsLive: true } && live.StripeSubscriptionId == state.Id;
            if (ours) await subscriptions.CancelAsync(state.AccountId, atPeriodEnd: false, ct);
            await store.MarkSubscriptionAsync(state.Id, Plans.SubscriptionStatuses.Canceled, ct);
            // Ending the subscription put the account on the default plan; the plan's policy may name a lower plan instead.
            var target = state.PlanId is not null && o.PastDuePolicies.TryGetValue(state.PlanId, out var policy) ? policy.DowngradeTo : null;
            if (ours && target is not null && target != Plans.PlanCatalog.DefaultPlanId)
            {
                if (plans.Exists(target) && await accounts.SetPlanAsync(state.AccountId, target, ct)) await planCredits.GrantDueAsync(ct, state.AccountId);
                else LogNoSuchPlan(logger, state.PlanId!, target);
            }
            LogEnded(logger, state.Id, state.AccountId, ours && target is not null && plans.Exists(target) ? target : Plans.PlanCatalog.DefaultPlanId);
            ended++;
        }
        return ended;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stripe subscription {SubscriptionId} of {AccountId} stayed past due beyond the grace period; now on plan {PlanId}")]
    private static partial void LogEnded(ILogger logger, string subscriptionId, string accountId, string planId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Tollgate:Stripe:PastDuePolicies:{PlanId}:DowngradeTo names no plan '{Target}'; the account stays on the default plan")]
    private static partial void LogNoSuchPlan(ILogger logger, string planId, string target);

    [LoggerMessage(Level = LogLevel.Error, Message = "The Stripe grace sweep failed")]
    private static partial void LogSweepFailed(ILogger logger, Exception e);
}
