using System.Net.Mail;
using Dapper;
using Microsoft.AspNetCore.Identity;
using Tollgate.Features.Accounts;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Members;

/// <summary>Roles of a member in an account, strongest first.</summary>
public static class Roles
{
    public const string Owner = "owner";
    public const string Admin = "admin";
    public const string Member = "member";
    public const string Viewer = "viewer";

    public static bool IsValid(string? role) => role is Owner or Admin or Member or Viewer;

    /// <summary>Roles allowed to change the account's keys, provider keys and members.</summary>
    public static readonly string[] Managers = [Owner, Admin];
}

public sealed record MemberView(string UserId, string Email, string Role, DateTimeOffset CreatedAt);

internal sealed record MemberUser(string Id, string Email);

/// <summary>
/// Users, memberships and dashboard sessions. Passwords are hashed with ASP.NET Core Identity's
/// <see cref="PasswordHasher{TUser}"/> (PBKDF2, per-password salt, versioned format). A session token
/// (<c>tg_sess_…</c>, 43 random base62 characters) is shown once and stored as its SHA-256 hash, like API keys.
/// </summary>
internal sealed class MemberService(Database db, IAccountStore accounts, TimeProvider time)
{
    public const int MinPasswordLength = 10;
    public const int MaxPasswordLength = 200;
    public static readonly TimeSpan SessionLifetime = TimeSpan.FromHours(12);
    private const string SessionPrefix = "tg_sess_";
    private static readonly PasswordHasher<MemberUser> Hasher = new();

    private sealed record UserRow(string id, string email, string password_hash);
    private sealed record MemberRow(string user_id, string email, string role, long created_at);
    private sealed record SessionRow(string id, string user_id, string account_id, long expires_at, string role);

    public static string NormalizeEmail(string email) => email.Trim().ToLowerInvariant();

    public static bool IsValidEmail(string? email) =>
        email is { Length: > 3 and <= 254 } && MailAddress.TryCreate(email.Trim(), out var parsed) && parsed.Address == email.Trim()
        && !email.Trim().EndsWith(WalletEmailDomain, StringComparison.OrdinalIgnoreCase);

