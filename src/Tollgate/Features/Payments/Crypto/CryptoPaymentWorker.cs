using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Accounts;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>
/// The background half of crypto payments, every <see cref="CryptoOptions.ScanIntervalSeconds"/>:
/// <list type="number">
/// <item>re-checks submitted hashes still pending (unmined or short of confirmations): credits them once confirmed, marks
/// them failed when they reverted, vanished or moved block (reorg), or stayed pending past the timeout;</item>
/// <item>the watcher: scans <c>eth_getLogs</c> for token Transfers to the treasury in confirmed blocks, from a persisted
/// cursor, crediting those from linked wallets and listing the rest as unmatched.</item>
/// </list>
/// Several processes may run it at once: every credit is idempotent by its ledger transfer id and the cursor only moves by
/// compare-and-set, so at worst two processes scan the same range and the second's credits are replays.
/// </summary>
internal sealed partial class CryptoPaymentWorker(
    CryptoPaymentService payments,
    CryptoStore store,
    EvmRpcClient rpc,
    IAccountStore accounts,
    TimeProvider time,
    ILogger<CryptoPaymentWorker> logger) : BackgroundService
{
    private const int PendingBatch = 100;
    /// <summary>Bounds one tick's catching up, so re-checks are not starved behind a long scan backlog.</summary>
    private const int MaxRangesPerTick = 20;
    private DateTimeOffset _lastNoncePrune = DateTimeOffset.MinValue;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Infrastructure.PeriodicWork.RunAsync(TimeSpan.FromSeconds(payments.Options.ScanIntervalSeconds), time, RunOnceAsync, LogTickFailed, stoppingToken,
            runAtStart: true);

    /// <summary>One pass of both jobs (public for tests and for operators running it by hand).</summary>
    public async Task RunOnceAsync(CancellationToken ct)
    {
        var now = time.GetUtcNow();
        if (now - _lastNoncePrune > TimeSpan.FromHours(1))
        {
            _lastNoncePrune = now;
            // Kept a day past expiry, so a late "nonce_used"/"nonce_expired" answer is still exact rather than "invalid_nonce".
            await store.DeleteExpiredNoncesAsync(now.AddDays(-1), ct);
        }
        await RecheckPendingAsync(ct);
        if (payments.Options.WatcherEnabled) await ScanAsync(ct);
    }

    public async Task RecheckPendingAsync(CancellationToken ct)
    {
        var o = payments.Options;
        foreach (var claim in await store.ListPendingClaimsAsync(o.ChainId, PendingBatch, ct))
        {
            try
            {
                if (time.GetUtcNow() - claim.CreatedAt > TimeSpan.FromSeconds(o.PendingTimeoutSeconds))
                {
                    await store.SettleClaimAsync(claim.ChainId, claim.TxHash, claim.AccountId, ClaimStatus.Failed, CryptoErrors.Expired, ct);
                    continue;
                }
                if (await accounts.GetAsync(claim.AccountId, ct) is not { } account) continue;
                switch (await payments.EvaluateAsync(claim.AccountId, account.LedgerAccountId, claim.TxHash, claim.BlockHash, ct))
                {
                    case Evaluation.Credited:
                        await store.SettleClaimAsync(claim.ChainId, claim.TxHash, claim.AccountId, ClaimStatus.Credited, null, ct);
                        break;
                    case Evaluation.Pending p:
                        await store.ClaimPendingAsync(claim.ChainId, claim.TxHash, claim.AccountId, p.BlockNumber, p.BlockHash, ct);
                        break;
                    case Evaluation.Rejected r:
                        await store.SettleClaimAsync(claim.ChainId, claim.TxHash, claim.AccountId, ClaimStatus.Failed, r.Code, ct);
                        LogClaimFailed(claim.TxHash, r.Code);
                        break;
                }
            }
            catch (EvmRpcException e)
            {
                // The node is down or odd: leave every claim pending for the next tick.
                LogRpcFailed(e);
                return;
            }
        }
    }

    /// <summary>The watcher's cursor key: one per chain, token and treasury (changing either starts a new scan).</summary>
    public string CursorScope => $"{payments.Options.ChainId}:{payments.Options.UsdcContract.ToLowerInvariant()}:{payments.Options.TreasuryAddress!.ToLowerInvariant()}";

    public async Task ScanAsync(CancellationToken ct)
    {
        var o = payments.Options;
        await payments.EnsureChainAsync(ct);
        var confirmedHead = await rpc.BlockNumberAsync(ct) - o.Confirmations + 1;
        if (confirmedHead < 0) return;
        var scope = CursorScope;
        var cursor = await store.GetCursorAsync(scope, ct);
        if (cursor is null)
        {
            await store.MoveCursorAsync(scope, null, o.ScanStartBlock ?? confirmedHead, ct);
            cursor = await store.GetCursorAsync(scope, ct);
        }
        for (var i = 0; i < MaxRangesPerTick && cursor <= confirmedHead; i++)
        {
            var from = cursor.Value;
            var to = Math.Min(from + o.ScanBlockRange - 1, confirmedHead);
            var logs = await rpc.GetTransferLogsAsync(o.UsdcContract, o.TreasuryAddress!, from, to, ct);
            foreach (var log in logs.Where(CryptoPaymentService.IsTransferLog).Where(l => l.Address == o.UsdcContract.ToLowerInvariant()))
                await HandleLogAsync(log, ct);
            if (!await store.MoveCursorAsync(scope, from, to + 1, ct)) LogCursorRace(scope);
            cursor = await store.GetCursorAsync(scope, ct);
        }
    }

    private async Task HandleLogAsync(EvmLog log, CancellationToken ct)
    {
        var o = payments.Options;
        var from = Ethereum.AddressFromTopic(log.Topics[1])!;
        var units = Ethereum.ParseUint256(log.Data)!.Value;
        string reason;
        if (units < o.MinimumUnits) reason = CryptoErrors.BelowMinimum;
        // A submitted hash found reorged out stays uncredited even if the transaction reappears in another block. (Only that
        // reason: other failures of a claim may be a stranger's hash submitted from the mempool, and must not block the owner.)
        else if (await store.GetClaimAsync(o.ChainId, log.TransactionHash, ct) is { Status: ClaimStatus.Failed, Reason: CryptoErrors.Reorged }) reason = CryptoErrors.Reorged;
        else if (await store.GetWalletAccountAsync(from, ct) is { } accountId && await accounts.GetAsync(accountId, ct) is { } account)
        {
            if (await payments.CreditAsync(account.Id, account.LedgerAccountId, log, ct) is not null) return;
            reason = CryptoErrors.AmountOutOfRange;
        }
        else reason = CryptoErrors.WalletNotLinked;
        var recorded = units <= long.MaxValue ? (long)units : long.MaxValue;
        await store.RecordUnmatchedAsync(new CryptoPayment(o.ChainId, log.TransactionHash, log.LogIndex, null, "unmatched", reason, log.Address, from,
            Ethereum.AddressFromTopic(log.Topics[2])!, recorded, null, null, log.BlockNumber, log.BlockHash, default, default), ct);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Crypto payment job failed; retrying on the next tick")]
    private partial void LogTickFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The EVM node failed during pending re-checks; retrying on the next tick")]
    private partial void LogRpcFailed(Exception e);

    [LoggerMessage(Level = LogLevel.Information, Message = "Crypto claim {TxHash} failed: {Code}")]
    private partial void LogClaimFailed(string txHash, string code);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Another process moved the scan cursor {Scope} first")]
    private partial void LogCursorRace(string scope);
}
