using System.Data;
using System.Data.Common;
using Dapper;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Analytics;

/// <summary>What a summary or report groups by.</summary>
public enum UsageGrouping { Day, Model, Provider, Key, Customer, Tag, Account }

/// <summary>
/// One group's totals. <see cref="UserPriceMicros"/> sums every record's user price (whatever its billing status);
/// <see cref="RevenueMicros"/> only <c>billed</c> records' (what was charged); <see cref="ProviderCostMicros"/> the
/// provider cost of <c>billed</c> and <c>internal</c> records (what the operator pays: BYOK traffic is paid by the
/// customer, needs-review records have no cost yet).
/// </summary>
public sealed record UsageTotals(
    string? Key, long Requests, long InputTokens, long OutputTokens, long CacheReadTokens, long CacheWriteTokens, long ReasoningTokens,
    long UserPriceMicros, long RevenueMicros, long ProviderCostMicros);

/// <summary>Read side of usage and ledger data for listings, summaries, exports and operator reports.</summary>
internal sealed class AnalyticsStore(Database db)
{
    private const string RecordColumns = """
        id, account_id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
        reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status, request_id, metadata,
        transfer_id, created_at, occurred_at, customer_id
        """;

    private static UsageRecord ReadRecord(DbDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        long? L(int i) => r.IsDBNull(i) ? null : r.GetInt64(i);
        return new UsageRecord(r.GetString(0), r.GetString(1), S(2), r.GetString(3), S(4), r.GetInt64(5), r.GetInt64(6), r.GetInt64(7),
            r.GetInt64(8), r.GetInt64(9), L(10), S(11), L(12), UsageStore.ParseStatus(r.GetString(13)), S(14), S(15), S(16),
            UnixMicros.ToDateTimeOffset(r.GetInt64(17)), UnixMicros.ToDateTimeOffset(r.GetInt64(18))) { CustomerId = S(19) };
    }

    private bool Postgres => db.Engine == DatabaseEngine.Postgres;

    /// <summary>The condition on usage_records for <paramref name="f"/> (parameters added to <paramref name="p"/>).</summary>
    private List<string> RecordConditions(UsageFilter f, DynamicParameters p, bool withTime = true)
    {
        var where = new List<string>();
        if (f.AccountId is { } a) { where.Add("account_id = @account"); p.Add("account", a); }
        if (withTime && f.FromMicros is { } from) { where.Add("occurred_at >= @from"); p.Add("from", from); }
        if (withTime && f.ToMicros is { } to) { where.Add("occurred_at < @to"); p.Add("to", to); }
        AddDimensions(f, p, where);
        if (f.Tag is { } tag)
        {
            // Only string members match: "team":"alpha" is tag team:alpha; numbers and booleans are not tags.
            where.Add(Postgres ? "metadata::jsonb -> @tagKey = to_jsonb(CAST(@tagValue AS text))"
                : "json_type(metadata, @tagPath) = 'text' AND json_extract(metadata, @tagPath) = @tagValue");
            if (Postgres) p.Add("tagKey", tag.Key); else p.Add("tagPath", SqlitePath(tag.Key));
            p.Add("tagValue", tag.Value);
        }
        return where;
    }

    private static void AddDimensions(UsageFilter f, DynamicParameters p, List<string> where)
    {
        if (f.Model is { } m) { where.Add("model = @model"); p.Add("model", m); }
        if (f.Provider is { } pr) { where.Add("provider = @provider"); p.Add("provider", pr); }
        if (f.KeyId is { } k) { where.Add("key_id = @keyId"); p.Add("keyId", k); }
        if (f.CustomerId is { } c) { where.Add("customer_id = @customerId"); p.Add("customerId", c); }
        if (f.BillingStatus is { } s) { where.Add("billing_status = @status"); p.Add("status", s); }
    }

    // Tag keys are letters, digits and _.- only (AnalyticsQuery), so quoting the member name is enough.
    private static string SqlitePath(string key) => "$.\"" + key + "\"";

    private static string Where(List<string> conditions) => conditions.Count == 0 ? "" : "WHERE " + string.Join(" AND ", conditions);

