using Tollgate.Features.Budgets;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;

namespace Tollgate.Features.Gateway;

/// <summary>How a settlement went: what was charged, what the call cost beyond the hold and could not be charged, the balance after.</summary>
internal readonly record struct Settlement(long ChargedMicros, long UnchargedMicros, long BalanceAfterMicros, string? TransferId)
{
    /// <summary>What each cap (in the order of the call's cap holds) has spent in its window after this charge; empty without caps.</summary>
    public IReadOnlyList<long> CapSpentMicros { get; init; } = [];
}

/// <summary>
/// What placing a hold gave: the hold and its spend-cap holds; or no hold, what is available (the least of the balance
/// and every cap), and the cap that refused it (null when the balance did).
/// </summary>
internal readonly record struct HoldOutcome(Transfer? Hold, IReadOnlyList<Transfer> CapHolds, long AvailableMicros, CapLeg? ExceededCap);

/// <summary>
/// The gateway's money moves, all through the ledger with ids derived from the request id (each id is its own
/// idempotency key, so a retried settlement never charges twice):
///
///   hold     pending      gw:{account}:{request}          sized for the most the call can cost; expires on its own
///   settle   post-pending gw:{account}:{request}:settle   the actual price (≤ hold), the rest released
///   excess   posted       gw:{account}:{request}:excess   only if the actual price exceeds the hold: at most what is available
///   void     void-pending gw:{account}:{request}:void     nothing delivered: everything released
///
/// Under spend caps each of these has a twin per cap (<c>…:cap{i}</c>, same amount, on the cap's ledger account) in
/// the same atomic group, so a cap is counted exactly like the balance (see <see cref="BudgetService"/>).
///
/// Settlement and void are never cancelled by the client hanging up: once the upstream has worked, the charge must land.
/// </summary>
internal sealed class GatewayBilling(LedgerService ledger, SystemAccounts system, BudgetService budgets)
{
    public const string HoldCode = "gateway_hold";
    public const string SettleCode = "usage";
    public const string ExcessCode = "usage_excess";
    public const string VoidCode = "gateway_void";

    public static string HoldId(Caller c, string requestId) => $"gw:{c.AccountId}:{requestId}";

    /// <summary>Places the hold (and its cap holds, all or none); see <see cref="HoldOutcome"/>.</summary>
    public async Task<HoldOutcome> HoldAsync(Caller caller, string requestId, long amountMicros, int timeoutSeconds, string metadata,
        IReadOnlyList<CapLeg> caps, CancellationToken ct)
    {
        var revenue = await system.RevenueAsync(ct);
        var hold = new TransferRequest
        {
            Id = HoldId(caller, requestId),
            Kind = TransferKind.Pending,
            DebitAccountId = caller.LedgerAccountId,
            CreditAccountId = revenue,
            Amount = amountMicros,
            TimeoutSeconds = timeoutSeconds,
            Code = HoldCode,
            Reference = requestId,
            Metadata = metadata,
        };
        if (caps.Count == 0)
        {
            var result = await ledger.TransferAsync(hold, LedgerCommit.RelaxedCommit, ct);
            if (result.Succeeded) return new HoldOutcome(result.Transfer, [], 0, null);
            if (result.Code == TransferResultCode.InsufficientFunds) return new HoldOutcome(null, [], result.AvailableMicros ?? await AvailableAsync(caller), null);
            throw new InvalidOperationException($"The ledger refused a gateway hold: {result.Code}.");
        }
        var group = CapTransfers.Group(hold, caps, await budgets.SinkAsync(ct));
        var results = await ledger.TransferAtomicAsync(group, LedgerCommit.RelaxedCommit, ct);
        if (results.All(r => r.Succeeded)) return new HoldOutcome(results[0].Transfer, results[1..].Select(r => r.Transfer!).ToArray(), 0, null);
        if (!results.Any(r => r.Code == TransferResultCode.InsufficientFunds))
            throw new InvalidOperationException($"The ledger refused a gateway hold: {string.Join(", ", results.Select(r => r.Code))}.");
        // What the refusing account had available when refused: a read now might not show holds acknowledged before their write.
        var refusedWith = results.Where(r => r.AvailableMicros is not null).Select(r => r.AvailableMicros!.Value).ToList();
        long available;
        if (refusedWith.Count > 0) available = refusedWith.Min();
        else
        {
            var accounts = await ledger.GetAccountsAsync(group.Select(t => t.DebitAccountId).ToArray(), CancellationToken.None);
            available = accounts.Count == 0 ? 0 : accounts.Min(a => a.AvailableMicros);
        }
        return new HoldOutcome(null, [], available, CapTransfers.Refused(results, caps));
    }

