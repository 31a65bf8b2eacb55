using Tollgate.Infrastructure;
using Dapper;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Metering;

/// <summary>How a usage record is (or is not) billed to the account.</summary>
public enum UsageBillingStatus
{
    /// <summary>Charged to the account's credits.</summary>
    Billed,
    /// <summary>Operator's own traffic: recorded, not charged.</summary>
    Internal,
    /// <summary>Bring-your-own-key: the provider bills the customer directly.</summary>
    Byok,
    /// <summary>Could not be rated or charged automatically; an operator must look at it.</summary>
    NeedsReview,
}

/// <summary>
/// One metered request. <see cref="Id"/> is the client's event id, unique within <see cref="AccountId"/>. Amounts are
/// micro-USD; <see cref="ProviderCostUsd"/> is the provider's reported cost as exact decimal text; token counts ≥ 0.
/// </summary>
public sealed record UsageRecord(
    string Id,
    string AccountId,
    string? KeyId,
    string Model,
    string? Provider,
    long InputTokens,
    long OutputTokens,
    long CacheReadTokens,
    long CacheWriteTokens,
    long ReasoningTokens,
    long? ProviderCostMicros,
    string? ProviderCostUsd,
    long? UserPriceMicros,
    UsageBillingStatus BillingStatus,
    string? RequestId,
    string? Metadata,
    string? TransferId,
    DateTimeOffset CreatedAt,
    DateTimeOffset OccurredAt);

/// <summary>Position in a newest-first usage listing: strictly older than (occurred_at, id).</summary>
public sealed record UsageCursor(DateTimeOffset OccurredAt, string Id);

/// <summary>Usage records of accounts.</summary>
internal interface IUsageStore
{
    /// <summary>Stores the record; false (and nothing changed) if the account already has a record with this id.</summary>
    Task<bool> InsertAsync(UsageRecord record, CancellationToken ct);

    Task<UsageRecord?> GetAsync(string accountId, string id, CancellationToken ct);

    /// <summary>The account's records among <paramref name="ids"/> (at most a few thousand), keyed by id.</summary>
    Task<IReadOnlyDictionary<string, UsageRecord>> GetManyAsync(string accountId, IReadOnlyCollection<string> ids, CancellationToken ct);

    /// <summary>Stores the records in one transaction; per record, false if its (account, id) already existed.</summary>
    Task<bool[]> InsertManyAsync(IReadOnlyList<UsageRecord> records, CancellationToken ct);

    /// <summary>An account's records, newest <c>occurred_at</c> first (ties by id, descending), after <paramref name="before"/> when given.</summary>
    Task<IReadOnlyList<UsageRecord>> ListAsync(string accountId, UsageCursor? before, int limit, CancellationToken ct);
}

/// <summary>Portable SQL for both engines (like the account and key stores): the only engine-specific part is the schema.</summary>
internal sealed class UsageStore(Database db) : IUsageStore
{
    private const string Columns = """
        id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
        reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status, request_id, metadata,
        transfer_id, created_at, occurred_at
        """;

    private sealed record Row(
        string id, string account_id, string? key_id, string model, string? provider, long input_tokens, long output_tokens,
        long cache_read_tokens, long cache_write_tokens, long reasoning_tokens, long? provider_cost_micros, string? provider_cost_usd,
        long? user_price_micros, string billing_status, string? request_id, string? metadata, string? transfer_id,
        long created_at, long occurred_at)
    {
        public static Row From(UsageRecord r) => new(r.Id, r.AccountId, r.KeyId, r.Model, r.Provider, r.InputTokens, r.OutputTokens,
            r.CacheReadTokens, r.CacheWriteTokens, r.ReasoningTokens, r.ProviderCostMicros, r.ProviderCostUsd, r.UserPriceMicros,
            StatusText(r.BillingStatus), r.RequestId, r.Metadata, r.TransferId, ToMicros(r.CreatedAt), ToMicros(r.OccurredAt));

        public UsageRecord ToRecord() => new(id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, ParseStatus(billing_status),
            request_id, metadata, transfer_id, FromMicros(created_at), FromMicros(occurred_at));
    }

    // The primary key decides, in the same statement: no check-then-insert race between two deliveries of one event.
    private const string InsertSql = $"""
        INSERT INTO usage_records ({Columns})
        VALUES (@id, @account_id, @key_id, @model, @provider, @input_tokens, @output_tokens, @cache_read_tokens, @cache_write_tokens,
                @reasoning_tokens, @provider_cost_micros, @provider_cost_usd, @user_price_micros, @billing_status, @request_id, @metadata,
                @transfer_id, @created_at, @occurred_at)
        ON CONFLICT (account_id, id) DO NOTHING
        """;

