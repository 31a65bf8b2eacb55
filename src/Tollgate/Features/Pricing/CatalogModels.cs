using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Tollgate.Features.Pricing;

/// <summary>
/// A name-matching rule of the genai-prices dataset: <c>equals</c>, <c>starts_with</c>, <c>ends_with</c>,
/// <c>contains</c>, <c>regex</c> (search, not full match), <c>or</c>, <c>and</c>. Comparisons are ordinal.
/// </summary>
internal abstract record MatchRule
{
    public abstract bool IsMatch(string text);

    public sealed record EqualsRule(string Value) : MatchRule
    {
        public override bool IsMatch(string text) => string.Equals(text, Value, StringComparison.Ordinal);
    }

    public sealed record StartsWithRule(string Value) : MatchRule
    {
        public override bool IsMatch(string text) => text.StartsWith(Value, StringComparison.Ordinal);
    }

    public sealed record EndsWithRule(string Value) : MatchRule
    {
        public override bool IsMatch(string text) => text.EndsWith(Value, StringComparison.Ordinal);
    }

    public sealed record ContainsRule(string Value) : MatchRule
    {
        public override bool IsMatch(string text) => text.Contains(Value, StringComparison.Ordinal);
    }

    public sealed record RegexRule(string Pattern) : MatchRule
    {
        // A catalog is operator-supplied data; the timeout keeps a pathological pattern from hanging a request.
        private readonly Regex _regex = new(Pattern, RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(50));
        public override bool IsMatch(string text)
        {
            try { return _regex.IsMatch(text); }
            catch (RegexMatchTimeoutException) { return false; }
        }
    }

    public sealed record AnyRule(MatchRule[] Rules) : MatchRule
    {
        public override bool IsMatch(string text)
        {
            foreach (var r in Rules) if (r.IsMatch(text)) return true;
            return false;
        }
    }

    public sealed record AllRule(MatchRule[] Rules) : MatchRule
    {
        public override bool IsMatch(string text)
        {
            foreach (var r in Rules) if (!r.IsMatch(text)) return false;
            return true;
        }
    }
}

/// <summary>
/// A price in USD per million tokens, optionally tiered by context length: the genai-prices "cliff" model, where a
/// call whose <b>total input tokens</b> (cache reads and writes included) exceed a tier's start pays that tier's rate
/// on <b>all</b> tokens of this kind (199,999 or 200,000 input tokens → base; 200,001 → the 200k tier).
/// </summary>
internal sealed class TieredRate
{
    public TieredRate(decimal basePerMtok, long[]? tierStarts = null, decimal[]? tierPerMtok = null)
    {
        Base = basePerMtok;
        TierStarts = tierStarts ?? [];
        TierPerMtok = tierPerMtok ?? [];
        if (TierStarts.Length != TierPerMtok.Length) throw new ArgumentException("Tier starts and prices differ in length.");
        for (var i = 1; i < TierStarts.Length; i++)
            if (TierStarts[i] <= TierStarts[i - 1]) throw new ArgumentException("Tier starts must increase.");
    }

    /// <summary>USD per million tokens below the first tier; ≥ 0.</summary>
    public decimal Base { get; }
    /// <summary>Input-token thresholds, ascending; a tier applies when total input tokens exceed its start.</summary>
    public long[] TierStarts { get; }
    public decimal[] TierPerMtok { get; }

    public bool IsTiered => TierStarts.Length > 0;

    /// <summary>Index of the tier in force for this many total input tokens, or -1 for the base rate.</summary>
    public int TierFor(long totalInputTokens)
    {
        for (var i = TierStarts.Length - 1; i >= 0; i--)
            if (totalInputTokens > TierStarts[i]) return i;
        return -1;
    }

    public decimal PerMtok(int tier) => tier < 0 ? Base : TierPerMtok[tier];

    /// <summary>The lowest rate in any tier, for checks that must hold at every context length.</summary>
    public decimal Min
    {
        get
        {
            var min = Base;
            foreach (var p in TierPerMtok) if (p < min) min = p;
            return min;
        }
    }

    public override string ToString()
    {
        if (!IsTiered) return Fmt(Base);
        var sb = new StringBuilder(Fmt(Base));
        for (var i = 0; i < TierStarts.Length; i++) sb.Append(CultureInfo.InvariantCulture, $" (>{TierStarts[i]} input: {Fmt(TierPerMtok[i])})");
        return sb.ToString();
    }

    internal static string Fmt(decimal d) => d.ToString("0.############################", CultureInfo.InvariantCulture);
}

