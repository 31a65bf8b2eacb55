using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure;

namespace Tollgate.Features.Metering;

/// <summary>Configuration section <c>Tollgate:Metering</c>.</summary>
public sealed record MeteringOptions
{
    public const string Section = "Tollgate:Metering";
    public const string Reject = "reject";
    public const string AllowAndReview = "allow_and_review";

    /// <summary>
    /// What a usage event naming a model the catalog does not know gets: <c>reject</c> (default; rejected with
    /// <c>model_not_found</c>, nothing stored) or <c>allow_and_review</c> (recorded as <c>needs_review</c> with null
    /// costs, nothing charged).
    /// </summary>
    public string UnknownModelPolicy { get; init; } = Reject;

    /// <summary>
    /// <c>true</c>: every new usage event counts as one of the plan's included requests (<c>IncludedRequests</c>) in the
    /// plan period it occurred in, like a gateway call — for apps that call providers themselves and report usage.
    /// Past the quota an event is rejected with <c>quota_exceeded</c> (nothing charged or recorded) unless the plan
    /// bills overage; usage alerts (<c>quota:requests</c>) are observed as for gateway calls. Default <c>false</c>.
    /// </summary>
    public bool CountTowardPlanQuota { get; init; }
}

/// <summary>One well-formed usage event. <see cref="Metadata"/> is compact JSON object text; <see cref="Timestamp"/> is whole micro-seconds.</summary>
internal sealed record UsageEvent(string Id, string Model, TokenUsage Tokens, DateTimeOffset? Timestamp, string? RequestId, string? Metadata)
{
    /// <summary>The end customer the usage was for (its caps apply); a key bound to a customer names it by itself.</summary>
    public string? CustomerId { get; init; }

    /// <summary>The marketplace agent the usage went through: its per-token markup is charged and the creator's share split off.</summary>
    public string? AgentId { get; init; }
}

public enum UsageEventStatus { Accepted, Duplicate, Rejected }

/// <summary>Why an event was rejected: a stable <c>code</c>, a message, and the offending field when there is one.</summary>
public sealed record UsageEventError(string Code, string Message, string? Param = null);

/// <summary>
/// The answer for one event. For accepted and duplicate events the amounts are those of the (original) charge:
/// <c>user_price_micros</c> debited (rounded up), <c>provider_cost_usd</c> exact, <c>transfer_id</c> the ledger transfer
/// (null when nothing was charged: a zero price, or <c>needs_review</c>).
/// </summary>
public sealed record UsageEventResult(
    string? Id,
    UsageEventStatus Status,
    UsageEventError? Error,
    string? Model,
    string? BillingStatus,
    long? UserPriceMicros,
    long? ProviderCostMicros,
    string? ProviderCostUsd,
    string? TransferId)
{
    public static UsageEventResult Rejected(string? id, string code, string message, string? param = null) =>
        new(id, UsageEventStatus.Rejected, new UsageEventError(code, message, param), null, null, null, null, null, null);

    public static UsageEventResult From(UsageRecord r, UsageEventStatus status) => new(r.Id, status, null, r.Model,
        UsageStore.StatusText(r.BillingStatus), r.UserPriceMicros, r.ProviderCostMicros, r.ProviderCostUsd, r.TransferId);
}

