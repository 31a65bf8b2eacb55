using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Plans;

/// <summary>A plan period: [Start, End), monthly from the plan's anchor (anniversary billing).</summary>
public readonly record struct PlanPeriod(DateTimeOffset Start, DateTimeOffset End)
{
    /// <summary>
    /// The monthly period containing <paramref name="now"/>, counted from <paramref name="anchor"/>: a plan that began
    /// on the 31st renews on the last day of shorter months and on the 31st again after (months are added to the
    /// anchor, never chained, so a short month does not shift later periods).
    /// </summary>
    public static PlanPeriod Monthly(DateTimeOffset anchor, DateTimeOffset now) => Every(anchor, 1, now);

    /// <summary>
    /// The period of <paramref name="months"/> months (1 monthly, 12 yearly) containing <paramref name="now"/>, counted
    /// from <paramref name="anchor"/> the same way as <see cref="Monthly"/>.
    /// </summary>
    public static PlanPeriod Every(DateTimeOffset anchor, int months, DateTimeOffset now)
    {
        if (months < 1) throw new ArgumentOutOfRangeException(nameof(months));
        anchor = anchor.ToUniversalTime();
        if (now < anchor) return new PlanPeriod(anchor, anchor.AddMonths(months));
        var n = ((now.Year - anchor.Year) * 12 + now.Month - anchor.Month) / months;
        var start = anchor.AddMonths(n * months);
        if (start > now) start = anchor.AddMonths(--n * months);
        var end = anchor.AddMonths((n + 1) * months);
        if (end <= now) (start, end) = (end, anchor.AddMonths((n + 2) * months));
        return new PlanPeriod(start, end);
    }

    /// <summary>The caller's current period (its plan's anchor and interval).</summary>
    public static PlanPeriod Of(Keys.Caller caller, DateTimeOffset now) => Every(caller.PlanAnchor, caller.PlanPeriodMonths, now);
}

/// <summary>
/// Counted quotas (e.g. a plan's included requests per period). Consuming is one conditional upsert — the row is
/// created at 1 or incremented only while below the limit — so two processes can never both take the last unit.
/// A unit is given back when the call it was taken for delivered nothing. Every write is a gateway call's, so on
/// SQLite it goes through the process's write gate with the ledger (<see cref="Database.WriteAsync"/>).
/// </summary>
internal sealed class QuotaStore(Database db)
{
    public const string Requests = "requests";
    /// <summary>Gateway input + output tokens, added at settlement.</summary>
    public const string Tokens = "tokens";

    /// <summary>Adds <paramref name="amount"/> units whatever the limit (tokens at settlement, requests billed as overage); returns the period's use after it.</summary>
    public async Task<long> AddAsync(string accountId, string kind, DateTimeOffset periodStart, long amount, CancellationToken ct)
    {
        if (amount <= 0) return await UsedAsync(accountId, kind, periodStart, ct);
        return await db.WriteAsync(c => c.ExecuteScalarAsync<long>(new CommandDefinition("""
            INSERT INTO quota_usage (account_id, kind, period_start, used) VALUES (@accountId, @kind, @start, @amount)
            ON CONFLICT (account_id, kind, period_start) DO UPDATE SET used = quota_usage.used + @amount
            RETURNING used
            """, new { accountId, kind, start = UnixMicros.From(periodStart), amount }, cancellationToken: ct)), ct);
    }

    /// <summary>Takes one unit; false when the period's <paramref name="limit"/> is used up.</summary>
    public async Task<bool> TryConsumeAsync(string accountId, string kind, DateTimeOffset periodStart, long limit, CancellationToken ct)
    {
        if (limit <= 0) return false;
        var changed = await db.WriteAsync(c => c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO quota_usage (account_id, kind, period_start, used) VALUES (@accountId, @kind, @start, 1)
            ON CONFLICT (account_id, kind, period_start) DO UPDATE SET used = quota_usage.used + 1 WHERE quota_usage.used < @limit
            """, new { accountId, kind, start = UnixMicros.From(periodStart), limit }, cancellationToken: ct)), ct);
        return changed == 1;
    }

    /// <summary>
    /// Takes one unit like <see cref="TryConsumeAsync"/> and returns the period's count after it (for usage alerts),
    /// or null when the <paramref name="limit"/> is used up.
    /// </summary>
    public async Task<long?> TryConsumeCountedAsync(string accountId, string kind, DateTimeOffset periodStart, long limit, CancellationToken ct)
    {
        if (limit <= 0) return null;
        return await db.WriteAsync(c => c.QuerySingleOrDefaultAsync<long?>(new CommandDefinition("""
            INSERT INTO quota_usage (account_id, kind, period_start, used) VALUES (@accountId, @kind, @start, 1)
            ON CONFLICT (account_id, kind, period_start) DO UPDATE SET used = quota_usage.used + 1 WHERE quota_usage.used < @limit
            RETURNING used
            """, new { accountId, kind, start = UnixMicros.From(periodStart), limit }, cancellationToken: ct)), ct);
    }

    /// <summary>The alert subject and period key of a quota kind in a period (see <c>AlertService.ObserveUsageAsync</c>).</summary>
    public static (string Subject, string PeriodKey) AlertSubject(string kind, DateTimeOffset periodStart) =>
        ("quota:" + kind, periodStart.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Gives one unit back (the call delivered nothing).</summary>
    public async Task ReleaseAsync(string accountId, string kind, DateTimeOffset periodStart)
    {
        await db.WriteAsync(c => c.ExecuteAsync(new CommandDefinition(
            "UPDATE quota_usage SET used = used - 1 WHERE account_id = @accountId AND kind = @kind AND period_start = @start AND used > 0",
            new { accountId, kind, start = UnixMicros.From(periodStart) })), CancellationToken.None);
    }

    public async Task<long> UsedAsync(string accountId, string kind, DateTimeOffset periodStart, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT used FROM quota_usage WHERE account_id = @accountId AND kind = @kind AND period_start = @start",
            new { accountId, kind, start = UnixMicros.From(periodStart) }, cancellationToken: ct)) ?? 0;
    }
}
