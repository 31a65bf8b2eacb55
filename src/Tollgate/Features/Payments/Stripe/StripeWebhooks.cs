using System.Text.Json;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Accounts;
using Tollgate.Features.Ledger;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>What handling an event came to; <see cref="Retry"/> asks Stripe to deliver it again later.</summary>
public sealed record WebhookOutcome(string Outcome, string? AccountId = null, bool Retry = false);

/// <summary>
/// Stripe events, the incoming half. Each effect is a ledger transfer whose id is derived from the Stripe object
/// (session, charge and refunded total, dispute), so it happens once however often and in whatever order events
/// arrive; the event id is recorded after, and a redelivery of a recorded event changes nothing. Decisions follow
/// the object's state in the event (a session's payment status, a charge's cumulative refunded amount, a dispute's
/// status), never the arrival order. Amounts credited come from Tollgate's own record of the session, not the event.
/// </summary>
internal sealed partial class StripeWebhooks(
    StripeStore store, StripeClient stripe, LedgerService ledger, SystemAccounts system, AccountService accounts, Plans.SubscriptionService subscriptions, PostpaidInvoicer invoicer,
    Microsoft.Extensions.Options.IOptions<StripeOptions> options, Alerts.AlertService alerts, ILogger<StripeWebhooks> logger)
{
    public const string TopupCode = "topup";
    public const string RefundCode = "refund";
    /// <summary>Credits given back because a refund failed or was canceled after they were taken back.</summary>
    public const string RefundReversedCode = "refund_reversed";
    public const string DisputeCode = "dispute_hold";

    public async Task<WebhookOutcome> HandleAsync(JsonElement e, CancellationToken ct)
    {
        var id = e.GetProperty("id").GetString()!;
        var type = e.GetProperty("type").GetString()!;
        if (await store.EventOutcomeAsync(id, ct) is { } earlier) return new WebhookOutcome("duplicate:" + earlier);
        var obj = e.GetProperty("data").GetProperty("object");
        var created = e.TryGetProperty("created", out var cr) && cr.TryGetInt64(out var cv) ? cv : 0;
        var ev = new StripeEventRef(id, type, created);
        var outcome = type switch
        {
            "customer.subscription.created" or "customer.subscription.updated" or "customer.subscription.deleted" or "customer.subscription.paused"
                or "customer.subscription.resumed" => await SubscriptionChangedAsync(obj, type, created, ct),
            "invoice.paid" or "invoice.payment_succeeded" => await InvoiceAsync(obj, paid: true, ev, ct),
            "invoice.payment_failed" => await InvoiceAsync(obj, paid: false, ev, ct),
            "checkout.session.completed" or "checkout.session.async_payment_succeeded" => await CheckoutCompletedAsync(obj, ev, ct),
            "checkout.session.async_payment_failed" or "checkout.session.expired" => await CheckoutClosedAsync(obj, type, ct),
            "charge.refunded" or "refund.created" or "refund.updated" or "refund.failed" or "charge.refund.updated" => await RefundChangedAsync(obj, type, ev, ct),
            "charge.dispute.created" => await DisputeCreatedAsync(obj, ev, ct),
            "charge.dispute.closed" => await DisputeClosedAsync(obj, ev, ct),
            _ => new WebhookOutcome("ignored:unhandled_type"),
        };
        if (outcome.Outcome.StartsWith("ignored:unhandled", StringComparison.Ordinal)) LogUnhandled(logger, type, id);
        // Effects that moved money recorded the event in the same transaction (LedgerCommit.SideWrites); this records the
        // rest (and is a no-op for those).
        if (!outcome.Retry)
            await store.RecordEventAsync(id, type, created, outcome.AccountId, outcome.Outcome, CancellationToken.None);
        return outcome;
    }

    private async Task<WebhookOutcome> CheckoutCompletedAsync(JsonElement session, StripeEventRef ev, CancellationToken ct)
    {
        var sessionId = Str(session, "id")!;
        if (await store.CheckoutAsync(sessionId, ct) is not { } checkout) return new WebhookOutcome("ignored:unknown_session");
        if (checkout.Mode == "subscription")
        {
            // The plan applies at once; the subscription's own events then keep its status and period in step.
            if (Str(session, "status") != "complete" || checkout.PlanId is null) return new WebhookOutcome("awaiting_payment", checkout.AccountId);
            var activated = await subscriptions.ActivateAsync(checkout.AccountId, checkout.PlanId, checkout.PlanInterval ?? "month", Str(session, "subscription"), Str(session, "customer"), ct);
            if (!activated.Succeeded) return Failed(activated, checkout.AccountId);
            await store.CompleteCheckoutAsync(sessionId, null, 0, CancellationToken.None);
            return new WebhookOutcome("subscribed", checkout.AccountId);
        }
        var paid = Str(session, "payment_status") is "paid" or "no_payment_required";
        if (!paid) return new WebhookOutcome("awaiting_payment", checkout.AccountId);
        var total = session.TryGetProperty("amount_total", out var t) && t.TryGetInt64(out var a) ? a : -1;
        if (total != checkout.AmountCents || !string.Equals(Str(session, "currency"), checkout.Currency, StringComparison.OrdinalIgnoreCase))
        {
            LogAmountMismatch(logger, sessionId, total, checkout.AmountCents);
            return new WebhookOutcome("rejected:amount_mismatch", checkout.AccountId);
        }
        if (await accounts.GetAsync(checkout.AccountId, ct) is not { } account) return new WebhookOutcome("ignored:account_gone", checkout.AccountId);
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = $"stripe:checkout:{sessionId}",
            DebitAccountId = await system.StripeClearingAsync(ct),
            CreditAccountId = account.Account.LedgerAccountId,
            Amount = checkout.AmountMicros,
            Code = TopupCode,
            Reference = sessionId,
            Metadata = JsonSerializer.Serialize(new Dictionary<string, object?> { ["pack"] = checkout.PackId, ["amount_cents"] = checkout.AmountCents, ["currency"] = checkout.Currency }),
        }, new LedgerCommit
        {
            // The purchase is marked complete with its credit: a redelivery (a duplicate by its event id) cannot leave it open.
            SideWrites = [store.EventWrite(ev, checkout.AccountId, "credited"), store.CompleteCheckoutWrite(sessionId, Str(session, "payment_intent"), checkout.AmountMicros)],
        }, ct);
        if (!result.Succeeded) throw new InvalidOperationException($"The ledger refused the top-up of {sessionId}: {result.Code}.");
        // A top-up can end a low-balance alert: tell the alerts engine now, not at the account's next call.
        if (result.Code == TransferResultCode.Ok) alerts.PostBalance(checkout.AccountId, result.Transfer!.CreditBalanceAfter);
        return new WebhookOutcome(result.Code == TransferResultCode.Replayed ? "credited:replayed" : "credited", checkout.AccountId);
    }

    private async Task<WebhookOutcome> CheckoutClosedAsync(JsonElement session, string type, CancellationToken ct)
    {
        if (await store.CheckoutAsync(Str(session, "id")!, ct) is not { } checkout) return new WebhookOutcome("ignored:unknown_session");
        await store.SetCheckoutStatusAsync(checkout.Id, type.EndsWith("expired", StringComparison.Ordinal) ? "expired" : "payment_failed", ct);
        return new WebhookOutcome("closed", checkout.AccountId);
    }

    /// <summary>
    /// Applies a charge's refund state, whichever event announced it (<c>charge.refunded</c>, <c>refund.created</c>/<c>updated</c>/
    /// <c>failed</c>, <c>charge.refund.updated</c>). The state is the charge as Stripe has it now (<c>GET /v1/charges/{id}</c>),
    /// not the event's snapshot, so a late or reordered event cannot apply an old total. Credits of the refunded share
    /// (credited × refunded ÷ paid, rounded down; a full refund takes back exactly what was credited) are taken back as far as
    /// the account's available balance (its credit limit included) allows — a postpaid account may go negative that far — and
    /// the rest is recorded as unrecovered and flagged. When the refunded total falls (a refund failed or was canceled), what
    /// was taken back for it is given back. Each change is the transfer <c>stripe:refund:{charge}:{seq}</c>, written with the
    /// new state by compare-and-set on the purchase's refund sequence, so racing deliveries apply it once.
    /// </summary>
    private async Task<WebhookOutcome> RefundChangedAsync(JsonElement obj, string type, StripeEventRef ev, CancellationToken ct)
    {
        var isCharge = type == "charge.refunded" || Str(obj, "object") == "charge";
        if ((isCharge ? Str(obj, "id") : Str(obj, "charge")) is not { } chargeId) return new WebhookOutcome("ignored:no_charge");
        var checkout = Str(obj, "payment_intent") is { } pi ? await store.CheckoutByPaymentIntentAsync(pi, ct) : null;
        // A charge that is not ours costs no API call: its metadata says whose it is.
        if (checkout is null && isCharge)
            return Metadata(obj, "tollgate_account") is { } owner
                // Ours, but its checkout has not completed here yet (events out of order): Stripe will deliver it again.
                ? new WebhookOutcome("retry:purchase_not_completed_yet", owner, Retry: true)
                : new WebhookOutcome("ignored:unknown_charge");
        JsonElement charge;
        try
        {
            charge = await stripe.GetAsync($"/v1/charges/{Uri.EscapeDataString(chargeId)}", ct);
        }
        catch (StripeException e) when (e.Status == 404)
        {
            return new WebhookOutcome("ignored:unknown_charge", checkout?.AccountId);
        }
        catch (StripeException)
        {
            return new WebhookOutcome("retry:stripe_unavailable", checkout?.AccountId, Retry: true);
        }
        checkout ??= Str(charge, "payment_intent") is { } cpi ? await store.CheckoutByPaymentIntentAsync(cpi, ct) : null;
        if (checkout is null)
            return Metadata(charge, "tollgate_account") is { } owner
                ? new WebhookOutcome("retry:purchase_not_completed_yet", owner, Retry: true)
                : new WebhookOutcome("ignored:unknown_charge");
        if (checkout.Status != "complete") return new WebhookOutcome("retry:purchase_not_completed_yet", checkout.AccountId, Retry: true);
        var refunded = charge.TryGetProperty("amount_refunded", out var r) && r.TryGetInt64(out var rv) ? Math.Max(0, rv) : 0;
        var paid = charge.TryGetProperty("amount", out var p) && p.TryGetInt64(out var pv) && pv > 0 ? pv : checkout.AmountCents;
        if (await accounts.GetAsync(checkout.AccountId, ct) is not { } account) return new WebhookOutcome("ignored:account_gone", checkout.AccountId);
        var ledgerAccount = account.Account.LedgerAccountId;
        var clearing = await system.StripeClearingAsync(ct);

        for (var attempt = 0; attempt < 8; attempt++)
        {
            if (attempt > 0 && await store.CheckoutAsync(checkout.Id, ct) is { } fresh) checkout = fresh;
            if (refunded == checkout.RefundedCents)
                return new WebhookOutcome(attempt == 0 ? "ignored:refund_state_unchanged" : "refund_state_applied_concurrently", checkout.AccountId);
            var target = (long)((Int128)checkout.CreditedMicros * Math.Min(refunded, paid) / paid);
            var takeBack = target >= checkout.ClawedBackMicros;
            long moved;
            // A falling total never takes more (what stayed unrecovered is not chased because a refund failed).
            if (takeBack && refunded < checkout.RefundedCents) moved = 0;
            else if (takeBack)
            {
                var available = (await ledger.GetAccountAsync(ledgerAccount, ct))?.AvailableMicros ?? 0;
                moved = Math.Min(target - checkout.ClawedBackMicros, Math.Max(0, available));
            }
            else moved = checkout.ClawedBackMicros - target;
            var clawed = takeBack ? checkout.ClawedBackMicros + moved : target;
            var unrecovered = Math.Max(0, target - clawed);
            var seq = checkout.RefundSeq + 1;
            var outcome = refunded < checkout.RefundedCents ? "refund_reversed" : unrecovered > 0 ? "refunded:flagged_unrecovered" : "refunded";
            if (moved == 0)
            {
                if (!await store.TryRecordRefundAsync(checkout.Id, refunded, clawed, unrecovered, seq, ct)) continue;
            }
            else
            {
                var transferId = $"stripe:refund:{chargeId}:{seq.ToString(System.Globalization.CultureInfo.InvariantCulture)}";
                var result = await ledger.TransferAsync(new TransferRequest
                {
                    Id = transferId,
                    DebitAccountId = takeBack ? ledgerAccount : clearing,
                    CreditAccountId = takeBack ? clearing : ledgerAccount,
                    Amount = moved,
                    Code = takeBack ? RefundCode : RefundReversedCode,
                    Reference = chargeId,
                    Metadata = JsonSerializer.Serialize(new Dictionary<string, object> { ["checkout"] = checkout.Id, ["refunded_cents"] = refunded, ["paid_cents"] = paid }),
                }, new LedgerCommit
                {
                    SideWrites = [store.RefundStateWrite(checkout.Id, refunded, clawed, unrecovered, seq), store.EventWrite(ev, checkout.AccountId, outcome)],
                }, ct);
                // Another change took this sequence number first, or the balance moved under the take: read again and redo.
                if (result.Code is TransferResultCode.IdempotencyConflict or TransferResultCode.InsufficientFunds) continue;
                if (!result.Succeeded) throw new InvalidOperationException($"The ledger refused {transferId}: {result.Code}.");
            }
            if (unrecovered > 0) LogUnrecovered(logger, checkout.AccountId, chargeId, unrecovered);
            return new WebhookOutcome(outcome, checkout.AccountId);
        }
        return new WebhookOutcome("retry:refund_busy", checkout.AccountId, Retry: true);
    }

    /// <summary>Freezes the disputed share of a purchase's credits (as far as available) with a hold that never expires.</summary>
    private async Task<WebhookOutcome> DisputeCreatedAsync(JsonElement dispute, StripeEventRef ev, CancellationToken ct)
    {
        var disputeId = Str(dispute, "id")!;
        if (await store.DisputeAsync(disputeId, ct) is { } known) return new WebhookOutcome("ignored:dispute_known", known.AccountId);
        var checkout = Str(dispute, "payment_intent") is { } pi ? await store.CheckoutByPaymentIntentAsync(pi, ct) : null;
        if (checkout is null || checkout.Status != "complete")
            return Metadata(dispute, "tollgate_account") is { } owner ? new WebhookOutcome("retry:purchase_not_completed_yet", owner, Retry: true) : new WebhookOutcome("ignored:unknown_charge");
        var amount = dispute.TryGetProperty("amount", out var a) && a.TryGetInt64(out var av) ? av : checkout.AmountCents;
        var share = (long)((Int128)checkout.CreditedMicros * Math.Min(amount, checkout.AmountCents) / checkout.AmountCents);
        if (await accounts.GetAsync(checkout.AccountId, ct) is not { } account) return new WebhookOutcome("ignored:account_gone", checkout.AccountId);
        var frozen = 0L;
        var clearing = await system.StripeClearingAsync(ct);
        for (var attempt = 0; attempt < 4 && share > 0; attempt++)
        {
            var available = (await ledger.GetAccountAsync(account.Account.LedgerAccountId, ct))?.AvailableMicros ?? 0;
            var hold = Math.Min(share, Math.Max(0, available));
            if (hold == 0) break;
            var result = await ledger.TransferAsync(new TransferRequest
            {
                Id = $"stripe:dispute:{disputeId}", Kind = TransferKind.Pending, DebitAccountId = account.Account.LedgerAccountId, CreditAccountId = clearing,
                Amount = hold, Code = DisputeCode, Reference = Str(dispute, "charge"),
            }, new LedgerCommit { SideWrites = [store.EventWrite(ev, checkout.AccountId, "frozen")] }, ct);
            if (result.Succeeded) { frozen = result.Transfer!.Amount; break; }
            if (result.Code == TransferResultCode.IdempotencyConflict) { frozen = (await ledger.GetTransferAsync($"stripe:dispute:{disputeId}", ct))?.Amount ?? 0; break; }
            if (result.Code != TransferResultCode.InsufficientFunds) throw new InvalidOperationException($"The ledger refused the dispute hold {disputeId}: {result.Code}.");
        }
        await store.SaveDisputeAsync(new StripeDispute(disputeId, checkout.AccountId, Str(dispute, "charge"), amount, frozen, Str(dispute, "status") ?? "needs_response"), CancellationToken.None);
        return new WebhookOutcome(frozen < share ? "frozen:partially" : "frozen", checkout.AccountId);
    }

    /// <summary>A won dispute releases the frozen credits; a lost one takes them.</summary>
    private async Task<WebhookOutcome> DisputeClosedAsync(JsonElement dispute, StripeEventRef ev, CancellationToken ct)
    {
        var disputeId = Str(dispute, "id")!;
        if (await store.DisputeAsync(disputeId, ct) is not { } known)
            return Metadata(dispute, "tollgate_account") is { } owner ? new WebhookOutcome("retry:dispute_not_opened_yet", owner, Retry: true) : new WebhookOutcome("ignored:unknown_dispute");
        var status = Str(dispute, "status");
        if (status is not ("won" or "lost")) return new WebhookOutcome("ignored:dispute_open", known.AccountId);
        if (known.FrozenMicros > 0)
        {
            var result = await ledger.TransferAsync(new TransferRequest
            {
                Id = $"stripe:dispute:{disputeId}:{status}", Kind = status == "won" ? TransferKind.VoidPending : TransferKind.PostPending,
                PendingId = $"stripe:dispute:{disputeId}", Code = status == "won" ? "dispute_won" : "dispute_lost", Reference = known.ChargeId,
            }, new LedgerCommit { SideWrites = [store.EventWrite(ev, known.AccountId, "dispute_" + status)] }, ct);
            if (!result.Succeeded && result.Code is not (TransferResultCode.PendingTransferAlreadyPosted or TransferResultCode.PendingTransferAlreadyVoided))
                throw new InvalidOperationException($"The ledger refused to close dispute {disputeId}: {result.Code}.");
        }
        await store.SaveDisputeAsync(known with { Status = status }, CancellationToken.None);
        return new WebhookOutcome("dispute_" + status, known.AccountId);
    }

    /// <summary>
    /// Applies a subscription's state: its plan (from the Stripe Price, else its metadata), status, cancel-at-period-end
    /// and period (on the item since API 2025-03-31.basil, at the top level before). A state older than the one applied
    /// last is ignored, whatever order the events arrive in.
    /// </summary>
    private async Task<WebhookOutcome> SubscriptionChangedAsync(JsonElement sub, string type, long created, CancellationToken ct)
    {
        var subscriptionId = Str(sub, "id")!;
        var accountId = Metadata(sub, "tollgate_account") ?? (Str(sub, "customer") is { } customer ? await store.AccountOfCustomerAsync(customer, ct) : null);
        if (accountId is null || await accounts.GetAsync(accountId, ct) is null) return new WebhookOutcome("ignored:unknown_customer");
        var item = sub.TryGetProperty("items", out var items) && items.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Array && data.GetArrayLength() > 0
            ? data[0] : default;
        var priceId = item.ValueKind == JsonValueKind.Object && item.TryGetProperty("price", out var price) ? Str(price, "id") : null;
        var (planId, interval) = options.Value.PlanOfPrice(priceId) is { } sold ? sold : (Metadata(sub, "plan"), Metadata(sub, "interval") ?? "month");
        if (planId is null) return new WebhookOutcome("ignored:unknown_price", accountId);
        var stripeStatus = type == "customer.subscription.deleted" ? "canceled" : Str(sub, "status");
        var status = stripeStatus switch
        {
            "trialing" => Plans.SubscriptionStatuses.Trialing,
            "active" => Plans.SubscriptionStatuses.Active,
            "past_due" or "unpaid" or "paused" => Plans.SubscriptionStatuses.PastDue,
            "canceled" or "incomplete_expired" => Plans.SubscriptionStatuses.Canceled,
            _ => null,
        };
        // incomplete: the first payment has not gone through; nothing is granted until it does.
        if (status is null) return new WebhookOutcome("ignored:status_" + stripeStatus, accountId);
        if (!await store.SaveSubscriptionAsync(subscriptionId, accountId, planId, interval, status, created, ct))
            return new WebhookOutcome("ignored:stale_subscription_state", accountId);
        var start = Seconds(item, "current_period_start") ?? Seconds(sub, "current_period_start");
        var end = Seconds(item, "current_period_end") ?? Seconds(sub, "current_period_end");
        var result = await subscriptions.SyncExternalAsync(accountId, planId, interval, status, sub.TryGetProperty("cancel_at_period_end", out var cape) && cape.ValueKind == JsonValueKind.True,
            start ?? DateTimeOffset.MinValue, end ?? DateTimeOffset.MinValue, subscriptionId, Str(sub, "customer"), ct);
        return result.Succeeded ? new WebhookOutcome("subscription_" + status, accountId) : Failed(result, accountId);
    }

    /// <summary>A subscription invoice paid (past due → active) or failed (→ past due; after the grace period the account drops to the default plan).</summary>
    private async Task<WebhookOutcome> InvoiceAsync(JsonElement invoice, bool paid, StripeEventRef ev, CancellationToken ct)
    {
        var created = ev.Created;
        // A usage invoice of a postpaid account: paid → its amount is credited back.
        if (Str(invoice, "id") is { } invoiceId && paid && Str(invoice, "status") is "paid" or null
            && await invoicer.InvoicePaidAsync(invoiceId, invoice.TryGetProperty("amount_paid", out var ap) && ap.TryGetInt64(out var apv) ? apv : 0,
                store.EventWrite(ev, Metadata(invoice, "tollgate_account"), "usage_invoice_paid"), ct) is { } usage)
            return usage;
        // basil moved the subscription under parent.subscription_details; older versions have it at the top level.
        var subscriptionId = invoice.TryGetProperty("parent", out var parent) && parent.ValueKind == JsonValueKind.Object
            && parent.TryGetProperty("subscription_details", out var details) && details.ValueKind == JsonValueKind.Object
            ? Str(details, "subscription") : null;
        subscriptionId ??= Str(invoice, "subscription");
        if (subscriptionId is null) return new WebhookOutcome("ignored:not_a_subscription_invoice");
        if (await store.SubscriptionAsync(subscriptionId, ct) is not { } state)
            return Str(invoice, "customer") is { } customer && await store.AccountOfCustomerAsync(customer, ct) is { } owner
                ? new WebhookOutcome("retry:subscription_not_known_yet", owner, Retry: true)
                : new WebhookOutcome("ignored:unknown_subscription");
        if (state.Status == Plans.SubscriptionStatuses.Canceled) return new WebhookOutcome("ignored:subscription_canceled", state.AccountId);
        var status = paid ? Plans.SubscriptionStatuses.Active : Plans.SubscriptionStatuses.PastDue;
        if (!await store.SaveSubscriptionAsync(subscriptionId, state.AccountId, null, null, status, created, ct))
            return new WebhookOutcome("ignored:stale_invoice_state", state.AccountId);
        var result = await subscriptions.SetStatusAsync(state.AccountId, status, ct);
        return result.Succeeded || result.Outcome == Plans.SubscriptionOutcome.NoSubscription
            ? new WebhookOutcome(paid ? "invoice_paid" : "invoice_failed", state.AccountId)
            : Failed(result, state.AccountId);
    }

    private static WebhookOutcome Failed(Plans.SubscriptionResult result, string accountId) =>
        // A concurrent change to the same subscription: deliver again and apply it on top.
        new(result.Outcome == Plans.SubscriptionOutcome.Conflict ? "retry:subscription_busy" : "rejected:" + result.Outcome, accountId,
            Retry: result.Outcome == Plans.SubscriptionOutcome.Conflict);

    private static DateTimeOffset? Seconds(JsonElement o, string name) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(name, out var v) && v.TryGetInt64(out var s) ? DateTimeOffset.FromUnixTimeSeconds(s) : null;

    private static string? Str(JsonElement o, string name) => o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string? Metadata(JsonElement o, string key) =>
        o.TryGetProperty("metadata", out var m) && m.ValueKind == JsonValueKind.Object ? Str(m, key) : null;

    [LoggerMessage(Level = LogLevel.Information, Message = "Stripe event {Type} ({EventId}) is not handled; acknowledged")]
    private static partial void LogUnhandled(ILogger logger, string type, string eventId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stripe session {SessionId} paid {Paid} cents but was created for {Expected}; not credited")]
    private static partial void LogAmountMismatch(ILogger logger, string sessionId, long paid, long expected);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Account {AccountId}: refund of charge {ChargeId} could not take back {Micros} micro-USD already spent; flagged")]
    private static partial void LogUnrecovered(ILogger logger, string accountId, string chargeId, long micros);
}
