using System.Globalization;
using System.Text.Json;
using Dapper;
using Tollgate.Features.Accounts;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Statements;

/// <summary>A calendar month in UTC, written <c>yyyy-MM</c>: the statement period.</summary>
public readonly record struct StatementPeriod(int Year, int Month)
{
    public DateTimeOffset Start => new(Year, Month, 1, 0, 0, 0, TimeSpan.Zero);
    public DateTimeOffset End => Start.AddMonths(1);
    public StatementPeriod Previous => Month == 1 ? new(Year - 1, 12) : new(Year, Month - 1);
    public override string ToString() => $"{Year:D4}-{Month:D2}";

    public static StatementPeriod Of(DateTimeOffset at) { var u = at.ToUniversalTime(); return new(u.Year, u.Month); }

    public static bool TryParse(string? text, out StatementPeriod period)
    {
        period = default;
        if (text is not { Length: 7 } || text[4] != '-'
            || !int.TryParse(text.AsSpan(0, 4), NumberStyles.None, CultureInfo.InvariantCulture, out var y)
            || !int.TryParse(text.AsSpan(5, 2), NumberStyles.None, CultureInfo.InvariantCulture, out var m)
            || y < 2000 || m is < 1 or > 12) return false;
        period = new(y, m);
        return true;
    }
}

/// <summary>One kind of movement in the period: all posted ledger changes with this category, code and source, summed.</summary>
public sealed record StatementLineItem(string Category, string Code, string? Source, long Count, long AmountMicros);

/// <summary>Billed usage of one model in the period, from the usage records (the ledger's usage lines are the amounts charged).</summary>
public sealed record StatementModelUsage(string Model, long Requests, long InputTokens, long OutputTokens, long CacheReadTokens,
    long CacheWriteTokens, long ReasoningTokens, long PriceMicros);

/// <summary>
/// A monthly statement. <c>opening_balance_micros + Σ lines.amount_micros = closing_balance_micros</c> exactly: the
/// lines are every posted change of the account's ledger balance between two ledger versions (holds move no balance
/// and are left out).
/// </summary>
public sealed record StatementDocument(
    string AccountId,
    string AccountName,
    string Period,
    DateTimeOffset PeriodStart,
    DateTimeOffset PeriodEnd,
    string Currency,
    bool Final,
    long OpeningBalanceMicros,
    IReadOnlyList<StatementLineItem> Lines,
    IReadOnlyDictionary<string, long> TotalsByCategory,
    long ClosingBalanceMicros,
    long CreditLimitMicros,
    long? AmountDueMicros,
    IReadOnlyList<StatementModelUsage> UsageByModel,
    long LedgerVersionFrom,
    long LedgerVersionTo,
    DateTimeOffset GeneratedAt);

/// <summary>
/// Builds statements from the ledger (balances and movements) and the usage records (per-model breakdown). A statement
/// of an ended period is stored the first time it is built and returned from storage after that, so it never changes;
/// the current period is built live and marked <c>final: false</c>.
/// </summary>
internal sealed class StatementService(Database db, IAccountStore accounts, LedgerService ledger, TimeProvider time)
{
    public static class Categories
    {
        public const string Topups = "topups";
        public const string Usage = "usage";
        public const string SubscriptionFees = "subscription_fees";
        public const string ProrationCredits = "proration_credits";
        public const string AddOns = "addons";
        public const string Grants = "grants";
        public const string Refunds = "refunds";
        public const string Adjustments = "adjustments";
        public const string Marketplace = "marketplace";
        public const string Other = "other";
    }

    /// <summary>Which statement category a ledger transfer code belongs to; unknown codes are "other" (still counted).</summary>
    public static string CategoryOf(string code) => code switch
    {
        "topup" => Categories.Topups,
        "usage" or "usage_excess" or "authorization_capture" or "authorization_excess" => Categories.Usage,
        "subscription_fee" => Categories.SubscriptionFees,
        "proration_credit" => Categories.ProrationCredits,
        "addon" => Categories.AddOns,
        "grant" or "plan_credits" or "plan_credits_expired" => Categories.Grants,
        "refund" or "dispute_hold" or "dispute_lost" or "dispute_won" => Categories.Refunds,
        "adjustment" => Categories.Adjustments,
        _ when code.StartsWith("agent_", StringComparison.Ordinal) => Categories.Marketplace,
        _ => Categories.Other,
    };

    private static readonly string[] CategoryOrder =
    [
        Categories.Topups, Categories.Grants, Categories.Usage, Categories.SubscriptionFees, Categories.ProrationCredits,
        Categories.AddOns, Categories.Marketplace, Categories.Refunds, Categories.Adjustments, Categories.Other,
    ];

