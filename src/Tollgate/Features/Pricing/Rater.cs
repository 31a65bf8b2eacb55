using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Pricing;

/// <summary>
/// Token usage of one call, in Tollgate's shape (the genai-prices convention):
/// <list type="bullet">
/// <item><see cref="InputTokens"/> is the <b>total</b> prompt, cache reads and cache writes included (OpenAI's
/// <c>prompt_tokens</c>; for Anthropic, <c>input_tokens + cache_read_input_tokens + cache_creation_input_tokens</c>).
/// The uncached part, <c>InputTokens − CacheReadTokens − CacheWriteTokens</c>, pays the input rate; the cache parts
/// pay the cache rates. It also picks the context-length tier.</item>
/// <item><see cref="OutputTokens"/> is the total completion, reasoning included (OpenAI's <c>completion_tokens</c>);
/// <see cref="ReasoningTokens"/> is the part of it that was reasoning, billed as output unless the model has a
/// reasoning rate.</item>
/// </list>
/// All counts ≥ 0; <c>CacheReadTokens + CacheWriteTokens ≤ InputTokens</c>; <c>ReasoningTokens ≤ OutputTokens</c>.
/// </summary>
public readonly record struct TokenUsage(long InputTokens, long OutputTokens, long CacheReadTokens = 0, long CacheWriteTokens = 0, long ReasoningTokens = 0)
{
    /// <summary>Largest count accepted in any field.</summary>
    public const long MaxTokens = 10_000_000;

    /// <summary>Null if valid, otherwise the offending field and why.</summary>
    public (string Field, string Message)? Validate()
    {
        if (InputTokens is < 0 or > MaxTokens) return ("input_tokens", $"must be 0–{MaxTokens:N0}");
        if (OutputTokens is < 0 or > MaxTokens) return ("output_tokens", $"must be 0–{MaxTokens:N0}");
        if (CacheReadTokens is < 0 or > MaxTokens) return ("cache_read_tokens", $"must be 0–{MaxTokens:N0}");
        if (CacheWriteTokens is < 0 or > MaxTokens) return ("cache_write_tokens", $"must be 0–{MaxTokens:N0}");
        if (ReasoningTokens is < 0 or > MaxTokens) return ("reasoning_tokens", $"must be 0–{MaxTokens:N0}");
        if (CacheReadTokens + CacheWriteTokens > InputTokens)
            return ("input_tokens", "input_tokens is the total prompt and must include cache_read_tokens and cache_write_tokens");
        if (ReasoningTokens > OutputTokens) return ("output_tokens", "output_tokens is the total completion and must include reasoning_tokens");
        return null;
    }
}

/// <summary>Which rate a <see cref="PriceLine"/> applied.</summary>
public enum LineKind { Input, CacheRead, CacheWrite, Output, Reasoning, Request }

/// <summary>One priced part of a call: <paramref name="Units"/> tokens (requests for <see cref="LineKind.Request"/>) at
/// <paramref name="Rate"/> USD per million tokens (per thousand requests), costing <paramref name="CostUsd"/> exactly.</summary>
public readonly record struct PriceLine(LineKind Kind, long Units, decimal Rate, decimal CostUsd);

/// <summary>
/// The result of rating one call. <see cref="ProviderCostUsd"/> is exact (unrounded); both micro-USD amounts are
/// rounded up, so <c>UserPriceMicros ≥ ProviderCostMicros ≥ ProviderCostUsd × 10⁶</c>.
/// </summary>
public readonly record struct Rating(
    PriceLine Input, PriceLine CacheRead, PriceLine CacheWrite, PriceLine Output, PriceLine Reasoning, PriceLine Request,
    decimal ProviderCostUsd, long ProviderCostMicros, decimal UserPriceUsd, long UserPriceMicros,
    int PeriodIndex, int Tier)
{
    /// <summary>The non-empty lines, for display (allocates; not for the hot path).</summary>
    public IEnumerable<PriceLine> Lines
    {
        get
        {
            foreach (var l in (PriceLine[])[Input, CacheRead, CacheWrite, Output, Reasoning, Request])
                if (l.Units != 0) yield return l;
        }
    }
}

/// <summary>A catalog model compiled for rating: its prices plus the user pricing (markup or fixed list price).</summary>
internal sealed class PricedModel(CatalogModel model, decimal markup, PriceSet? listPrice, PriceSource origin = PriceSource.Catalog, bool markupIsDefault = false)
{
    /// <summary>The markup is the configured default (no model or provider markup): a plan's markup replaces it.</summary>
    public bool MarkupIsDefault { get; } = markupIsDefault;

