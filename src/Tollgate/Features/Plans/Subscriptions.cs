using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Plans;

/// <summary>The values of <see cref="Subscription.Status"/>.</summary>
public static class SubscriptionStatuses
{
    public const string Trialing = "trialing";
    public const string Active = "active";
    /// <summary>The period's fee could not be charged; the plan stays in force while it is retried (or until canceled).</summary>
    public const string PastDue = "past_due";
    public const string Canceled = "canceled";

    public static bool IsValid(string? s) => s is Trialing or Active or PastDue or Canceled;
}

/// <summary>The values of <see cref="Subscription.Interval"/>.</summary>
public static class BillingIntervals
{
    public const string Month = "month";
    public const string Year = "year";

    public static bool IsValid(string? s) => s is Month or Year;
    public static int Months(string interval) => interval == Year ? 12 : 1;
}

/// <summary>How a subscription's fees are paid: <c>credits</c> (charged from the account's credits through the ledger) or <c>external</c> (e.g. Stripe; no ledger fee).</summary>
public static class SubscriptionBilling
{
    public const string Credits = "credits";
    public const string External = "external";

    public static bool IsValid(string? s) => s is Credits or External;
}

/// <summary>
/// An account's current subscription. <see cref="Anchor"/> is where its anniversary periods are counted from (the
/// start, or the end of the trial); <see cref="Revision"/> grows with every change.
/// </summary>
public sealed record Subscription(
    string Id, string AccountId, string PlanId, long PlanVersion, string Interval, string Status, string Billing, DateTimeOffset Anchor,
    DateTimeOffset CurrentPeriodStart, DateTimeOffset CurrentPeriodEnd, DateTimeOffset? TrialEnd, bool CancelAtPeriodEnd, string? PendingPlanId,
    string? PendingInterval, DateTimeOffset? CanceledAt, string? StripeSubscriptionId, string? StripeCustomerId, long Revision,
    DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt)
{
    public int PeriodMonths => BillingIntervals.Months(Interval);
    public bool IsLive => Status != SubscriptionStatuses.Canceled;
}

public sealed record SubscriptionEvent(string Event, string PlanId, long PlanVersion, string Interval, string Status, DateTimeOffset PeriodStart,
    DateTimeOffset PeriodEnd, string? Detail, DateTimeOffset At);

/// <summary>
/// The <c>subscriptions</c> row per account, its history, and the account's plan columns the gateway reads — all
/// written in one transaction, and only if the row is still at the revision the change was computed from.
/// </summary>
internal sealed class SubscriptionStore(Database db)
{
    private const string Columns = """
        id, account_id, plan_id, plan_version, billing_interval, status, billing, anchor, current_period_start, current_period_end, trial_end,
        cancel_at_period_end, pending_plan_id, pending_interval, canceled_at, stripe_subscription_id, stripe_customer_id, revision, created_at, updated_at
        """;

    private sealed record Row(string id, string account_id, string plan_id, long plan_version, string billing_interval, string status, string billing,
        long anchor, long current_period_start, long current_period_end, long? trial_end, long cancel_at_period_end, string? pending_plan_id,
        string? pending_interval, long? canceled_at, string? stripe_subscription_id, string? stripe_customer_id, long revision, long created_at, long updated_at)
    {
        public Subscription ToSubscription() => new(id, account_id, plan_id, plan_version, billing_interval, status, billing, T(anchor),
            T(current_period_start), T(current_period_end), trial_end is { } te ? T(te) : null, cancel_at_period_end != 0, pending_plan_id,
            pending_interval, canceled_at is { } ca ? T(ca) : null, stripe_subscription_id, stripe_customer_id, revision, T(created_at), T(updated_at));

        private static DateTimeOffset T(long micros) => UnixMicros.ToDateTimeOffset(micros);
    }

    private sealed record EventRow(string @event, string plan_id, long plan_version, string billing_interval, string status, long current_period_start,
        long current_period_end, string? detail, long created_at);

