using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Analytics;

/// <summary>A metadata tag: records whose metadata object has a top-level member <see cref="Key"/> whose value is the string <see cref="Value"/>.</summary>
public sealed record UsageTag(string Key, string Value);

/// <summary>
/// Which usage records a listing, summary or export covers. Times are Unix micros, <see cref="FromMicros"/> inclusive,
/// <see cref="ToMicros"/> exclusive. Null means "any". <see cref="AccountId"/> null only in operator reports.
/// </summary>
public sealed record UsageFilter(
    string? AccountId, long? FromMicros, long? ToMicros, string? Model, string? Provider, string? KeyId, string? CustomerId,
    UsageTag? Tag, string? BillingStatus)
{
    /// <summary>True if only rollup dimensions are filtered (no tag), so rollups can answer.</summary>
    public bool RollupsCanAnswer => Tag is null;
}

/// <summary>Query-string parsing shared by the usage, ledger and report routes: every bad value is a 400 naming its parameter.</summary>
internal static partial class AnalyticsQuery
{
    public const int MaxRangeDays = 366;
    public const long MicrosPerDay = 86_400_000_000;
    public static readonly string[] BillingStatuses = ["billed", "internal", "byok", "needs_review"];

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?)?$")]
    private static partial Regex IsoDate();

    [GeneratedRegex(@"^[A-Za-z0-9_.\-]{1,64}$")]
    private static partial Regex TagKey();

    /// <summary>
    /// An ISO 8601 date (<c>2026-01-31</c>, midnight UTC) or date-time (<c>2026-01-31T12:00:00Z</c>; no offset means UTC).
    /// </summary>
    public static bool TryParseInstant(string text, out DateTimeOffset value)
    {
        value = default;
        return IsoDate().IsMatch(text)
            && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out value);
    }

    private static string? One(IQueryCollection q, string name) => q.TryGetValue(name, out var v) && v.Count > 0 && !string.IsNullOrEmpty(v[^1]) ? v[^1] : null;

    /// <summary>
    /// Reads from, to, model, provider, key_id, customer_id, tag, billing_status. <paramref name="requireRange"/> fills a
    /// missing range (to = now, from = to − 30 days) as summaries need one; otherwise a missing bound is open.
    /// </summary>
    public static (UsageFilter? Filter, ProblemHttpResult? Problem) ParseFilter(IQueryCollection q, string? accountId, DateTimeOffset now, bool requireRange)
    {
        long? from = null, to = null;
        foreach (var (name, set) in new (string, Action<long>)[] { ("from", v => from = v), ("to", v => to = v) })
        {
            if (One(q, name) is not { } text) continue;
            if (!TryParseInstant(text, out var at))
                return (null, Problems.BadRequest("invalid_date", $"'{name}' must be an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z.", name));
            set(UnixMicros.From(at));
        }
        if (requireRange)
        {
            to ??= UnixMicros.From(now);
            from ??= to - 30 * MicrosPerDay;
        }
        if (from is { } f && to is { } t)
        {
            if (f >= t) return (null, Problems.BadRequest("invalid_range", "'from' must be before 'to'.", "from"));
            if (t - f > MaxRangeDays * MicrosPerDay)
                return (null, Problems.BadRequest("range_too_large", $"'from'–'to' may span at most {MaxRangeDays} days.", "to"));
        }
        var status = One(q, "billing_status");
        if (status is not null && !BillingStatuses.Contains(status))
            return (null, Problems.BadRequest("invalid_request", $"'billing_status' must be one of {string.Join(", ", BillingStatuses)}.", "billing_status"));
        UsageTag? tag = null;
        if (One(q, "tag") is { } tagText)
        {
            var colon = tagText.IndexOf(':');
            if (colon <= 0 || !TagKey().IsMatch(tagText[..colon]) || tagText.Length - colon - 1 is < 1 or > 256)
                return (null, Problems.BadRequest("invalid_tag", "'tag' must be key:value (key 1–64 of letters, digits and _.-; value 1–256 characters), e.g. team:alpha.", "tag"));
            tag = new UsageTag(tagText[..colon], tagText[(colon + 1)..]);
        }
        foreach (var name in new[] { "model", "provider", "key_id", "customer_id" })
            if (One(q, name) is { Length: > 256 })
                return (null, Problems.BadRequest("invalid_request", $"'{name}' is longer than 256 characters.", name));
        return (new UsageFilter(accountId, from, to, One(q, "model"), One(q, "provider"), One(q, "key_id"), One(q, "customer_id"), tag, status), null);
    }

    /// <summary><c>limit</c>: 1–<paramref name="max"/>, default <paramref name="fallback"/>.</summary>
    public static (int Limit, ProblemHttpResult? Problem) ParseLimit(IQueryCollection q, int fallback, int max)
    {
        if (One(q, "limit") is not { } text) return (fallback, null);
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1 || n > max)
            return (0, Problems.BadRequest("invalid_limit", $"'limit' must be an integer 1–{max}.", "limit"));
        return (n, null);
    }

    public static string? Text(IQueryCollection q, string name) => One(q, name);

    public static bool IsValidTagKey(string key) => TagKey().IsMatch(key);
}
