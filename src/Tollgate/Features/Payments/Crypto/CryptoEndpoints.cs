using System.Security.Cryptography;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Payments.Crypto;

public sealed record WalletNonceInput(string? Address = null);

/// <summary>What the wallet must sign: the SIWE fields, and the whole message when the address was given.</summary>
public sealed record WalletNonceView(string Nonce, string Domain, string Uri, string Version, long ChainId, string IssuedAt, string ExpirationTime, string? Message);

public sealed record LinkWalletInput(string? Message, string? Signature);

public sealed record WalletView(string Address, long ChainId, DateTimeOffset LinkedAt)
{
    public static WalletView From(LinkedWallet w) => new(Ethereum.ToChecksumAddress(w.Address), w.ChainId, w.LinkedAt);
}

public sealed record ConfirmCryptoInput(string? TxHash);

public sealed record CryptoPaymentView(long ChainId, string TxHash, long LogIndex, string Status, string? Reason, string? AccountId, string Token,
    string FromAddress, string ToAddress, long AmountUnits, long? CreditMicros, string? TransferId, long BlockNumber, string BlockHash, DateTimeOffset CreatedAt)
{
    public static CryptoPaymentView From(CryptoPayment p) => new(p.ChainId, p.TxHash, p.LogIndex, p.Status, p.Reason, p.AccountId, p.Token,
        p.FromAddress, p.ToAddress, p.AmountUnits, p.CreditMicros, p.TransferId, p.BlockNumber, p.BlockHash, p.CreatedAt);
}

/// <summary>The answer to a confirm: <c>credited</c> (200, with the credited transfers) or <c>pending</c> (202).</summary>
public sealed record CryptoConfirmationView(string Status, long ChainId, string TxHash, long? Confirmations, int RequiredConfirmations,
    IReadOnlyList<CryptoPaymentView> Payments);

public sealed record CryptoClaimView(string TxHash, string Status, string? Reason, long? BlockNumber, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt)
{
    public static CryptoClaimView From(CryptoClaim c) => new(c.TxHash, c.Status.ToString().ToLowerInvariant(), c.Reason, c.BlockNumber, c.CreatedAt, c.UpdatedAt);
}

public sealed record CryptoPaymentsView(IReadOnlyList<CryptoPaymentView> Data, IReadOnlyList<CryptoClaimView> Claims);

public sealed record UnmatchedView(IReadOnlyList<CryptoPaymentView> Data);

/// <summary>Per-account limit on confirm calls (each costs several RPC calls to a metered provider).</summary>
internal sealed class CryptoConfirmLimiter(IOptions<CryptoOptions> options) : IDisposable
{
    private readonly PartitionedRateLimiter<string> _limiter = PartitionedRateLimiter.Create<string, string>(account =>
        RateLimitPartition.GetFixedWindowLimiter(account, _ => new FixedWindowRateLimiterOptions
        {
            PermitLimit = options.Value.ConfirmPerMinute, Window = TimeSpan.FromMinutes(1), QueueLimit = 0, AutoReplenishment = true,
        }));

    /// <summary>Null when allowed, else the seconds until the next call may succeed.</summary>
    public int? TryAcquire(string accountId)
    {
        using var lease = _limiter.AttemptAcquire(accountId);
        if (lease.IsAcquired) return null;
        return lease.TryGetMetadata(MetadataName.RetryAfter, out var retry) ? Math.Max(1, (int)Math.Ceiling(retry.TotalSeconds)) : 60;
    }

    public void Dispose() => _limiter.Dispose();
}

/// <summary>
/// Wallet linking (Sign-In with Ethereum) and USDC top-ups, under <c>/api/v1</c> for the caller's account; the unmatched
/// transfers the watcher found under <c>/admin/v1</c>. Mapped only when <c>Tollgate:Crypto:Enabled</c>.
/// </summary>
internal static class CryptoEndpoints
{
    private const string NonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    public const int MaxPageSize = 200;

