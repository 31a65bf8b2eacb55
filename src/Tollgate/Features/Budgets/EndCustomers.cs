using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Budgets;

/// <summary>Which strings are end customer ids: they appear in URLs and ledger keys, so a conservative alphabet.</summary>
public static class EndCustomerIds
{
    public const int MaxLength = 128;
    public const string Rule = "must be 1–128 letters, digits or '_', '-', '.', ':', '@', '+', '='";

    public static bool IsValid(string? id)
    {
        if (string.IsNullOrEmpty(id) || id.Length > MaxLength) return false;
        foreach (var c in id)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':' or '@' or '+' or '=')) return false;
        return true;
    }
}

/// <summary>An end customer of an account: one of the users of the product the account sells, named per call or bound to a key.</summary>
public sealed record EndCustomer(string AccountId, string Id, string? Name, DateTimeOffset? BlockedAt, string? Metadata, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt)
{
    public bool Blocked => BlockedAt is not null;
}

/// <summary>The <c>end_customers</c> table; portable SQL for both engines.</summary>
internal sealed class EndCustomerStore(Database db, TimeProvider time)
{
    private const string Columns = "account_id, id, name, blocked_at, metadata, created_at, updated_at";

    private sealed record Row(string account_id, string id, string? name, long? blocked_at, string? metadata, long created_at, long updated_at)
    {
        public EndCustomer ToCustomer() => new(account_id, id, name, blocked_at is { } b ? UnixMicros.ToDateTimeOffset(b) : null, metadata,
            UnixMicros.ToDateTimeOffset(created_at), UnixMicros.ToDateTimeOffset(updated_at));
    }

    public async Task<EndCustomer?> GetAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM end_customers WHERE account_id = @accountId AND id = @id", new { accountId, id }, cancellationToken: ct));
        return row?.ToCustomer();
    }

    /// <summary>Registers a customer seen for the first time in a call; an existing one is left as it is.</summary>
    public async Task EnsureAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var now = time.GetUtcNowMicros();
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO end_customers (account_id, id, created_at, updated_at) VALUES (@accountId, @id, @now, @now)
            ON CONFLICT (account_id, id) DO NOTHING
            """, new { accountId, id, now }, cancellationToken: ct));
    }

    /// <summary>Creates or updates a customer's name, blocked state and metadata.</summary>
    public async Task<EndCustomer> UpsertAsync(string accountId, string id, string? name, bool blocked, string? metadata, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var now = time.GetUtcNowMicros();
        // Read back with a SELECT, not RETURNING: SQLite reports no column types for RETURNING, which Dapper needs to map nulls.
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO end_customers (account_id, id, name, blocked_at, metadata, created_at, updated_at)
            VALUES (@accountId, @id, @name, @blockedAt, @metadata, @now, @now)
            ON CONFLICT (account_id, id) DO UPDATE SET name = excluded.name, metadata = excluded.metadata, updated_at = excluded.updated_at,
                blocked_at = CASE WHEN excluded.blocked_at IS NULL THEN NULL ELSE COALESCE(end_customers.blocked_at, excluded.blocked_at) END
            """, new { accountId, id, name, blockedAt = blocked ? now : (long?)null, metadata, now }, cancellationToken: ct));
        var row = await c.QuerySingleAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM end_customers WHERE account_id = @accountId AND id = @id", new { accountId, id }, cancellationToken: ct));
        return row.ToCustomer();
    }

    /// <summary>The account's customers in id order, after <paramref name="after"/>.</summary>
    public async Task<IReadOnlyList<EndCustomer>> ListAsync(string accountId, string? after, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM end_customers WHERE account_id = @accountId {(after is null ? "" : "AND id > @after")} ORDER BY id LIMIT @limit",
            new { accountId, after, limit }, cancellationToken: ct));
        return rows.Select(r => r.ToCustomer()).ToList();
    }
}
