using System.Net;
using System.Security.Cryptography;
using System.Threading.RateLimiting;
using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Features.Accounts;
using Tollgate.Features.Members;
using Tollgate.Features.Payments.Crypto;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Dashboard;

public sealed record WalletSignInNonceInput(string? Address = null);

public sealed record WalletSignInInput(string? Message, string? Signature);

/// <summary>A refused wallet sign-in: a stable code, the HTTP status and what to tell the person.</summary>
public sealed record WalletSignInError(int Status, string Code, string Detail, string? Param = null);

internal sealed record SignInNonce(string Nonce, string Domain, string Uri, DateTimeOffset IssuedAt, DateTimeOffset ExpiresAt, DateTimeOffset? UsedAt);

/// <summary>The pre-sign-in nonces (migration 0020): issued to nobody, single use, short-lived.</summary>
internal sealed class SignInNonceStore(Database db, TimeProvider time)
{
    public async Task InsertAsync(SignInNonce n, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO signin_nonces (nonce, domain, uri, issued_at, expires_at) VALUES (@nonce, @domain, @uri, @issuedAt, @expiresAt)
            """, new { nonce = n.Nonce, domain = n.Domain, uri = n.Uri, issuedAt = UnixMicros.From(n.IssuedAt), expiresAt = UnixMicros.From(n.ExpiresAt) },
            cancellationToken: ct));
    }

    private sealed record Row(string nonce, string domain, string uri, long issued_at, long expires_at, long? used_at);

    public async Task<SignInNonce?> GetAsync(string nonce, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var r = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            "SELECT nonce, domain, uri, issued_at, expires_at, used_at FROM signin_nonces WHERE nonce = @nonce", new { nonce }, cancellationToken: ct));
        return r is null ? null : new SignInNonce(r.nonce, r.domain, r.uri, UnixMicros.ToDateTimeOffset(r.issued_at), UnixMicros.ToDateTimeOffset(r.expires_at),
            r.used_at is { } u ? UnixMicros.ToDateTimeOffset(u) : null);
    }

    /// <summary>Marks the nonce used; false when it already was, or expired meanwhile (so two racing sign-ins get one session).</summary>
    public async Task<bool> UseAsync(string nonce, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteAsync(new CommandDefinition(
            "UPDATE signin_nonces SET used_at = @now WHERE nonce = @nonce AND used_at IS NULL AND expires_at > @now", new { nonce, now }, cancellationToken: ct)) == 1;
    }
}

/// <summary>
/// Dashboard sign-in with an Ethereum wallet (Sign-In with Ethereum, ERC-4361). The nonce comes from
/// <c>POST /api/v1/sessions/wallet/nonce</c> (no credentials); the signed message is checked for our domain and URI (fixed
/// when the nonce was issued), the configured chain, its times, the nonce (ours, unused, unexpired; used up by a
/// successful sign-in) and the EIP-191 signature, which must recover the message's address. The wallet then signs in as
/// its own user (created on first use) in the account the wallet is linked to — as a member with
/// <see cref="DashboardOptions.WalletMemberRole"/>, or with the role it already has there. A wallet linked to no account is
/// refused (<c>wallet_not_linked</c>) unless <see cref="DashboardOptions.WalletSignUp"/> is on: then it gets a new
/// prepaid account, linked to it, of which it is the owner.
/// </summary>
internal sealed class WalletSignInService(SignInNonceStore nonces, CryptoStore wallets, MemberService members, AccountService accounts,
    IOptions<CryptoOptions> crypto, IOptions<DashboardOptions> dashboard, TimeProvider time, ILogger<WalletSignInService> log)
{
    private const string NonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    public const string Statement = "Sign in to the Tollgate dashboard.";

    /// <summary>
    /// Issues a nonce for <paramref name="domain"/>/<paramref name="uri"/> (the configured SIWE domain and URI, else the
    /// request's host); with an address, also the exact message to sign.
    /// </summary>
    public async Task<WalletNonceView> IssueNonceAsync(string domain, string uri, string? checksumAddress, CancellationToken ct)
    {
        var o = crypto.Value;
        var now = time.GetUtcNow();
        // Millisecond precision: the stored times round-trip through the RFC 3339 text the wallet signs.
        now = now.AddTicks(-(now.Ticks % TimeSpan.TicksPerMillisecond));
        var nonce = new SignInNonce(RandomNumberGenerator.GetString(NonceAlphabet, 24), domain, uri, now, now.AddSeconds(o.NonceTtlSeconds), null);
        await nonces.InsertAsync(nonce, ct);
        var message = checksumAddress is null ? null
            : new SiweMessage(null, domain, checksumAddress, Statement, uri, "1", o.ChainId, nonce.Nonce, nonce.IssuedAt, nonce.ExpiresAt, null, null, []).ToString();
        return new WalletNonceView(nonce.Nonce, domain, uri, "1", o.ChainId, SiweMessage.FormatTime(nonce.IssuedAt), SiweMessage.FormatTime(nonce.ExpiresAt), message);
    }

    /// <summary>Verifies the signed message and opens a session; either the session or why not (nothing changed then).</summary>
    public async Task<(SessionResponse? Session, WalletSignInError? Error)> SignInAsync(string? message, string? signature, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(message) || string.IsNullOrEmpty(signature) || message.Length > 4_000)
            return (null, new(400, "invalid_request", "Send the signed SIWE message and its signature: {\"message\": …, \"signature\": \"0x…\"}."));
        if (!SiweMessage.TryParse(message, out var parsed, out var parseError)) return (null, new(400, "invalid_siwe_message", parseError, "message"));
        var nonce = await nonces.GetAsync(parsed!.Nonce, ct);
        var now = time.GetUtcNow();
        if (nonce is null) return (null, new(400, "invalid_nonce", "The message's nonce was not issued for sign-in; get one from POST /api/v1/sessions/wallet/nonce.", "message"));
        if (nonce.UsedAt is not null) return (null, new(400, "nonce_used", "The message's nonce was already used; get a new one.", "message"));
        if (now >= nonce.ExpiresAt) return (null, new(400, "nonce_expired", "The message's nonce expired; get a new one.", "message"));

        var check = SiweVerifier.Check(message, signature, nonce.Domain, nonce.Uri, crypto.Value.ChainId, now);
        if (!check.Valid)
            return (null, check.Code == "invalid_signature" ? new(401, check.Code, check.Detail, "signature") : new(400, check.Code!, check.Detail, "message"));

        var address = parsed.Address.ToLowerInvariant();
        var accountId = await wallets.GetWalletAccountAsync(address, ct);
        var role = dashboard.Value.WalletMemberRole;
        if (accountId is null && !dashboard.Value.WalletSignUp)
            return (null, new(403, "wallet_not_linked",
                "This wallet is not linked to any account. Sign in with your e-mail and password and link it (POST /api/v1/wallets), or ask the operator."));
        // Spend the nonce only now: a refused attempt (bad signature, unknown wallet) leaves it for the right one.
        if (!await nonces.UseAsync(nonce.Nonce, ct)) return (null, new(400, "nonce_used", "The message's nonce was used or expired meanwhile; get a new one.", "message"));
        if (accountId is null)
        {
            var created = await accounts.CreateAsync("Wallet " + parsed.Address, 0, ct);
            if (await wallets.TryInsertWalletAsync(address, created.Account.Id, crypto.Value.ChainId, ct))
            {
                accountId = created.Account.Id;
                role = Roles.Owner;
                log.LogInformation("Wallet {Address} signed up as account {AccountId}", parsed.Address, accountId);
            }
            else
            {
                // Another sign-in of the same wallet created its account first; sign in there (the empty account stays unused).
                accountId = await wallets.GetWalletAccountAsync(address, ct) ?? throw new InvalidOperationException("A wallet vanished while signing up.");
            }
        }
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                var (token, expires, memberRole) = await members.SignInWalletAsync(address, accountId, role, ct);
                return (new SessionResponse(token, expires, accountId, memberRole), null);
            }
            catch (Exception e) when (attempt == 0 && DbErrors.IsUniqueViolation(e))
            {
                // The same wallet's first two sign-ins raced to create its user; the second finds it now.
            }
        }
    }
}

/// <summary>Nonce requests per client address per minute: the route is open to anyone and each call writes a row.</summary>
internal sealed class WalletNonceLimiter(IOptions<DashboardOptions> options) : IDisposable
{
    private readonly PartitionedRateLimiter<string> _limiter = PartitionedRateLimiter.Create<string, string>(client =>
        RateLimitPartition.GetFixedWindowLimiter(client, _ => new FixedWindowRateLimiterOptions
        {
            PermitLimit = options.Value.WalletNoncesPerMinute, Window = TimeSpan.FromMinutes(1), QueueLimit = 0, AutoReplenishment = true,
        }));

    public bool TryAcquire(IPAddress? client)
    {
        using var lease = _limiter.AttemptAcquire(client?.ToString() ?? "unknown");
        return lease.IsAcquired;
    }

    public void Dispose() => _limiter.Dispose();
}

/// <summary>The wallet sign-in routes; mapped only when crypto payments (<c>Tollgate:Crypto:Enabled</c>) are on.</summary>
internal static class WalletSignInEndpoints
{
    public static void AddWalletSignIn(IServiceCollection services)
    {
        services.AddSingleton<SignInNonceStore>();
        services.AddSingleton<WalletSignInService>();
        services.AddSingleton<WalletNonceLimiter>();
    }

    public static void MapWalletSignIn(this IEndpointRouteBuilder routes)
    {
        var api = routes.MapGroup("/api/v1/sessions/wallet").WithTags("Members");
        api.MapPost("/nonce", IssueNonce);
        api.MapPost("/", async Task<Results<Created<SessionResponse>, ProblemHttpResult>> (WalletSignInInput? input, WalletSignInService service, CancellationToken ct) =>
        {
            var (session, error) = await service.SignInAsync(input?.Message, input?.Signature, ct);
            return session is not null ? TypedResults.Created("/api/v1/sessions/current", session) : Problem(error!);
        });

        var pages = routes.MapGroup("").ExcludeFromDescription();
        pages.MapPost("/sign-in/wallet", SignInForm);
        pages.MapGet("/dashboard-wallet.js", (HttpContext http) =>
        {
            http.Response.Headers.CacheControl = "public, max-age=3600";
            return Results.Text(Script, "text/javascript; charset=utf-8");
        });
    }

    private static ProblemHttpResult Problem(WalletSignInError e) =>
        Problems.Create(e.Status, e.Code, e.Detail, e.Param is null ? null : new Dictionary<string, object?> { ["param"] = e.Param });

    private static async Task<Results<Ok<WalletNonceView>, ProblemHttpResult>> IssueNonce(WalletSignInNonceInput? input, HttpContext http,
        WalletSignInService service, WalletNonceLimiter limiter, IOptions<CryptoOptions> options, CancellationToken ct)
    {
        string? address = null;
        if (input?.Address is { } given)
        {
            if (!Ethereum.IsAddress(given)) return Problems.BadRequest("invalid_address", "An address is 0x followed by 40 hex digits.", "address");
            address = Ethereum.ToChecksumAddress(given);
        }
        if (!limiter.TryAcquire(http.Connection.RemoteIpAddress))
        {
            http.Response.Headers.RetryAfter = "60";
            return Problems.Create(StatusCodes.Status429TooManyRequests, "rate_limited", "Too many sign-in nonces from this address; retry in a minute.");
        }
        var domain = options.Value.SiweDomain ?? http.Request.Host.Value ?? "localhost";
        var uri = options.Value.SiweUri ?? $"{http.Request.Scheme}://{domain}";
        return TypedResults.Ok(await service.IssueNonceAsync(domain, uri, address, ct));
    }

    /// <summary>POST /sign-in/wallet (the form the sign-in page's script submits): the session cookie, as for a password sign-in.</summary>
    private static async Task<IResult> SignInForm(HttpContext http, WalletSignInService service, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!await DashboardAuth.ValidFormAsync(http)) return DashboardEndpoints.Forged(http, d);
        var form = await http.Request.ReadFormAsync(ct);
        // Form submission turns every line break of a field into CRLF (HTML's form-data rules); the wallet signed LF, and
        // a SIWE message never holds a CR, so this restores exactly the signed text.
        var message = form["message"].ToString().Replace("\r\n", "\n", StringComparison.Ordinal);
        var (session, error) = await service.SignInAsync(message, form["signature"].ToString(), ct);
        if (session is null) return DashboardEndpoints.SignInPage(http, d, "Wallet sign-in failed: " + error!.Detail, status: error.Status);
        http.Response.Cookies.Delete(DashboardAuth.OperatorCookie);
        http.Response.Cookies.Append(DashboardAuth.SessionCookie, session.Token, DashboardAuth.Cookie(http, session.ExpiresAt));
        return Results.Redirect("/", permanent: false);
    }

    /// <summary>
    /// The sign-in page's only script (a file, since the pages' CSP allows no inline script): asks the wallet for its
    /// address, gets the message to sign, has the wallet sign it (personal_sign, EIP-191) and posts it with the page's form.
    /// </summary>
    private const string Script = """
        (function () {
          'use strict';
          var button = document.getElementById('wallet-sign-in');
          var form = document.getElementById('wallet-form');
          var status = document.getElementById('wallet-status');
          if (!button || !form) return;
          if (!window.ethereum || typeof window.ethereum.request !== 'function') {
            status.textContent = 'No Ethereum wallet was found in this browser.';
            return;
          }
          button.disabled = false;
          function hex(text) {
            var bytes = new TextEncoder().encode(text), out = '0x';
            for (var i = 0; i < bytes.length; i++) out += bytes[i].toString(16).padStart(2, '0');
            return out;
          }
          button.addEventListener('click', async function () {
            button.disabled = true;
            try {
              status.textContent = 'Waiting for your wallet…';
              var accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
              if (!accounts || !accounts.length) throw new Error('the wallet shared no account');
              var response = await fetch('/api/v1/sessions/wallet/nonce', {
                method: 'POST', credentials: 'same-origin',
                headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ address: accounts[0] })
              });
              var nonce = await response.json();
              if (!response.ok) throw new Error(nonce.detail || response.statusText);
              status.textContent = 'Sign the message in your wallet…';
              var signature = await window.ethereum.request({ method: 'personal_sign', params: [hex(nonce.message), accounts[0]] });
              form.elements.message.value = nonce.message;
              form.elements.signature.value = signature;
              status.textContent = 'Signing in…';
              form.submit();
            } catch (e) {
              status.textContent = 'Wallet sign-in failed: ' + (e && e.message ? e.message : e);
              button.disabled = false;
            }
          });
        })();
        """;
}