    public Task<long> AvailableAsync(Caller caller) => AvailableAsync(caller.LedgerAccountId);

    private async Task<long> AvailableAsync(long ledgerAccountId) =>
        (await ledger.GetAccountAsync(ledgerAccountId, CancellationToken.None))?.AvailableMicros ?? 0;

    /// <summary>Charges <paramref name="priceMicros"/> against the hold (see the class summary for a price above it).</summary>
    /// <param name="metadata">The usage behind the charge (JSON), kept on the ledger transfer so the ledger alone can explain it.</param>
    /// <param name="record">Builds the usage record from what was charged and the settling transfer's id; it is written in
    /// the same database transaction as the charge.</param>
    /// <param name="share">Given what was charged, a transfer to commit in the same atomic batch (a marketplace creator's
    /// share, from revenue to the creator's earnings), or null for none.</param>
    public async Task<Settlement> SettleAsync(Transfer hold, IReadOnlyList<Transfer> capHolds, long priceMicros, string metadata, Func<long, string?, UsageRecord> record,
        Func<long, string, TransferRequest?>? share = null)
    {
        if (priceMicros <= 0)
        {
            await VoidAsync(hold, capHolds, record(0, null));
            return new Settlement(0, 0, hold.DebitBalanceAfter, null);
        }
        var settleId = hold.Id + ":settle";
        var companions = capHolds.Select((c, i) => new HoldCapture.Companion(c, CapTransfers.Id(settleId, i), charge => new TransferRequest
        {
            Id = CapTransfers.Id(hold.Id + ":excess", i), DebitAccountId = c.DebitAccountId, CreditAccountId = c.CreditAccountId, Amount = charge,
            Code = BudgetService.CapHoldCode, Reference = hold.Reference,
        })).ToArray();
        var (results, capResults) = await HoldCapture.CaptureAsync(ledger, hold, priceMicros,
            new TransferRequest { Id = settleId, Code = SettleCode, Reference = hold.Reference, Metadata = metadata },
            charge => new TransferRequest
            {
                Id = hold.Id + ":excess", DebitAccountId = hold.DebitAccountId, CreditAccountId = hold.CreditAccountId, Amount = charge,
                Code = ExcessCode, Reference = hold.Reference, Metadata = metadata,
            },
            companions, charged => new LedgerCommit { Records = [record(charged, settleId)] }, CancellationToken.None,
            share is null ? null : charged => share(charged, settleId + ":creator"));
        if (results.All(r => r.Succeeded) && capResults.All(r => r.Succeeded))
        {
            var charged = results.Sum(r => r.Transfer!.Amount);
            // A cap account only ever spends (its balance is minus what it spent): the last transfer on it tells the total.
            var n = capHolds.Count;
            var spent = new long[n];
            for (var i = 0; i < n; i++) spent[i] = -capResults[capResults.Length == 2 * n ? n + i : i].Transfer!.DebitBalanceAfter;
            return new Settlement(charged, priceMicros - charged, results[^1].Transfer!.DebitBalanceAfter, settleId) { CapSpentMicros = spent };
        }
        if (results[0].Code == TransferResultCode.PendingTransferNotFound)
            return await ChargeWithoutHoldAsync(hold, capHolds, priceMicros, metadata, record, settleId, share);
        if (results[0].Code == TransferResultCode.PendingTransferExpired)
            throw new InvalidOperationException($"The hold {hold.Id} expired before the call finished; raise the provider timeout margin.");
        throw new InvalidOperationException($"The ledger refused the settlement of {hold.Id}: {string.Join(", ", results.Concat(capResults).Select(r => r.Code))}.");
    }