/// <summary>One set of rates. Absent (null) rates follow the rules in <see cref="Rater"/>.</summary>
internal sealed record PriceSet
{
    /// <summary>Uncached input tokens, USD per million.</summary>
    public TieredRate? InputMtok { get; init; }
    public TieredRate? OutputMtok { get; init; }
    public TieredRate? CacheReadMtok { get; init; }
    public TieredRate? CacheWriteMtok { get; init; }
    /// <summary>Reasoning tokens when priced apart from output (configuration only; the dataset has no such rate).</summary>
    public TieredRate? ReasoningMtok { get; init; }
    /// <summary>USD per thousand requests (a per-request fee), or null.</summary>
    public decimal? RequestsKcount { get; init; }

    /// <summary>A canonical one-line description; two sets with equal descriptions charge the same.</summary>
    public string Describe()
    {
        var parts = new List<string>();
        if (InputMtok is not null) parts.Add($"input {InputMtok}");
        if (CacheReadMtok is not null) parts.Add($"cache_read {CacheReadMtok}");
        if (CacheWriteMtok is not null) parts.Add($"cache_write {CacheWriteMtok}");
        if (OutputMtok is not null) parts.Add($"output {OutputMtok}");
        if (ReasoningMtok is not null) parts.Add($"reasoning {ReasoningMtok}");
        if (RequestsKcount is { } r) parts.Add($"requests {TieredRate.Fmt(r)}/1k");
        return parts.Count == 0 ? "free" : string.Join(", ", parts) + " USD/Mtok";
    }
}

/// <summary>When a <see cref="PricePeriod"/> applies.</summary>
internal abstract record PriceConstraint
{
    public abstract bool IsActive(DateTimeOffset at);

    /// <summary>From midnight UTC of <see cref="From"/> onwards (the dataset's <c>start_date</c>).</summary>
    public sealed record StartDate(DateOnly From) : PriceConstraint
    {
        public override bool IsActive(DateTimeOffset at) => DateOnly.FromDateTime(at.UtcDateTime) >= From;
        public override string ToString() => $"from {From:yyyy-MM-dd}";
    }

    /// <summary>Daily UTC window [Start, End) (off-peak prices); a window with End ≤ Start wraps past midnight.</summary>
    public sealed record TimeOfDay(TimeOnly Start, TimeOnly End) : PriceConstraint
    {
        public override bool IsActive(DateTimeOffset at)
        {
            var t = TimeOnly.FromTimeSpan(at.UtcDateTime.TimeOfDay);
            return Start < End ? t >= Start && t < End : t >= Start || t < End;
        }
        public override string ToString() => $"daily {Start:HH:mm:ss}–{End:HH:mm:ss} UTC";
    }
}

/// <summary>Rates with the condition under which they apply; null constraint = always.</summary>
internal sealed record PricePeriod(PriceConstraint? Constraint, PriceSet Prices);

/// <summary>A model of one provider in the catalog.</summary>
internal sealed record CatalogModel
{
    public required string ProviderId { get; init; }
    /// <summary>The dataset's model id (may itself contain '/', e.g. OpenRouter's <c>anthropic/claude-sonnet-5</c>).</summary>
    public required string Id { get; init; }
    public string? Name { get; init; }
    public required MatchRule Match { get; init; }
    public long? ContextWindow { get; init; }
    public bool Deprecated { get; init; }
    /// <summary>
    /// Tried last to first; the last whose constraint holds at the call's timestamp wins; if none holds, the first.
    /// Never empty.
    /// </summary>
    public required PricePeriod[] Periods { get; init; }

    /// <summary>Tollgate's model id: <c>provider/model</c>.</summary>
    public string Key => ProviderId + "/" + Id;

    public PricePeriod PeriodAt(DateTimeOffset at, out int index)
    {
        for (var i = Periods.Length - 1; i >= 0; i--)
        {
            if (Periods[i].Constraint is not { } c || c.IsActive(at)) { index = i; return Periods[i]; }
        }
        index = 0;
        return Periods[0];
    }

    public string DescribePrices()
    {
        if (Periods.Length == 1 && Periods[0].Constraint is null) return Periods[0].Prices.Describe();
        var parts = new string[Periods.Length];
        for (var i = 0; i < Periods.Length; i++)
            parts[i] = $"[{Periods[i].Constraint?.ToString() ?? "default"}] {Periods[i].Prices.Describe()}";
        return string.Join("; ", parts);
    }
}

/// <summary>An inference provider and its models, in catalog order (the first matching model wins).</summary>
internal sealed record CatalogProvider
{
    public required string Id { get; init; }
    public string? Name { get; init; }
    public MatchRule? ProviderMatch { get; init; }
    /// <summary>Providers whose prices apply when this one lists no matching model (Azure → OpenAI).</summary>
    public string[] FallbackProviders { get; init; } = [];
    public required List<CatalogModel> Models { get; init; }
}

/// <summary>A parsed catalog: providers in dataset order.</summary>
internal sealed record PriceCatalog(IReadOnlyList<CatalogProvider> Providers, string Source)
{
    public IEnumerable<CatalogModel> AllModels => Providers.SelectMany(p => p.Models);
}