/// <summary>
/// Rates usage events and charges them through the ledger. Per event:
/// <list type="number">
/// <item>Already recorded (same account and id)? Same content → <c>duplicate</c> with the stored charge; other content →
/// <c>idempotency_conflict</c>. Nothing is charged.</item>
/// <item>Rate at the event's timestamp (default now). Unknown model: rejected, or under <c>allow_and_review</c> a
/// <c>needs_review</c> record with null costs and no charge (<see cref="RerateService"/> prices it later). Internal
/// keys: an <c>internal</c> record with both costs, no charge (step 3 is skipped).</item>
/// <item>Debit the user price from the caller's account to <c>system:revenue</c> as posted ledger transfer
/// <c>usage:{account}:{event id}</c>, code <c>usage</c>, reference = request id, metadata = a hash of the event's
/// content. All events of a batch are submitted at once, so the ledger commits them in one group.
/// Insufficient funds → rejected <c>insufficient_credits</c>, no record (the client may retry the id after a top-up).</item>
/// <item>Insert the usage records of the batch in one transaction (<c>ON CONFLICT DO NOTHING</c>).</item>
/// </list>
/// The ledger transfer comes <b>before</b> the record: money is the source of truth. A crash between 3 and 4 leaves a
/// charge without a record, never a record without a charge; the client's retry of the same event finds no record,
/// the ledger answers <c>Replayed</c> (same id, same content hash, same amount: nothing charged again) and the record is
/// written then, so every retry heals. A retry with other content is refused by the ledger as a conflict.
/// </summary>
internal sealed partial class UsageEventService(
    LedgerService ledger, SystemAccounts system, IUsageStore store, PricingCatalog catalog, Plans.PlanCatalog plans, Budgets.BudgetService budgets,
    IOptions<MeteringOptions> options, TimeProvider time, Alerts.AlertService alerts, Marketplace.MarketplaceService market, Plans.QuotaStore quotas,
    ILogger<UsageEventService> logger)
{
    public const int MaxBatchEvents = 1_000;
    public const int MaxModelLength = 200;
    public const string UsageCode = "usage";

    /// <summary>How far ahead of the server clock an event's timestamp may be (clock skew).</summary>
    public static readonly TimeSpan MaxFutureSkew = TimeSpan.FromMinutes(5);

    private readonly bool _allowUnknown = options.Value.UnknownModelPolicy == MeteringOptions.AllowAndReview;
    private readonly bool _countQuota = options.Value.CountTowardPlanQuota;

    public static string TransferId(Caller c, string id) => $"usage:{c.AccountId}:{id}";

    /// <summary>A prepared event: the record to store, and the ledger transfer to make before it (null: nothing to charge).</summary>
    private sealed record Work(int Index, UsageEvent Event, UsageRecord Record, TransferRequest? Transfer)
    {
        /// <summary>The creator's share of an agent's markup, committed atomically with <see cref="Transfer"/>.</summary>
        public TransferRequest? Share { get; init; }
    }

    /// <param name="events">Per position: a parsed event, or the rejection its parsing produced.</param>
    public async Task<UsageEventResult[]> ProcessAsync(Caller caller, IReadOnlyList<(UsageEvent? Event, UsageEventResult? Rejection)> events, CancellationToken ct)
    {
        var results = new UsageEventResult[events.Count];
        var now = time.GetUtcNow();
        var revenue = await system.RevenueAsync(ct);

        // An id twice in one batch is ambiguous (which content counts?): every occurrence is rejected, none charged.
        var repeated = events.Where(e => e.Event is not null).GroupBy(e => e.Event!.Id, StringComparer.Ordinal)
            .Where(g => g.Count() > 1).Select(g => g.Key).ToHashSet(StringComparer.Ordinal);

        // Agents named by events: looked up once per batch; unknown or unpaid ones reject their events.
        var agents = new Dictionary<string, (Marketplace.Agent? Agent, bool Access)>(StringComparer.Ordinal);
        foreach (var agentId in events.Select(e => e.Event?.AgentId).OfType<string>().Distinct(StringComparer.Ordinal))
        {
            var agent = await market.GetAsync(agentId, ct);
            agents[agentId] = (agent, agent is not null && await market.HasAccessAsync(caller.AccountId, agent, ct));
        }

        var work = new List<Work>();
        for (var i = 0; i < events.Count; i++)
        {
            var (e, rejection) = events[i];
            if (e is null) { results[i] = rejection!; continue; }
            if (repeated.Contains(e.Id))
            {
                results[i] = UsageEventResult.Rejected(e.Id, "duplicate_id_in_batch", $"Event id '{e.Id}' occurs more than once in this batch; none of them was processed.", "id");
                continue;
            }
            if (caller.Settings.CustomerId is { } bound && e.CustomerId is { } named && named != bound)
            {
                results[i] = UsageEventResult.Rejected(e.Id, "customer_not_allowed", $"This API key belongs to the end customer '{bound}' and cannot report usage for '{named}'.", "customer_id");
                continue;
            }
            if (e.Timestamp is { } ts && ts > now + MaxFutureSkew)
            {
                results[i] = UsageEventResult.Rejected(e.Id, "timestamp_in_future",
                    $"'timestamp' is more than {MaxFutureSkew.TotalMinutes:0} minutes ahead of the server clock ({now:O}).", "timestamp");
                continue;
            }
            Marketplace.Agent? through = null;
            if (e.AgentId is { } agentName)
            {
                var (agent, access) = agents[agentName];
                if (agent is null)
                {
                    results[i] = UsageEventResult.Rejected(e.Id, "agent_not_found", $"No marketplace agent '{agentName}'.", "agent_id");
                    continue;
                }
                if (!access)
                {
                    results[i] = UsageEventResult.Rejected(e.Id, "agent_not_purchased", $"The agent '{agentName}' is sold {agent.PricingMode.Replace('_', ' ')}: buy it first.", "agent_id");
                    continue;
                }
                through = agent;
            }
            if (Prepare(caller, revenue, e, i, now, out var rejected) is { } w)
                work.Add(through is null || w.Transfer is null ? w : await WithAgentAsync(w, through, caller, revenue, ct));
            else results[i] = rejected!;
        }

        // 1. Events already recorded: duplicates or conflicts, never charged again.
        var existing = await store.GetManyAsync(caller.AccountId, work.Select(w => w.Event.Id).ToArray(), ct);
        var fresh = new List<Work>(work.Count);
        foreach (var w in work)
        {
            if (existing.TryGetValue(w.Event.Id, out var stored)) results[w.Index] = Replay(w, stored);
            else fresh.Add(w);
        }

        // 1b. Under CountTowardPlanQuota each new event takes one of the plan's included requests first; an event past
        // the quota is refused before anything is charged. A unit taken for an event that is then not charged and
        // recorded by this request (refused, or charged by a concurrent twin that counted it) is given back below.
        var quotaUnits = new Dictionary<int, Plans.PlanPeriod>();
        if (_countQuota && plans.For(caller) is { IncludedRequests: { } included } plan)
        {
            var counted = new List<Work>(fresh.Count);
            foreach (var w in fresh)
            {
                var period = Plans.PlanPeriod.Of(caller, w.Event.Timestamp ?? now);
                var used = await quotas.TryConsumeCountedAsync(caller.AccountId, Plans.QuotaStore.Requests, period.Start, included, ct);
                if (used is null && plan.BillsOverage) used = await quotas.AddAsync(caller.AccountId, Plans.QuotaStore.Requests, period.Start, 1, ct);
                if (used is null)
                {
                    results[w.Index] = UsageEventResult.Rejected(w.Event.Id, "quota_exceeded",
                        $"The plan '{plan.Id}' includes {included} requests per period and they are used up; the quota resets at {period.End:O}. Nothing was charged or recorded.");
                    continue;
                }
                quotaUnits[w.Index] = period;
                var (subject, periodKey) = Plans.QuotaStore.AlertSubject(Plans.QuotaStore.Requests, period.Start);
                alerts.PostUsage(caller.AccountId, subject, periodKey, used.Value, included);
                counted.Add(w);
            }
            fresh = counted;
        }

        // 2. Charge every fresh event at once: the ledger's writer commits whatever is queued as one transaction.
        // Internal keys are never debited, so no cap applies to them (their work has no transfer).
        var budgetsByCustomer = new Dictionary<string, Budgets.CallBudget>(StringComparer.Ordinal);
        foreach (var customer in fresh.Where(w => w.Transfer is not null).Select(w => w.Record.CustomerId ?? "").Distinct())
            budgetsByCustomer[customer] = await budgets.ForCallAsync(caller, customer.Length == 0 ? null : customer, now, ct);
        var sink = budgetsByCustomer.Values.Any(b => b.Legs.Count > 0) ? await budgets.SinkAsync(ct) : 0;
        var charges = await Task.WhenAll(fresh.Select(w => w.Transfer is null
            ? Task.FromResult<(TransferResult?, Budgets.CapLeg?)>((null, null))
            : ChargeAsync(caller.AccountId, w.Transfer, budgetsByCustomer[w.Record.CustomerId ?? ""], sink, ct, w.Share)));
        var toStore = new List<(Work Work, UsageRecord Record, bool Replayed)>(fresh.Count);
        long? lowestBalance = null;
        for (var i = 0; i < fresh.Count; i++)
        {
            var w = fresh[i];
            var (charge, exceeded) = charges[i];
            if (w.Transfer is not null && budgetsByCustomer[w.Record.CustomerId ?? ""].CustomerBlocked)
            {
                results[w.Index] = UsageEventResult.Rejected(w.Event.Id, "customer_blocked", $"The end customer '{w.Record.CustomerId}' is blocked by the account; nothing was charged or recorded.", "customer_id");
                continue;
            }
            if (exceeded is not null)
            {
                results[w.Index] = UsageEventResult.Rejected(w.Event.Id, "budget_exceeded",
                    $"Budget exceeded: {exceeded.Describe()} cannot cover {w.Record.UserPriceMicros} micro-USD; nothing was charged or recorded; {exceeded.ResetText()}.");
                continue;
            }
            switch (charge?.Code)
            {
                case null:
                    toStore.Add((w, w.Record, false));
                    break;
                case TransferResultCode.Ok or TransferResultCode.Replayed:
                    // Without a client timestamp the event happened when it was charged (the original charge, on a replay).
                    var record = w.Event.Timestamp is null ? w.Record with { OccurredAt = charge.Value.Transfer!.Timestamp } : w.Record;
                    toStore.Add((w, record, charge.Value.Code == TransferResultCode.Replayed));
                    if (charge.Value.Code == TransferResultCode.Ok) lowestBalance = Math.Min(lowestBalance ?? long.MaxValue, charge.Value.Transfer!.DebitBalanceAfter);
                    break;
                case TransferResultCode.InsufficientFunds:
                    results[w.Index] = UsageEventResult.Rejected(w.Event.Id, "insufficient_credits",
                        $"The account's available balance does not cover {w.Record.UserPriceMicros} micro-USD; nothing was charged or recorded.");
                    break;
                case TransferResultCode.IdempotencyConflict:
                    results[w.Index] = Conflict(w.Event.Id);
                    break;
                case var other:
                    results[w.Index] = UsageEventResult.Rejected(w.Event.Id, "ledger_rejected", $"The ledger refused the charge ({other}); nothing was charged.");
                    break;
            }
        }

        // The lowest balance after this batch's charges, for low-balance alerts (queued: off the request's path).
        if (lowestBalance is { } balance) alerts.PostBalance(caller.AccountId, balance);

        // 3. Record what was charged (or needs review). A record that already exists was written by a concurrent twin.
        // Not cancelled with the request: once money has moved, a client that hung up must not leave it unrecorded.
        var inserted = await store.InsertManyAsync(toStore.Select(s => s.Record).ToArray(), CancellationToken.None);
        List<(Work Work, bool Replayed)>? raced = null;
        for (var i = 0; i < toStore.Count; i++)
        {
            var (w, record, replayed) = toStore[i];
            if (inserted[i])
            {
                // A charge whose record was missing: an earlier delivery stopped between the ledger and the record.
                if (replayed) LogHealed(logger, caller.AccountId, w.Event.Id);
                results[w.Index] = UsageEventResult.From(record, replayed ? UsageEventStatus.Duplicate : UsageEventStatus.Accepted);
            }
            else (raced ??= []).Add((w, replayed));
        }
        if (raced is not null)
        {
            var stored = await store.GetManyAsync(caller.AccountId, raced.Select(r => r.Work.Event.Id).ToArray(), CancellationToken.None);
            foreach (var (w, replayed) in raced)
            {
                var result = Replay(w, stored[w.Event.Id]);
                // This request made the charge (the ledger said Ok) even though its twin stored the record first.
                results[w.Index] = !replayed && w.Transfer is not null && result.Status == UsageEventStatus.Duplicate
                    ? result with { Status = UsageEventStatus.Accepted }
                    : result;
            }
        }
        // Units taken for events this request did not accept (refused, or already counted by an earlier or concurrent delivery).
        foreach (var (index, period) in quotaUnits)
            if (results[index].Status != UsageEventStatus.Accepted)
                await quotas.ReleaseAsync(caller.AccountId, Plans.QuotaStore.Requests, period.Start);
        return results;
    }

    /// <summary>The charge and, under caps, its twins as one atomic group; the main result and the cap that refused it, if one did.</summary>
    private async Task<(TransferResult?, Budgets.CapLeg?)> ChargeAsync(string accountId, TransferRequest transfer, Budgets.CallBudget budget, long sink, CancellationToken ct,
        TransferRequest? share = null)
    {
        // A blocked customer's event is refused before anything moves.
        if (budget.CustomerBlocked) return (null, null);
        if (budget.Legs.Count == 0 && share is null) return (await ledger.TransferAsync(transfer, ct), null);
        IReadOnlyList<TransferRequest> group = budget.Legs.Count == 0 ? [transfer] : Budgets.CapTransfers.Group(transfer, budget.Legs, sink);
        // The creator's share rides last in the same atomic group: the charge and the split land together or not at all.
        if (share is not null) group = [.. group, share];
        var results = await ledger.TransferAtomicAsync(group, ct);
        var main = results[0];
        if (main.Succeeded && results.Any(r => r.Code == TransferResultCode.IdempotencyConflict)) main = new(TransferResultCode.IdempotencyConflict, null);
        // Each cap's spending after this charge, for its usage alerts (as the gateway reports after a call).
        if (main.Code == TransferResultCode.Ok)
            for (var i = 0; i < budget.Legs.Count; i++)
                if (results[i + 1].Transfer is { } twin)
                    alerts.PostUsage(accountId, budget.Legs[i].AlertSubject, budget.Legs[i].Period.Key, -twin.DebitBalanceAfter, budget.Legs[i].Cap.LimitMicros);
        return (main, Budgets.CapTransfers.Refused(results, budget.Legs));
    }

    private Work? Prepare(Caller caller, long revenue, UsageEvent e, int index, DateTimeOffset now, out UsageEventResult? rejected)
    {
        rejected = null;
        var resolution = catalog.Resolve(e.Model);
        var at = e.Timestamp ?? now;
        var record = new UsageRecord(e.Id, caller.AccountId, caller.KeyId, e.Model, null, e.Tokens.InputTokens, e.Tokens.OutputTokens,
            e.Tokens.CacheReadTokens, e.Tokens.CacheWriteTokens, e.Tokens.ReasoningTokens, null, null, null, UsageBillingStatus.NeedsReview,
            e.RequestId, e.Metadata, null, now, at) { CustomerId = e.CustomerId ?? caller.Settings.CustomerId };
        switch (resolution.Outcome)
        {
            case ResolveOutcome.Ambiguous:
                rejected = UsageEventResult.Rejected(e.Id, "model_ambiguous",
                    $"'{e.Model}' matches models of several providers ({string.Join(", ", resolution.Candidates)}); name one as 'provider/model'.", "model");
                return null;
            case ResolveOutcome.NotFound when !_allowUnknown:
                rejected = UsageEventResult.Rejected(e.Id, "model_not_found",
                    $"No priced model '{e.Model}'. Use 'provider/model' ids from GET /api/v1/pricing.", "model");
                return null;
            case ResolveOutcome.NotFound:
                return new Work(index, e, record, null);
        }

        var model = resolution.Model!;
        var rating = Rater.Rate(model, e.Tokens, at, plans.For(caller).Markup);
        // An internal key's usage is priced and recorded like any other, but never debited.
        var transferId = rating.UserPriceMicros > 0 && !caller.IsInternal ? TransferId(caller, e.Id) : null;
        record = record with
        {
            Model = model.Key,
            Provider = model.Model.ProviderId,
            ProviderCostMicros = rating.ProviderCostMicros,
            ProviderCostUsd = PricingEndpoints.Dec(rating.ProviderCostUsd),
            UserPriceMicros = rating.UserPriceMicros,
            BillingStatus = caller.IsInternal ? UsageBillingStatus.Internal : UsageBillingStatus.Billed,
            TransferId = transferId,
        };
        var transfer = transferId is null ? null : new TransferRequest
        {
            Id = transferId,
            DebitAccountId = caller.LedgerAccountId,
            CreditAccountId = revenue,
            Amount = rating.UserPriceMicros,
            Code = UsageCode,
            Reference = e.RequestId,
            // The content hash makes a retry with other content a ledger conflict even before its record exists.
            Metadata = JsonSerializer.Serialize(new Dictionary<string, string> { ["model"] = model.Key, ["event_sha256"] = ContentHash(model.Key, e) }),
        };
        return new Work(index, e, record, transfer);
    }

    /// <summary>
    /// Usage through a per-token agent: the user price gets the agent's markup (floor(price × bps / 10,000)) and the
    /// creator's share of that markup moves from revenue to the creator's earnings with the charge. Other pricing modes
    /// (free, bought monthly or once) leave the price alone.
    /// </summary>
    private async Task<Work> WithAgentAsync(Work w, Marketplace.Agent agent, Caller caller, long revenue, CancellationToken ct)
    {
        if (agent.PricingMode != Marketplace.PricingModes.PerToken) return w;
        var basePrice = w.Transfer!.Amount!.Value;
        var price = agent.UserPrice(basePrice);
        var charge = new Marketplace.AgentCharge(agent, await market.EarningsAccountAsync(agent.CreatorAccountId, ct), caller.AccountId, basePrice, w.Record.ProviderCostMicros);
        return w with
        {
            Record = w.Record with { UserPriceMicros = price },
            // The agent is part of the event's content: the same id through another agent is a conflict.
            Transfer = w.Transfer with { Amount = price, Metadata = w.Transfer.Metadata![..^1] + $",\"agent_id\":{JsonSerializer.Serialize(agent.Id)}}}" },
            Share = Marketplace.MarketplaceService.ShareTransfer(charge, w.Transfer.Id + ":creator", price, revenue, w.Event.Id),
        };
    }

    /// <summary>An event seen before: the stored charge if the content is the same, else a conflict.</summary>
    private static UsageEventResult Replay(Work w, UsageRecord stored)
    {
        var r = w.Record;
        // The stored model is the name as sent while the record waits for review, the resolved id once priced
        // (or re-rated): either matches the same event.
        var same = (stored.Model == r.Model || stored.Model == w.Event.Model) && stored.InputTokens == r.InputTokens && stored.OutputTokens == r.OutputTokens
                   && stored.CacheReadTokens == r.CacheReadTokens && stored.CacheWriteTokens == r.CacheWriteTokens
                   && stored.ReasoningTokens == r.ReasoningTokens && stored.RequestId == r.RequestId && stored.Metadata == r.Metadata
                   && stored.CustomerId == r.CustomerId
                   // Without a timestamp the event means "when first received"; with one it must match.
                   && (w.Event.Timestamp is null || stored.OccurredAt == w.Event.Timestamp);
        return same ? UsageEventResult.From(stored, UsageEventStatus.Duplicate) : Conflict(w.Event.Id);
    }

    private static UsageEventResult Conflict(string id) => UsageEventResult.Rejected(id, "idempotency_conflict",
        $"Event id '{id}' was already used with different content; nothing was charged.", "id");

    /// <summary>SHA-256 (hex) of the event's content as it affects the charge and the record.</summary>
    private static string ContentHash(string modelKey, UsageEvent e)
    {
        var t = e.Tokens;
        var text = string.Join('\n', modelKey, t.InputTokens, t.OutputTokens, t.CacheReadTokens, t.CacheWriteTokens, t.ReasoningTokens,
            e.RequestId ?? "", e.Metadata ?? "", e.Timestamp is { } ts ? UnixMicros.From(ts) : "");
        // Appended only when named, so the hash of an event without a customer is what it always was.
        if (e.CustomerId is { } customer) text += "\ncustomer:" + customer;
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Usage event {EventId} of account {AccountId} was charged earlier without a record; the record is written now.")]
    private static partial void LogHealed(ILogger logger, string accountId, string eventId);
}
