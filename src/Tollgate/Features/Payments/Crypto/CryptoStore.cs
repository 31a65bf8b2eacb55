using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Payments.Crypto;

public sealed record WalletNonce(string Nonce, string AccountId, string Domain, string Uri, DateTimeOffset IssuedAt, DateTimeOffset ExpiresAt, DateTimeOffset? UsedAt);

public sealed record LinkedWallet(string Address, string AccountId, long ChainId, DateTimeOffset LinkedAt);

public enum ClaimStatus { Pending, Credited, Failed }

/// <summary>A submitted transaction hash and who submitted it first.</summary>
public sealed record CryptoClaim(long ChainId, string TxHash, string AccountId, ClaimStatus Status, string? Reason, long? BlockNumber, string? BlockHash,
    DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

/// <summary>One token transfer (log) to the treasury. Units are token base units; credit is micro-USD.</summary>
public sealed record CryptoPayment(long ChainId, string TxHash, long LogIndex, string? AccountId, string Status, string? Reason, string Token,
    string FromAddress, string ToAddress, long AmountUnits, long? CreditMicros, string? TransferId, long BlockNumber, string BlockHash,
    DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

public enum LinkOutcome { Linked, AlreadyLinked, LinkedToOtherAccount, NonceUnavailable }

/// <summary>The crypto payment tables (see migration 0014); portable SQL for both engines.</summary>
internal sealed class CryptoStore(Database db, TimeProvider time)
{
    public async Task InsertNonceAsync(WalletNonce n, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO wallet_nonces (nonce, account_id, domain, uri, issued_at, expires_at) VALUES (@nonce, @accountId, @domain, @uri, @issuedAt, @expiresAt)
            """, new { nonce = n.Nonce, accountId = n.AccountId, domain = n.Domain, uri = n.Uri,
            issuedAt = UnixMicros.From(n.IssuedAt), expiresAt = UnixMicros.From(n.ExpiresAt) }, cancellationToken: ct));
    }

    /// <summary>Deletes nonces that expired before <paramref name="before"/> (used or not: either way they can never link again).</summary>
    public async Task<int> DeleteExpiredNoncesAsync(DateTimeOffset before, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // The dashboard's sign-in nonces (Features/Dashboard/WalletSignIn.cs) age out on the same schedule.
        return await c.ExecuteAsync(new CommandDefinition("DELETE FROM wallet_nonces WHERE expires_at < @before",
            new { before = UnixMicros.From(before) }, cancellationToken: ct))
            + await c.ExecuteAsync(new CommandDefinition("DELETE FROM signin_nonces WHERE expires_at < @before",
            new { before = UnixMicros.From(before) }, cancellationToken: ct));
    }

    /// <summary>Links a wallet to a new account (wallet sign-up: its signature proved it); false when it is already linked.</summary>
    public async Task<bool> TryInsertWalletAsync(string address, string accountId, long chainId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        try
        {
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO wallets (address, account_id, chain_id, linked_at) VALUES (@address, @accountId, @chainId, @now)",
                new { address, accountId, chainId, now = time.GetUtcNowMicros() }, cancellationToken: ct));
            return true;
        }
        catch (Exception e) when (DbErrors.IsUniqueViolation(e))
        {
            return false;
        }
    }

    private sealed record NonceRow(string nonce, string account_id, string domain, string uri, long issued_at, long expires_at, long? used_at);

    public async Task<WalletNonce?> GetNonceAsync(string nonce, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var r = await c.QuerySingleOrDefaultAsync<NonceRow>(new CommandDefinition(
            "SELECT nonce, account_id, domain, uri, issued_at, expires_at, used_at FROM wallet_nonces WHERE nonce = @nonce", new { nonce }, cancellationToken: ct));
        return r is null ? null : new WalletNonce(r.nonce, r.account_id, r.domain, r.uri, UnixMicros.ToDateTimeOffset(r.issued_at),
            UnixMicros.ToDateTimeOffset(r.expires_at), r.used_at is { } u ? UnixMicros.ToDateTimeOffset(u) : null);
    }

    /// <summary>
    /// In one transaction: uses the nonce (it must be the account's, unused and unexpired) and links the wallet. A wallet
    /// linked to another account changes nothing (the nonce stays unused).
    /// </summary>
    public async Task<(LinkOutcome Outcome, LinkedWallet? Wallet)> LinkWalletAsync(string nonce, string accountId, string address, long chainId, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var used = await c.ExecuteAsync(new CommandDefinition("""
            UPDATE wallet_nonces SET used_at = @now WHERE nonce = @nonce AND account_id = @accountId AND used_at IS NULL AND expires_at > @now
            """, new { nonce, accountId, now }, tx, cancellationToken: ct));
        if (used != 1) return (LinkOutcome.NonceUnavailable, null);
        const string Select = "SELECT address, account_id, chain_id, linked_at FROM wallets WHERE address = @address";
        var existing = await c.QuerySingleOrDefaultAsync<WalletRow>(new CommandDefinition(Select, new { address }, tx, cancellationToken: ct));
        if (existing is not null && existing.account_id != accountId) return (LinkOutcome.LinkedToOtherAccount, null);
        if (existing is null)
        {
            try
            {
                await c.ExecuteAsync(new CommandDefinition("INSERT INTO wallets (address, account_id, chain_id, linked_at) VALUES (@address, @accountId, @chainId, @now)",
                    new { address, accountId, chainId, now }, tx, cancellationToken: ct));
            }
            catch (Exception e) when (DbErrors.IsUniqueViolation(e))
            {
                // Another request linked it in the meantime; let the caller retry and see who owns it.
                return (LinkOutcome.LinkedToOtherAccount, null);
            }
        }
        await tx.CommitAsync(ct);
        return existing is null
            ? (LinkOutcome.Linked, new LinkedWallet(address, accountId, chainId, UnixMicros.ToDateTimeOffset(now)))
            : (LinkOutcome.AlreadyLinked, existing.ToWallet());
    }

    private sealed record WalletRow(string address, string account_id, long chain_id, long linked_at)
    {
        public LinkedWallet ToWallet() => new(address, account_id, chain_id, UnixMicros.ToDateTimeOffset(linked_at));
    }

    public async Task<IReadOnlyList<LinkedWallet>> ListWalletsAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<WalletRow>(new CommandDefinition(
            "SELECT address, account_id, chain_id, linked_at FROM wallets WHERE account_id = @accountId ORDER BY linked_at, address", new { accountId }, cancellationToken: ct));
        return rows.Select(r => r.ToWallet()).ToList();
    }

    /// <summary>The account a wallet is linked to, or null.</summary>
    public async Task<string?> GetWalletAccountAsync(string address, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT account_id FROM wallets WHERE address = @address", new { address }, cancellationToken: ct));
    }

    public async Task<bool> UnlinkWalletAsync(string accountId, string address, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteAsync(new CommandDefinition("DELETE FROM wallets WHERE address = @address AND account_id = @accountId",
            new { address, accountId }, cancellationToken: ct)) == 1;
    }

    private sealed record ClaimRow(long chain_id, string tx_hash, string account_id, string status, string? reason, long? block_number, string? block_hash,
        long created_at, long updated_at)
    {
        public CryptoClaim ToClaim() => new(chain_id, tx_hash, account_id, Enum.Parse<ClaimStatus>(status, ignoreCase: true), reason, block_number, block_hash,
            UnixMicros.ToDateTimeOffset(created_at), UnixMicros.ToDateTimeOffset(updated_at));
    }

    private const string ClaimColumns = "chain_id, tx_hash, account_id, status, reason, block_number, block_hash, created_at, updated_at";

    public async Task<CryptoClaim?> GetClaimAsync(long chainId, string txHash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var r = await c.QuerySingleOrDefaultAsync<ClaimRow>(new CommandDefinition(
            $"SELECT {ClaimColumns} FROM crypto_claims WHERE chain_id = @chainId AND tx_hash = @txHash", new { chainId, txHash }, cancellationToken: ct));
        return r?.ToClaim();
    }

    /// <summary>
    /// Claims the hash for the account as pending, or refreshes the block it was seen in. A block hash is only known once the
    /// receipt showed a transfer from one of the account's wallets, so a claim with one is proven; a claim without one (the
    /// receipt was not there yet) is not, and passes to an account that proves it — otherwise anyone could block another's
    /// transaction by submitting its hash from the mempool first. Returns the stored claim (another account's when it holds it).
    /// </summary>
    public async Task<CryptoClaim> ClaimPendingAsync(long chainId, string txHash, string accountId, long? blockNumber, string? blockHash, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO crypto_claims (chain_id, tx_hash, account_id, status, block_number, block_hash, created_at, updated_at)
            VALUES (@chainId, @txHash, @accountId, 'pending', @blockNumber, @blockHash, @now, @now)
            ON CONFLICT (chain_id, tx_hash) DO UPDATE SET
                account_id = excluded.account_id, status = 'pending', reason = NULL,
                block_number = COALESCE(excluded.block_number, crypto_claims.block_number),
                block_hash = COALESCE(excluded.block_hash, crypto_claims.block_hash), updated_at = excluded.updated_at
            WHERE (crypto_claims.account_id = excluded.account_id AND crypto_claims.status = 'pending')
               OR (crypto_claims.account_id <> excluded.account_id AND crypto_claims.status <> 'credited'
                   AND crypto_claims.block_hash IS NULL AND excluded.block_hash IS NOT NULL)
            """, new { chainId, txHash, accountId, blockNumber, blockHash, now }, cancellationToken: ct));
        var r = await c.QuerySingleAsync<ClaimRow>(new CommandDefinition(
            $"SELECT {ClaimColumns} FROM crypto_claims WHERE chain_id = @chainId AND tx_hash = @txHash", new { chainId, txHash }, cancellationToken: ct));
        return r.ToClaim();
    }

    /// <summary>
    /// Records the outcome of the account's claim (inserting it if there was none): credited, or failed with a reason code.
    /// A credit also takes over another account's unproven claim (see <see cref="ClaimPendingAsync"/>); a credited claim never changes.
    /// </summary>
    public async Task SettleClaimAsync(long chainId, string txHash, string accountId, ClaimStatus status, string? reason, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO crypto_claims (chain_id, tx_hash, account_id, status, reason, created_at, updated_at)
            VALUES (@chainId, @txHash, @accountId, @status, @reason, @now, @now)
            ON CONFLICT (chain_id, tx_hash) DO UPDATE SET account_id = excluded.account_id, status = excluded.status, reason = excluded.reason,
                updated_at = excluded.updated_at
            WHERE crypto_claims.status <> 'credited'
              AND (crypto_claims.account_id = excluded.account_id OR (excluded.status = 'credited' AND crypto_claims.block_hash IS NULL))
            """, new { chainId, txHash, accountId, status = status.ToString().ToLowerInvariant(), reason, now }, cancellationToken: ct));
    }

    public async Task<IReadOnlyList<CryptoClaim>> ListPendingClaimsAsync(long chainId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<ClaimRow>(new CommandDefinition(
            $"SELECT {ClaimColumns} FROM crypto_claims WHERE chain_id = @chainId AND status = 'pending' ORDER BY updated_at LIMIT @limit",
            new { chainId, limit }, cancellationToken: ct));
        return rows.Select(r => r.ToClaim()).ToList();
    }

    public async Task<IReadOnlyList<CryptoClaim>> ListAccountClaimsAsync(string accountId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<ClaimRow>(new CommandDefinition(
            $"SELECT {ClaimColumns} FROM crypto_claims WHERE account_id = @accountId ORDER BY created_at DESC, tx_hash LIMIT @limit",
            new { accountId, limit }, cancellationToken: ct));
        return rows.Select(r => r.ToClaim()).ToList();
    }

    private const string PaymentColumns = "chain_id, tx_hash, log_index, account_id, status, reason, token, from_address, to_address, amount_units, " +
        "credit_micros, transfer_id, block_number, block_hash, created_at, updated_at";

    private sealed record PaymentRow(long chain_id, string tx_hash, long log_index, string? account_id, string status, string? reason, string token,
        string from_address, string to_address, long amount_units, long? credit_micros, string? transfer_id, long block_number, string block_hash,
        long created_at, long updated_at)
    {
        public CryptoPayment ToPayment() => new(chain_id, tx_hash, log_index, account_id, status, reason, token, from_address, to_address, amount_units,
            credit_micros, transfer_id, block_number, block_hash, UnixMicros.ToDateTimeOffset(created_at), UnixMicros.ToDateTimeOffset(updated_at));
    }

    /// <summary>
    /// Records a credited transfer, after its ledger transfer succeeded (so a crash in between heals: the retry replays the
    /// ledger transfer by its id and writes this row). An unmatched row for the same log becomes credited.
    /// </summary>
    public async Task RecordCreditedAsync(CryptoPayment p, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO crypto_payments ({PaymentColumns})
            VALUES (@ChainId, @TxHash, @LogIndex, @AccountId, 'credited', NULL, @Token, @FromAddress, @ToAddress, @AmountUnits, @CreditMicros, @TransferId,
                    @BlockNumber, @BlockHash, @now, @now)
            ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET account_id = excluded.account_id, status = 'credited', reason = NULL,
                credit_micros = excluded.credit_micros, transfer_id = excluded.transfer_id, block_number = excluded.block_number,
                block_hash = excluded.block_hash, updated_at = excluded.updated_at
            WHERE crypto_payments.status <> 'credited'
            """, new { p.ChainId, p.TxHash, p.LogIndex, p.AccountId, p.Token, p.FromAddress, p.ToAddress, p.AmountUnits, p.CreditMicros, p.TransferId,
            p.BlockNumber, p.BlockHash, now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }

    /// <summary>Lists a transfer nobody can be credited for (yet); a log already recorded is left as it is.</summary>
    public async Task RecordUnmatchedAsync(CryptoPayment p, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO crypto_payments ({PaymentColumns})
            VALUES (@ChainId, @TxHash, @LogIndex, NULL, 'unmatched', @Reason, @Token, @FromAddress, @ToAddress, @AmountUnits, NULL, NULL,
                    @BlockNumber, @BlockHash, @now, @now)
            ON CONFLICT (chain_id, tx_hash, log_index) DO NOTHING
            """, new { p.ChainId, p.TxHash, p.LogIndex, p.Reason, p.Token, p.FromAddress, p.ToAddress, p.AmountUnits, p.BlockNumber, p.BlockHash,
            now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }

    public async Task<IReadOnlyList<CryptoPayment>> ListTxPaymentsAsync(long chainId, string txHash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<PaymentRow>(new CommandDefinition(
            $"SELECT {PaymentColumns} FROM crypto_payments WHERE chain_id = @chainId AND tx_hash = @txHash ORDER BY log_index", new { chainId, txHash }, cancellationToken: ct));
        return rows.Select(r => r.ToPayment()).ToList();
    }

    public async Task<IReadOnlyList<CryptoPayment>> ListAccountPaymentsAsync(string accountId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<PaymentRow>(new CommandDefinition(
            $"SELECT {PaymentColumns} FROM crypto_payments WHERE account_id = @accountId ORDER BY created_at DESC, tx_hash, log_index LIMIT @limit",
            new { accountId, limit }, cancellationToken: ct));
        return rows.Select(r => r.ToPayment()).ToList();
    }

    public async Task<IReadOnlyList<CryptoPayment>> ListUnmatchedAsync(long chainId, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<PaymentRow>(new CommandDefinition(
            $"SELECT {PaymentColumns} FROM crypto_payments WHERE chain_id = @chainId AND status = 'unmatched' ORDER BY created_at DESC, tx_hash, log_index LIMIT @limit",
            new { chainId, limit }, cancellationToken: ct));
        return rows.Select(r => r.ToPayment()).ToList();
    }

    public async Task<long?> GetCursorAsync(string scope, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.QuerySingleOrDefaultAsync<long?>(new CommandDefinition(
            "SELECT next_block FROM crypto_scan_cursors WHERE scope = @scope", new { scope }, cancellationToken: ct));
    }

    /// <summary>
    /// Moves the cursor from <paramref name="expected"/> (null: no cursor yet) to <paramref name="next"/>; false when another
    /// process moved it first (compare-and-set, so several watchers never move it backwards).
    /// </summary>
    public async Task<bool> MoveCursorAsync(string scope, long? expected, long next, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        var changed = expected is null
            ? await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO crypto_scan_cursors (scope, next_block, updated_at) VALUES (@scope, @next, @now) ON CONFLICT (scope) DO NOTHING",
                new { scope, next, now }, cancellationToken: ct))
            : await c.ExecuteAsync(new CommandDefinition(
                "UPDATE crypto_scan_cursors SET next_block = @next, updated_at = @now WHERE scope = @scope AND next_block = @expected",
                new { scope, next, now, expected }, cancellationToken: ct));
        return changed == 1;
    }
}