    public static void MapCryptoPayments(this IEndpointRouteBuilder routes)
    {
        var wallets = routes.MapGroup("/api/v1/wallets").RequireApiKey().ManagersOnly().WithTags("Crypto payments");
        wallets.MapPost("/nonce", IssueNonce);
        wallets.MapPost("/", LinkWallet);
        wallets.MapGet("/", async (HttpContext http, CryptoStore store, CancellationToken ct) =>
            TypedResults.Ok((await store.ListWalletsAsync(http.GetCaller().AccountId, ct)).Select(WalletView.From).ToList()));
        wallets.MapDelete("/{address}", async Task<Results<NoContent, ProblemHttpResult>> (string address, HttpContext http, CryptoStore store, CancellationToken ct) =>
        {
            if (Ethereum.NormalizeAddress(address) is not { } normalized) return Problems.BadRequest("invalid_address", "An address is 0x followed by 40 hex digits.", "address");
            return await store.UnlinkWalletAsync(http.GetCaller().AccountId, normalized, ct) ? TypedResults.NoContent() : Problems.NotFound("wallet", address);
        });

        var payments = routes.MapGroup("/api/v1/payments/crypto").RequireApiKey().WithTags("Crypto payments");
        payments.MapPost("/confirm", Confirm);
        payments.MapGet("/", async (HttpContext http, CryptoStore store, int? limit, CancellationToken ct) =>
        {
            var accountId = http.GetCaller().AccountId;
            var n = Math.Clamp(limit ?? 50, 1, MaxPageSize);
            return TypedResults.Ok(new CryptoPaymentsView(
                (await store.ListAccountPaymentsAsync(accountId, n, ct)).Select(CryptoPaymentView.From).ToList(),
                (await store.ListAccountClaimsAsync(accountId, n, ct)).Select(CryptoClaimView.From).ToList()));
        });

        var admin = routes.MapGroup("/admin/v1/payments/crypto").RequireAdminKey().WithTags("Admin: crypto payments");
        admin.MapGet("/reconciliation", async Task<Results<Ok<Stripe.ReconciliationReport>, ProblemHttpResult>> (
            [Microsoft.AspNetCore.Mvc.FromQuery(Name = "from_block")] long? fromBlock, [Microsoft.AspNetCore.Mvc.FromQuery(Name = "to_block")] long? toBlock,
            CryptoReconciler reconciler, CancellationToken ct) =>
        {
            try
            {
                var (from, to) = await reconciler.ConfirmedRangeAsync(fromBlock, toBlock, 10_001, ct);
                if (from < 0 || from > to) return Problems.BadRequest("invalid_request", "'from_block' must be 0 or more and not after 'to_block' (or the confirmed head).", "from_block");
                if (to - from > 1_000_000) return Problems.BadRequest("invalid_request", "At most 1,000,000 blocks per reconciliation.", "from_block");
                return TypedResults.Ok(await reconciler.ReconcileAsync(from, to, ct));
            }
            catch (EvmRpcException e)
            {
                return Problems.Create(StatusCodes.Status503ServiceUnavailable, "rpc_unavailable", $"The chain could not be read: {e.Message}");
            }
        });
        admin.MapGet("/unmatched", async (CryptoStore store, IOptions<CryptoOptions> options, int? limit, CancellationToken ct) =>
                TypedResults.Ok(new UnmatchedView((await store.ListUnmatchedAsync(options.Value.ChainId, Math.Clamp(limit ?? 100, 1, MaxPageSize), ct))
                    .Select(CryptoPaymentView.From).ToList())));
    }

