using Microsoft.Extensions.Options;

namespace Tollgate.Features.Pricing;

/// <summary>Configuration section <c>Tollgate:Pricing</c>.</summary>
public sealed record PricingOptions
{
    public const string Section = "Tollgate:Pricing";

    /// <summary>User price = provider cost × markup for the default plan; default 2.0; must be ≥ 1.</summary>
    public decimal DefaultMarkup { get; init; } = 2.0m;

    /// <summary>
    /// Where <c>tollgate catalog import</c> writes an imported catalog; when the file exists it replaces the embedded
    /// catalog at start-up. Relative paths are relative to the working directory, like the default SQLite file.
    /// </summary>
    public string CatalogFile { get; init; } = "./data/genai-prices.json";

    /// <summary>
    /// How often (seconds) each process checks the database for price overrides changed through the admin API by
    /// another process; 1–3600, default 5. The process that makes a change applies it at once.
    /// </summary>
    public int OverridesReloadSeconds { get; init; } = 5;

    /// <summary>Per-provider settings by provider id, e.g. <c>Providers:openai:Markup</c>.</summary>
    public Dictionary<string, ProviderPricingOptions> Providers { get; init; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Models to add or override by Tollgate id <c>provider/model</c>: a private fine-tune, a negotiated price, a
    /// per-model markup or a fixed list price.
    /// </summary>
    public Dictionary<string, ModelPricingOptions> Models { get; init; } = new(StringComparer.Ordinal);
}

public sealed record ProviderPricingOptions
{
    /// <summary>Markup for every model of this provider (≥ 1), unless the model sets its own.</summary>
    public decimal? Markup { get; init; }
}

/// <summary>Rates in USD per million tokens (per thousand requests for <see cref="RequestsKcount"/>).</summary>
public record RateOptions
{
    public decimal? InputMtok { get; init; }
    public decimal? OutputMtok { get; init; }
    public decimal? CacheReadMtok { get; init; }
    public decimal? CacheWriteMtok { get; init; }
    /// <summary>Reasoning tokens priced apart from output; when absent they are billed as output.</summary>
    public decimal? ReasoningMtok { get; init; }
    public decimal? RequestsKcount { get; init; }

    internal bool HasAny => InputMtok is not null || OutputMtok is not null || CacheReadMtok is not null
                            || CacheWriteMtok is not null || ReasoningMtok is not null || RequestsKcount is not null;

    internal PriceSet ToPriceSet() => new()
    {
        InputMtok = InputMtok is { } i ? new TieredRate(i) : null,
        OutputMtok = OutputMtok is { } o ? new TieredRate(o) : null,
        CacheReadMtok = CacheReadMtok is { } cr ? new TieredRate(cr) : null,
        CacheWriteMtok = CacheWriteMtok is { } cw ? new TieredRate(cw) : null,
        ReasoningMtok = ReasoningMtok is { } r ? new TieredRate(r) : null,
        RequestsKcount = RequestsKcount,
    };

    internal IEnumerable<(string Name, decimal? Value)> All() =>
    [
        (nameof(InputMtok), InputMtok), (nameof(OutputMtok), OutputMtok), (nameof(CacheReadMtok), CacheReadMtok),
        (nameof(CacheWriteMtok), CacheWriteMtok), (nameof(ReasoningMtok), ReasoningMtok), (nameof(RequestsKcount), RequestsKcount),
    ];
}

/// <summary>
/// One configured model. Rates given here are the provider cost: for a model not in the catalog they define it
/// (input and output required); for a catalog model they replace its prices, from <see cref="EffectiveFrom"/> if set
/// (earlier calls keep the catalog prices), otherwise always.
/// </summary>
public sealed record ModelPricingOptions : RateOptions
{
    public string? Name { get; init; }
    public long? ContextWindow { get; init; }
    /// <summary>UTC date from which the configured rates apply (midnight UTC).</summary>
    public DateOnly? EffectiveFrom { get; init; }
    /// <summary>Markup for this model (≥ 1); overrides the provider's and the default.</summary>
    public decimal? Markup { get; init; }
    /// <summary>A fixed user price instead of a markup; each rate must be ≥ the provider's.</summary>
    public RateOptions? ListPrice { get; init; }

    /// <summary>The model's own rates (the provider cost), without its other settings.</summary>
    internal RateOptions Rates => this;
}

/// <summary>Reports every pricing configuration error at once, so one start-up attempt shows them all.</summary>
internal sealed class PricingOptionsValidator : IValidateOptions<PricingOptions>
{
    public const decimal MaxMarkup = 1000m;
    public const decimal MaxRatePerMtok = 1_000_000m;

    public ValidateOptionsResult Validate(string? name, PricingOptions o)
    {
        var errors = new List<string>();
        CheckMarkup(errors, "Tollgate:Pricing:DefaultMarkup", o.DefaultMarkup);
        if (string.IsNullOrWhiteSpace(o.CatalogFile)) errors.Add("Tollgate:Pricing:CatalogFile must not be empty.");
        if (o.OverridesReloadSeconds is < 1 or > 3600) errors.Add("Tollgate:Pricing:OverridesReloadSeconds must be 1–3600.");
        foreach (var (id, p) in o.Providers)
            if (p.Markup is { } m) CheckMarkup(errors, $"Tollgate:Pricing:Providers:{id}:Markup", m);
        foreach (var (id, m) in o.Models) ValidateModel(errors, $"Tollgate:Pricing:Models:{id}", id, m);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>The checks of one model entry; the admin API's price overrides go through the same ones.</summary>
    /// <param name="at">How messages name the entry, e.g. <c>Tollgate:Pricing:Models:openai/gpt-4o</c>.</param>
    internal static void ValidateModel(List<string> errors, string at, string id, ModelPricingOptions m)
    {
        var slash = id.IndexOf('/');
        if (slash <= 0 || slash == id.Length - 1 || id.Any(char.IsWhiteSpace))
            errors.Add($"{at}: model ids are 'provider/model' without spaces.");
        if (m.Markup is { } mk) CheckMarkup(errors, at + ":Markup", mk);
        if (m.Markup is not null && m.ListPrice is not null)
            errors.Add($"{at}: set either Markup or ListPrice, not both.");
        foreach (var (rate, value) in m.Rates.All()) CheckRate(errors, $"{at}:{rate}", value);
        if (m.ListPrice is { } lp)
        {
            if (!lp.HasAny) errors.Add($"{at}:ListPrice has no rates.");
            foreach (var (rate, value) in lp.All()) CheckRate(errors, $"{at}:ListPrice:{rate}", value);
        }
        if (m.ContextWindow is < 1) errors.Add($"{at}:ContextWindow must be positive.");
    }

    private static void CheckMarkup(List<string> errors, string key, decimal markup)
    {
        if (markup < 1m)
            errors.Add($"{key} is {markup}: a markup below 1 would charge users less than the provider cost; use 1 or more.");
        else if (markup > MaxMarkup) errors.Add($"{key} is {markup}: at most {MaxMarkup}.");
    }

    private static void CheckRate(List<string> errors, string key, decimal? value)
    {
        if (value is < 0 or > MaxRatePerMtok) errors.Add($"{key} must be 0–{MaxRatePerMtok} USD.");
    }
}
