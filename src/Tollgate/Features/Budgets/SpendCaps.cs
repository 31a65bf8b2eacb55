using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Budgets;

/// <summary>Whose spending a cap limits.</summary>
public enum CapScope { Account, Key, Customer }

/// <summary>Over what time a cap counts: a UTC day, a UTC calendar month, or for ever.</summary>
public enum CapWindow { Day, Month, Total }

/// <summary>A spend cap: at most <see cref="LimitMicros"/> charged to <see cref="SubjectId"/> per <see cref="Window"/>.</summary>
/// <param name="SubjectId">The account id, the key's lineage id, or the end customer id.</param>
public sealed record SpendCap(CapScope Scope, string SubjectId, CapWindow Window, long LimitMicros);

/// <summary>The window a moment falls in: a key naming it (part of its ledger account's key) and when the next one begins.</summary>
public readonly record struct CapPeriod(string Key, DateTimeOffset? ResetsAt)
{
    public static CapPeriod Of(CapWindow window, DateTimeOffset now)
    {
        now = now.ToUniversalTime();
        return window switch
        {
            CapWindow.Day => new("d" + now.ToString("yyyyMMdd", System.Globalization.CultureInfo.InvariantCulture),
                new DateTimeOffset(now.Year, now.Month, now.Day, 0, 0, 0, TimeSpan.Zero).AddDays(1)),
            CapWindow.Month => new("m" + now.ToString("yyyyMM", System.Globalization.CultureInfo.InvariantCulture),
                new DateTimeOffset(now.Year, now.Month, 1, 0, 0, 0, TimeSpan.Zero).AddMonths(1)),
            _ => new("all", null),
        };
    }
}

public static class CapNames
{
    public static string Of(CapScope scope) => scope switch { CapScope.Account => "account", CapScope.Key => "key", _ => "customer" };
    public static string Of(CapWindow window) => window switch { CapWindow.Day => "day", CapWindow.Month => "month", _ => "total" };

    public static CapScope ParseScope(string s) => s switch { "account" => CapScope.Account, "key" => CapScope.Key, "customer" => CapScope.Customer, _ => throw new FormatException(s) };
    public static CapWindow ParseWindow(string s) => s switch { "day" => CapWindow.Day, "month" => CapWindow.Month, "total" => CapWindow.Total, _ => throw new FormatException(s) };
}

/// <summary>The caps configured in <c>spend_caps</c>; portable SQL for both engines.</summary>
internal sealed class SpendCapStore(Database db, TimeProvider time)
{
    private sealed record Row(string scope, string subject_id, string cap_window, long limit_micros)
    {
        public SpendCap ToCap() => new(CapNames.ParseScope(scope), subject_id, CapNames.ParseWindow(cap_window), limit_micros);
    }

    /// <summary>Every cap that applies to a call: the account's, the key lineage's and the end customer's.</summary>
    public async Task<IReadOnlyList<SpendCap>> ForCallAsync(string accountId, string? keyLineageId, string? customerId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition("""
            SELECT scope, subject_id, cap_window, limit_micros FROM spend_caps
            WHERE account_id = @accountId
              AND ((scope = 'account' AND subject_id = @accountId) OR (scope = 'key' AND subject_id = @keyLineageId)
                   OR (scope = 'customer' AND subject_id = @customerId))
            ORDER BY scope, subject_id, cap_window
            """, new { accountId, keyLineageId, customerId }, cancellationToken: ct));
        return rows.Select(r => r.ToCap()).ToList();
    }

    public async Task<IReadOnlyList<SpendCap>> ListAsync(string accountId, CapScope scope, string subjectId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition("""
            SELECT scope, subject_id, cap_window, limit_micros FROM spend_caps
            WHERE account_id = @accountId AND scope = @scope AND subject_id = @subjectId ORDER BY cap_window
            """, new { accountId, scope = CapNames.Of(scope), subjectId }, cancellationToken: ct));
        return rows.Select(r => r.ToCap()).ToList();
    }

    /// <summary>Replaces the subject's caps: a window with a limit is set, a window without one is removed.</summary>
    public async Task SetAsync(string accountId, CapScope scope, string subjectId, IReadOnlyDictionary<CapWindow, long?> limits, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var now = time.GetUtcNowMicros();
        foreach (var (window, limit) in limits)
        {
            var args = new { accountId, scope = CapNames.Of(scope), subjectId, window = CapNames.Of(window), limit, now };
            await c.ExecuteAsync(new CommandDefinition(limit is null
                ? "DELETE FROM spend_caps WHERE account_id = @accountId AND scope = @scope AND subject_id = @subjectId AND cap_window = @window"
                : """
                  INSERT INTO spend_caps (account_id, scope, subject_id, cap_window, limit_micros, updated_at)
                  VALUES (@accountId, @scope, @subjectId, @window, @limit, @now)
                  ON CONFLICT (account_id, scope, subject_id, cap_window) DO UPDATE SET limit_micros = excluded.limit_micros, updated_at = excluded.updated_at
                  """, args, tx, cancellationToken: ct));
        }
        await tx.CommitAsync(ct);
    }
}