    private static async Task<Results<Ok<WalletNonceView>, ProblemHttpResult>> IssueNonce(WalletNonceInput? input, HttpContext http, CryptoStore store,
        IOptions<CryptoOptions> options, TimeProvider time, CancellationToken ct)
    {
        var o = options.Value;
        string? address = null;
        if (input?.Address is { } given)
        {
            if (!Ethereum.IsAddress(given)) return Problems.BadRequest("invalid_address", "An address is 0x followed by 40 hex digits.", "address");
            address = Ethereum.ToChecksumAddress(given);
        }
        var domain = o.SiweDomain ?? http.Request.Host.Value ?? "localhost";
        var uri = o.SiweUri ?? $"{http.Request.Scheme}://{domain}";
        var now = time.GetUtcNow();
        // Millisecond precision: the stored times round-trip through the RFC 3339 text the wallet signs.
        now = now.AddTicks(-(now.Ticks % TimeSpan.TicksPerMillisecond));
        var nonce = new WalletNonce(RandomNumberGenerator.GetString(NonceAlphabet, 24), http.GetCaller().AccountId, domain, uri, now, now.AddSeconds(o.NonceTtlSeconds), null);
        await store.InsertNonceAsync(nonce, ct);
        var message = address is null ? null
            : new SiweMessage(null, domain, address, "Link this wallet to your Tollgate account to top up credits with USDC.", uri, "1", o.ChainId, nonce.Nonce,
                nonce.IssuedAt, nonce.ExpiresAt, null, null, []).ToString();
        return TypedResults.Ok(new WalletNonceView(nonce.Nonce, domain, uri, "1", o.ChainId, SiweMessage.FormatTime(nonce.IssuedAt),
            SiweMessage.FormatTime(nonce.ExpiresAt), message));
    }

    private static async Task<Results<Created<WalletView>, Ok<WalletView>, ProblemHttpResult>> LinkWallet(LinkWalletInput? input, HttpContext http,
        CryptoStore store, IOptions<CryptoOptions> options, TimeProvider time, CancellationToken ct)
    {
        var accountId = http.GetCaller().AccountId;
        if (input?.Message is not { } message || input.Signature is not { } signature)
            return Problems.BadRequest("invalid_request", "Send the signed SIWE message and its signature: {\"message\": …, \"signature\": \"0x…\"}.");
        if (!SiweMessage.TryParse(message, out var parsed, out var parseError)) return Problems.BadRequest("invalid_siwe_message", parseError, "message");
        // The nonce is ours, the caller's, unused and unexpired; it also fixes the domain and URI the message must name.
        var nonce = await store.GetNonceAsync(parsed!.Nonce, ct);
        var now = time.GetUtcNow();
        if (nonce is null || nonce.AccountId != accountId)
            return Problems.BadRequest("invalid_nonce", "The message's nonce was not issued to this account; get one from POST /api/v1/wallets/nonce.", "message");
        if (nonce.UsedAt is not null) return Problems.BadRequest("nonce_used", "The message's nonce was already used; get a new one.", "message");
        if (now >= nonce.ExpiresAt) return Problems.BadRequest("nonce_expired", "The message's nonce expired; get a new one.", "message");

        var check = SiweVerifier.Check(message, signature, nonce.Domain, nonce.Uri, options.Value.ChainId, now);
        if (!check.Valid) return Problems.BadRequest(check.Code!, check.Detail, check.Code == "invalid_signature" ? "signature" : "message");

        var address = parsed.Address.ToLowerInvariant();
        var (outcome, wallet) = await store.LinkWalletAsync(nonce.Nonce, accountId, address, options.Value.ChainId, ct);
        return outcome switch
        {
            LinkOutcome.Linked => TypedResults.Created($"/api/v1/wallets/{parsed.Address}", WalletView.From(wallet!)),
            LinkOutcome.AlreadyLinked => TypedResults.Ok(WalletView.From(wallet!)),
            LinkOutcome.LinkedToOtherAccount => Problems.Conflict("wallet_linked_elsewhere", "This wallet is linked to another account; unlink it there first."),
            _ => Problems.BadRequest("nonce_used", "The message's nonce was used or expired meanwhile; get a new one.", "message"),
        };
    }

