using Microsoft.Extensions.Logging;
using Tollgate.Features.Accounts;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;

namespace Tollgate.Features.Plans;

public enum SubscriptionOutcome
{
    Subscribed,
    Upgraded,
    /// <summary>A cheaper plan: scheduled for the period end (<see cref="Subscription.PendingPlanId"/>).</summary>
    DowngradeScheduled,
    Changed,
    Unchanged,
    Canceled,
    CancelScheduled,
    Resumed,
    Renewed,
    AccountNotFound,
    NoSubscription,
    PlanNotAvailable,
    IntervalNotOffered,
    InsufficientCredits,
    /// <summary>Another change to the same subscription came first; nothing changed (retry).</summary>
    Conflict,
    InvalidState,
}

/// <param name="ProrationCreditMicros">Credited for the unused part of the old plan's period (rounded down).</param>
/// <param name="FeeMicros">Charged for the new plan (the remaining part of the period rounded up, or a full period).</param>
public sealed record SubscriptionResult(SubscriptionOutcome Outcome, Subscription? Subscription = null, long ProrationCreditMicros = 0, long FeeMicros = 0,
    long RequiredMicros = 0, long AvailableMicros = 0, string? Message = null)
{
    public bool Succeeded => Outcome is SubscriptionOutcome.Subscribed or SubscriptionOutcome.Upgraded or SubscriptionOutcome.DowngradeScheduled
        or SubscriptionOutcome.Changed or SubscriptionOutcome.Unchanged or SubscriptionOutcome.Canceled or SubscriptionOutcome.CancelScheduled
        or SubscriptionOutcome.Resumed or SubscriptionOutcome.Renewed;
}

