using Dapper;
using System.Data.Common;
using System.Threading.Channels;
using Npgsql;
using Tollgate.Infrastructure;
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
    DateTimeOffset OccurredAt)
{
    /// <summary>The account's end customer the usage was for, if one was named.</summary>
    public string? CustomerId { get; init; }
}

/// <summary>Position in a newest-first usage listing: strictly older than (occurred_at, id).</summary>
public sealed record UsageCursor(DateTimeOffset OccurredAt, string Id);

/// <summary>Position in the needs-review queue (oldest first): strictly after (occurred_at, account_id, id).</summary>
public sealed record ReviewCursor(DateTimeOffset OccurredAt, string AccountId, string Id);

/// <summary>A record waiting for review, with what re-rating needs: its key's type and its account's ledger account.</summary>
public sealed record ReviewItem(UsageRecord Record, string? KeyType, long LedgerAccountId);

/// <summary>Usage records of accounts.</summary>
internal interface IUsageStore
{
    /// <summary>
    /// <c>needs_review</c> records across accounts, oldest <c>occurred_at</c> first (ties by account, then id), after
    /// <paramref name="after"/> when given; only those with exactly this stored <paramref name="model"/> name and of
    /// <paramref name="accountId"/> when given.
    /// </summary>
    Task<IReadOnlyList<ReviewItem>> ListNeedsReviewAsync(string? model, string? accountId, ReviewCursor? after, int limit, CancellationToken ct);

    /// <summary>
    /// Writes the rating of a record that is still <c>needs_review</c>: model, provider, costs, billing status and
    /// transfer id. False (nothing changed) if it is no longer waiting (rated meanwhile) or does not exist.
    /// </summary>
    Task<bool> MarkRatedAsync(UsageRecord rated, CancellationToken ct);

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
internal sealed class UsageStore : IUsageStore, IAsyncDisposable
{
    private readonly Database db;

    public UsageStore(Database db)
    {
        this.db = db;
        if (db.Engine != DatabaseEngine.Sqlite) return;
        var queue = Channel.CreateUnbounded<PendingInsert>(new UnboundedChannelOptions { SingleReader = true });
        _sqliteQueue = queue;
        _sqliteWriter = Task.Run(() => SqliteWriterLoopAsync(queue.Reader));
    }

    private const string Columns = """
        id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
        reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status, request_id, metadata,
        transfer_id, created_at, occurred_at, customer_id
        """;

    private sealed record Row(
        string id, string account_id, string? key_id, string model, string? provider, long input_tokens, long output_tokens,
        long cache_read_tokens, long cache_write_tokens, long reasoning_tokens, long? provider_cost_micros, string? provider_cost_usd,
        long? user_price_micros, string billing_status, string? request_id, string? metadata, string? transfer_id,
        long created_at, long occurred_at, string? customer_id)
    {
        public static Row From(UsageRecord r) => new(r.Id, r.AccountId, r.KeyId, r.Model, r.Provider, r.InputTokens, r.OutputTokens,
            r.CacheReadTokens, r.CacheWriteTokens, r.ReasoningTokens, r.ProviderCostMicros, r.ProviderCostUsd, r.UserPriceMicros,
            StatusText(r.BillingStatus), r.RequestId, r.Metadata, r.TransferId, ToMicros(r.CreatedAt), ToMicros(r.OccurredAt), r.CustomerId);

        public UsageRecord ToRecord() => new(id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, ParseStatus(billing_status),
            request_id, metadata, transfer_id, FromMicros(created_at), FromMicros(occurred_at)) { CustomerId = customer_id };
    }

    // The primary key decides, in the same statement: no check-then-insert race between two deliveries of one event.
    private const string InsertSql = $"""
        INSERT INTO usage_records ({Columns})
        VALUES (@id, @account_id, @key_id, @model, @provider, @input_tokens, @output_tokens, @cache_read_tokens, @cache_write_tokens,
                @reasoning_tokens, @provider_cost_micros, @provider_cost_usd, @user_price_micros, @billing_status, @request_id, @metadata,
                @transfer_id, @created_at, @occurred_at, @customer_id)
        ON CONFLICT (account_id, id) DO NOTHING
        """;

