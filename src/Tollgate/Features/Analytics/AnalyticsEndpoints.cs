using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Analytics;

/// <summary>
/// One usage record as its account sees it: no provider cost. <see cref="LatencyMs"/> and <see cref="Outcome"/> come from
/// the gateway's metadata (null for usage events, whose metadata is the client's own).
/// </summary>
public sealed record UsageListRow(
    string Id, string Model, string? Provider, string? KeyId, string? CustomerId, long InputTokens, long OutputTokens, long CacheReadTokens,
    long CacheWriteTokens, long ReasoningTokens, long? UserPriceMicros, string BillingStatus, string? Outcome, long? LatencyMs,
    string? RequestId, JsonElement? Metadata, DateTimeOffset OccurredAt, DateTimeOffset CreatedAt)
{
    public static UsageListRow From(UsageRecord r)
    {
        JsonElement? metadata = null;
        string? outcome = null;
        long? latency = null;
        if (r.Metadata is { } m)
        {
            using var doc = JsonDocument.Parse(m);
            var root = doc.RootElement;
            metadata = root.Clone();
            if (root.ValueKind == JsonValueKind.Object)
            {
                if (root.TryGetProperty("latency_ms", out var l) && l.ValueKind == JsonValueKind.Number && l.TryGetInt64(out var ms)) latency = ms;
                if (root.TryGetProperty("outcome", out var o) && o.ValueKind == JsonValueKind.String) outcome = o.GetString();
            }
        }
        return new(r.Id, r.Model, r.Provider, r.KeyId, r.CustomerId, r.InputTokens, r.OutputTokens, r.CacheReadTokens, r.CacheWriteTokens,
            r.ReasoningTokens, r.UserPriceMicros, UsageStore.StatusText(r.BillingStatus), outcome, latency, r.RequestId, metadata, r.OccurredAt, r.CreatedAt);
    }
}

/// <summary>A usage record as the operator sees it: the account's view plus account, provider cost and ledger transfer.</summary>
public sealed record OperatorUsageRow(
    string AccountId, string Id, string Model, string? Provider, string? KeyId, string? CustomerId, long InputTokens, long OutputTokens,
    long CacheReadTokens, long CacheWriteTokens, long ReasoningTokens, long? UserPriceMicros, long? ProviderCostMicros, string? ProviderCostUsd,
    string BillingStatus, string? Outcome, long? LatencyMs, string? RequestId, string? TransferId, JsonElement? Metadata,
    DateTimeOffset OccurredAt, DateTimeOffset CreatedAt)
{
    public static OperatorUsageRow From(UsageRecord r)
    {
        var v = UsageListRow.From(r);
        return new(r.AccountId, r.Id, r.Model, r.Provider, r.KeyId, r.CustomerId, r.InputTokens, r.OutputTokens, r.CacheReadTokens, r.CacheWriteTokens,
            r.ReasoningTokens, r.UserPriceMicros, r.ProviderCostMicros, r.ProviderCostUsd, v.BillingStatus, v.Outcome, v.LatencyMs, r.RequestId,
            r.TransferId, v.Metadata, r.OccurredAt, r.CreatedAt);
    }
}

/// <summary>One group of a usage summary (the account's view: no provider cost).</summary>
public sealed record UsageSummaryRow(
    string? Key, long Requests, long InputTokens, long OutputTokens, long CacheReadTokens, long CacheWriteTokens, long ReasoningTokens, long UserPriceMicros)
{
    public static UsageSummaryRow From(UsageTotals t) =>
        new(t.Key, t.Requests, t.InputTokens, t.OutputTokens, t.CacheReadTokens, t.CacheWriteTokens, t.ReasoningTokens, t.UserPriceMicros);
}

public sealed record UsageSummary(string GroupBy, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<UsageSummaryRow> Data, UsageSummaryRow Totals);

/// <summary>One group of the margin report: revenue (user price of billed records) − provider cost (billed and internal records).</summary>
public sealed record MarginRow(
    string? Key, long Requests, long InputTokens, long OutputTokens, long RevenueMicros, long ProviderCostMicros, long MarginMicros)
{
    public static MarginRow From(UsageTotals t) =>
        new(t.Key, t.Requests, t.InputTokens, t.OutputTokens, t.RevenueMicros, t.ProviderCostMicros, t.RevenueMicros - t.ProviderCostMicros);
}

public sealed record MarginReport(string GroupBy, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<MarginRow> Data, MarginRow Totals);

