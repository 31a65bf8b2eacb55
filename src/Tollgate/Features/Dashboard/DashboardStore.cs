using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Dashboard;

/// <summary>One day of an account's usage: requests, tokens and the price charged (micro-USD).</summary>
public sealed record UsageDay(DateTimeOffset Day, long Requests, long Tokens, long PriceMicros);

/// <summary>One model's usage over the window.</summary>
public sealed record UsageByModel(string Model, long Requests, long Tokens, long PriceMicros);

/// <summary>One recent usage record as the dashboard lists it.</summary>
public sealed record RecentUsage(string Id, string Model, string? KeyId, long InputTokens, long OutputTokens, long? PriceMicros, string BillingStatus, DateTimeOffset OccurredAt);

/// <summary>An account in the operator's list, with its ledger balance.</summary>
public sealed record AccountSummary(string Id, string Name, string PlanId, long BalanceMicros, long HeldMicros, DateTimeOffset CreatedAt);

/// <summary>
/// The dashboard's read queries: small aggregates over <c>usage_records</c> for one account (grouped in SQL, so a page
/// costs a fixed number of queries whatever the traffic) and the operator's account list. Portable SQL for both engines.
/// </summary>
internal sealed class DashboardStore(Database db)
{
    private const long MicrosPerDay = 86_400_000_000;

    // Classes with setters, not positional records: on an empty result SQLite reports computed columns as BLOB, and
    // Dapper's constructor matching would then fail before it found there was no row to map.
    private sealed class DayRow { public long day { get; set; } public long requests { get; set; } public long tokens { get; set; } public long price { get; set; } }
    private sealed class ModelRow { public string model { get; set; } = ""; public long requests { get; set; } public long tokens { get; set; } public long price { get; set; } }
    private sealed record RecentRow(string id, string model, string? key_id, long input_tokens, long output_tokens, long? user_price_micros, string billing_status, long occurred_at);
    private sealed class AccountRow
    {
        public string id { get; set; } = "";
        public string name { get; set; } = "";
        public string plan_id { get; set; } = "";
        public long balance { get; set; }
        public long held { get; set; }
        public long created_at { get; set; }
    }

    /// <summary>Per UTC day since <paramref name="from"/> (days without usage are absent), and per model, in one connection.</summary>
    public async Task<(IReadOnlyList<UsageDay> Days, IReadOnlyList<UsageByModel> Models)> AggregatesAsync(string accountId, DateTimeOffset from, CancellationToken ct)
    {
        var args = new { accountId, from = UnixMicros.From(from) };
        await using var c = await db.OpenAsync(ct);
        // occurred_at is micro-seconds since the epoch: integer division by a day's micros (a literal, so GROUP BY 1 is the
        // same expression on PostgreSQL) is the UTC day on both engines. Sums are cast: PostgreSQL's sum(bigint) is numeric.
        var days = await c.QueryAsync<DayRow>(new CommandDefinition("""
            SELECT occurred_at / 86400000000 AS day, count(*) AS requests, CAST(sum(input_tokens + output_tokens) AS bigint) AS tokens,
                   CAST(coalesce(sum(user_price_micros), 0) AS bigint) AS price
            FROM usage_records WHERE account_id = @accountId AND occurred_at >= @from
            GROUP BY 1 ORDER BY 1
            """, args, cancellationToken: ct));
        var models = await c.QueryAsync<ModelRow>(new CommandDefinition("""
            SELECT model, count(*) AS requests, CAST(sum(input_tokens + output_tokens) AS bigint) AS tokens,
                   CAST(coalesce(sum(user_price_micros), 0) AS bigint) AS price
            FROM usage_records WHERE account_id = @accountId AND occurred_at >= @from
            GROUP BY model ORDER BY 4 DESC, 2 DESC, model LIMIT 20
            """, args, cancellationToken: ct));
        return (days.Select(d => new UsageDay(UnixMicros.ToDateTimeOffset(d.day * MicrosPerDay), d.requests, d.tokens, d.price)).ToList(),
            models.Select(m => new UsageByModel(m.model, m.requests, m.tokens, m.price)).ToList());
    }

    /// <summary>The account's newest records, optionally of one model and one billing status.</summary>
    public async Task<IReadOnlyList<RecentUsage>> RecentAsync(string accountId, string? model, string? status, int limit, CancellationToken ct)
    {
        // Conditions are added only when given, so the index on (account_id, occurred_at) serves every variant.
        var where = "account_id = @accountId" + (model is null ? "" : " AND model = @model") + (status is null ? "" : " AND billing_status = @status");
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<RecentRow>(new CommandDefinition($"""
            SELECT id, model, key_id, input_tokens, output_tokens, user_price_micros, billing_status, occurred_at FROM usage_records
            WHERE {where} ORDER BY occurred_at DESC, id DESC LIMIT @limit
            """, new { accountId, model, status, limit }, cancellationToken: ct));
        return rows.Select(r => new RecentUsage(r.id, r.model, r.key_id, r.input_tokens, r.output_tokens, r.user_price_micros, r.billing_status,
            UnixMicros.ToDateTimeOffset(r.occurred_at))).ToList();
    }

    /// <summary>Accounts newest first with their balances (one join, no per-account lookups).</summary>
    public async Task<IReadOnlyList<AccountSummary>> AccountsAsync(int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<AccountRow>(new CommandDefinition("""
            SELECT a.id, a.name, a.plan_id, l.credits_posted - l.debits_posted AS balance, l.debits_pending AS held, a.created_at
            FROM accounts a JOIN ledger_accounts l ON l.id = a.ledger_account_id
            ORDER BY a.created_at DESC, a.id DESC LIMIT @limit
            """, new { limit }, cancellationToken: ct));
        return rows.Select(r => new AccountSummary(r.id, r.name, r.plan_id, r.balance, r.held, UnixMicros.ToDateTimeOffset(r.created_at))).ToList();
    }

    /// <summary>The signed-in user's email, for the header.</summary>
    public async Task<string?> EmailAsync(string? userId, CancellationToken ct)
    {
        if (userId is null) return null;
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<string?>(new CommandDefinition("SELECT email FROM users WHERE id = @userId", new { userId }, cancellationToken: ct));
    }
}
