using System.Globalization;
using Dapper;
using Microsoft.Extensions.Options;
using Tollgate.Features.Ledger;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>
/// Compares the chain with the ledger for a block range: every USDC Transfer log to the treasury (read again with
/// <c>eth_getLogs</c>) against Tollgate's payment records and top-up transfers. Lists money that arrived without a
/// credit (an unlinked sender, a transfer never confirmed), credits the chain no longer shows (reorged out) and amount
/// differences. It reports; an operator resolves each mismatch with an idempotent adjustment
/// (<see cref="ReconciliationResolutions"/>), after which it is listed as resolved.
/// </summary>
internal sealed class CryptoReconciler(EvmRpcClient rpc, CryptoPaymentService payments, Database db, LedgerService ledger, ReconciliationResolutions resolutions,
    IOptions<CryptoOptions> options)
{
    /// <summary>
    /// The block range to reconcile: up to the confirmed head (<c>head − Confirmations + 1</c>; a later <paramref name="toBlock"/>
    /// is cut to it), from <paramref name="fromBlock"/> or <paramref name="lookback"/> blocks before the end.
    /// </summary>
    public async Task<(long From, long To)> ConfirmedRangeAsync(long? fromBlock, long? toBlock, long lookback, CancellationToken ct)
    {
        await payments.EnsureChainAsync(ct);
        var head = await rpc.BlockNumberAsync(ct) - options.Value.Confirmations + 1;
        var to = Math.Max(0, Math.Min(toBlock ?? head, head));
        return (fromBlock ?? Math.Max(0, to - lookback + 1), to);
    }

    private sealed record Row(string tx_hash, long log_index, string? account_id, string status, long amount_units, long? credit_micros, string? transfer_id, long block_number);

    public async Task<ReconciliationReport> ReconcileAsync(long fromBlock, long toBlock, CancellationToken ct)
    {
        var o = options.Value;
        var token = o.UsdcContract.ToLowerInvariant();
        var treasury = (o.TreasuryAddress ?? "").ToLowerInvariant();
        var logs = new List<EvmLog>();
        for (var start = fromBlock; start <= toBlock; start += o.ScanBlockRange)
            logs.AddRange(await rpc.GetTransferLogsAsync(token, treasury, start, Math.Min(toBlock, start + o.ScanBlockRange - 1), ct));
        await using var c = await db.OpenAsync(ct);
        var rows = (await c.QueryAsync<Row>(new CommandDefinition("""
            SELECT tx_hash, log_index, account_id, status, amount_units, credit_micros, transfer_id, block_number FROM crypto_payments
            WHERE chain_id = @chain AND block_number >= @fromBlock AND block_number <= @toBlock
            """, new { chain = o.ChainId, fromBlock, toBlock }, cancellationToken: ct))).ToDictionary(r => (r.tx_hash, r.log_index));

        var mismatches = new List<Mismatch>();
        var onChain = new HashSet<(string, long)>();
        foreach (var log in logs.Where(l => !l.Removed))
        {
            var key = (log.TransactionHash.ToLowerInvariant(), log.LogIndex);
            onChain.Add(key);
            var reference = $"{log.TransactionHash}#{log.LogIndex}";
            var units = Ethereum.ParseUint256(log.Data) is { } u && u <= long.MaxValue ? (long)u : -1;
            if (!rows.TryGetValue(key, out var row) || row.status != "credited")
            {
                mismatches.Add(new Mismatch("money_without_credit", reference, row?.account_id, null, null, 0,
                    $"{units.ToString(CultureInfo.InvariantCulture)} token units reached the treasury in block {log.BlockNumber} and were not credited"
                    + (row?.status == "unmatched" ? " (unmatched: the sender's wallet is not linked to an account)." : " (never confirmed or seen by the watcher).")));
                continue;
            }
            var transfer = row.transfer_id is null ? null : await ledger.GetTransferAsync(row.transfer_id, ct);
            var expected = payments.CreditFor(units);
            if (transfer is null)
                mismatches.Add(new Mismatch("money_without_credit", reference, row.account_id, null, null, 0, "Recorded as credited, but the ledger has no top-up transfer for it."));
            else if (row.amount_units != units || transfer.Amount != expected)
                mismatches.Add(new Mismatch("amount_mismatch", reference, row.account_id, null, null, transfer.Amount,
                    $"The chain says {units} units (credit {expected?.ToString(CultureInfo.InvariantCulture) ?? "none"} micro-USD); Tollgate recorded {row.amount_units} units and credited {transfer.Amount}."));
        }
        foreach (var ((tx, index), row) in rows)
            if (row.status == "credited" && !onChain.Contains((tx, index)))
                mismatches.Add(new Mismatch("credit_without_money", $"{tx}#{index}", row.account_id, null, null, row.credit_micros ?? 0,
                    $"Credited for block {row.block_number}, but the chain no longer shows this transfer to the treasury (reorged out?)."));
        return new ReconciliationReport("usdc", null, null, logs.Count, await resolutions.AnnotateAsync("usdc", mismatches, ct)) { FromBlock = fromBlock, ToBlock = toBlock };
    }
}
