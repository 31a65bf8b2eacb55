using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>A Checkout Session Tollgate created, and what became of it.</summary>
public sealed record StripeCheckout(
    string Id, string AccountId, string Mode, string? PackId, string? PlanId, string? PlanInterval, long AmountCents, string Currency,
    long AmountMicros, string Status, string? PaymentIntent, long CreditedMicros, long RefundedCents, long ClawedBackMicros, long UnrecoveredMicros,
    DateTimeOffset CreatedAt, DateTimeOffset? CompletedAt, long RefundSeq = 0);

public sealed record StripeSubscriptionState(string Id, string AccountId, string? PlanId, string? PlanInterval, string Status, long LastEventCreated,
    DateTimeOffset? PastDueSince);

/// <summary>The event being handled: its id, type and creation time (Unix seconds).</summary>
public readonly record struct StripeEventRef(string Id, string Type, long Created);

public sealed record StripeDispute(string Id, string AccountId, string? ChargeId, long AmountCents, long FrozenMicros, string Status);

/// <summary>Stripe's tables (portable SQL for both engines).</summary>
internal sealed class StripeStore(Database db, TimeProvider time)
{
    private const string CheckoutColumns = """
        id, account_id, mode, pack_id, plan_id, plan_interval, amount_cents, currency, amount_micros, status, payment_intent,
        credited_micros, refunded_cents, clawed_back_micros, unrecovered_micros, created_at, completed_at
        """;

    private const string SelectColumns = CheckoutColumns + ", refund_seq";

    private sealed record CheckoutRow(string id, string account_id, string mode, string? pack_id, string? plan_id, string? plan_interval,
        long amount_cents, string currency, long amount_micros, string status, string? payment_intent, long credited_micros, long refunded_cents,
        long clawed_back_micros, long unrecovered_micros, long created_at, long? completed_at, long refund_seq)
    {
        public StripeCheckout ToCheckout() => new(id, account_id, mode, pack_id, plan_id, plan_interval, amount_cents, currency, amount_micros, status,
            payment_intent, credited_micros, refunded_cents, clawed_back_micros, unrecovered_micros, UnixMicros.ToDateTimeOffset(created_at),
            completed_at is { } c ? UnixMicros.ToDateTimeOffset(c) : null, refund_seq);
    }