    public async Task<bool> InsertAsync(UsageRecord record, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var inserted = await c.ExecuteAsync(new CommandDefinition(InsertSql, Row.From(record), cancellationToken: ct));
        return inserted == 1;
    }

    public async Task<bool[]> InsertManyAsync(IReadOnlyList<UsageRecord> records, CancellationToken ct)
    {
        var inserted = new bool[records.Count];
        if (records.Count == 0) return inserted;
        await using var c = await db.OpenAsync(ct);
        // One transaction: one fsync for a whole batch of events instead of one each.
        await using var tx = await c.BeginTransactionAsync(ct);
        for (var i = 0; i < records.Count; i++)
            inserted[i] = await c.ExecuteAsync(new CommandDefinition(InsertSql, Row.From(records[i]), tx, cancellationToken: ct)) == 1;
        await tx.CommitAsync(ct);
        return inserted;
    }

    public async Task<IReadOnlyDictionary<string, UsageRecord>> GetManyAsync(string accountId, IReadOnlyCollection<string> ids, CancellationToken ct)
    {
        var found = new Dictionary<string, UsageRecord>(StringComparer.Ordinal);
        if (ids.Count == 0) return found;
        await using var c = await db.OpenAsync(ct);
        // Dapper sends an array as one PostgreSQL array parameter, but expands it to a list for SQLite; chunks keep that
        // list well below SQLite's parameter limit.
        var match = db.Engine == DatabaseEngine.Postgres ? "id = ANY(@chunk)" : "id IN @chunk";
        foreach (var chunk in ids.Chunk(500))
        {
            var rows = await c.QueryAsync<Row>(new CommandDefinition(
                $"SELECT {Columns} FROM usage_records WHERE account_id = @accountId AND {match}", new { accountId, chunk }, cancellationToken: ct));
            foreach (var row in rows) found[row.id] = row.ToRecord();
        }
        return found;
    }

    public async Task<UsageRecord?> GetAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM usage_records WHERE account_id = @accountId AND id = @id", new { accountId, id }, cancellationToken: ct));
        return row?.ToRecord();
    }

    public async Task<IReadOnlyList<UsageRecord>> ListAsync(string accountId, UsageCursor? before, int limit, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        await using var c = await db.OpenAsync(ct);
        // Two statements rather than "@before IS NULL OR …": an untyped null parameter is an error on PostgreSQL.
        var sql = before is null
            ? $"SELECT {Columns} FROM usage_records WHERE account_id = @accountId ORDER BY occurred_at DESC, id DESC LIMIT @limit"
            : $"""
              SELECT {Columns} FROM usage_records
              WHERE account_id = @accountId AND (occurred_at < @beforeAt OR (occurred_at = @beforeAt AND id < @beforeId))
              ORDER BY occurred_at DESC, id DESC LIMIT @limit
              """;
        var rows = await c.QueryAsync<Row>(new CommandDefinition(sql, new
        {
            accountId, limit, beforeAt = before is null ? 0 : ToMicros(before.OccurredAt), beforeId = before?.Id ?? "",
        }, cancellationToken: ct));
        return rows.Select(r => r.ToRecord()).ToList();
    }

    internal static string StatusText(UsageBillingStatus s) => s switch
    {
        UsageBillingStatus.Billed => "billed",
        UsageBillingStatus.Internal => "internal",
        UsageBillingStatus.Byok => "byok",
        UsageBillingStatus.NeedsReview => "needs_review",
        _ => throw new ArgumentOutOfRangeException(nameof(s), s, null),
    };

    internal static UsageBillingStatus ParseStatus(string s) => s switch
    {
        "billed" => UsageBillingStatus.Billed,
        "internal" => UsageBillingStatus.Internal,
        "byok" => UsageBillingStatus.Byok,
        "needs_review" => UsageBillingStatus.NeedsReview,
        _ => throw new InvalidOperationException($"Unknown billing_status '{s}' in usage_records."),
    };

    private static long ToMicros(DateTimeOffset t) => UnixMicros.From(t);
    private static DateTimeOffset FromMicros(long micros) => UnixMicros.ToDateTimeOffset(micros);
}
