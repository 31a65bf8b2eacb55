using System.Numerics;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Ledger;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>Why a transaction is not (or no longer) creditable; the string is the API error code.</summary>
public static class CryptoErrors
{
    public const string InvalidTxHash = "invalid_tx_hash";
    public const string TransactionFailed = "transaction_failed";
    public const string NotUsdcTransfer = "not_usdc_transfer";
    public const string WrongRecipient = "wrong_recipient";
    public const string WalletNotLinked = "wallet_not_linked";
    public const string BelowMinimum = "below_minimum";
    public const string AmountOutOfRange = "amount_out_of_range";
    /// <summary>The receipt disappeared or moved to another block after it was first seen (a reorg).</summary>
    public const string Reorged = "reorged";
    /// <summary>Still not mined or confirmed after <see cref="CryptoOptions.PendingTimeoutSeconds"/>.</summary>
    public const string Expired = "expired";
    public const string AlreadyClaimed = "tx_already_claimed";
    public const string RpcUnavailable = "rpc_unavailable";
}

/// <summary>The state of a transaction after a check: credited, still pending, or rejected with a code.</summary>
public abstract record Evaluation
{
    public sealed record Credited(IReadOnlyList<CryptoPayment> Payments) : Evaluation;
    public sealed record Pending(long Confirmations, long? BlockNumber, string? BlockHash) : Evaluation;
    public sealed record Rejected(string Code, string Detail) : Evaluation;
}