/// <summary>
/// Usage listings with filters, summaries, streamed exports, the account's ledger, and operator reports
/// (docs/ANALYTICS.md).
/// </summary>
internal static class AnalyticsEndpoints
{
    public const int MaxPageSize = 200;
    public const int MaxTopAccounts = 100;

    private static readonly JsonSerializerOptions Json = TollgateApp.ConfigureJson(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    public static void MapAnalytics(this IEndpointRouteBuilder routes)
    {
        var usage = routes.MapGroup("/api/v1/usage").RequireApiKey().WithTags("Usage analytics");
        usage.MapGet("/", ListUsage);
        usage.MapGet("/summary", Summary);
        usage.MapGet("/export", ExportUsage);
        var ledger = routes.MapGroup("/api/v1/ledger").RequireApiKey().WithTags("Usage analytics");
        ledger.MapGet("/", ListLedger);
        ledger.MapGet("/export", ExportLedger);
        var admin = routes.MapGroup("/admin/v1").RequireAdminKey().WithTags("Admin: reports");
        admin.MapGet("/usage", OperatorListUsage);
        admin.MapGet("/reports/margin", Margin);
        admin.MapGet("/reports/top-accounts", TopAccounts);
    }

    private static (UsageCursor? Cursor, ProblemHttpResult? Problem) ParseCursor(string? cursor)
    {
        if (string.IsNullOrEmpty(cursor)) return (null, null);
        var colon = cursor.IndexOf(':');
        if (colon <= 0 || !long.TryParse(cursor.AsSpan(0, colon), NumberStyles.None, null, out var at) || colon == cursor.Length - 1)
            return (null, Problems.BadRequest("invalid_request", "'cursor' is not a cursor returned by this endpoint.", "cursor"));
        return (new UsageCursor(UnixMicros.ToDateTimeOffset(at), cursor[(colon + 1)..]), null);
    }

    private static string NextCursor(UsageRecord r) => $"{UnixMicros.From(r.OccurredAt)}:{r.Id}";

    /// <summary>
    /// <c>GET /api/v1/usage</c>: the caller's account's records, newest first, filtered by from, to, model, provider,
    /// key_id, customer_id, tag, billing_status; <c>limit</c> 1–200 (default 50), <c>next_cursor</c> continues.
    /// </summary>
    private static async Task<Results<Ok<Page<UsageListRow>>, ProblemHttpResult>> ListUsage(
        HttpContext http, AnalyticsStore store, TimeProvider time, string? cursor, CancellationToken ct)
    {
        return await UsagePageAsync(http, store, time, http.GetCaller().AccountId, cursor, UsageListRow.From, ct);
    }

    /// <summary><c>GET /admin/v1/usage?account_id=…</c>: one account's records with provider costs, same filters and pages.</summary>
    private static async Task<Results<Ok<Page<OperatorUsageRow>>, ProblemHttpResult>> OperatorListUsage(
        HttpContext http, AnalyticsStore store, TimeProvider time, string? cursor, CancellationToken ct)
    {
        if (AnalyticsQuery.Text(http.Request.Query, "account_id") is not { } accountId)
            return Problems.BadRequest("invalid_request", "'account_id' is required.", "account_id");
        return await UsagePageAsync(http, store, time, accountId, cursor, OperatorUsageRow.From, ct);
    }

    /// <summary>One page of an account's usage records, newest first, shaped by <paramref name="row"/> for the audience.</summary>
    private static async Task<Results<Ok<Page<TRow>>, ProblemHttpResult>> UsagePageAsync<TRow>(
        HttpContext http, AnalyticsStore store, TimeProvider time, string accountId, string? cursor, Func<UsageRecord, TRow> row, CancellationToken ct)
    {
        var (filter, problem) = AnalyticsQuery.ParseFilter(http.Request.Query, accountId, time.GetUtcNow(), requireRange: false);
        if (problem is not null) return problem;
        var (size, limitProblem) = AnalyticsQuery.ParseLimit(http.Request.Query, 50, MaxPageSize);
        if (limitProblem is not null) return limitProblem;
        var (before, cursorProblem) = ParseCursor(cursor);
        if (cursorProblem is not null) return cursorProblem;
        var records = await store.ListAsync(filter!, before, size + 1, ct);
        var hasMore = records.Count > size;
        return TypedResults.Ok(new Page<TRow>(records.Take(size).Select(row).ToList(), hasMore, hasMore ? NextCursor(records[size - 1]) : null));
    }

    private static readonly Dictionary<string, UsageGrouping> AccountGroupings = new()
    {
        ["day"] = UsageGrouping.Day, ["model"] = UsageGrouping.Model, ["provider"] = UsageGrouping.Provider,
        ["key"] = UsageGrouping.Key, ["customer"] = UsageGrouping.Customer, ["tag"] = UsageGrouping.Tag,
    };

    private static readonly Dictionary<string, UsageGrouping> ReportGroupings = new()
    {
        ["day"] = UsageGrouping.Day, ["model"] = UsageGrouping.Model, ["provider"] = UsageGrouping.Provider, ["account"] = UsageGrouping.Account,
    };

    /// <summary>
    /// <c>GET /api/v1/usage/summary?group_by=day|model|provider|key|customer|tag</c>: totals per group over from–to
    /// (default: the last 30 days), with the usage filters. <c>group_by=tag</c> needs <c>tag_key</c>.
    /// </summary>
    private static async Task<Results<Ok<UsageSummary>, ProblemHttpResult>> Summary(
        HttpContext http, AnalyticsStore store, TimeProvider time, CancellationToken ct)
    {
        var q = http.Request.Query;
        var groupText = AnalyticsQuery.Text(q, "group_by") ?? "day";
        if (!AccountGroupings.TryGetValue(groupText, out var groupBy))
            return Problems.BadRequest("invalid_group_by", $"'group_by' must be one of {string.Join(", ", AccountGroupings.Keys)}.", "group_by");
        string? tagKey = null;
        if (groupBy == UsageGrouping.Tag)
        {
            tagKey = AnalyticsQuery.Text(q, "tag_key");
            if (tagKey is null || !AnalyticsQuery.IsValidTagKey(tagKey))
                return Problems.BadRequest("invalid_request", "'group_by=tag' needs 'tag_key': 1–64 letters, digits and _.- naming a metadata member.", "tag_key");
        }
        var (filter, problem) = AnalyticsQuery.ParseFilter(q, http.GetCaller().AccountId, time.GetUtcNow(), requireRange: true);
        if (problem is not null) return problem;
        var rows = await store.SummaryAsync(filter!, groupBy, tagKey, ct);
        var data = rows.Select(UsageSummaryRow.From).ToList();
        var totals = new UsageSummaryRow(null, data.Sum(r => r.Requests), data.Sum(r => r.InputTokens), data.Sum(r => r.OutputTokens),
            data.Sum(r => r.CacheReadTokens), data.Sum(r => r.CacheWriteTokens), data.Sum(r => r.ReasoningTokens), data.Sum(r => r.UserPriceMicros));
        return TypedResults.Ok(new UsageSummary(groupText, UnixMicros.ToDateTimeOffset(filter!.FromMicros!.Value),
            UnixMicros.ToDateTimeOffset(filter.ToMicros!.Value), data, totals));
    }

    /// <summary>Report range: the filter's, widened to whole UTC days (reports across accounts read rollups only).</summary>
    private static (UsageFilter? Filter, ProblemHttpResult? Problem) ReportFilter(HttpContext http, TimeProvider time)
    {
        var q = http.Request.Query;
        if (AnalyticsQuery.Text(q, "tag") is not null)
            return (null, Problems.BadRequest("invalid_request", "Reports do not filter by 'tag'.", "tag"));
        var (filter, problem) = AnalyticsQuery.ParseFilter(q, null, time.GetUtcNow(), requireRange: true);
        if (problem is not null) return (null, problem);
        const long D = AnalyticsQuery.MicrosPerDay;
        var from = filter!.FromMicros!.Value / D * D;
        var to = (filter.ToMicros!.Value + D - 1) / D * D;
        return (filter with { FromMicros = from, ToMicros = to, AccountId = AnalyticsQuery.Text(q, "account_id") }, null);
    }

    /// <summary><c>GET /admin/v1/reports/margin?group_by=day|model|provider|account</c>: revenue, provider cost and margin per group.</summary>
    private static async Task<Results<Ok<MarginReport>, ProblemHttpResult>> Margin(HttpContext http, AnalyticsStore store, TimeProvider time, CancellationToken ct)
    {
        var groupText = AnalyticsQuery.Text(http.Request.Query, "group_by") ?? "day";
        if (!ReportGroupings.TryGetValue(groupText, out var groupBy))
            return Problems.BadRequest("invalid_group_by", $"'group_by' must be one of {string.Join(", ", ReportGroupings.Keys)}.", "group_by");
        var (filter, problem) = ReportFilter(http, time);
        if (problem is not null) return problem;
        var rows = (await store.SummaryAsync(filter!, groupBy, null, ct)).Select(MarginRow.From).ToList();
        return TypedResults.Ok(new MarginReport(groupText, UnixMicros.ToDateTimeOffset(filter!.FromMicros!.Value), UnixMicros.ToDateTimeOffset(filter.ToMicros!.Value),
            rows, Total(rows)));
    }

    private static MarginRow Total(List<MarginRow> rows) => new(null, rows.Sum(r => r.Requests), rows.Sum(r => r.InputTokens), rows.Sum(r => r.OutputTokens),
        rows.Sum(r => r.RevenueMicros), rows.Sum(r => r.ProviderCostMicros), rows.Sum(r => r.MarginMicros));

    /// <summary><c>GET /admin/v1/reports/top-accounts?from&amp;to&amp;limit</c>: accounts by revenue, highest first (1–100, default 10).</summary>
    private static async Task<Results<Ok<MarginReport>, ProblemHttpResult>> TopAccounts(HttpContext http, AnalyticsStore store, TimeProvider time, CancellationToken ct)
    {
        var (filter, problem) = ReportFilter(http, time);
        if (problem is not null) return problem;
        var (limit, limitProblem) = AnalyticsQuery.ParseLimit(http.Request.Query, 10, MaxTopAccounts);
        if (limitProblem is not null) return limitProblem;
        var rows = (await store.SummaryAsync(filter!, UsageGrouping.Account, null, ct)).Select(MarginRow.From)
            .OrderByDescending(r => r.RevenueMicros).ThenBy(r => r.Key, StringComparer.Ordinal).Take(limit).ToList();
        return TypedResults.Ok(new MarginReport("account", UnixMicros.ToDateTimeOffset(filter!.FromMicros!.Value), UnixMicros.ToDateTimeOffset(filter.ToMicros!.Value),
            rows, Total(rows)));
    }

    /// <summary><c>GET /api/v1/ledger</c>: the account's ledger entries (every transfer that touched it) with the balance after each, newest first.</summary>
    private static async Task<Results<Ok<Page<StatementLineResponse>>, ProblemHttpResult>> ListLedger(
        HttpContext http, LedgerService ledger, string? cursor, CancellationToken ct)
    {
        var (size, limitProblem) = AnalyticsQuery.ParseLimit(http.Request.Query, 50, MaxPageSize);
        if (limitProblem is not null) return limitProblem;
        long? before = null;
        if (!string.IsNullOrEmpty(cursor))
        {
            if (!long.TryParse(cursor, NumberStyles.None, CultureInfo.InvariantCulture, out var v) || v < 1)
                return Problems.BadRequest("invalid_request", "'cursor' is not a cursor returned by this endpoint.", "cursor");
            before = v;
        }
        var lines = await ledger.GetStatementAsync(http.GetCaller().LedgerAccountId, before, size + 1, ct);
        var hasMore = lines.Count > size;
        var page = lines.Take(size).Select(StatementLineResponse.From).ToList();
        return TypedResults.Ok(new Page<StatementLineResponse>(page, hasMore, hasMore ? page[^1].Sequence.ToString(CultureInfo.InvariantCulture) : null));
    }

    private static (string? Format, ProblemHttpResult? Problem) ParseFormat(IQueryCollection q)
    {
        var format = AnalyticsQuery.Text(q, "format") ?? "csv";
        return format is "csv" or "jsonl" ? (format, null) : (null, Problems.BadRequest("invalid_format", "'format' must be csv or jsonl.", "format"));
    }

    private static string ContentType(string format) => format == "csv" ? "text/csv; charset=utf-8" : "application/jsonl; charset=utf-8";

    /// <summary>Rows written between flushes: the client sees data as it is read, and the server holds one chunk at a time.</summary>
    private const int RowsPerFlush = 256;

    private static readonly string[] UsageCsvHeader =
    [
        "id", "occurred_at", "created_at", "model", "provider", "key_id", "customer_id", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "reasoning_tokens", "user_price_micros", "billing_status", "outcome", "latency_ms", "request_id", "metadata",
    ];

    /// <summary><c>GET /api/v1/usage/export?format=csv|jsonl</c>: every record matching the usage filters, newest first, streamed.</summary>
    private static Results<PushStreamHttpResult, ProblemHttpResult> ExportUsage(HttpContext http, AnalyticsStore store, TimeProvider time)
    {
        var (format, formatProblem) = ParseFormat(http.Request.Query);
        if (formatProblem is not null) return formatProblem;
        var (filter, problem) = AnalyticsQuery.ParseFilter(http.Request.Query, http.GetCaller().AccountId, time.GetUtcNow(), requireRange: false);
        if (problem is not null) return problem;
        var ct = http.RequestAborted;
        return TypedResults.Stream(async body =>
        {
            await using var w = new StreamWriter(body, new UTF8Encoding(false), 32 * 1024);
            if (format == "csv") await w.WriteAsync(Csv.Line(UsageCsvHeader));
            var n = 0;
            await foreach (var record in store.StreamAsync(filter!, null, null, ct))
            {
                var row = UsageListRow.From(record);
                if (format == "csv")
                {
                    await w.WriteAsync(Csv.Line([
                        row.Id, Iso(row.OccurredAt), Iso(row.CreatedAt), row.Model, row.Provider, row.KeyId, row.CustomerId, Num(row.InputTokens),
                        Num(row.OutputTokens), Num(row.CacheReadTokens), Num(row.CacheWriteTokens), Num(row.ReasoningTokens), Num(row.UserPriceMicros),
                        row.BillingStatus, row.Outcome, Num(row.LatencyMs), row.RequestId, record.Metadata,
                    ]));
                }
                else
                {
                    await w.WriteAsync(JsonSerializer.Serialize(row, Json));
                    await w.WriteAsync('\n');
                }
                if (++n % RowsPerFlush == 0) await w.FlushAsync(ct);
            }
        }, ContentType(format!), $"usage-{time.GetUtcNow():yyyyMMdd'T'HHmmss'Z'}.{format}");
    }

    private static readonly string[] LedgerCsvHeader =
    [
        "sequence", "timestamp", "transfer_id", "kind", "code", "direction", "amount_micros", "held_change_micros", "balance_after_micros",
        "held_after_micros", "reference", "description", "pending_id",
    ];

    /// <summary><c>GET /api/v1/ledger/export?format=csv|jsonl&amp;from&amp;to</c>: the account's ledger entries, newest first, streamed.</summary>
    private static Results<PushStreamHttpResult, ProblemHttpResult> ExportLedger(HttpContext http, AnalyticsStore store, TimeProvider time)
    {
        var (format, formatProblem) = ParseFormat(http.Request.Query);
        if (formatProblem is not null) return formatProblem;
        var (filter, problem) = AnalyticsQuery.ParseFilter(http.Request.Query, null, time.GetUtcNow(), requireRange: false);
        if (problem is not null) return problem;
        var ledgerAccount = http.GetCaller().LedgerAccountId;
        var ct = http.RequestAborted;
        return TypedResults.Stream(async body =>
        {
            await using var w = new StreamWriter(body, new UTF8Encoding(false), 32 * 1024);
            if (format == "csv") await w.WriteAsync(Csv.Line(LedgerCsvHeader));
            var n = 0;
            await foreach (var line in store.StreamLedgerAsync(ledgerAccount, filter!.FromMicros, filter.ToMicros, ct))
            {
                var row = StatementLineResponse.From(line);
                if (format == "csv")
                {
                    await w.WriteAsync(Csv.Line([
                        Num(row.Sequence), Iso(row.Timestamp), row.TransferId, JsonSerializer.Serialize(row.Kind, Json).Trim('"'), row.Code, row.Direction,
                        Num(row.AmountMicros), Num(row.HeldChangeMicros), Num(row.BalanceAfterMicros), Num(row.HeldAfterMicros), row.Reference,
                        row.Description, row.PendingId,
                    ]));
                }
                else
                {
                    await w.WriteAsync(JsonSerializer.Serialize(row, Json));
                    await w.WriteAsync('\n');
                }
                if (++n % RowsPerFlush == 0) await w.FlushAsync(ct);
            }
        }, ContentType(format!), $"ledger-{time.GetUtcNow():yyyyMMdd'T'HHmmss'Z'}.{format}");
    }

    private static string Iso(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);
    private static string? Num(long? n) => n?.ToString(CultureInfo.InvariantCulture);
}

/// <summary>RFC 4180 CSV: a field is quoted when it holds a comma, quote, CR or LF; quotes inside are doubled; lines end in CRLF.</summary>
internal static class Csv
{
    public static string Line(IReadOnlyList<string?> fields)
    {
        var sb = new StringBuilder();
        for (var i = 0; i < fields.Count; i++)
        {
            if (i > 0) sb.Append(',');
            var f = fields[i] ?? "";
            if (f.AsSpan().IndexOfAny(",\"\r\n") >= 0) sb.Append('"').Append(f.Replace("\"", "\"\"")).Append('"');
            else sb.Append(f);
        }
        return sb.Append("\r\n").ToString();
    }
}
