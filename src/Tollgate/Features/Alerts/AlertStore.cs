using Dapper;
using Tollgate.Features.Webhooks;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Alerts;

/// <summary>An alert as stored: fired at a threshold of a subject in a period, resolved later or not yet.</summary>
public sealed record Alert(
    string Id, string AccountId, string Subject, string? Period, int ThresholdPercent, long? Used, long? Limit, long? BalanceMicros,
    DateTimeOffset FiredAt, DateTimeOffset? ResolvedAt);

/// <summary>An unresolved alert, as the service keeps it in memory to know what an observation may resolve.</summary>
internal readonly record struct ActiveAlert(string Id, string PeriodKey, int ThresholdPercent, long? Limit);

/// <summary>Per-account alert settings as stored (null: the configured defaults).</summary>
internal sealed record AlertSettingsRow(int[] Thresholds, long? BalanceLowMicros);

/// <summary>
/// The alerts table. Firing is <c>INSERT … ON CONFLICT DO NOTHING</c> on (account, subject, period, threshold) and an
/// event only if the row was inserted; resolving is a conditional update of an unresolved row and an event only if
/// it changed one. Both write their event in the same transaction, so an alert and its webhook delivery are one fact.
/// </summary>
internal sealed class AlertStore(Database db)
{
    public const string BalanceLowSubject = "balance:low";
    public const string FiredType = "alert.fired", ResolvedType = "alert.resolved";

    private sealed record AlertRow(string id, string account_id, string subject, string period_key, long threshold_percent, long? used, long? limit_value,
        long? balance_micros, long fired_at, long? resolved_at);

    private sealed record SettingsRow(string thresholds, long? balance_low_micros);

    private static Alert Map(AlertRow r) => new(r.id, r.account_id, r.subject,
        r.subject == BalanceLowSubject ? null : r.period_key, (int)r.threshold_percent, r.used, r.limit_value, r.balance_micros,
        UnixMicros.ToDateTimeOffset(r.fired_at), r.resolved_at is { } x ? UnixMicros.ToDateTimeOffset(x) : null);

    private const string Columns = "id, account_id, subject, period_key, threshold_percent, used, limit_value, balance_micros, fired_at, resolved_at";