    /// <summary>
    /// The hold is gone: it was committed relaxed and the database lost it in a crash. Charge what the call cost as a
    /// plain transfer, limited to what is available now, so even then nothing overdraws.
    /// </summary>
    private async Task<Settlement> ChargeWithoutHoldAsync(Transfer hold, IReadOnlyList<Transfer> capHolds, long priceMicros, string metadata,
        Func<long, string?, UsageRecord> record, string settleId, Func<long, string, TransferRequest?>? share)
    {
        for (var attempt = 1; attempt <= HoldCapture.MaxAttempts; attempt++)
        {
            var debtors = capHolds.Select(c => c.DebitAccountId).Prepend(hold.DebitAccountId).ToArray();
            var accounts = await ledger.GetAccountsAsync(debtors, CancellationToken.None);
            var charge = Math.Min(priceMicros, Math.Max(0, accounts.Count == 0 ? 0 : accounts.Min(a => a.AvailableMicros)));
            if (charge == 0) break;
            var main = new TransferRequest
            {
                Id = settleId, DebitAccountId = hold.DebitAccountId, CreditAccountId = hold.CreditAccountId, Amount = charge,
                Code = SettleCode, Reference = hold.Reference, Metadata = metadata,
            };
            var group = capHolds.Select((c, i) => new TransferRequest
            {
                Id = CapTransfers.Id(settleId, i), DebitAccountId = c.DebitAccountId, CreditAccountId = c.CreditAccountId, Amount = charge,
                Code = BudgetService.CapHoldCode, Reference = hold.Reference,
            }).Prepend(main).ToList();
            if (share?.Invoke(charge, settleId + ":creator") is { } creator) group.Add(creator);
            var commit = new LedgerCommit { Records = [record(charge, settleId)] };
            var results = group.Count == 1 ? [await ledger.TransferAsync(main, commit, CancellationToken.None)] : await ledger.TransferAtomicAsync(group, commit, CancellationToken.None);
            var result = results[0];
            if (results.All(r => r.Succeeded)) return new Settlement(result.Transfer!.Amount, priceMicros - result.Transfer.Amount, result.Transfer.DebitBalanceAfter, settleId);
            if (!results.Any(r => r.Code == TransferResultCode.InsufficientFunds)) break;
        }
        throw new InvalidOperationException($"The hold {hold.Id} was lost and the call could not be charged.");
    }

    /// <summary>Releases the whole hold and its cap holds (nothing was charged), writing <paramref name="record"/> with it if given.</summary>
    public async Task VoidAsync(Transfer hold, IReadOnlyList<Transfer> capHolds, UsageRecord? record = null)
    {
        var voids = new List<Task>(capHolds.Count + 1) { Void(hold, hold.Id + ":void", record) };
        for (var i = 0; i < capHolds.Count; i++) voids.Add(Void(capHolds[i], CapTransfers.Id(hold.Id + ":void", i), null));
        await Task.WhenAll(voids);

        async Task Void(Transfer pending, string id, UsageRecord? withRecord)
        {
            var result = await ledger.TransferAsync(new TransferRequest
            {
                Id = id, Kind = TransferKind.VoidPending, PendingId = pending.Id, Code = VoidCode, Reference = hold.Reference,
            }, new LedgerCommit { Relaxed = withRecord is null, Records = withRecord is null ? null : [withRecord] }, CancellationToken.None);
            // An expired (or lost) hold is released already: same outcome.
            if (!result.Succeeded && result.Code is not (TransferResultCode.PendingTransferExpired or TransferResultCode.PendingTransferAlreadyVoided or TransferResultCode.PendingTransferNotFound))
                throw new InvalidOperationException($"The ledger refused to release {pending.Id}: {result.Code}.");
        }
    }
}
