using System.Text.Json;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Metering;

/// <summary>What re-rating did with one <c>needs_review</c> record.</summary>
public enum RerateOutcomeKind
{
    /// <summary>Priced and debited (or priced at zero: billed without a transfer).</summary>
    Billed,
    /// <summary>Priced and recorded as <c>internal</c> (an internal key's usage): never debited.</summary>
    Internal,
    /// <summary>The model still resolves to no price; the record waits.</summary>
    StillUnknown,
    /// <summary>The stored name matches models of several providers; the record waits (an override under an exact id helps).</summary>
    ModelAmbiguous,
    /// <summary>The account's available balance does not cover the price; nothing charged, the record waits.</summary>
    InsufficientCredits,
    /// <summary>Another re-rate settled the record meanwhile; nothing charged by this one.</summary>
    AlreadyRated,
    /// <summary>The ledger refused the transfer for another reason; nothing charged, the record waits.</summary>
    LedgerRejected,
}

/// <summary>One record's outcome. Amounts are those recorded (micro-USD, rounded up; provider cost exact).</summary>
public sealed record RerateResult(
    string AccountId, string Id, string Model, RerateOutcomeKind Outcome, string? RatedModel, long? UserPriceMicros,
    long? ProviderCostMicros, string? ProviderCostUsd, string? TransferId, string? Message);

public sealed record RerateReport(
    int Examined, int Billed, int Internal, int StillUnknown, int ModelAmbiguous, int InsufficientCredits, int AlreadyRated,
    int LedgerRejected, long BilledMicros, IReadOnlyList<RerateResult> Results);