    /// <summary>Inserts the alert unless its (account, subject, period, threshold) exists; the alert and its event when it fired now, else null.</summary>
    public async Task<Alert?> TryFireAsync(string accountId, string subject, string periodKey, int thresholdPercent, long? used, long? limit, long? balanceMicros,
        DateTimeOffset now, CancellationToken ct)
    {
        var id = "alrt_" + Guid.CreateVersion7().ToString("N");
        var at = UnixMicros.From(now);
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var inserted = await c.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO alerts ({Columns}) VALUES (@id, @accountId, @subject, @periodKey, @thresholdPercent, @used, @limit, @balanceMicros, @at, NULL)
            ON CONFLICT DO NOTHING
            """, new { id, accountId, subject, periodKey, thresholdPercent = (long)thresholdPercent, used, limit, balanceMicros, at }, tx, cancellationToken: ct));
        if (inserted == 0) return null;
        var alert = new Alert(id, accountId, subject, subject == BalanceLowSubject ? null : periodKey, thresholdPercent, used, limit, balanceMicros,
            UnixMicros.ToDateTimeOffset(at), null);
        await WebhookStore.AppendAsync(c, tx, accountId, FiredType, EventData(alert, used, limit, balanceMicros), now, ct);
        await tx.CommitAsync(ct);
        return alert;
    }

    /// <summary>
    /// Resolves one unresolved alert (a low-balance alert also frees its slot, see the migration); the alert if this
    /// call resolved it, else null. <paramref name="used"/>, <paramref name="limit"/> and <paramref name="balanceMicros"/>
    /// are the observation that resolved it, for the event.
    /// </summary>
    public async Task<Alert?> TryResolveAsync(string accountId, string alertId, long? used, long? limit, long? balanceMicros, DateTimeOffset now, CancellationToken ct)
    {
        var at = UnixMicros.From(now);
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var changed = await c.ExecuteAsync(new CommandDefinition($"""
            UPDATE alerts SET resolved_at = @at, period_key = CASE WHEN subject = '{BalanceLowSubject}' THEN id ELSE period_key END
            WHERE id = @alertId AND account_id = @accountId AND resolved_at IS NULL
            """, new { alertId, accountId, at }, tx, cancellationToken: ct));
        if (changed == 0) return null;
        var row = await c.QuerySingleAsync<AlertRow>(new CommandDefinition($"SELECT {Columns} FROM alerts WHERE id = @alertId", new { alertId }, tx, cancellationToken: ct));
        var alert = Map(row);
        await WebhookStore.AppendAsync(c, tx, accountId, ResolvedType, EventData(alert, used, limit, balanceMicros), now, ct);
        await tx.CommitAsync(ct);
        return alert;
    }

    /// <summary>The webhook <c>data</c> of an alert event: the alert, and the observation behind the event.</summary>
    private static Dictionary<string, object?> EventData(Alert a, long? used, long? limit, long? balanceMicros) => new()
    {
        ["alert_id"] = a.Id,
        ["subject"] = a.Subject,
        ["threshold_percent"] = a.Subject == BalanceLowSubject ? null : a.ThresholdPercent,
        ["used"] = used,
        ["limit"] = limit,
        ["period"] = a.Period,
        ["balance_micros"] = balanceMicros,
        ["fired_at"] = a.FiredAt,
        ["resolved_at"] = a.ResolvedAt,
    };

    public async Task<IReadOnlyList<ActiveAlert>> ActiveAsync(string accountId, string subject, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<(string Id, string PeriodKey, long Threshold, long? Limit)>(new CommandDefinition(
            "SELECT id, period_key, threshold_percent, limit_value FROM alerts WHERE account_id = @accountId AND subject = @subject AND resolved_at IS NULL",
            new { accountId, subject }, cancellationToken: ct));
        return rows.Select(r => new ActiveAlert(r.Id, r.PeriodKey, (int)r.Threshold, r.Limit)).ToList();
    }

    /// <summary>Unresolved alerts first (newest first), then resolved ones by firing time, newest first, up to <paramref name="limit"/>.</summary>
    public async Task<IReadOnlyList<Alert>> ListAsync(string accountId, bool activeOnly, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<AlertRow>(new CommandDefinition($"""
            SELECT {Columns} FROM alerts WHERE account_id = @accountId AND (@activeOnly = 0 OR resolved_at IS NULL)
            ORDER BY CASE WHEN resolved_at IS NULL THEN 0 ELSE 1 END, fired_at DESC, id DESC LIMIT @limit
            """, new { accountId, activeOnly = activeOnly ? 1 : 0, limit }, cancellationToken: ct));
        return rows.Select(Map).ToList();
    }

    public async Task<AlertSettingsRow?> SettingsAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<SettingsRow>(new CommandDefinition(
            "SELECT thresholds, balance_low_micros FROM alert_settings WHERE account_id = @accountId", new { accountId }, cancellationToken: ct));
        return row is null ? null : new AlertSettingsRow(ParseThresholds(row.thresholds), row.balance_low_micros);
    }

    public async Task SaveSettingsAsync(string accountId, IReadOnlyList<int> thresholds, long? balanceLowMicros, DateTimeOffset now, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO alert_settings (account_id, thresholds, balance_low_micros, updated_at) VALUES (@accountId, @thresholds, @balanceLowMicros, @at)
            ON CONFLICT (account_id) DO UPDATE SET thresholds = excluded.thresholds, balance_low_micros = excluded.balance_low_micros, updated_at = excluded.updated_at
            """, new { accountId, thresholds = string.Join(',', thresholds), balanceLowMicros, at = UnixMicros.From(now) }, cancellationToken: ct));
    }

    private static int[] ParseThresholds(string s) =>
        s.Length == 0 ? [] : s.Split(',').Select(x => int.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
}