/// <summary>
/// Verifies USDC transfers to the treasury and credits them. Both entry points — a user submitting a hash (confirm) and the
/// background job (re-checks and the log watcher) — credit a log through <see cref="CreditAsync"/>:
/// <list type="number">
/// <item>ledger transfer <c>crypto:{chain}:{tx}:{logIndex}</c> from <c>system:payments:usdc</c> to the account (idempotent:
/// any process, any retry, the same transfer);</item>
/// <item>then the <c>crypto_payments</c> row, keyed by the same (chain, tx, log index). A crash between the two heals on the
/// next attempt, which replays step 1 and writes step 2.</item>
/// </list>
/// </summary>
internal sealed partial class CryptoPaymentService(
    EvmRpcClient rpc,
    CryptoStore store,
    LedgerService ledger,
    SystemAccounts systemAccounts,
    IOptions<CryptoOptions> options,
    Alerts.AlertService alerts,
    ILogger<CryptoPaymentService> logger)
{
    /// <summary>The clearing account USDC top-ups are credited from (its balance goes negative by what was received).</summary>
    public const string ClearingAccount = SystemAccounts.UsdcPayments;

    private readonly CryptoOptions _o = options.Value;
    private readonly string _token = options.Value.UsdcContract.ToLowerInvariant();
    private readonly string _treasury = (options.Value.TreasuryAddress ?? "").ToLowerInvariant();
    private volatile bool _chainChecked;

    public CryptoOptions Options => _o;

    /// <summary>The ledger transfer id of a log: the idempotency key of its credit.</summary>
    public static string TransferId(long chainId, string txHash, long logIndex) => $"crypto:{chainId}:{txHash}:{logIndex}";

    /// <summary>Micro-USD credited for <paramref name="units"/> token base units at the configured rate, rounded down.</summary>
    public long? CreditFor(BigInteger units)
    {
        var micros = units * _o.RateMicros / _o.RateUnits;
        return micros > 0 && micros <= LedgerService.MaxAmountMicros ? (long)micros : null;
    }

    /// <summary>Checks once per process that the node serves the configured chain (a mainnet/testnet mix-up credits fake money).</summary>
    public async Task EnsureChainAsync(CancellationToken ct)
    {
        if (_chainChecked) return;
        var chain = await rpc.ChainIdAsync(ct);
        if (chain != _o.ChainId) throw new EvmRpcException($"The node at Tollgate:Crypto:RpcUrl serves chain {chain}, not the configured {_o.ChainId}.");
        _chainChecked = true;
    }

    /// <summary>
    /// Fetches the receipt and decides: credit the account's transfers to the treasury when confirmed, pending while unmined or
    /// short of confirmations, rejected otherwise. <paramref name="seenBlockHash"/> is the block the receipt was in at an
    /// earlier check: if it vanished or moved, it was reorged and is never credited.
    /// </summary>
    public async Task<Evaluation> EvaluateAsync(string accountId, long ledgerAccountId, string txHash, string? seenBlockHash, CancellationToken ct)
    {
        await EnsureChainAsync(ct);
        var receipt = await rpc.GetReceiptAsync(txHash, ct);
        if (receipt is null)
            return seenBlockHash is null
                ? new Evaluation.Pending(0, null, null)
                : new Evaluation.Rejected(CryptoErrors.Reorged, "The transaction's receipt disappeared after it was seen in a block (chain reorganisation); it is not credited.");
        if (seenBlockHash is not null && receipt.BlockHash != seenBlockHash)
            return new Evaluation.Rejected(CryptoErrors.Reorged, "The transaction moved to another block after it was first seen (chain reorganisation); it is not credited.");
        if (!receipt.Succeeded)
            return new Evaluation.Rejected(CryptoErrors.TransactionFailed, "The transaction reverted (receipt status 0x0); nothing was transferred.");

        var transfers = receipt.Logs.Where(IsTransferLog).ToList();
        var ofToken = transfers.Where(l => l.Address == _token).ToList();
        if (ofToken.Count == 0)
            return new Evaluation.Rejected(CryptoErrors.NotUsdcTransfer, $"The transaction has no Transfer of the accepted token {_o.UsdcContract}.");
        var toTreasury = ofToken.Where(l => Ethereum.AddressFromTopic(l.Topics[2]) == _treasury).ToList();
        if (toTreasury.Count == 0)
            return new Evaluation.Rejected(CryptoErrors.WrongRecipient, $"The transaction transfers the token, but not to the treasury address {_o.TreasuryAddress}.");
        var mine = new List<EvmLog>();
        foreach (var log in toTreasury)
            if (Ethereum.AddressFromTopic(log.Topics[1]) is { } from && await store.GetWalletAccountAsync(from, ct) == accountId) mine.Add(log);
        if (mine.Count == 0)
            return new Evaluation.Rejected(CryptoErrors.WalletNotLinked, "The transfer comes from a wallet that is not linked to your account; link it with POST /api/v1/wallets first.");
        var creditable = mine.Where(l => Ethereum.ParseUint256(l.Data) is { } u && u >= _o.MinimumUnits).ToList();
        if (creditable.Count == 0)
            return new Evaluation.Rejected(CryptoErrors.BelowMinimum, $"The transfer is below the minimum of {_o.MinimumUnits} token base units.");

        var latest = await rpc.BlockNumberAsync(ct);
        var confirmations = Math.Max(0, latest - receipt.BlockNumber + 1);
        if (confirmations < _o.Confirmations) return new Evaluation.Pending(confirmations, receipt.BlockNumber, receipt.BlockHash);

        var credited = new List<CryptoPayment>();
        foreach (var log in creditable)
        {
            var payment = await CreditAsync(accountId, ledgerAccountId, log, ct);
            if (payment is null) return new Evaluation.Rejected(CryptoErrors.AmountOutOfRange, "The transfer amount cannot be credited (out of range).");
            credited.Add(payment);
        }
        return new Evaluation.Credited(credited);
    }

    /// <summary>An ERC-20 Transfer: topic 0 is the Transfer event, exactly three topics (ERC-721 has four), a 32-byte amount.</summary>
    public static bool IsTransferLog(EvmLog log) =>
        !log.Removed && log.Topics.Count == 3 && log.Topics[0] == Ethereum.TransferTopic && log.Data.Length == 66
        && Ethereum.AddressFromTopic(log.Topics[1]) is not null && Ethereum.AddressFromTopic(log.Topics[2]) is not null;

    /// <summary>
    /// Credits one confirmed Transfer log of the token to the account, exactly once whoever calls (see the class summary).
    /// Null when the amount is out of range for the ledger.
    /// </summary>
    public async Task<CryptoPayment?> CreditAsync(string accountId, long ledgerAccountId, EvmLog log, CancellationToken ct)
    {
        if (Ethereum.ParseUint256(log.Data) is not { } units || units > long.MaxValue || CreditFor(units) is not { } micros) return null;
        var from = Ethereum.AddressFromTopic(log.Topics[1])!;
        var transferId = TransferId(_o.ChainId, log.TransactionHash, log.LogIndex);
        var clearing = await systemAccounts.GetIdAsync(ClearingAccount, LedgerAccountKinds.PaymentsClearing, ct);
        var metadata = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["chain_id"] = _o.ChainId, ["tx_hash"] = log.TransactionHash, ["log_index"] = log.LogIndex, ["token"] = _token,
            ["from"] = from, ["amount_units"] = (long)units,
        });
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = transferId,
            DebitAccountId = clearing,
            CreditAccountId = ledgerAccountId,
            Amount = micros,
            Code = "topup",
            Reference = log.TransactionHash,
            Description = "USDC top-up",
            Metadata = metadata,
        }, ct);
        if (!result.Succeeded)
        {
            // Only a replay with other content fails here: the same log credited before to another ledger account (its wallet
            // was re-linked in between). The first credit stands; this one is not made.
            LogCreditRefused(transferId, result.Code);
            return null;
        }
        var payment = new CryptoPayment(_o.ChainId, log.TransactionHash, log.LogIndex, accountId, "credited", null, _token, from, _treasury, (long)units,
            micros, transferId, log.BlockNumber, log.BlockHash, DateTimeOffset.MinValue, DateTimeOffset.MinValue);
        await store.RecordCreditedAsync(payment, ct);
        if (result.Code == TransferResultCode.Ok)
        {
            LogCredited(accountId, micros, log.TransactionHash, log.LogIndex);
            // A top-up can end a low-balance alert: tell the alerts engine now, not at the account's next call.
            alerts.PostBalance(accountId, result.Transfer!.CreditBalanceAfter);
        }
        return payment;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Credited {Micros} micro-USD to account {AccountId} for USDC transfer {TxHash}#{LogIndex}")]
    private partial void LogCredited(string accountId, long micros, string txHash, long logIndex);

    [LoggerMessage(Level = LogLevel.Error, Message = "USDC credit {TransferId} refused by the ledger: {Code}")]
    private partial void LogCreditRefused(string transferId, TransferResultCode code);
}
