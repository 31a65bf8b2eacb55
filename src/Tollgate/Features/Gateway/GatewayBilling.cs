using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;

namespace Tollgate.Features.Gateway;

/// <summary>How a settlement went: what was charged, what the call cost beyond the hold and could not be charged, the balance after.</summary>
internal readonly record struct Settlement(long ChargedMicros, long UnchargedMicros, long BalanceAfterMicros, string? TransferId);

/// <summary>
/// The gateway's money moves, all through the ledger with ids derived from the request id (each id is its own
/// idempotency key, so a retried settlement never charges twice):
///
///   hold     pending      gw:{account}:{request}          sized for the most the call can cost; expires on its own
///   settle   post-pending gw:{account}:{request}:settle   the actual price (≤ hold), the rest released
///   excess   posted       gw:{account}:{request}:excess   only if the actual price exceeds the hold: at most what is available
///   void     void-pending gw:{account}:{request}:void     nothing delivered: everything released
///
/// Settlement and void are never cancelled by the client hanging up: once the upstream has worked, the charge must land.
/// </summary>
internal sealed class GatewayBilling(LedgerService ledger, SystemAccounts system)
{
    public const string HoldCode = "gateway_hold";
    public const string SettleCode = "usage";
    public const string ExcessCode = "usage_excess";
    public const string VoidCode = "gateway_void";

    public static string HoldId(Caller c, string requestId) => $"gw:{c.AccountId}:{requestId}";

    /// <summary>Places the hold; the transfer, or null and the available balance when the account cannot cover it.</summary>
    public async Task<(Transfer? Hold, long AvailableMicros)> HoldAsync(Caller caller, string requestId, long amountMicros, int timeoutSeconds, string metadata, CancellationToken ct)
    {
        var revenue = await system.RevenueAsync(ct);
        var result = await ledger.TransferAsync(new TransferRequest
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
        }, LedgerCommit.RelaxedCommit, ct);
        if (result.Succeeded) return (result.Transfer, 0);
        if (result.Code == TransferResultCode.InsufficientFunds) return (null, await AvailableAsync(caller));
        throw new InvalidOperationException($"The ledger refused a gateway hold: {result.Code}.");
    }

    public Task<long> AvailableAsync(Caller caller) => AvailableAsync(caller.LedgerAccountId);

    private async Task<long> AvailableAsync(long ledgerAccountId) =>
        (await ledger.GetAccountAsync(ledgerAccountId, CancellationToken.None))?.AvailableMicros ?? 0;

    /// <summary>Charges <paramref name="priceMicros"/> against the hold (see the class summary for a price above it).</summary>
    /// <param name="metadata">The usage behind the charge (JSON), kept on the ledger transfer so the ledger alone can explain it.</param>
    /// <param name="record">Builds the usage record from what was charged and the settling transfer's id; it is written in
    /// the same database transaction as the charge.</param>
    public async Task<Settlement> SettleAsync(Transfer hold, long priceMicros, string metadata, Func<long, string?, UsageRecord> record)
    {
        if (priceMicros <= 0)
        {
            await VoidAsync(hold, record(0, null));
            return new Settlement(0, 0, hold.DebitBalanceAfter, null);
        }
        var settleId = hold.Id + ":settle";
        var results = await HoldCapture.CaptureAsync(ledger, hold, priceMicros,
            new TransferRequest { Id = settleId, Code = SettleCode, Reference = hold.Reference, Metadata = metadata },
            charge => new TransferRequest
            {
                Id = hold.Id + ":excess", DebitAccountId = hold.DebitAccountId, CreditAccountId = hold.CreditAccountId, Amount = charge,
                Code = ExcessCode, Reference = hold.Reference, Metadata = metadata,
            },
            charged => new LedgerCommit { Records = [record(charged, settleId)] }, CancellationToken.None);
        if (results.All(r => r.Succeeded))
        {
            var charged = results.Sum(r => r.Transfer!.Amount);
            return new Settlement(charged, priceMicros - charged, results[^1].Transfer!.DebitBalanceAfter, settleId);
        }
        if (results[0].Code == TransferResultCode.PendingTransferNotFound)
            return await ChargeWithoutHoldAsync(hold, priceMicros, metadata, record, settleId);
        if (results[0].Code == TransferResultCode.PendingTransferExpired)
            throw new InvalidOperationException($"The hold {hold.Id} expired before the call finished; raise the provider timeout margin.");
        throw new InvalidOperationException($"The ledger refused the settlement of {hold.Id}: {string.Join(", ", results.Select(r => r.Code))}.");
    }

    /// <summary>
    /// The hold is gone: it was committed relaxed and the database lost it in a crash. Charge what the call cost as a
    /// plain transfer, limited to what is available now, so even then nothing overdraws.
    /// </summary>
    private async Task<Settlement> ChargeWithoutHoldAsync(Transfer hold, long priceMicros, string metadata, Func<long, string?, UsageRecord> record, string settleId)
    {
        for (var attempt = 1; attempt <= HoldCapture.MaxAttempts; attempt++)
        {
            var charge = Math.Min(priceMicros, Math.Max(0, await AvailableAsync(hold.DebitAccountId)));
            if (charge == 0) break;
            var result = await ledger.TransferAsync(new TransferRequest
            {
                Id = settleId, DebitAccountId = hold.DebitAccountId, CreditAccountId = hold.CreditAccountId, Amount = charge,
                Code = SettleCode, Reference = hold.Reference, Metadata = metadata,
            }, new LedgerCommit { Records = [record(charge, settleId)] }, CancellationToken.None);
            if (result.Succeeded) return new Settlement(result.Transfer!.Amount, priceMicros - result.Transfer.Amount, result.Transfer.DebitBalanceAfter, settleId);
            if (result.Code != TransferResultCode.InsufficientFunds) break;
        }
        throw new InvalidOperationException($"The hold {hold.Id} was lost and the call could not be charged.");
    }

    /// <summary>Releases the whole hold (nothing was charged), writing <paramref name="record"/> with it if given.</summary>
    public async Task VoidAsync(Transfer hold, UsageRecord? record = null)
    {
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = hold.Id + ":void", Kind = TransferKind.VoidPending, PendingId = hold.Id, Code = VoidCode, Reference = hold.Reference,
        }, new LedgerCommit { Relaxed = record is null, Records = record is null ? null : [record] }, CancellationToken.None);
        // An expired (or lost) hold is released already: same outcome.
        if (!result.Succeeded && result.Code is not (TransferResultCode.PendingTransferExpired or TransferResultCode.PendingTransferAlreadyVoided or TransferResultCode.PendingTransferNotFound))
            throw new InvalidOperationException($"The ledger refused to release {hold.Id}: {result.Code}.");
    }
}