/// <summary>
/// Subscriptions: the one place that changes them — the self-service and admin APIs, the renewal sweeper and (later)
/// payment webhooks all call this.
/// <list type="bullet">
/// <item>Every change is computed from the row at one revision and written only if the row is still there
/// (<see cref="SubscriptionStore.SaveAsync"/>); its ledger transfers have ids made of the subscription id, the period
/// start and that revision, so a retried or concurrent twin replays them instead of paying twice, and a different
/// change racing it meets an idempotency conflict in the ledger before anything is written.</item>
/// <item>Upgrades apply at once with proration in the same period: <c>floor(old price × remaining / period)</c> credited
/// (<c>proration_credit</c>), <c>ceil(new price × remaining / period)</c> charged (<c>subscription_fee</c>), both in one
/// atomic ledger batch, so an unaffordable upgrade changes nothing. Downgrades wait for the period end.</item>
/// <item>Money is micro-USD; durations are microseconds; products are computed in 128 bits.</item>
/// </list>
/// </summary>
internal sealed partial class SubscriptionService(
    SubscriptionStore store, IAccountStore accounts, PlanCatalog plans, LedgerService ledger, SystemAccounts system, PlanCreditsService planCredits,
    TimeProvider time, ILogger<SubscriptionService> logger)
{
    public const string ProrationCreditCode = "proration_credit";
    public const string FeeCode = "subscription_fee";

    public Task<Subscription?> GetAsync(string accountId, CancellationToken ct) => store.GetAsync(accountId, ct);

    public Task<IReadOnlyList<SubscriptionEvent>> HistoryAsync(string accountId, CancellationToken ct) => store.HistoryAsync(accountId, 100, ct);

    /// <summary>
    /// Subscribes the account to <paramref name="planId"/> or changes its plan: a new subscription starts now (with
    /// the plan's trial on the account's first one; else the full period's fee for <c>credits</c> billing); a dearer
    /// plan applies at once with proration; a cheaper one is scheduled for the period end; the current plan clears a
    /// scheduled downgrade or cancellation.
    /// </summary>
    public async Task<SubscriptionResult> ChangePlanAsync(string accountId, string planId, string interval, string? billing, CancellationToken ct)
    {
        if (!BillingIntervals.IsValid(interval) || billing is not null && !SubscriptionBilling.IsValid(billing))
            return new(SubscriptionOutcome.InvalidState, Message: "'interval' must be month or year and 'billing' credits or external.");
        if (await accounts.GetAsync(accountId, ct) is not { } account) return new(SubscriptionOutcome.AccountNotFound);
        var current = await store.GetAsync(accountId, ct);
        var unchangedTarget = current is { IsLive: true } && current.PlanId == planId && current.Interval == interval;
        if (!unchangedTarget && !plans.IsOpen(planId)) return new(SubscriptionOutcome.PlanNotAvailable, Message: $"The plan '{planId}' does not exist or takes no new subscriptions.");
        var target = plans.Get(planId);
        var months = BillingIntervals.Months(interval);
        if (!target.IsFree && target.PriceMicros(months) is null)
            return new(SubscriptionOutcome.IntervalNotOffered, Message: $"The plan '{planId}' has no {interval}ly price.");
        // A new subscription pays from credits unless told otherwise: an ended external one does not make the next one free.
        if (current is null || !current.IsLive) return await StartAsync(account, current, target, interval, billing ?? SubscriptionBilling.Credits, null, null, ct);

        var now = time.GetUtcNow();
        var next = current with { Revision = current.Revision + 1, UpdatedAt = now };
        if (billing is not null && billing != current.Billing) next = next with { Billing = billing };
        if (unchangedTarget)
        {
            if (current.PendingPlanId is null && !current.CancelAtPeriodEnd && next.Billing == current.Billing) return new(SubscriptionOutcome.Unchanged, current);
            next = next with { PendingPlanId = null, PendingInterval = null, CancelAtPeriodEnd = false };
            return await SaveAsync(next, current, "scheduled_change_cleared", null, SubscriptionOutcome.Unchanged, ct);
        }

        var held = plans.Get(current.PlanId, current.PlanVersion);
        var oldPrice = held.PriceMicros(current.PeriodMonths) ?? 0;
        var newPrice = target.PriceMicros(months) ?? 0;
        if (current.Status == SubscriptionStatuses.Trialing)
        {
            // Nothing was paid for a trial: the plan changes at once and the trial runs on.
            next = next with { PlanId = target.Id, PlanVersion = target.Version, Interval = interval, PendingPlanId = null, PendingInterval = null };
            return await SaveAsync(next, current, "plan_changed", null, SubscriptionOutcome.Changed, ct);
        }
        if (newPrice < oldPrice)
        {
            next = next with { PendingPlanId = target.Id, PendingInterval = interval };
            return await SaveAsync(next, current, "downgrade_scheduled", $"to {target.Id} ({interval}) at {current.CurrentPeriodEnd:O}", SubscriptionOutcome.DowngradeScheduled, ct);
        }

        // Upgrade (or an equal price): at once. The same interval keeps the period; a new interval starts a new one now.
        var periodMicros = UnixMicros.From(current.CurrentPeriodEnd) - UnixMicros.From(current.CurrentPeriodStart);
        var remainingMicros = Math.Clamp(UnixMicros.From(current.CurrentPeriodEnd) - UnixMicros.From(now), 0, periodMicros);
        var paidByCredits = next.Billing == SubscriptionBilling.Credits;
        // Only a paid period has anything to give back (a past-due one was never paid).
        var credit = paidByCredits && current.Billing == SubscriptionBilling.Credits && current.Status == SubscriptionStatuses.Active
            ? Proration.CreditMicros(oldPrice, remainingMicros, periodMicros) : 0;
        long fee;
        if (interval == current.Interval)
        {
            fee = paidByCredits ? Proration.ChargeMicros(newPrice, remainingMicros, periodMicros) : 0;
            next = next with { PlanId = target.Id, PlanVersion = target.Version };
        }
        else
        {
            var period = PlanPeriod.Every(now, months, now);
            fee = paidByCredits ? newPrice : 0;
            next = next with { PlanId = target.Id, PlanVersion = target.Version, Interval = interval, Anchor = now, CurrentPeriodStart = period.Start, CurrentPeriodEnd = period.End };
        }
        next = next with { PendingPlanId = null, PendingInterval = null, CancelAtPeriodEnd = false, Status = SubscriptionStatuses.Active };
        var change = $"{current.Id}:{UnixMicros.From(current.CurrentPeriodStart)}:r{next.Revision}";
        var paid = await PayAsync(account, change, credit, fee, $"{held.Id} → {target.Id}", ct);
        if (paid is not null) return paid;
        var result = await SaveAsync(next, current, newPrice > oldPrice ? "upgraded" : "plan_changed",
            $"from {held.Id} v{held.Version}; credit {credit}, fee {fee}", newPrice > oldPrice ? SubscriptionOutcome.Upgraded : SubscriptionOutcome.Changed, ct);
        if (result.Succeeded)
        {
            if (interval == current.Interval) await TopUpIncludedCreditsAsync(account, held, target, current.CurrentPeriodStart, change, ct);
            else await planCredits.GrantDueAsync(ct, account.Id);
        }
        return result with { ProrationCreditMicros = credit, FeeMicros = fee };
    }

    /// <summary>
    /// For payments made elsewhere (Stripe): puts the account on <paramref name="planId"/> with <c>external</c> billing
    /// and active status — a new subscription, or the plan changed at once (no ledger fee either way).
    /// </summary>
    public async Task<SubscriptionResult> ActivateAsync(string accountId, string planId, string interval, string? stripeSubscriptionId, string? stripeCustomerId,
        CancellationToken ct)
    {
        if (!BillingIntervals.IsValid(interval)) return new(SubscriptionOutcome.InvalidState, Message: "'interval' must be month or year.");
        if (await accounts.GetAsync(accountId, ct) is not { } account) return new(SubscriptionOutcome.AccountNotFound);
        if (!plans.Exists(planId)) return new(SubscriptionOutcome.PlanNotAvailable, Message: $"The plan '{planId}' does not exist.");
        var current = await store.GetAsync(accountId, ct);
        var target = plans.Get(planId);
        if (current is null || !current.IsLive)
            return await StartAsync(account, current, target, interval, SubscriptionBilling.External, stripeSubscriptionId, stripeCustomerId, ct, allowTrial: false);
        var now = time.GetUtcNow();
        var next = current with
        {
            Revision = current.Revision + 1, UpdatedAt = now, Billing = SubscriptionBilling.External, Status = SubscriptionStatuses.Active,
            StripeSubscriptionId = stripeSubscriptionId ?? current.StripeSubscriptionId, StripeCustomerId = stripeCustomerId ?? current.StripeCustomerId,
            PendingPlanId = null, PendingInterval = null, CancelAtPeriodEnd = false,
        };
        if (current.PlanId != planId || current.Interval != interval)
        {
            next = next with { PlanId = target.Id, PlanVersion = target.Version };
            if (current.Interval != interval)
            {
                var period = PlanPeriod.Every(now, BillingIntervals.Months(interval), now);
                next = next with { Interval = interval, Anchor = now, CurrentPeriodStart = period.Start, CurrentPeriodEnd = period.End };
            }
        }
        return await SaveAsync(next, current, "activated", stripeSubscriptionId, SubscriptionOutcome.Changed, ct);
    }

    /// <summary>
    /// Mirrors a subscription billed elsewhere (Stripe) in the state that system reports: plan, interval, status
    /// (<c>canceled</c> ends it now), cancel-at-period-end and the current period. Applying the same state twice changes
    /// nothing; the caller decides which state is the latest.
    /// </summary>
    public async Task<SubscriptionResult> SyncExternalAsync(string accountId, string planId, string interval, string status, bool cancelAtPeriodEnd,
        DateTimeOffset periodStart, DateTimeOffset periodEnd, string? stripeSubscriptionId, string? stripeCustomerId, CancellationToken ct)
    {
        if (!SubscriptionStatuses.IsValid(status)) return new(SubscriptionOutcome.InvalidState, Message: $"Unknown status '{status}'.");
        if (status == SubscriptionStatuses.Canceled)
        {
            var live = await store.GetAsync(accountId, ct);
            // Only the subscription that system canceled ends here, not a newer one the account has since taken out.
            if (live is not { IsLive: true } || (stripeSubscriptionId is not null && live.StripeSubscriptionId != stripeSubscriptionId))
                return new(SubscriptionOutcome.Unchanged, live);
            return await CancelAsync(accountId, atPeriodEnd: false, ct);
        }
        var current = await store.GetAsync(accountId, ct);
        if (current is not { IsLive: true } || current.Billing != SubscriptionBilling.External || current.PlanId != planId || current.Interval != interval)
        {
            var activated = await ActivateAsync(accountId, planId, interval, stripeSubscriptionId, stripeCustomerId, ct);
            if (!activated.Succeeded) return activated;
            current = activated.Subscription!;
        }
        if (periodEnd <= periodStart) (periodStart, periodEnd) = (current.CurrentPeriodStart, current.CurrentPeriodEnd);
        var next = current with
        {
            Status = status, CancelAtPeriodEnd = cancelAtPeriodEnd, CurrentPeriodStart = periodStart, CurrentPeriodEnd = periodEnd,
            // The external system's periods are anniversary periods too: counting from the current start gives the same boundaries.
            Anchor = current.CurrentPeriodStart == periodStart ? current.Anchor : periodStart,
            TrialEnd = status == SubscriptionStatuses.Trialing ? periodEnd : current.TrialEnd,
            StripeSubscriptionId = stripeSubscriptionId ?? current.StripeSubscriptionId, StripeCustomerId = stripeCustomerId ?? current.StripeCustomerId,
        };
        if (next with { Revision = 0, UpdatedAt = default } == current with { Revision = 0, UpdatedAt = default }) return new(SubscriptionOutcome.Unchanged, current);
        return await SaveAsync(next with { Revision = current.Revision + 1, UpdatedAt = time.GetUtcNow() }, current, "synced", stripeSubscriptionId, SubscriptionOutcome.Changed, ct);
    }

    /// <summary>Sets the status (admin, payment webhooks): <c>canceled</c> ends the subscription now; <c>active</c> / <c>past_due</c> only mark it.</summary>
    public async Task<SubscriptionResult> SetStatusAsync(string accountId, string status, CancellationToken ct)
    {
        if (!SubscriptionStatuses.IsValid(status) || status == SubscriptionStatuses.Trialing)
            return new(SubscriptionOutcome.InvalidState, Message: "'status' must be active, past_due or canceled.");
        if (status == SubscriptionStatuses.Canceled) return await CancelAsync(accountId, atPeriodEnd: false, ct);
        var current = await store.GetAsync(accountId, ct);
        if (current is not { IsLive: true }) return new(SubscriptionOutcome.NoSubscription);
        if (current.Status == status) return new(SubscriptionOutcome.Unchanged, current);
        var next = current with { Status = status, Revision = current.Revision + 1, UpdatedAt = time.GetUtcNow() };
        return await SaveAsync(next, current, "status_set", status, SubscriptionOutcome.Changed, ct);
    }

    /// <summary>Cancels at the period end (the plan stays until then; <see cref="ResumeAsync"/> undoes it) or at once (back to the default plan now, nothing refunded).</summary>
    public async Task<SubscriptionResult> CancelAsync(string accountId, bool atPeriodEnd, CancellationToken ct)
    {
        var current = await store.GetAsync(accountId, ct);
        if (current is not { IsLive: true }) return new(SubscriptionOutcome.NoSubscription);
        var now = time.GetUtcNow();
        var next = current with { Revision = current.Revision + 1, UpdatedAt = now };
        if (atPeriodEnd)
        {
            if (current.CancelAtPeriodEnd) return new(SubscriptionOutcome.CancelScheduled, current);
            return await SaveAsync(next with { CancelAtPeriodEnd = true }, current, "cancel_scheduled", null, SubscriptionOutcome.CancelScheduled, ct);
        }
        next = next with { Status = SubscriptionStatuses.Canceled, CanceledAt = now, CancelAtPeriodEnd = false, PendingPlanId = null, PendingInterval = null };
        return await SaveAsync(next, current, "canceled", null, SubscriptionOutcome.Canceled, ct);
    }

    /// <summary>Undoes a cancellation scheduled for the period end.</summary>
    public async Task<SubscriptionResult> ResumeAsync(string accountId, CancellationToken ct)
    {
        var current = await store.GetAsync(accountId, ct);
        if (current is null) return new(SubscriptionOutcome.NoSubscription);
        if (!current.IsLive) return new(SubscriptionOutcome.InvalidState, current, Message: "The subscription has ended; subscribe again instead.");
        if (!current.CancelAtPeriodEnd) return new(SubscriptionOutcome.Unchanged, current);
        var next = current with { CancelAtPeriodEnd = false, Revision = current.Revision + 1, UpdatedAt = time.GetUtcNow() };
        return await SaveAsync(next, current, "resumed", null, SubscriptionOutcome.Resumed, ct);
    }

    /// <summary>Renews every due subscription (period ended, or past due); returns how many changed.</summary>
    public async Task<int> RenewDueAsync(CancellationToken ct)
    {
        var renewed = 0;
        for (var pass = 0; pass < 100; pass++)
        {
            // Past-due fees are retried once per run; later passes catch up periods that ended.
            var due = await store.DueAsync(time.GetUtcNow(), 200, includePastDue: pass == 0, ct);
            var changed = 0;
            foreach (var s in due)
            {
                var result = await RenewPeriodAsync(s.AccountId, ct);
                if (result.Outcome is SubscriptionOutcome.Renewed or SubscriptionOutcome.Canceled) changed++;
            }
            renewed += changed;
            // Past-due rows whose fee still fails stay due: stop when a pass changes nothing.
            if (changed == 0 || due.Count == 0) break;
        }
        return renewed;
    }

    /// <summary>
    /// At the period end: a scheduled cancellation ends the subscription; otherwise the next period starts (with a
    /// scheduled downgrade applied; a trial becomes active), its fee is charged from credits for <c>credits</c>
    /// billing (unaffordable: <c>past_due</c>, retried on later runs) and its included credits are granted. A past-due
    /// subscription inside its period only retries the fee. Catches up one period per call.
    /// </summary>
    public async Task<SubscriptionResult> RenewPeriodAsync(string accountId, CancellationToken ct)
    {
        var current = await store.GetAsync(accountId, ct);
        if (current is not { IsLive: true }) return new(SubscriptionOutcome.NoSubscription);
        if (await accounts.GetAsync(accountId, ct) is not { } account) return new(SubscriptionOutcome.AccountNotFound);
        var now = time.GetUtcNow();
        var end = current.CurrentPeriodEnd;
        if (end > now)
        {
            if (current.Status != SubscriptionStatuses.PastDue || current.Billing != SubscriptionBilling.Credits) return new(SubscriptionOutcome.Unchanged, current);
            var price = plans.Get(current.PlanId, current.PlanVersion).PriceMicros(current.PeriodMonths) ?? 0;
            if (await ChargeRenewalAsync(account, current, price, ct) is not null) return new(SubscriptionOutcome.Unchanged, current);
            return await SaveAsync(current with { Status = SubscriptionStatuses.Active, Revision = current.Revision + 1, UpdatedAt = now }, current,
                "payment_recovered", null, SubscriptionOutcome.Renewed, ct);
        }
        var next = current with { Revision = current.Revision + 1, UpdatedAt = now };
        if (current.CancelAtPeriodEnd)
        {
            next = next with { Status = SubscriptionStatuses.Canceled, CanceledAt = end, CancelAtPeriodEnd = false, PendingPlanId = null, PendingInterval = null };
            var canceled = await SaveAsync(next, current, "canceled", "at period end", SubscriptionOutcome.Canceled, ct);
            if (canceled.Succeeded) await planCredits.GrantDueAsync(ct, accountId);
            return canceled;
        }
        var @event = "renewed";
        if (current.PendingPlanId is { } pending)
        {
            var to = plans.Get(pending);
            var interval = current.PendingInterval ?? current.Interval;
            next = next with { PlanId = to.Id, PlanVersion = to.Version, Interval = interval, PendingPlanId = null, PendingInterval = null };
            // A new period length starts counting from this boundary.
            if (interval != current.Interval) next = next with { Anchor = end };
            @event = "downgraded";
        }
        if (current.Status == SubscriptionStatuses.Trialing)
        {
            next = next with { Anchor = end };
            @event = "trial_ended";
        }
        var period = PlanPeriod.Every(next.Anchor, next.PeriodMonths, end);
        next = next with { CurrentPeriodStart = period.Start, CurrentPeriodEnd = period.End };
        var plan = plans.Get(next.PlanId, next.PlanVersion);
        var status = SubscriptionStatuses.Active;
        if (next.Billing == SubscriptionBilling.Credits && (plan.PriceMicros(next.PeriodMonths) ?? 0) is > 0 and var fee
            && await ChargeRenewalAsync(account, next, fee, ct) is not null)
            status = SubscriptionStatuses.PastDue;
        next = next with { Status = status };
        var result = await SaveAsync(next, current, @event, status == SubscriptionStatuses.PastDue ? "fee unpaid" : null, SubscriptionOutcome.Renewed, ct);
        if (result.Succeeded) await planCredits.GrantDueAsync(ct, accountId);
        return result;
    }

    private async Task<SubscriptionResult> StartAsync(Account account, Subscription? previous, Plan plan, string interval, string billing, string? stripeSubscriptionId,
        string? stripeCustomerId, CancellationToken ct, bool allowTrial = true)
    {
        var now = time.GetUtcNow();
        var revision = (previous?.Revision ?? 0) + 1;
        // Derived, not random: a retried or concurrent start computes the same id, so its fee is one ledger transfer.
        var id = $"sub_{account.Id.Replace("acct_", "", StringComparison.Ordinal)}_{revision}";
        var months = BillingIntervals.Months(interval);
        // A trial only on the account's first subscription, and only where there is something to pay.
        var trial = allowTrial && previous is null && plan.TrialDays > 0 && !plan.IsFree;
        var period = trial ? new PlanPeriod(now, now.AddDays(plan.TrialDays)) : PlanPeriod.Every(now, months, now);
        var next = new Subscription(id, account.Id, plan.Id, plan.Version, interval, trial ? SubscriptionStatuses.Trialing : SubscriptionStatuses.Active, billing, now,
            period.Start, period.End, trial ? period.End : null, false, null, null, null, stripeSubscriptionId, stripeCustomerId, revision, now, now);
        var fee = !trial && billing == SubscriptionBilling.Credits ? plan.PriceMicros(months) ?? 0 : 0;
        var paid = await PayAsync(account, $"{id}:{UnixMicros.From(period.Start)}:r{revision}", 0, fee, $"subscription to {plan.Id}", ct);
        if (paid is not null) return paid;
        var result = await SaveAsync(next, previous, trial ? "trial_started" : "subscribed", $"fee {fee}", SubscriptionOutcome.Subscribed, ct);
        if (result.Succeeded) await planCredits.GrantDueAsync(ct, account.Id);
        return result with { FeeMicros = fee };
    }

    /// <summary>Credits <paramref name="credit"/> and charges <paramref name="fee"/> in one atomic batch; null when done, else why not.</summary>
    private async Task<SubscriptionResult?> PayAsync(Account account, string change, long credit, long fee, string what, CancellationToken ct)
    {
        if (credit == 0 && fee == 0) return null;
        var revenue = await system.RevenueAsync(ct);
        var transfers = new List<TransferRequest>();
        if (credit > 0)
            transfers.Add(new TransferRequest
            {
                Id = $"sub:{change}:credit", DebitAccountId = revenue, CreditAccountId = account.LedgerAccountId, Amount = credit, Code = ProrationCreditCode,
                Description = $"Unused part of the period, {what}",
            });
        if (fee > 0)
            transfers.Add(new TransferRequest
            {
                Id = $"sub:{change}:fee", DebitAccountId = account.LedgerAccountId, CreditAccountId = revenue, Amount = fee, Code = FeeCode,
                Description = $"Subscription fee, {what}",
            });
        var results = await ledger.TransferAtomicAsync(transfers, ct);
        if (results.All(r => r.Succeeded)) return null;
        if (results.Any(r => r.Code == TransferResultCode.IdempotencyConflict)) return new(SubscriptionOutcome.Conflict, Message: "Another change to this subscription came first.");
        if (results.Any(r => r.Code == TransferResultCode.InsufficientFunds))
        {
            var available = (await ledger.GetAccountAsync(account.LedgerAccountId, ct))?.AvailableMicros ?? 0;
            return new(SubscriptionOutcome.InsufficientCredits, RequiredMicros: fee - credit, AvailableMicros: available, ProrationCreditMicros: credit, FeeMicros: fee);
        }
        throw new InvalidOperationException($"Unexpected ledger results for a subscription change: {string.Join(", ", results.Select(r => r.Code))}.");
    }

    /// <summary>The fee of the period <paramref name="s"/> is in (id per subscription and period, so retries never charge twice); null when paid.</summary>
    private async Task<SubscriptionResult?> ChargeRenewalAsync(Account account, Subscription s, long fee, CancellationToken ct)
    {
        if (fee <= 0) return null;
        var revenue = await system.RevenueAsync(ct);
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = $"sub:{s.Id}:{UnixMicros.From(s.CurrentPeriodStart)}:renewal", DebitAccountId = account.LedgerAccountId, CreditAccountId = revenue, Amount = fee,
            Code = FeeCode, Description = $"Subscription fee, plan {s.PlanId}, period from {s.CurrentPeriodStart:yyyy-MM-dd}",
        }, ct);
        if (result.Succeeded) return null;
        if (result.Code != TransferResultCode.InsufficientFunds) LogRenewalRefused(s.Id, result.Code);
        return new(SubscriptionOutcome.InsufficientCredits);
    }

    /// <summary>A dearer plan mid-period: the difference of the included credits, for the rest of this period.</summary>
    private async Task TopUpIncludedCreditsAsync(Account account, Plan from, Plan to, DateTimeOffset periodStart, string change, CancellationToken ct)
    {
        var extra = (to.IncludedCreditsMicros ?? 0) - (from.IncludedCreditsMicros ?? 0);
        if (extra <= 0) return;
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = $"plan-credits:{account.Id}:{UnixMicros.From(periodStart)}:{change.Split(':')[^1]}", DebitAccountId = await system.PromotionsAsync(ct),
            CreditAccountId = account.LedgerAccountId, Amount = extra, Code = PlanCreditsService.Code, Description = $"Included credits of plan '{to.Id}' (upgrade)",
        }, ct);
        if (!result.Succeeded) LogRenewalRefused(change, result.Code);
    }

    private async Task<SubscriptionResult> SaveAsync(Subscription next, Subscription? current, string @event, string? detail, SubscriptionOutcome outcome, CancellationToken ct)
    {
        if (!await store.SaveAsync(next, current?.Revision, @event, detail, ct))
            return new(SubscriptionOutcome.Conflict, Message: "Another change to this subscription came first; nothing changed.");
        return new(outcome, next);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A subscription transfer for {Subscription} was refused by the ledger: {Code}")]
    private partial void LogRenewalRefused(string subscription, TransferResultCode code);
}