/// <summary>
/// Prices <c>needs_review</c> usage records whose model now resolves (after an operator added a price) and charges them:
/// <list type="number">
/// <item>Take up to <c>limit</c> waiting records, oldest first (optionally one stored model name or one account).</item>
/// <item>Rate each at its own <c>occurred_at</c> with the prices in force now (catalog, configuration, admin overrides).</item>
/// <item>Standard key and a price above zero: post ledger transfer <c>rerate:{account}:{event id}</c> (code
/// <c>usage_rerate</c>), customer account → <c>system:revenue</c>, metadata = what was rated. All transfers of a run
/// are submitted together, so the ledger commits them as one group. Internal key: no transfer.</item>
/// <item>Update the record to <c>billed</c>/<c>internal</c> with its costs and transfer id, only if it is still
/// <c>needs_review</c>.</item>
/// </list>
/// Never charges twice: the ledger id is the idempotency key. A crash between 3 and 4 leaves the record waiting with the
/// transfer posted; the next run's transfer answers <c>Replayed</c> (same price) and the record is written then. If the
/// price changed in between, the ledger answers a conflict, and the record is written with what the posted transfer
/// actually charged (its metadata) instead, so the record always matches the money.
/// Insufficient balance: nothing is charged and the record stays <c>needs_review</c> (reported
/// <c>insufficient_credits</c>); a later run after a top-up charges it. Re-rating is an operator action, so it does not
/// charge past the account's limit and it does not silently write the charge off.
/// </summary>
internal sealed partial class RerateService(
    LedgerService ledger, SystemAccounts system, IUsageStore store, PricingCatalog catalog, Accounts.IAccountStore accounts, Plans.PlanCatalog plans,
    ILogger<RerateService> logger)
{
    public const string RerateCode = "usage_rerate";
    public const int DefaultLimit = 100;
    public const int MaxLimit = 1_000;

    public static string TransferId(string accountId, string eventId) => $"rerate:{accountId}:{eventId}";

    /// <summary>What a re-rate transfer records about the rating, so a record can be completed from the transfer alone.</summary>
    private sealed record RatedMetadata(string Model, string Provider, string ProviderCostUsd, long ProviderCostMicros, string Event);

    private static readonly JsonSerializerOptions MetadataJson = TollgateApp.ConfigureJson(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    public async Task<RerateReport> RerateAsync(string? model, string? accountId, int limit, CancellationToken ct)
    {
        var items = await store.ListNeedsReviewAsync(model, accountId, null, limit, ct);
        var snapshot = catalog.Current;
        var revenue = await system.RevenueAsync(ct);
        var results = new RerateResult[items.Count];
        var pending = new List<(int Index, UsageRecord Rated, TransferRequest Transfer)>();
        // Each account is priced under its plan (as it is now: the plan at the time of the call is not kept).
        var planMarkups = new Dictionary<string, decimal?>(StringComparer.Ordinal);
        foreach (var accountId2 in items.Select(x => x.Record.AccountId).Distinct())
            planMarkups[accountId2] = await accounts.GetAsync(accountId2, ct) is { } held ? plans.Get(held.PlanId, held.PlanVersion).Markup : plans.Default.Markup;
        var toMark = new List<(int Index, UsageRecord Rated)>();

        for (var i = 0; i < items.Count; i++)
        {
            var (record, keyType, ledgerAccount) = items[i];
            var resolution = snapshot.Resolve(record.Model);
            if (resolution.Outcome != ResolveOutcome.Found)
            {
                results[i] = Waiting(record, resolution.Outcome == ResolveOutcome.Ambiguous ? RerateOutcomeKind.ModelAmbiguous : RerateOutcomeKind.StillUnknown,
                    resolution.Outcome == ResolveOutcome.Ambiguous
                        ? $"'{record.Model}' matches {string.Join(", ", resolution.Candidates)}; add an override under the exact name or ask the client to send 'provider/model'."
                        : $"'{record.Model}' still has no price.");
                continue;
            }
            var priced = resolution.Model!;
            var tokens = new TokenUsage(record.InputTokens, record.OutputTokens, record.CacheReadTokens, record.CacheWriteTokens, record.ReasoningTokens);
            var rating = Rater.Rate(priced, tokens, record.OccurredAt, planMarkups[record.AccountId]);
            var isInternal = keyType == ApiKeyTypes.Internal;
            var transferId = rating.UserPriceMicros > 0 && !isInternal ? TransferId(record.AccountId, record.Id) : null;
            var rated = record with
            {
                Model = priced.Key,
                Provider = priced.Model.ProviderId,
                ProviderCostMicros = rating.ProviderCostMicros,
                ProviderCostUsd = PricingEndpoints.Dec(rating.ProviderCostUsd),
                UserPriceMicros = rating.UserPriceMicros,
                BillingStatus = isInternal ? UsageBillingStatus.Internal : UsageBillingStatus.Billed,
                TransferId = transferId,
            };
            if (transferId is null) { toMark.Add((i, rated)); continue; }
            pending.Add((i, rated, new TransferRequest
            {
                Id = transferId,
                DebitAccountId = ledgerAccount,
                CreditAccountId = revenue,
                Amount = rating.UserPriceMicros,
                Code = RerateCode,
                Reference = record.RequestId,
                Metadata = JsonSerializer.Serialize(new RatedMetadata(priced.Key, priced.Model.ProviderId, rated.ProviderCostUsd!,
                    rating.ProviderCostMicros, record.Id), MetadataJson),
            }));
        }

        // Not cancelled with the request from here on: once money moves, the records must follow.
        var charges = await Task.WhenAll(pending.Select(p => ledger.TransferAsync(p.Transfer, CancellationToken.None)));
        for (var j = 0; j < pending.Count; j++)
        {
            var (index, rated, transfer) = pending[j];
            var charge = charges[j];
            switch (charge.Code)
            {
                case TransferResultCode.Ok or TransferResultCode.Replayed:
                    toMark.Add((index, rated));
                    break;
                case TransferResultCode.IdempotencyConflict:
                    // Posted by an earlier run at another price, which then stopped before the record: record what was charged.
                    if (await ledger.GetTransferAsync(transfer.Id, CancellationToken.None) is { Metadata: { } m } posted
                        && posted.DebitAccountId == transfer.DebitAccountId && ReadMetadata(m) is { } earlier)
                    {
                        LogEarlierCharge(logger, rated.AccountId, rated.Id, posted.Amount);
                        toMark.Add((index, rated with
                        {
                            Model = earlier.Model, Provider = earlier.Provider, ProviderCostUsd = earlier.ProviderCostUsd,
                            ProviderCostMicros = earlier.ProviderCostMicros, UserPriceMicros = posted.Amount,
                        }));
                    }
                    else
                    {
                        results[index] = Waiting(items[index].Record, RerateOutcomeKind.LedgerRejected, $"Transfer '{transfer.Id}' exists with other content.");
                    }
                    break;
                case TransferResultCode.InsufficientFunds:
                    results[index] = Waiting(items[index].Record, RerateOutcomeKind.InsufficientCredits,
                        $"The account's available balance does not cover {rated.UserPriceMicros} micro-USD; nothing was charged.");
                    break;
                case var other:
                    results[index] = Waiting(items[index].Record, RerateOutcomeKind.LedgerRejected, $"The ledger refused the charge ({other}); nothing was charged.");
                    break;
            }
        }

        foreach (var (index, rated) in toMark)
        {
            var marked = await store.MarkRatedAsync(rated, CancellationToken.None);
            results[index] = !marked
                ? Waiting(items[index].Record, RerateOutcomeKind.AlreadyRated, "Another re-rate settled this record meanwhile.")
                : new RerateResult(rated.AccountId, rated.Id, items[index].Record.Model,
                    rated.BillingStatus == UsageBillingStatus.Internal ? RerateOutcomeKind.Internal : RerateOutcomeKind.Billed,
                    rated.Model, rated.UserPriceMicros, rated.ProviderCostMicros, rated.ProviderCostUsd, rated.TransferId, null);
        }

        int Count(RerateOutcomeKind k) => results.Count(r => r.Outcome == k);
        var billedMicros = results.Where(r => r.Outcome == RerateOutcomeKind.Billed && r.TransferId is not null).Sum(r => r.UserPriceMicros ?? 0);
        return new RerateReport(results.Length, Count(RerateOutcomeKind.Billed), Count(RerateOutcomeKind.Internal), Count(RerateOutcomeKind.StillUnknown),
            Count(RerateOutcomeKind.ModelAmbiguous), Count(RerateOutcomeKind.InsufficientCredits), Count(RerateOutcomeKind.AlreadyRated),
            Count(RerateOutcomeKind.LedgerRejected), billedMicros, results);
    }

    /// <summary>The rating a re-rate transfer recorded, or null if the metadata is not ours.</summary>
    private static RatedMetadata? ReadMetadata(string metadata)
    {
        try
        {
            return JsonSerializer.Deserialize<RatedMetadata>(metadata, MetadataJson) is { Model: not null, Provider: not null, ProviderCostUsd: not null } m ? m : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static RerateResult Waiting(UsageRecord r, RerateOutcomeKind kind, string message) =>
        new(r.AccountId, r.Id, r.Model, kind, null, null, null, null, null, message);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Usage record {EventId} of account {AccountId} was re-rated earlier for {AmountMicros} micro-USD without its record; recording that charge")]
    private static partial void LogEarlierCharge(ILogger logger, string accountId, string eventId, long amountMicros);
}