    public sealed record StoredStatement(StatementDocument Document, bool Stored);

    /// <summary>The statement, or null if the account does not exist or the period has not started.</summary>
    public async Task<StoredStatement?> GetAsync(string accountId, StatementPeriod period, CancellationToken ct)
    {
        if (period.Start > time.GetUtcNow()) return null;
        if (await accounts.GetAsync(accountId, ct) is not { } account) return null;
        await using (var c = await db.OpenAsync(ct))
        {
            var stored = await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
                "SELECT document FROM account_statements WHERE account_id = @accountId AND period = @p", new { accountId, p = period.ToString() }, cancellationToken: ct));
            if (stored is not null) return new(JsonSerializer.Deserialize<StatementDocument>(stored, TollgateApp.Json)!, true);
        }
        var now = time.GetUtcNow();
        var final = period.End <= now;
        var document = await BuildAsync(account, period, final, now, ct);
        if (!final) return new(document, false);
        // Stored once: if another generator won the race, its document is the statement.
        await using (var c = await db.OpenAsync(ct))
        {
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO account_statements (account_id, period, document, generated_at) VALUES (@accountId, @p, @doc, @at)
                ON CONFLICT (account_id, period) DO NOTHING
                """, new { accountId, p = period.ToString(), doc = JsonSerializer.Serialize(document, TollgateApp.Json), at = UnixMicros.From(now) }, cancellationToken: CancellationToken.None));
            var stored = await c.QuerySingleAsync<string>(new CommandDefinition(
                "SELECT document FROM account_statements WHERE account_id = @accountId AND period = @p", new { accountId, p = period.ToString() }, cancellationToken: ct));
            return new(JsonSerializer.Deserialize<StatementDocument>(stored, TollgateApp.Json)!, true);
        }
    }

    /// <summary>The periods an account has statements for (its first month to the current one), newest first, and which are stored.</summary>
    public async Task<IReadOnlyList<(StatementPeriod Period, bool Final, bool Stored)>?> ListAsync(string accountId, CancellationToken ct)
    {
        if (await accounts.GetAsync(accountId, ct) is not { } account) return null;
        await using var c = await db.OpenAsync(ct);
        var stored = (await c.QueryAsync<string>(new CommandDefinition(
            "SELECT period FROM account_statements WHERE account_id = @accountId", new { accountId }, cancellationToken: ct))).ToHashSet(StringComparer.Ordinal);
        var now = time.GetUtcNow();
        var list = new List<(StatementPeriod, bool, bool)>();
        var first = StatementPeriod.Of(account.CreatedAt);
        for (var p = StatementPeriod.Of(now); list.Count < 240; p = p.Previous)
        {
            list.Add((p, p.End <= now, stored.Contains(p.ToString())));
            if (p == first) break;
        }
        return list;
    }

    /// <summary>Accounts created before the end of <paramref name="period"/> that have no stored statement for it yet.</summary>
    internal async Task<IReadOnlyList<string>> MissingAsync(StatementPeriod period, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<string>(new CommandDefinition("""
            SELECT a.id FROM accounts a
            WHERE a.created_at < @end AND NOT EXISTS (SELECT 1 FROM account_statements s WHERE s.account_id = a.id AND s.period = @p)
            ORDER BY a.id LIMIT @limit
            """, new { end = UnixMicros.From(period.End), p = period.ToString(), limit }, cancellationToken: ct))).ToList();
    }

    // Sums are numeric on PostgreSQL and integers on SQLite: decimal holds both exactly, and each fits a long.
    private sealed class UsageRow
    {
        public string Model { get; set; } = "";
        public decimal Requests { get; set; }
        public decimal InputTokens { get; set; }
        public decimal OutputTokens { get; set; }
        public decimal CacheReadTokens { get; set; }
        public decimal CacheWriteTokens { get; set; }
        public decimal ReasoningTokens { get; set; }
        public decimal PriceMicros { get; set; }
    }

    private sealed record Movement(string code, string? counterparty_key, long signed);

    private async Task<StatementDocument> BuildAsync(Account account, StatementPeriod period, bool final, DateTimeOffset now, CancellationToken ct)
    {
        var ledgerAccount = await ledger.GetAccountAsync(account.LedgerAccountId, ct)
            ?? throw new InvalidOperationException($"Account {account.Id} has no ledger account {account.LedgerAccountId}.");
        await using var c = await db.OpenAsync(ct);
        var start = UnixMicros.From(period.Start);
        var end = UnixMicros.From(period.End);
        // The period is a range of ledger versions: everything after the last entry before the start, up to the last entry
        // before the end. Balances are then read off the entries themselves, so opening + movements = closing by construction.
        var from = await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT max(version) FROM ledger_entries WHERE account_id = @a AND ts < @start", new { a = account.LedgerAccountId, start }, cancellationToken: ct)) ?? 0;
        var to = Math.Max(from, await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT max(version) FROM ledger_entries WHERE account_id = @a AND ts < @end", new { a = account.LedgerAccountId, end }, cancellationToken: ct)) ?? 0);
        var opening = await BalanceAtAsync(c, account.LedgerAccountId, from, ct);
        var closing = await BalanceAtAsync(c, account.LedgerAccountId, to, ct);
        var movements = (await c.QueryAsync<Movement>(new CommandDefinition("""
            SELECT t.code AS code, a.key AS counterparty_key,
                   CASE WHEN e.is_debit THEN -e.posted_delta ELSE e.posted_delta END AS signed
            FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
            JOIN ledger_accounts a ON a.id = CASE WHEN e.is_debit THEN t.credit_account_id ELSE t.debit_account_id END
            WHERE e.account_id = @a AND e.version > @from AND e.version <= @to AND e.posted_delta <> 0
            """, new { a = account.LedgerAccountId, from, to }, cancellationToken: ct))).ToList();

        var lines = movements
            .GroupBy(m => (Category: CategoryOf(m.code), Code: m.code, Source: SourceOf(m.code, m.counterparty_key)))
            .Select(g => new StatementLineItem(g.Key.Category, g.Key.Code, g.Key.Source, g.LongCount(), g.Aggregate(0L, (s, m) => checked(s + m.signed))))
            .OrderBy(l => Array.IndexOf(CategoryOrder, l.Category)).ThenBy(l => l.Code, StringComparer.Ordinal).ThenBy(l => l.Source, StringComparer.Ordinal)
            .ToList();
        var totals = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var category in CategoryOrder) totals[category] = lines.Where(l => l.Category == category).Aggregate(0L, (s, l) => checked(s + l.AmountMicros));
        var sum = lines.Aggregate(0L, (s, l) => checked(s + l.AmountMicros));
        if (checked(opening + sum) != closing)
            throw new InvalidOperationException($"Statement of {account.Id} for {period} does not add up: {opening} + {sum} ≠ {closing}.");

        var usage = (await c.QueryAsync<UsageRow>(new CommandDefinition("""
            SELECT model AS Model, count(*) AS Requests, sum(input_tokens) AS InputTokens, sum(output_tokens) AS OutputTokens,
                   sum(cache_read_tokens) AS CacheReadTokens, sum(cache_write_tokens) AS CacheWriteTokens,
                   sum(reasoning_tokens) AS ReasoningTokens, coalesce(sum(user_price_micros), 0) AS PriceMicros
            FROM usage_records
            WHERE account_id = @id AND billing_status = 'billed' AND occurred_at >= @start AND occurred_at < @end
            GROUP BY model ORDER BY model
            """, new { id = account.Id, start, end }, cancellationToken: ct)))
            .Select(r => new StatementModelUsage(r.Model, (long)r.Requests, (long)r.InputTokens, (long)r.OutputTokens, (long)r.CacheReadTokens,
                (long)r.CacheWriteTokens, (long)r.ReasoningTokens, (long)r.PriceMicros)).ToList();

        var creditLimit = ledgerAccount.CreditLimitMicros;
        // Postpaid accounts owe what the closing balance is below zero; credits in the balance count first.
        long? due = creditLimit > 0 ? Math.Max(0, -closing) : null;
        return new StatementDocument(account.Id, account.Name, period.ToString(), period.Start, period.End, ledgerAccount.Currency, final,
            opening, lines, totals, closing, creditLimit, due, usage, from, to, now);
    }

    private static async Task<long> BalanceAtAsync(System.Data.Common.DbConnection c, long ledgerAccountId, long version, CancellationToken ct) =>
        version == 0 ? 0 : await c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT balance_after FROM ledger_entries WHERE account_id = @a AND version = @v", new { a = ledgerAccountId, v = version }, cancellationToken: ct));

    /// <summary>Where a top-up came from (stripe, usdc); null for other movements.</summary>
    private static string? SourceOf(string code, string? counterpartyKey) => code != "topup" ? null : counterpartyKey switch
    {
        SystemAccounts.StripeClearing => "stripe",
        SystemAccounts.UsdcPayments => "usdc",
        { } key => key,
        null => "other",
    };
}