/// <summary>Proration of a period's price, in micro-USD over microseconds (128-bit products, explicit rounding).</summary>
public static class Proration
{
    /// <summary>What is given back for the unused part: <c>floor(price × remaining / period)</c>.</summary>
    public static long CreditMicros(long priceMicros, long remainingMicros, long periodMicros) =>
        periodMicros <= 0 || remainingMicros <= 0 ? 0 : (long)((Int128)priceMicros * remainingMicros / periodMicros);

    /// <summary>What the rest of the period costs: <c>ceil(price × remaining / period)</c>.</summary>
    public static long ChargeMicros(long priceMicros, long remainingMicros, long periodMicros) =>
        periodMicros <= 0 || remainingMicros <= 0 ? 0 : (long)(((Int128)priceMicros * remainingMicros + periodMicros - 1) / periodMicros);
}

/// <summary>Runs <see cref="SubscriptionService.RenewDueAsync"/> every <c>Tollgate:Subscriptions:SweepSeconds</c> (default 30).</summary>
internal sealed partial class SubscriptionRenewalSweeper(SubscriptionService subscriptions, IConfiguration config, ILogger<SubscriptionRenewalSweeper> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The system clock drives the ticks; what is due is decided by the app's TimeProvider inside the service.
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Clamp(config.GetValue("Tollgate:Subscriptions:SweepSeconds", 30), 1, 86_400)));
        do
        {
            try
            {
                var renewed = await subscriptions.RenewDueAsync(stoppingToken);
                if (renewed > 0) LogRenewed(renewed);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogFailed(e);
            }
        } while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Renewed or ended {Count} subscription period(s)")]
    private partial void LogRenewed(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Renewing subscriptions failed; retrying on the next tick")]
    private partial void LogFailed(Exception e);
}