    /// <summary>Adds a member (creating the user with <paramref name="password"/> if the email is new); null if the account does not exist.</summary>
    public async Task<MemberView?> AddAsync(string accountId, string email, string? password, string role, CancellationToken ct)
    {
        if (await accounts.GetAsync(accountId, ct) is null) return null;
        email = NormalizeEmail(email);
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var user = await c.QuerySingleOrDefaultAsync<UserRow>(new CommandDefinition(
            "SELECT id, email, password_hash FROM users WHERE email = @email", new { email }, tx, cancellationToken: ct));
        if (user is null)
        {
            if (password is null) throw new ArgumentException("A new user needs a password.", nameof(password));
            var id = Secrets.RandomId("user_");
            var hash = Hasher.HashPassword(new MemberUser(id, email), password);
            await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO users (id, email, password_hash, created_at) VALUES (@id, @email, @hash, @now)", new { id, email, hash, now }, tx, cancellationToken: ct));
            user = new UserRow(id, email, hash);
        }
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO memberships (account_id, user_id, role, created_at) VALUES (@accountId, @userId, @role, @now)
            ON CONFLICT (account_id, user_id) DO UPDATE SET role = excluded.role
            """, new { accountId, userId = user.id, role, now }, tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return new MemberView(user.id, email, role, UnixMicros.ToDateTimeOffset(now));
    }

    public async Task<IReadOnlyList<MemberView>> ListAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<MemberRow>(new CommandDefinition("""
            SELECT m.user_id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
            WHERE m.account_id = @accountId ORDER BY m.created_at, u.email
            """, new { accountId }, cancellationToken: ct));
        return rows.Select(r => new MemberView(r.user_id, r.email, r.role, UnixMicros.ToDateTimeOffset(r.created_at))).ToList();
    }

    /// <summary>Removes a member; false if not a member, or if they are the account's last owner (an account keeps an owner).</summary>
    public async Task<bool> RemoveAsync(string accountId, string userId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var owners = await c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT count(*) FROM memberships WHERE account_id = @accountId AND role = 'owner' AND user_id <> @userId", new { accountId, userId }, tx, cancellationToken: ct));
        var role = await c.ExecuteScalarAsync<string?>(new CommandDefinition(
            "SELECT role FROM memberships WHERE account_id = @accountId AND user_id = @userId", new { accountId, userId }, tx, cancellationToken: ct));
        if (role is null || (role == Roles.Owner && owners == 0)) return false;
        await c.ExecuteAsync(new CommandDefinition("DELETE FROM memberships WHERE account_id = @accountId AND user_id = @userId", new { accountId, userId }, tx, cancellationToken: ct));
        await c.ExecuteAsync(new CommandDefinition(
            "UPDATE sessions SET revoked_at = @now WHERE account_id = @accountId AND user_id = @userId AND revoked_at IS NULL",
            new { accountId, userId, now = time.GetUtcNowMicros() }, tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return true;
    }

    /// <summary>
    /// Signs in to one account (the only one the user belongs to, or <paramref name="accountId"/>). Null for a wrong email,
    /// wrong password or no membership alike — the answer never tells which.
    /// </summary>
    public async Task<(string Token, DateTimeOffset ExpiresAt, string AccountId, string Role)?> SignInAsync(string email, string password, string? accountId, CancellationToken ct)
    {
        email = NormalizeEmail(email);
        await using var c = await db.OpenAsync(ct);
        var user = await c.QuerySingleOrDefaultAsync<UserRow>(new CommandDefinition(
            "SELECT id, email, password_hash FROM users WHERE email = @email", new { email }, cancellationToken: ct));
        // Hash even for an unknown email, so the time taken does not tell whether it exists.
        var verdict = Hasher.VerifyHashedPassword(new MemberUser(user?.id ?? "", email), user?.password_hash ?? DummyHash, password);
        if (user is null || verdict == PasswordVerificationResult.Failed) return null;
        var memberships = (await c.QueryAsync<(string account_id, string role)>(new CommandDefinition(
            "SELECT account_id, role FROM memberships WHERE user_id = @userId ORDER BY created_at", new { userId = user.id }, cancellationToken: ct))).ToList();
        var chosen = accountId is null ? (memberships.Count == 1 ? memberships[0] : default) : memberships.FirstOrDefault(m => m.account_id == accountId);
        if (chosen.account_id is null) return null;
        var (token, expires) = await StartSessionAsync(c, null, user.id, chosen.account_id, ct);
        return (token, expires, chosen.account_id, chosen.role);
    }

    private async Task<(string Token, DateTimeOffset ExpiresAt)> StartSessionAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction? tx,
        string userId, string accountId, CancellationToken ct)
    {
        var token = SessionPrefix + Secrets.RandomBase62(43);
        var now = time.GetUtcNow();
        var expires = now + SessionLifetime;
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO sessions (id, token_hash, user_id, account_id, created_at, expires_at) VALUES (@id, @hash, @userId, @accountId, @now, @expires)
            """, new
        {
            id = Secrets.RandomId("sess_"), hash = Secrets.Hash(token), userId, accountId,
            now = UnixMicros.From(now), expires = UnixMicros.From(expires),
        }, tx, cancellationToken: ct));
        return (token, expires);
    }

    /// <summary>
    /// The e-mail a wallet's user carries (users need one): the address at the reserved <c>.invalid</c> domain, which
    /// <see cref="IsValidEmail"/> refuses, so nobody can create, or set a password for, a user that wallet sign-in will use.
    /// </summary>
    public static string WalletEmail(string address) => address.ToLowerInvariant() + WalletEmailDomain;

    private const string WalletEmailDomain = "@wallet.invalid";

    /// <summary>
    /// Signs a wallet (lower-case address, already proven by its signature) in to <paramref name="accountId"/>: its user is
    /// created on first use (no usable password), and becomes a member with <paramref name="roleIfNew"/> unless it already
    /// is one (then its role stays). Returns the session and the member's role.
    /// </summary>
    public async Task<(string Token, DateTimeOffset ExpiresAt, string Role)> SignInWalletAsync(string address, string accountId, string roleIfNew, CancellationToken ct)
    {
        address = address.ToLowerInvariant();
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var userId = await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
            "SELECT user_id FROM wallet_users WHERE address = @address", new { address }, tx, cancellationToken: ct));
        if (userId is null)
        {
            userId = Secrets.RandomId("user_");
            var email = WalletEmail(address);
            // A random password nobody ever sees: the user exists for memberships and sessions, not for password sign-in.
            var hash = Hasher.HashPassword(new MemberUser(userId, email), Secrets.RandomBase62(40));
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO users (id, email, password_hash, created_at) VALUES (@userId, @email, @hash, @now)",
                new { userId, email, hash, now }, tx, cancellationToken: ct));
            await c.ExecuteAsync(new CommandDefinition("INSERT INTO wallet_users (address, user_id, created_at) VALUES (@address, @userId, @now)",
                new { address, userId, now }, tx, cancellationToken: ct));
        }
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO memberships (account_id, user_id, role, created_at) VALUES (@accountId, @userId, @role, @now)
            ON CONFLICT (account_id, user_id) DO NOTHING
            """, new { accountId, userId, role = roleIfNew, now }, tx, cancellationToken: ct));
        var role = await c.QuerySingleAsync<string>(new CommandDefinition(
            "SELECT role FROM memberships WHERE account_id = @accountId AND user_id = @userId", new { accountId, userId }, tx, cancellationToken: ct));
        var (token, expires) = await StartSessionAsync(c, tx, userId, accountId, ct);
        await tx.CommitAsync(ct);
        return (token, expires, role);
    }

    private static readonly string DummyHash = Hasher.HashPassword(new MemberUser("", ""), "not a password of anyone");

    public static bool IsSessionToken(string? token) => token?.StartsWith(SessionPrefix, StringComparison.Ordinal) == true && token.Length < 200;

    /// <summary>The caller for a live session token (its member's role in its account), or null.</summary>
    public async Task<Caller?> AuthenticateAsync(string token, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<SessionRow>(new CommandDefinition("""
            SELECT s.id, s.user_id, s.account_id, s.expires_at, m.role FROM sessions s
            JOIN memberships m ON m.account_id = s.account_id AND m.user_id = s.user_id
            WHERE s.token_hash = @hash AND s.revoked_at IS NULL
            """, new { hash = Secrets.Hash(token) }, cancellationToken: ct));
        if (row is null || UnixMicros.ToDateTimeOffset(row.expires_at) <= time.GetUtcNow()) return null;
        if (await accounts.GetAsync(row.account_id, ct) is not { } account) return null;
        return new Caller("session:" + row.id, account.Id, account.LedgerAccountId)
        {
            PlanId = account.PlanId, PlanAnchor = account.PlanAnchor, PlanVersion = account.PlanVersion, PlanPeriodMonths = account.PlanPeriodMonths, Role = row.role, UserId = row.user_id,
        };
    }

    public async Task SignOutAsync(string token, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("UPDATE sessions SET revoked_at = @now WHERE token_hash = @hash AND revoked_at IS NULL",
            new { hash = Secrets.Hash(token), now = time.GetUtcNowMicros() }, cancellationToken: ct));
    }
}