    public async Task<bool> InsertAsync(UsageRecord record, CancellationToken ct)
    {
        // SQLite: through the record writer's group commit, like batches (see SqliteWriterLoopAsync).
        if (_sqliteQueue is not null) return (await InsertManyAsync([record], ct))[0];
        await using var c = await db.OpenAsync(ct);
        var inserted = await c.ExecuteAsync(new CommandDefinition(InsertSql, Row.From(record), cancellationToken: ct));
        return inserted == 1;
    }

    public async Task<bool[]> InsertManyAsync(IReadOnlyList<UsageRecord> records, CancellationToken ct)
    {
        if (records.Count == 0) return [];
        if (_sqliteQueue is { } queue)
        {
            // Once queued the insert happens whatever the caller does next; ct only stops it from being queued.
            ct.ThrowIfCancellationRequested();
            var pending = new PendingInsert(records, new TaskCompletionSource<bool[]>(TaskCreationOptions.RunContinuationsAsynchronously));
            if (!queue.Writer.TryWrite(pending)) throw new ObjectDisposedException(nameof(UsageStore));
            return await pending.Done.Task;
        }
        await using var c = await db.OpenAsync(ct);
        if (c is NpgsqlConnection pg && records.DistinctBy(r => (r.AccountId, r.Id)).Count() == records.Count)
            return await InsertManyPostgresAsync(pg, records, ct);
        return await InsertRowsAsync(c, records, ct);
    }

    /// <summary>One transaction of per-row inserts: one fsync for the lot instead of one each.</summary>
    private static async Task<bool[]> InsertRowsAsync(DbConnection c, IReadOnlyList<UsageRecord> records, CancellationToken ct)
    {
        var inserted = new bool[records.Count];
        await using var tx = await c.BeginTransactionAsync(ct);
        for (var i = 0; i < records.Count; i++)
            inserted[i] = await c.ExecuteAsync(new CommandDefinition(InsertSql, Row.From(records[i]), tx, cancellationToken: ct)) == 1;
        await tx.CommitAsync(ct);
        return inserted;
    }

    /// <summary>Most records the SQLite writer commits in one transaction.</summary>
    private const int MaxSqliteGroupRecords = 10_000;

    private sealed record PendingInsert(IReadOnlyList<UsageRecord> Records, TaskCompletionSource<bool[]> Done);

    private readonly Channel<PendingInsert>? _sqliteQueue;
    private readonly Task? _sqliteWriter;

    /// <summary>
    /// SQLite's group commit for usage records, like the ledger's for transfers: concurrent requests queue their
    /// records, one loop writes everything queued in one transaction under the process's write gate
    /// (<see cref="Database.SqliteWriteGate"/>, shared with the ledger writer), so a busy moment costs one fsync per
    /// group instead of one per request, and no request waits in SQLite's sleeping busy handler. If a group fails, each
    /// request's records are retried alone, so one bad request cannot fail its neighbours.
    /// </summary>
    private async Task SqliteWriterLoopAsync(ChannelReader<PendingInsert> reader)
    {
        var group = new List<PendingInsert>();
        while (await reader.WaitToReadAsync())
        {
            group.Clear();
            var count = 0;
            while (count < MaxSqliteGroupRecords && reader.TryRead(out var next))
            {
                group.Add(next);
                count += next.Records.Count;
            }
            try
            {
                var all = group.Count == 1 ? group[0].Records : group.SelectMany(g => g.Records).ToList();
                var inserted = await WriteSqliteAsync(all);
                var at = 0;
                foreach (var g in group)
                {
                    g.Done.TrySetResult(inserted.AsSpan(at, g.Records.Count).ToArray());
                    at += g.Records.Count;
                }
            }
            catch (Exception groupError)
            {
                if (group.Count == 1) { group[0].Done.TrySetException(groupError); continue; }
                foreach (var g in group)
                {
                    try { g.Done.TrySetResult(await WriteSqliteAsync(g.Records)); }
                    catch (Exception e) { g.Done.TrySetException(e); }
                }
            }
        }
    }

    private async Task<bool[]> WriteSqliteAsync(IReadOnlyList<UsageRecord> records)
    {
        await using var c = await db.OpenAsync(CancellationToken.None);
        await db.SqliteWriteGate.WaitAsync();
        try
        {
            return await InsertRowsAsync(c, records, CancellationToken.None);
        }
        finally
        {
            db.SqliteWriteGate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_sqliteQueue is null) return;
        _sqliteQueue.Writer.TryComplete();
        if (_sqliteWriter is { } writer) await writer;
    }