    public async Task<string?> CustomerAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<string?>(new CommandDefinition(
            "SELECT customer_id FROM stripe_customers WHERE account_id = @accountId", new { accountId }, cancellationToken: ct));
    }

    /// <summary>Stores the account's customer unless one is stored already; returns the one that is.</summary>
    public async Task<string> SaveCustomerAsync(string accountId, string customerId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO stripe_customers (account_id, customer_id, created_at) VALUES (@accountId, @customerId, @now)
            ON CONFLICT (account_id) DO NOTHING
            """, new { accountId, customerId, now = time.GetUtcNowMicros() }, cancellationToken: ct));
        return (await CustomerAsync(accountId, ct))!;
    }

    public async Task<string?> AccountOfCustomerAsync(string customerId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<string?>(new CommandDefinition(
            "SELECT account_id FROM stripe_customers WHERE customer_id = @customerId", new { customerId }, cancellationToken: ct));
    }

    public async Task InsertCheckoutAsync(StripeCheckout k, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO stripe_checkouts ({CheckoutColumns})
            VALUES (@Id, @AccountId, @Mode, @PackId, @PlanId, @PlanInterval, @AmountCents, @Currency, @AmountMicros, @Status, @PaymentIntent,
                    0, 0, 0, 0, @created, NULL)
            ON CONFLICT (id) DO NOTHING
            """, new { k.Id, k.AccountId, k.Mode, k.PackId, k.PlanId, k.PlanInterval, k.AmountCents, k.Currency, k.AmountMicros, k.Status, k.PaymentIntent,
            created = UnixMicros.From(k.CreatedAt) }, cancellationToken: ct));
    }

    public async Task<StripeCheckout?> CheckoutAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QuerySingleOrDefaultAsync<CheckoutRow>(new CommandDefinition(
            $"SELECT {SelectColumns} FROM stripe_checkouts WHERE id = @id", new { id }, cancellationToken: ct)))?.ToCheckout();
    }

    public async Task<StripeCheckout?> CheckoutByPaymentIntentAsync(string paymentIntent, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryFirstOrDefaultAsync<CheckoutRow>(new CommandDefinition(
            $"SELECT {SelectColumns} FROM stripe_checkouts WHERE payment_intent = @paymentIntent", new { paymentIntent }, cancellationToken: ct)))?.ToCheckout();
    }

    public async Task<IReadOnlyList<StripeCheckout>> CheckoutsAsync(string accountId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<CheckoutRow>(new CommandDefinition(
            $"SELECT {SelectColumns} FROM stripe_checkouts WHERE account_id = @accountId ORDER BY created_at DESC, id DESC LIMIT @limit",
            new { accountId, limit }, cancellationToken: ct))).Select(r => r.ToCheckout()).ToList();
    }

    private const string CompleteCheckoutSql = """
        UPDATE stripe_checkouts SET status = 'complete', payment_intent = COALESCE(@paymentIntent, payment_intent), credited_micros = @creditedMicros,
            completed_at = COALESCE(completed_at, @now)
        WHERE id = @id
        """;

    public async Task CompleteCheckoutAsync(string id, string? paymentIntent, long creditedMicros, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition(CompleteCheckoutSql, new { id, paymentIntent, creditedMicros, now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }

    /// <summary>Marks the checkout complete in the same transaction as its credit (idempotent: a replay writes the same).</summary>
    public Ledger.LedgerSideWrite CompleteCheckoutWrite(string id, string? paymentIntent, long creditedMicros) => new(CompleteCheckoutSql, new Dictionary<string, object?>
    {
        ["id"] = id, ["paymentIntent"] = paymentIntent, ["creditedMicros"] = creditedMicros, ["now"] = time.GetUtcNowMicros(),
    });

    public async Task SetCheckoutStatusAsync(string id, string status, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("UPDATE stripe_checkouts SET status = @status WHERE id = @id AND status <> 'complete'",
            new { id, status }, cancellationToken: ct));
    }

    private const string RefundStateSql = """
        UPDATE stripe_checkouts SET refunded_cents = @refundedCents, clawed_back_micros = @clawedBackMicros, unrecovered_micros = @unrecoveredMicros,
            refund_seq = @seq
        WHERE id = @id AND refund_seq = @seq - 1
        """;

    /// <summary>
    /// The refund state a change reaches, written in the same transaction as the ledger transfer that is the change
    /// (<c>stripe:refund:{charge}:{seq}</c>); a replay finds the sequence moved on and writes nothing.
    /// </summary>
    public Ledger.LedgerSideWrite RefundStateWrite(string id, long refundedCents, long clawedBackMicros, long unrecoveredMicros, long seq) => new(RefundStateSql,
        new Dictionary<string, object?>
        {
            ["id"] = id, ["refundedCents"] = refundedCents, ["clawedBackMicros"] = clawedBackMicros, ["unrecoveredMicros"] = unrecoveredMicros, ["seq"] = seq,
        });

    /// <summary>Records a refund state that moved no money, if no other change came first (compare-and-set on the sequence).</summary>
    public async Task<bool> TryRecordRefundAsync(string id, long refundedCents, long clawedBackMicros, long unrecoveredMicros, long seq, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteAsync(new CommandDefinition(RefundStateSql, new { id, refundedCents, clawedBackMicros, unrecoveredMicros, seq }, cancellationToken: ct)) == 1;
    }

    public async Task<bool> EventSeenAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT COUNT(*) FROM stripe_events WHERE id = @id", new { id }, cancellationToken: ct)) > 0;
    }

    private const string InsertEventSql = """
        INSERT INTO stripe_events (id, type, created, account_id, outcome, received_at) VALUES (@id, @type, @created, @accountId, @outcome, @now)
        ON CONFLICT (id) DO NOTHING
        """;

    /// <summary>The event's row as a ledger side write: recorded in the same transaction as the transfer that is its effect.</summary>
    public Ledger.LedgerSideWrite EventWrite(StripeEventRef e, string? accountId, string outcome) => new(InsertEventSql, new Dictionary<string, object?>
    {
        ["id"] = e.Id, ["type"] = e.Type, ["created"] = e.Created, ["accountId"] = accountId, ["outcome"] = outcome, ["now"] = time.GetUtcNowMicros(),
    });

    public async Task RecordEventAsync(string id, string type, long created, string? accountId, string outcome, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition(InsertEventSql, new { id, type, created, accountId, outcome, now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }

    public async Task<string?> EventOutcomeAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<string?>(new CommandDefinition("SELECT outcome FROM stripe_events WHERE id = @id", new { id }, cancellationToken: ct));
    }

    private sealed record DisputeRow(string id, string account_id, string? charge_id, long amount_cents, long frozen_micros, string status)
    {
        public StripeDispute ToDispute() => new(id, account_id, charge_id, amount_cents, frozen_micros, status);
    }

    public async Task<StripeDispute?> DisputeAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QuerySingleOrDefaultAsync<DisputeRow>(new CommandDefinition(
            "SELECT id, account_id, charge_id, amount_cents, frozen_micros, status FROM stripe_disputes WHERE id = @id", new { id }, cancellationToken: ct)))?.ToDispute();
    }

    public async Task SaveDisputeAsync(StripeDispute d, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO stripe_disputes (id, account_id, charge_id, amount_cents, frozen_micros, status, updated_at)
            VALUES (@Id, @AccountId, @ChargeId, @AmountCents, @FrozenMicros, @Status, @now)
            ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
            """, new { d.Id, d.AccountId, d.ChargeId, d.AmountCents, d.FrozenMicros, d.Status, now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }

    private sealed record SubscriptionRow(string id, string account_id, string? plan_id, string? plan_interval, string status, long last_event_created, long? past_due_since)
    {
        public StripeSubscriptionState ToState() => new(id, account_id, plan_id, plan_interval, status, last_event_created,
            past_due_since is { } p ? UnixMicros.ToDateTimeOffset(p) : null);
    }

    private const string SubscriptionColumns = "id, account_id, plan_id, plan_interval, status, last_event_created, past_due_since";

    public async Task<StripeSubscriptionState?> SubscriptionAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QuerySingleOrDefaultAsync<SubscriptionRow>(new CommandDefinition(
            $"SELECT {SubscriptionColumns} FROM stripe_subscriptions WHERE id = @id", new { id }, cancellationToken: ct)))?.ToState();
    }

    /// <summary>
    /// Records a subscription's state if its event is not older than the last one applied; false when it is stale.
    /// past_due_since is kept while the subscription stays past due, set when it becomes so, cleared otherwise.
    /// </summary>
    public async Task<bool> SaveSubscriptionAsync(string id, string accountId, string? planId, string? interval, string status, long eventCreated, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var now = time.GetUtcNowMicros();
        var changed = await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO stripe_subscriptions (id, account_id, plan_id, plan_interval, status, last_event_created, past_due_since, updated_at)
            VALUES (@id, @accountId, @planId, @interval, @status, @eventCreated, CASE WHEN @status = 'past_due' THEN @now ELSE NULL END, @now)
            ON CONFLICT (id) DO UPDATE SET plan_id = COALESCE(excluded.plan_id, stripe_subscriptions.plan_id),
                plan_interval = COALESCE(excluded.plan_interval, stripe_subscriptions.plan_interval), status = excluded.status,
                last_event_created = excluded.last_event_created, updated_at = excluded.updated_at,
                past_due_since = CASE WHEN excluded.status = 'past_due' THEN COALESCE(stripe_subscriptions.past_due_since, excluded.past_due_since) ELSE NULL END
            WHERE stripe_subscriptions.last_event_created <= excluded.last_event_created
            """, new { id, accountId, planId, interval, status, eventCreated, now }, cancellationToken: ct));
        return changed == 1;
    }

    /// <summary>Subscriptions past due since before <paramref name="before"/>.</summary>
    public async Task<IReadOnlyList<StripeSubscriptionState>> PastDueSinceAsync(DateTimeOffset before, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<SubscriptionRow>(new CommandDefinition(
            $"SELECT {SubscriptionColumns} FROM stripe_subscriptions WHERE status = 'past_due' AND past_due_since < @before LIMIT 200",
            new { before = UnixMicros.From(before) }, cancellationToken: ct))).Select(r => r.ToState()).ToList();
    }

    public async Task MarkSubscriptionAsync(string id, string status, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("UPDATE stripe_subscriptions SET status = @status, past_due_since = NULL, updated_at = @now WHERE id = @id",
            new { id, status, now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }
}
