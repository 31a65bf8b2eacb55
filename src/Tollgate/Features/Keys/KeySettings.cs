using System.Text.Json;

namespace Tollgate.Features.Keys;

/// <summary>
/// What one API key may do, beyond its account's limits: the models it may call (globs over <c>provider/model</c> ids:
/// <c>*</c> matches any run of characters, so <c>openai/*</c> is every OpenAI model), when it expires, its own rate
/// limits (null: the gateway's per-key defaults) and free-form metadata. Null everywhere means "no restriction".
/// </summary>
public sealed record KeySettings
{
    public static readonly KeySettings None = new();
    public const int MaxAllowedModels = 100;
    public const int MaxMetadataBytes = 4_096;

    public IReadOnlyList<string>? AllowedModels { get; init; }
    public DateTimeOffset? ExpiresAt { get; init; }
    public int? RequestsPerMinute { get; init; }
    public long? TokensPerMinute { get; init; }
    public int? ConcurrentRequests { get; init; }
    /// <summary>Compact JSON object text.</summary>
    public string? Metadata { get; init; }
    /// <summary>The end customer every call with this key is charged to (see <c>Budgets.EndCustomers</c>); null = named per request.</summary>
    public string? CustomerId { get; init; }

    public bool HasRateLimits => RequestsPerMinute is not null || TokensPerMinute is not null || ConcurrentRequests is not null;

    /// <summary>True when the key may call <paramref name="modelId"/> (<c>provider/model</c>).</summary>
    public bool AllowsModel(string modelId)
    {
        if (AllowedModels is null) return true;
        foreach (var pattern in AllowedModels)
            if (Glob(pattern, modelId)) return true;
        return false;
    }

    /// <summary>Case-sensitive glob where <c>*</c> matches any run (including '/'); no other special characters.</summary>
    internal static bool Glob(ReadOnlySpan<char> pattern, ReadOnlySpan<char> text)
    {
        int p = 0, t = 0, star = -1, mark = 0;
        while (t < text.Length)
        {
            if (p < pattern.Length && pattern[p] == '*') { star = p++; mark = t; }
            else if (p < pattern.Length && pattern[p] == text[t]) { p++; t++; }
            else if (star >= 0) { p = star + 1; t = ++mark; }
            else return false;
        }
        while (p < pattern.Length && pattern[p] == '*') p++;
        return p == pattern.Length;
    }

    /// <summary>The first problem with these settings as input (field, message), or null.</summary>
    public (string Field, string Message)? Validate(DateTimeOffset now)
    {
        if (AllowedModels is { } models)
        {
            if (models.Count > MaxAllowedModels) return ("allowed_models", $"at most {MaxAllowedModels} patterns");
            foreach (var m in models)
                if (string.IsNullOrWhiteSpace(m) || m.Length > 300 || m.Any(char.IsWhiteSpace))
                    return ("allowed_models", "each pattern is a 'provider/model' id or glob ('openai/*') without spaces");
        }
        if (ExpiresAt is { } e && e <= now) return ("expires_at", "must be in the future");
        if (RequestsPerMinute is < 1) return ("requests_per_minute", "must be positive (omit it for the default)");
        if (TokensPerMinute is < 1) return ("tokens_per_minute", "must be positive (omit it for the default)");
        if (ConcurrentRequests is < 1) return ("concurrent_requests", "must be positive (omit it for the default)");
        if (Metadata is { } meta && System.Text.Encoding.UTF8.GetByteCount(meta) > MaxMetadataBytes) return ("metadata", $"at most {MaxMetadataBytes} bytes");
        if (CustomerId is { } customer && !Budgets.EndCustomerIds.IsValid(customer)) return ("customer_id", Budgets.EndCustomerIds.Rule);
        return null;
    }

    internal static string? ModelsJson(IReadOnlyList<string>? models) => models is null ? null : JsonSerializer.Serialize(models);

    internal static IReadOnlyList<string>? ParseModels(string? json) => json is null ? null : JsonSerializer.Deserialize<string[]>(json);
}