    private static async Task<Results<Ok<CryptoConfirmationView>, Accepted<CryptoConfirmationView>, ProblemHttpResult>> Confirm(ConfirmCryptoInput? input,
        HttpContext http, CryptoPaymentService service, CryptoStore store, CryptoConfirmLimiter limiter, CancellationToken ct)
    {
        var caller = http.GetCaller();
        var o = service.Options;
        if (Ethereum.NormalizeHash(input?.TxHash) is not { } txHash)
            return Problems.BadRequest(CryptoErrors.InvalidTxHash, "tx_hash must be 0x followed by 64 hex digits.", "tx_hash");
        if (limiter.TryAcquire(caller.AccountId) is { } retryAfter)
        {
            http.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return Problems.Create(StatusCodes.Status429TooManyRequests, "rate_limited", $"Too many confirm calls; retry in {retryAfter} s.");
        }

        // A replay returns what is already known, without asking the node again.
        var credited = (await store.ListTxPaymentsAsync(o.ChainId, txHash, ct)).Where(p => p.Status == "credited").ToList();
        var mine = credited.Where(p => p.AccountId == caller.AccountId).ToList();
        var claim = await store.GetClaimAsync(o.ChainId, txHash, ct);
        if (mine.Count > 0)
        {
            // The watcher credits the payment, then marks the claim: answer "credited" only with the claim agreeing.
            if (claim is { Status: not ClaimStatus.Credited } && claim.AccountId == caller.AccountId)
                await store.SettleClaimAsync(o.ChainId, txHash, caller.AccountId, ClaimStatus.Credited, null, ct);
            return TypedResults.Ok(Credited(o, txHash, mine));
        }
        // Another account's claim blocks this one only once proven (a block hash is stored only after its receipt showed a
        // transfer from that account's wallet); an unproven one, made before the transaction was mined, does not.
        if (credited.Count > 0 || claim is not null && claim.AccountId != caller.AccountId && (claim.BlockHash is not null || claim.Status == ClaimStatus.Credited))
            return Problems.Conflict(CryptoErrors.AlreadyClaimed, "This transaction was already submitted by another account.");
        if (claim is not null && claim.AccountId != caller.AccountId) claim = null;
        if (claim is { Status: ClaimStatus.Failed }) return Problems.BadRequest(claim.Reason ?? CryptoErrors.TransactionFailed, FailedDetail(claim.Reason), "tx_hash");

        Evaluation evaluation;
        try
        {
            evaluation = await service.EvaluateAsync(caller.AccountId, caller.LedgerAccountId, txHash, claim?.BlockHash, ct);
        }
        catch (EvmRpcException e)
        {
            return Problems.Create(StatusCodes.Status503ServiceUnavailable, CryptoErrors.RpcUnavailable, "The blockchain node is unavailable; try again shortly. " + e.Message);
        }
        switch (evaluation)
        {
            case Evaluation.Credited c:
                await store.SettleClaimAsync(o.ChainId, txHash, caller.AccountId, ClaimStatus.Credited, null, ct);
                return TypedResults.Ok(Credited(o, txHash, c.Payments));
            case Evaluation.Pending p:
                var stored = await store.ClaimPendingAsync(o.ChainId, txHash, caller.AccountId, p.BlockNumber, p.BlockHash, ct);
                if (stored.AccountId != caller.AccountId && stored.BlockHash is not null)
                    return Problems.Conflict(CryptoErrors.AlreadyClaimed, "This transaction was already submitted by another account.");
                // Not mined yet and someone else's unproven claim holds the hash: still pending for the caller, whose next
                // confirm (or the watcher) settles it once the receipt shows whose wallet sent it.
                return TypedResults.Accepted($"/api/v1/payments/crypto", new CryptoConfirmationView("pending", o.ChainId, txHash, p.Confirmations, o.Confirmations, []));
            case Evaluation.Rejected r:
                // A claim that turned out bad stays failed; a first submission that is plainly wrong leaves nothing behind.
                if (claim is not null) await store.SettleClaimAsync(o.ChainId, txHash, caller.AccountId, ClaimStatus.Failed, r.Code, ct);
                return Problems.BadRequest(r.Code, r.Detail, "tx_hash");
            default:
                throw new InvalidOperationException("Unknown evaluation.");
        }
    }

    private static CryptoConfirmationView Credited(CryptoOptions o, string txHash, IReadOnlyList<CryptoPayment> payments) =>
        new("credited", o.ChainId, txHash, null, o.Confirmations, payments.Select(CryptoPaymentView.From).ToList());

    private static string FailedDetail(string? reason) => reason switch
    {
        CryptoErrors.Reorged => "The transaction left its block in a chain reorganisation after it was submitted; it is not credited.",
        CryptoErrors.Expired => "The transaction was not confirmed in time; it is not credited.",
        _ => $"The transaction was checked and is not creditable ({reason}).",
    };
}