    public async Task<Subscription?> GetAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM subscriptions WHERE account_id = @accountId", new { accountId }, cancellationToken: ct));
        return row?.ToSubscription();
    }

    /// <summary>Live subscriptions whose period has ended, and past-due ones (their fee is retried), oldest first.</summary>
    public async Task<IReadOnlyList<Subscription>> DueAsync(DateTimeOffset now, int limit, bool includePastDue, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition($"""
            SELECT {Columns} FROM subscriptions
            WHERE status <> 'canceled' AND (current_period_end <= @now OR (@includePastDue AND status = 'past_due'))
            ORDER BY current_period_end LIMIT @limit
            """, new { now = UnixMicros.From(now), limit, includePastDue }, cancellationToken: ct));
        return rows.Select(r => r.ToSubscription()).ToList();
    }

    public async Task<IReadOnlyList<SubscriptionEvent>> HistoryAsync(string accountId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<EventRow>(new CommandDefinition("""
            SELECT event, plan_id, plan_version, billing_interval, status, current_period_start, current_period_end, detail, created_at
            FROM subscription_history WHERE account_id = @accountId ORDER BY id DESC LIMIT @limit
            """, new { accountId, limit }, cancellationToken: ct));
        return rows.Select(r => new SubscriptionEvent(r.@event, r.plan_id, r.plan_version, r.billing_interval, r.status,
            UnixMicros.ToDateTimeOffset(r.current_period_start), UnixMicros.ToDateTimeOffset(r.current_period_end), r.detail,
            UnixMicros.ToDateTimeOffset(r.created_at))).ToList();
    }

    /// <summary>
    /// Writes <paramref name="next"/> if the account's row is still at <paramref name="expectedRevision"/> (null: there
    /// is no row yet), keeps the account's plan columns in step and records <paramref name="event"/>. False when another
    /// change came first (nothing written).
    /// </summary>
    public async Task<bool> SaveAsync(Subscription next, long? expectedRevision, string @event, string? detail, CancellationToken ct)
    {
        var sqlite = db.Engine == DatabaseEngine.Sqlite;
        if (sqlite) await db.SqliteWriteGate.WaitAsync(ct);
        try
        {
            await using var c = await db.OpenAsync(ct);
            await using var tx = await c.BeginTransactionAsync(ct);
            var p = new
            {
                next.Id, next.AccountId, next.PlanId, next.PlanVersion, interval = next.Interval, next.Status, next.Billing,
                anchor = UnixMicros.From(next.Anchor), start = UnixMicros.From(next.CurrentPeriodStart), end = UnixMicros.From(next.CurrentPeriodEnd),
                trialEnd = next.TrialEnd is { } te ? UnixMicros.From(te) : (long?)null, cancel = next.CancelAtPeriodEnd ? 1L : 0L,
                next.PendingPlanId, next.PendingInterval, canceledAt = next.CanceledAt is { } ca ? UnixMicros.From(ca) : (long?)null,
                next.StripeSubscriptionId, next.StripeCustomerId, next.Revision, createdAt = UnixMicros.From(next.CreatedAt),
                updatedAt = UnixMicros.From(next.UpdatedAt), expected = expectedRevision ?? -1,
            };
            int changed;
            try
            {
                changed = expectedRevision is null
                    ? await c.ExecuteAsync(new CommandDefinition("""
                        INSERT INTO subscriptions (id, account_id, plan_id, plan_version, billing_interval, status, billing, anchor, current_period_start,
                            current_period_end, trial_end, cancel_at_period_end, pending_plan_id, pending_interval, canceled_at, stripe_subscription_id,
                            stripe_customer_id, revision, created_at, updated_at)
                        VALUES (@Id, @AccountId, @PlanId, @PlanVersion, @interval, @Status, @Billing, @anchor, @start, @end, @trialEnd, @cancel, @PendingPlanId,
                            @PendingInterval, @canceledAt, @StripeSubscriptionId, @StripeCustomerId, @Revision, @createdAt, @updatedAt)
                        ON CONFLICT (account_id) DO NOTHING
                        """, p, tx, cancellationToken: ct))
                    : await c.ExecuteAsync(new CommandDefinition("""
                        UPDATE subscriptions SET id = @Id, plan_id = @PlanId, plan_version = @PlanVersion, billing_interval = @interval, status = @Status,
                            billing = @Billing, anchor = @anchor, current_period_start = @start, current_period_end = @end, trial_end = @trialEnd,
                            cancel_at_period_end = @cancel, pending_plan_id = @PendingPlanId, pending_interval = @PendingInterval, canceled_at = @canceledAt,
                            stripe_subscription_id = @StripeSubscriptionId, stripe_customer_id = @StripeCustomerId, revision = @Revision,
                            created_at = @createdAt, updated_at = @updatedAt
                        WHERE account_id = @AccountId AND revision = @expected
                        """, p, tx, cancellationToken: ct));
            }
            catch (Exception e) when (DbErrors.Classify(e) == DbErrorKind.UniqueViolation)
            {
                return false;
            }
            if (changed != 1) return false;
            // What the gateway reads with the key: a live subscription's plan, version and periods; after a cancellation the
            // default plan, from the moment it ended.
            var live = next.IsLive;
            await c.ExecuteAsync(new CommandDefinition("""
                UPDATE accounts SET plan_id = @planId, plan_version = @version, plan_anchor = @anchor, plan_period_months = @months WHERE id = @AccountId
                """, new
            {
                next.AccountId, planId = live ? next.PlanId : PlanCatalog.DefaultPlanId, version = live ? next.PlanVersion : (long?)null,
                anchor = live ? UnixMicros.From(next.Anchor) : UnixMicros.From(next.CanceledAt ?? next.UpdatedAt), months = live ? (long)next.PeriodMonths : 1L,
            }, tx, cancellationToken: ct));
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO subscription_history (subscription_id, account_id, event, plan_id, plan_version, billing_interval, status, current_period_start,
                    current_period_end, detail, created_at)
                VALUES (@Id, @AccountId, @event, @PlanId, @PlanVersion, @interval, @Status, @start, @end, @detail, @updatedAt)
                """, new { p.Id, p.AccountId, @event, p.PlanId, p.PlanVersion, p.interval, p.Status, p.start, p.end, detail, p.updatedAt }, tx, cancellationToken: ct));
            await tx.CommitAsync(ct);
            return true;
        }
        finally
        {
            if (sqlite) db.SqliteWriteGate.Release();
        }
    }
}