    // One statement for the whole batch: a row per event, one round trip and one plan instead of one of each per event
    // (per-row INSERTs cost ~100 µs of CPU per event across app and server). RETURNING names the rows that went in;
    // the rest hit the primary key. Keys must be distinct within the call (else two rows would answer for one key).
    private const string InsertManyPostgresSql = InsertManyPostgresQuietSql + "\nRETURNING account_id, id";

    /// <summary>The same insert returning nothing: the ledger's batch reads the result sets of its own statements after it.</summary>
    private const string InsertManyPostgresQuietSql = $"""
        INSERT INTO usage_records ({Columns})
        SELECT * FROM unnest(@id::text[], @account_id::text[], @key_id::text[], @model::text[], @provider::text[],
            @input_tokens::bigint[], @output_tokens::bigint[], @cache_read_tokens::bigint[], @cache_write_tokens::bigint[],
            @reasoning_tokens::bigint[], @provider_cost_micros::bigint[], @provider_cost_usd::text[], @user_price_micros::bigint[],
            @billing_status::text[], @request_id::text[], @metadata::text[], @transfer_id::text[], @created_at::bigint[], @occurred_at::bigint[], @customer_id::text[])
        ON CONFLICT (account_id, id) DO NOTHING
        """;

    private static async Task<bool[]> InsertManyPostgresAsync(NpgsqlConnection c, IReadOnlyList<UsageRecord> records, CancellationToken ct)
    {
        await using var cmd = new NpgsqlCommand(InsertManyPostgresSql, c);
        AddArrayParameters(cmd.Parameters, records);
        var went = new HashSet<(string, string)>();
        await using (var reader = await cmd.ExecuteReaderAsync(ct))
            while (await reader.ReadAsync(ct)) went.Add((reader.GetString(0), reader.GetString(1)));
        return records.Select(r => went.Contains((r.AccountId, r.Id))).ToArray();
    }

    /// <summary>
    /// The insert of usage records that commit in the same transaction as their ledger charge (see
    /// <c>LedgerCommit.Records</c>): one statement for every record of a ledger batch. Keys must be distinct.
    /// </summary>
    internal static NpgsqlBatchCommand PostgresInsertCommand(IReadOnlyList<UsageRecord> records)
    {
        var cmd = new NpgsqlBatchCommand(InsertManyPostgresQuietSql);
        AddArrayParameters(cmd.Parameters, records);
        return cmd;
    }

    /// <summary>One array parameter per column (names prefixed with <paramref name="prefix"/>), for an insert through unnest.</summary>
    internal static void AddArrayParameters(NpgsqlParameterCollection parameters, IReadOnlyList<UsageRecord> records, string prefix = "")
    {
        var rows = records.Select(Row.From).ToArray();
        void Add<T>(string name, Func<Row, T> column) => parameters.Add(new NpgsqlParameter<T[]>(prefix + name, rows.Select(column).ToArray()));
        Add("id", r => r.id);
        Add("account_id", r => r.account_id);
        Add("key_id", r => r.key_id);
        Add("model", r => r.model);
        Add("provider", r => r.provider);
        Add("input_tokens", r => r.input_tokens);
        Add("output_tokens", r => r.output_tokens);
        Add("cache_read_tokens", r => r.cache_read_tokens);
        Add("cache_write_tokens", r => r.cache_write_tokens);
        Add("reasoning_tokens", r => r.reasoning_tokens);
        Add("provider_cost_micros", r => r.provider_cost_micros);
        Add("provider_cost_usd", r => r.provider_cost_usd);
        Add("user_price_micros", r => r.user_price_micros);
        Add("billing_status", r => r.billing_status);
        Add("request_id", r => r.request_id);
        Add("metadata", r => r.metadata);
        Add("transfer_id", r => r.transfer_id);
        Add("created_at", r => r.created_at);
        Add("occurred_at", r => r.occurred_at);
        Add("customer_id", r => r.customer_id);
    }

    /// <summary>A prepared single-row insert on the SQLite ledger writer's connection, for records committed with their charge.</summary>
    internal static Microsoft.Data.Sqlite.SqliteCommand PrepareSqliteInsert(Microsoft.Data.Sqlite.SqliteConnection c)
    {
        var cmd = c.CreateCommand();
        cmd.CommandText = InsertSql;
        foreach (var name in SqliteParameterNames) cmd.Parameters.Add(new Microsoft.Data.Sqlite.SqliteParameter(name, null));
        cmd.Prepare();
        return cmd;
    }