    /// <summary>Records matching <paramref name="f"/>, newest first, strictly older than <paramref name="before"/>.</summary>
    public async Task<IReadOnlyList<UsageRecord>> ListAsync(UsageFilter f, UsageCursor? before, int limit, CancellationToken ct)
    {
        var list = new List<UsageRecord>(limit);
        await foreach (var r in StreamAsync(f, before, limit, ct)) list.Add(r);
        return list;
    }

    /// <summary>
    /// Records matching <paramref name="f"/>, newest first, read from the database as they are consumed (one open
    /// reader), so an export of any size holds one row at a time.
    /// </summary>
    public async IAsyncEnumerable<UsageRecord> StreamAsync(UsageFilter f, UsageCursor? before, int? limit,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var p = new DynamicParameters();
        var where = RecordConditions(f, p);
        if (before is not null)
        {
            where.Add("(occurred_at < @beforeAt OR (occurred_at = @beforeAt AND id < @beforeId))");
            p.Add("beforeAt", UnixMicros.From(before.OccurredAt)); p.Add("beforeId", before.Id);
        }
        if (limit is { } n) p.Add("limit", n);
        var sql = $"SELECT {RecordColumns} FROM usage_records {Where(where)} ORDER BY occurred_at DESC, id DESC {(limit is null ? "" : "LIMIT @limit")}";
        await using var c = await db.OpenAsync(ct);
        await using var reader = await c.ExecuteReaderAsync(new CommandDefinition(sql, p, cancellationToken: ct), CommandBehavior.SequentialAccess);
        while (await reader.ReadAsync(ct)) yield return ReadRecord(reader);
    }

    private static string GroupKey(UsageGrouping g, bool rollup, bool postgres) => g switch
    {
        UsageGrouping.Day => rollup ? "day" : "occurred_at / 86400000000",
        UsageGrouping.Model => "model",
        UsageGrouping.Provider => rollup ? "provider" : "coalesce(provider, '')",
        UsageGrouping.Key => rollup ? "key_id" : "coalesce(key_id, '')",
        UsageGrouping.Customer => rollup ? "customer_id" : "coalesce(customer_id, '')",
        UsageGrouping.Account => "account_id",
        UsageGrouping.Tag => postgres
            ? "CASE WHEN jsonb_typeof(metadata::jsonb -> @groupTag) = 'string' THEN metadata::jsonb ->> @groupTag ELSE '' END"
            : "CASE WHEN json_type(metadata, @groupTagPath) = 'text' THEN json_extract(metadata, @groupTagPath) ELSE '' END",
        _ => throw new ArgumentOutOfRangeException(nameof(g)),
    };