    /// <summary>Whose prices these are: the catalog's, or overridden by configuration or the admin API.</summary>
    public PriceSource Origin { get; } = origin;
    public CatalogModel Model { get; } = model;
    public string Key { get; } = model.Key;
    /// <summary>User price = provider cost × Markup, unless <see cref="ListPrice"/> is set.</summary>
    public decimal Markup { get; } = markup;
    /// <summary>Fixed user rates; the user price is never below the provider cost even so.</summary>
    public PriceSet? ListPrice { get; } = listPrice;
}

/// <summary>
/// Usage → provider cost (exact <see cref="decimal"/>) and user price (micro-USD, rounded up). A pure function: no
/// I/O, no LINQ, no allocation per call; everything it reads was built when the catalog was loaded.
/// <list type="number">
/// <item>Price period: the last of the model's periods whose constraint holds at <c>at</c>, else the first.</item>
/// <item>Tier: per rate, the highest tier whose start is below the total input tokens (cliff: all tokens pay it).</item>
/// <item>Lines: uncached input at the input rate; cache reads/writes at their rates, or at the input rate when the
/// model has none (never under-charge); output (minus reasoning, when reasoning has its own rate) at the output
/// rate; the per-request fee once. A missing rate with tokens against it costs 0 only if the input rate is missing too.</item>
/// <item>User price: provider cost × markup, or the list price but never less than the provider cost; rounded up
/// to whole micro-USD.</item>
/// </list>
/// </summary>
internal static class Rater
{
    private const decimal Million = 1_000_000m;

    /// <param name="planMarkup">The caller's plan's markup, if the plan sets one: it applies where the model and its
    /// provider have no markup of their own (model markup → provider markup → plan markup → default markup).</param>
    public static Rating Rate(PricedModel model, in TokenUsage usage, DateTimeOffset at, decimal? planMarkup = null)
    {
        var period = model.Model.PeriodAt(at, out var periodIndex);
        var cost = Cost(period.Prices, usage, out var input, out var cacheRead, out var cacheWrite, out var output, out var reasoning, out var request, out var tier);
        decimal user;
        if (model.ListPrice is { } list)
        {
            var listCost = Cost(list, usage, out _, out _, out _, out _, out _, out _, out _);
            user = listCost > cost ? listCost : cost;
        }
        else
        {
            user = cost * (planMarkup is { } pm && model.MarkupIsDefault ? pm : model.Markup);
        }
        return new Rating(input, cacheRead, cacheWrite, output, reasoning, request,
            cost, Money.FromUsd(cost, Rounding.Up).Micros, user, Money.FromUsd(user, Rounding.Up).Micros, periodIndex, tier);
    }

    private static decimal Cost(PriceSet p, in TokenUsage u, out PriceLine input, out PriceLine cacheRead, out PriceLine cacheWrite,
        out PriceLine output, out PriceLine reasoning, out PriceLine request, out int tier)
    {
        var total = u.InputTokens;
        tier = -1;
        var uncached = u.InputTokens - u.CacheReadTokens - u.CacheWriteTokens;
        input = Line(LineKind.Input, p.InputMtok, null, uncached, total, ref tier);
        cacheRead = Line(LineKind.CacheRead, p.CacheReadMtok, p.InputMtok, u.CacheReadTokens, total, ref tier);
        cacheWrite = Line(LineKind.CacheWrite, p.CacheWriteMtok, p.InputMtok, u.CacheWriteTokens, total, ref tier);
        if (p.ReasoningMtok is not null)
        {
            output = Line(LineKind.Output, p.OutputMtok, null, u.OutputTokens - u.ReasoningTokens, total, ref tier);
            reasoning = Line(LineKind.Reasoning, p.ReasoningMtok, null, u.ReasoningTokens, total, ref tier);
        }
        else
        {
            output = Line(LineKind.Output, p.OutputMtok, null, u.OutputTokens, total, ref tier);
            reasoning = default;
        }
        request = p.RequestsKcount is { } perK ? new PriceLine(LineKind.Request, 1, perK, perK / 1000m) : default;
        return input.CostUsd + cacheRead.CostUsd + cacheWrite.CostUsd + output.CostUsd + reasoning.CostUsd + request.CostUsd;
    }

    private static PriceLine Line(LineKind kind, TieredRate? rate, TieredRate? fallback, long tokens, long totalInput, ref int tier)
    {
        var r = rate ?? fallback;
        if (r is null || tokens == 0) return new PriceLine(kind, tokens, 0m, 0m);
        var t = r.TierFor(totalInput);
        if (t > tier) tier = t;
        var perMtok = r.PerMtok(t);
        // tokens ≤ 10^7 and rates ≤ 10^6 with ≤ 28 significant digits: the product and the division by 10^6 are exact.
        return new PriceLine(kind, tokens, perMtok, perMtok * tokens / Million);
    }
}