    private static readonly string[] SqliteParameterNames =
    [
        "@id", "@account_id", "@key_id", "@model", "@provider", "@input_tokens", "@output_tokens", "@cache_read_tokens",
        "@cache_write_tokens", "@reasoning_tokens", "@provider_cost_micros", "@provider_cost_usd", "@user_price_micros",
        "@billing_status", "@request_id", "@metadata", "@transfer_id", "@created_at", "@occurred_at", "@customer_id",
    ];

    internal static void InsertSqlite(Microsoft.Data.Sqlite.SqliteCommand prepared, UsageRecord r)
    {
        var p = prepared.Parameters;
        object N(object? v) => v ?? DBNull.Value;
        p[0].Value = r.Id; p[1].Value = r.AccountId; p[2].Value = N(r.KeyId); p[3].Value = r.Model; p[4].Value = N(r.Provider);
        p[5].Value = r.InputTokens; p[6].Value = r.OutputTokens; p[7].Value = r.CacheReadTokens; p[8].Value = r.CacheWriteTokens;
        p[9].Value = r.ReasoningTokens; p[10].Value = N(r.ProviderCostMicros); p[11].Value = N(r.ProviderCostUsd);
        p[12].Value = N(r.UserPriceMicros); p[13].Value = StatusText(r.BillingStatus); p[14].Value = N(r.RequestId);
        p[15].Value = N(r.Metadata); p[16].Value = N(r.TransferId); p[17].Value = ToMicros(r.CreatedAt); p[18].Value = ToMicros(r.OccurredAt);
        p[19].Value = N(r.CustomerId);
        prepared.ExecuteNonQuery();
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

    private sealed record ReviewRow(
        string id, string account_id, string? key_id, string model, string? provider, long input_tokens, long output_tokens,
        long cache_read_tokens, long cache_write_tokens, long reasoning_tokens, long? provider_cost_micros, string? provider_cost_usd,
        long? user_price_micros, string billing_status, string? request_id, string? metadata, string? transfer_id,
        long created_at, long occurred_at, string? customer_id, string? key_type, long ledger_account_id)
    {
        public ReviewItem ToItem() => new(new Row(id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status, request_id,
            metadata, transfer_id, created_at, occurred_at, customer_id).ToRecord(), key_type, ledger_account_id);
    }

    public async Task<IReadOnlyList<ReviewItem>> ListNeedsReviewAsync(string? model, string? accountId, ReviewCursor? after, int limit, CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        var columns = string.Join(", ", Columns.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(c => "r." + c));
        // Conditions are added only when set: an untyped null parameter is an error on PostgreSQL.
        var where = new List<string> { "r.billing_status = 'needs_review'" };
        if (model is not null) where.Add("r.model = @model");
        if (accountId is not null) where.Add("r.account_id = @accountId");
        if (after is not null)
            where.Add("(r.occurred_at > @afterAt OR (r.occurred_at = @afterAt AND (r.account_id > @afterAccount OR (r.account_id = @afterAccount AND r.id > @afterId))))");
        var sql = $"""
            SELECT {columns}, k.type AS key_type, a.ledger_account_id
            FROM usage_records r
            JOIN accounts a ON a.id = r.account_id
            LEFT JOIN api_keys k ON k.id = r.key_id
            WHERE {string.Join(" AND ", where)}
            ORDER BY r.occurred_at, r.account_id, r.id
            LIMIT @limit
            """;
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<ReviewRow>(new CommandDefinition(sql, new
        {
            model, accountId, limit,
            afterAt = after is null ? 0 : ToMicros(after.OccurredAt), afterAccount = after?.AccountId ?? "", afterId = after?.Id ?? "",
        }, cancellationToken: ct));
        return rows.Select(r => r.ToItem()).ToList();
    }

    public async Task<bool> MarkRatedAsync(UsageRecord rated, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // The status condition makes concurrent re-rates of one record settle it once.
        var updated = await c.ExecuteAsync(new CommandDefinition("""
            UPDATE usage_records
            SET model = @model, provider = @provider, provider_cost_micros = @provider_cost_micros, provider_cost_usd = @provider_cost_usd,
                user_price_micros = @user_price_micros, billing_status = @billing_status, transfer_id = @transfer_id
            WHERE account_id = @account_id AND id = @id AND billing_status = 'needs_review'
            """, Row.From(rated), cancellationToken: ct));
        return updated == 1;
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