    /// <summary>
    /// Totals of the records matching <paramref name="f"/> (which must have both bounds) per group. Whole UTC days come
    /// from usage_rollups; a partial day at either end (a bound that is not midnight) reads at most 12 hours of
    /// usage_records (see below); a tag filter or tag grouping reads usage_records for the whole range. Without an
    /// account (operator reports) the range must be whole days.
    /// </summary>
    public async Task<IReadOnlyList<UsageTotals>> SummaryAsync(UsageFilter f, UsageGrouping groupBy, string? groupTag, CancellationToken ct)
    {
        var from = f.FromMicros ?? throw new ArgumentException("A range is required.", nameof(f));
        var to = f.ToMicros ?? throw new ArgumentException("A range is required.", nameof(f));
        const long D = AnalyticsQuery.MicrosPerDay;
        var p = new DynamicParameters();
        var parts = new List<string>();
        var useRollups = f.RollupsCanAnswer && groupBy != UsageGrouping.Tag;
        // Raw ranges to add (+1) or take away (−1). A partial day at either end is read from the records when it is at
        // most half a day; otherwise the whole day comes from the rollups and the records of the rest of it are taken
        // away. So at most 12 hours of records are read at each end.
        var ranges = new List<(long Start, long End, int Sign)>();
        long fromDay = from / D, toDay = to / D, d0 = 0, d1 = 0;
        if (useRollups && fromDay < toDay)
        {
            if (from % D == 0) d0 = fromDay;
            else if ((fromDay + 1) * D - from > D / 2) { d0 = fromDay; ranges.Add((fromDay * D, from, -1)); }
            else { d0 = fromDay + 1; ranges.Add((from, (fromDay + 1) * D, 1)); }
            if (to % D == 0) d1 = toDay;
            else if (to - toDay * D > D / 2) { d1 = toDay + 1; ranges.Add((to, (toDay + 1) * D, -1)); }
            else { d1 = toDay; ranges.Add((toDay * D, to, 1)); }
        }
        else
        {
            ranges.Add((from, to, 1));
        }
        // PostgreSQL: records not yet folded into the rollups (see UsageRollupFolder) are added from usage_records, read
        // in the same snapshot as the rollups and the fold cursor (one repeatable-read transaction).
        var foldTail = Postgres && d0 < d1;
        if (d0 < d1)
        {
            var where = new List<string>();
            if (f.AccountId is { } a) { where.Add("account_id = @account"); p.Add("account", a); }
            AddDimensions(f, p, where);
            where.Add("day >= @d0 AND day < @d1");
            p.Add("d0", d0); p.Add("d1", d1);
            parts.Add($"""
                SELECT CAST({GroupKey(groupBy, true, Postgres)} AS text) AS k, billing_status, sum(requests) AS requests,
                       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens,
                       sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens,
                       sum(user_price_micros) AS user_price_micros, sum(provider_cost_micros) AS provider_cost_micros
                FROM usage_rollups {Where(where)}
                GROUP BY 1, 2
                """);
        }
        if (f.AccountId is null && (!useRollups || from % D != 0 || to % D != 0))
            throw new ArgumentException("Reports across accounts work in whole UTC days from rollups.", nameof(f));
        if (groupTag is not null)
        {
            if (Postgres) p.Add("groupTag", groupTag); else p.Add("groupTagPath", SqlitePath(groupTag));
        }
        string RecordsPart(List<string> where, int sign) => $"""
            SELECT CAST({GroupKey(groupBy, false, Postgres)} AS text) AS k, billing_status, {sign} * count(*) AS requests,
                   {sign} * sum(input_tokens) AS input_tokens, {sign} * sum(output_tokens) AS output_tokens,
                   {sign} * sum(cache_read_tokens) AS cache_read_tokens, {sign} * sum(cache_write_tokens) AS cache_write_tokens,
                   {sign} * sum(reasoning_tokens) AS reasoning_tokens, {sign} * sum(coalesce(user_price_micros, 0)) AS user_price_micros,
                   {sign} * sum(coalesce(provider_cost_micros, 0)) AS provider_cost_micros
            FROM usage_records {Where(where)}
            GROUP BY 1, 2
            """;
        // One branch per range (not an OR of both), so each is a plain range scan of the (account_id, occurred_at) index.
        foreach (var (start, end, sign) in ranges.Where(r => r.Start < r.End))
        {
            var n = parts.Count;
            var raw = RecordConditions(f with { FromMicros = null, ToMicros = null }, p);
            raw.Add($"occurred_at >= @start{n} AND occurred_at < @end{n}");
            p.Add($"start{n}", start); p.Add($"end{n}", end);
            parts.Add(RecordsPart(raw, sign));
        }
        await using var c = await db.OpenAsync(ct);
        // PostgreSQL's JIT compiles this plan for seconds once its estimated cost passes jit_above_cost (a month of
        // rollups does), longer than the query runs. Off for this transaction only. Repeatable read: the fold cursor,
        // the rollups and the records not yet folded are read in one snapshot. (SQLite: no transaction, which would
        // take its write lock.)
        await using var tx = Postgres ? await c.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct) : null;
        if (tx is not null) await c.ExecuteAsync(new CommandDefinition("SET LOCAL jit = off", transaction: tx, cancellationToken: ct));
        if (foldTail)
        {
            // PostgreSQL folds records into the rollups in the background (UsageRollupFolder): add those above the horizon.
            var horizon = ulong.Parse(await c.ExecuteScalarAsync<string>(new CommandDefinition(
                "SELECT CAST(horizon AS text) FROM usage_rollup_cursor WHERE id = 1", transaction: tx, cancellationToken: ct)) ?? "0",
                System.Globalization.CultureInfo.InvariantCulture);
            var raw = RecordConditions(f with { FromMicros = null, ToMicros = null }, p);
            raw.Add("occurred_at >= @tailStart AND occurred_at < @tailEnd");
            p.Add("tailStart", d0 * D); p.Add("tailEnd", d1 * D);
            // A literal rather than a parameter (it is a parsed number): the planner then sees how few records are above
            // it and walks the fold_xid index instead of the account's whole range.
            raw.Add($"fold_xid >= '{horizon}'::xid8");
            parts.Add(RecordsPart(raw, 1));
        }
        if (parts.Count == 0) return [];
        var sql = $"""
            SELECT k, CAST(sum(requests) AS bigint), CAST(sum(input_tokens) AS bigint), CAST(sum(output_tokens) AS bigint),
                   CAST(sum(cache_read_tokens) AS bigint), CAST(sum(cache_write_tokens) AS bigint), CAST(sum(reasoning_tokens) AS bigint),
                   CAST(sum(user_price_micros) AS bigint),
                   CAST(sum(CASE WHEN billing_status = 'billed' THEN user_price_micros ELSE 0 END) AS bigint),
                   CAST(sum(CASE WHEN billing_status IN ('billed', 'internal') THEN provider_cost_micros ELSE 0 END) AS bigint)
            FROM ({string.Join("\nUNION ALL\n", parts)}) x
            GROUP BY k
            HAVING sum(requests) > 0
            ORDER BY k
            """;
        await using var r = await c.ExecuteReaderAsync(new CommandDefinition(sql, p, tx, cancellationToken: ct));
        var rows = new List<UsageTotals>();
        while (await r.ReadAsync(ct))
        {
            var key = r.IsDBNull(0) ? null : r.GetString(0);
            if (groupBy == UsageGrouping.Day && key is not null)
                key = DateOnly.FromDayNumber(DateOnly.FromDateTime(DateTime.UnixEpoch).DayNumber + int.Parse(key, System.Globalization.CultureInfo.InvariantCulture)).ToString("yyyy-MM-dd");
            rows.Add(new UsageTotals(key == "" ? null : key, r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), r.GetInt64(4), r.GetInt64(5), r.GetInt64(6),
                r.GetInt64(7), r.GetInt64(8), r.GetInt64(9)));
        }
        return rows;
    }

    /// <summary>A ledger account's entries with their transfers, newest first, within [from, to) when given, read as consumed.</summary>
    public async IAsyncEnumerable<StatementLine> StreamLedgerAsync(long ledgerAccountId, long? fromMicros, long? toMicros,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var p = new DynamicParameters();
        p.Add("a", ledgerAccountId);
        var where = "e.account_id = @a";
        if (fromMicros is { } f) { where += " AND e.ts >= @from"; p.Add("from", f); }
        if (toMicros is { } t) { where += " AND e.ts < @to"; p.Add("to", t); }
        var sql = $"""
            SELECT e.account_id, e.version, e.transfer_id, e.is_debit, e.pending_delta, e.posted_delta, e.balance_after,
                   e.debits_pending_after, e.credits_pending_after, e.ts,
                   t.id, t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.timeout_seconds, t.expires_at,
                   t.status, t.code, t.reference, t.description, t.metadata, t.ts, t.debit_balance_after, t.credit_balance_after
            FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
            WHERE {where}
            ORDER BY e.version DESC
            """;
        await using var c = await db.OpenAsync(ct);
        await using var r = await c.ExecuteReaderAsync(new CommandDefinition(sql, p, cancellationToken: ct));
        while (await r.ReadAsync(ct)) yield return new StatementLine(LedgerSql.ReadEntry(r), LedgerSql.ReadTransfer(r, 10));
    }
}
