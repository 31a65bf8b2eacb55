using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Pricing;

/// <summary>Outcome of resolving a model name.</summary>
internal enum ResolveOutcome { Found, NotFound, Ambiguous }

internal sealed record ModelResolution(ResolveOutcome Outcome, PricedModel? Model, IReadOnlyList<string> Candidates)
{
    public static readonly ModelResolution None = new(ResolveOutcome.NotFound, null, []);
}

/// <summary>Where a model's prices come from, by precedence: admin API (database) over configuration over catalog.</summary>
public enum PriceSource { Catalog, Config, Admin }

/// <summary>
/// The priced models in force, as seen by every caller: an immutable <see cref="PricingSnapshot"/> swapped atomically
/// when admin price overrides change (<see cref="PriceOverrideService"/>). Readers take one volatile read per call,
/// so a request sees one consistent snapshot per <see cref="Resolve"/>, and the rater never sees a half-built one.
/// </summary>
internal sealed class PricingCatalog
{
    private volatile PricingSnapshot _current;

    public PricingCatalog(PriceCatalog catalog, PricingOptions options)
    {
        Base = catalog;
        Options = options;
        // Configuration errors (without any admin override) stop start-up here.
        _current = new PricingSnapshot(catalog, options);
    }

    /// <summary>The catalog without configuration or overrides (the imported file, else the embedded copy).</summary>
    public PriceCatalog Base { get; }
    public PricingOptions Options { get; }

    /// <summary>The snapshot in force; take it once when several reads must agree.</summary>
    public PricingSnapshot Current => _current;

    public string Source => _current.Source;
    public IReadOnlyList<PricedModel> Models => _current.Models;
    public ModelResolution Resolve(string name) => _current.Resolve(name);

    /// <summary>A snapshot with these admin overrides; throws <see cref="OptionsValidationException"/> listing every error.</summary>
    public PricingSnapshot Build(IReadOnlyDictionary<string, ModelPricingOptions> adminOverrides) => new(Base, Options, adminOverrides);

    /// <summary>Makes <paramref name="snapshot"/> the one in force (atomic reference swap).</summary>
    public void Swap(PricingSnapshot snapshot) => _current = snapshot;

    /// <summary>Loads the catalog in force: <see cref="PricingOptions.CatalogFile"/> if it exists, else the embedded one.</summary>
    public static PriceCatalog LoadBase(PricingOptions options)
    {
        if (!File.Exists(options.CatalogFile)) return GenAiPricesParser.LoadEmbedded();
        using var stream = File.OpenRead(options.CatalogFile);
        return GenAiPricesParser.Parse(stream, Path.GetFullPath(options.CatalogFile));
    }

    public static PricingCatalog Create(IOptions<PricingOptions> options) => new(LoadBase(options.Value), options.Value);
}

/// <summary>
/// The priced models of one moment: the catalog (the imported file when present, else the embedded genai-prices copy)
/// with the configured and admin additions, overrides and markups applied. Immutable.
/// <para>Model names resolve as follows. <c>provider/model</c>: the provider by id, then its model by exact id, then
/// the first of its models whose match rule accepts <c>model</c>, then the same in its fallback providers (Azure →
/// OpenAI). A bare name: every provider's first matching model; found when exactly one provider matches, ambiguous
/// when several do.</para>
/// </summary>
internal sealed class PricingSnapshot
{
    private const int MaxCachedNames = 10_000;
    private readonly Dictionary<string, PricedModel> _byKey = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (CatalogProvider Provider, PricedModel[] Models)> _providers = new(StringComparer.Ordinal);
    private readonly List<(CatalogProvider Provider, PricedModel[] Models)> _providerOrder = [];
    private readonly ConcurrentDictionary<string, ModelResolution> _resolved = new(StringComparer.Ordinal);

    public PricingSnapshot(PriceCatalog catalog, PricingOptions options, IReadOnlyDictionary<string, ModelPricingOptions>? adminOverrides = null)
    {
        Source = catalog.Source;
        adminOverrides ??= new Dictionary<string, ModelPricingOptions>();
        AdminOverrides = adminOverrides;
        // DB over configuration over catalog: an admin override replaces the configured entry of its model as a whole.
        var models = new Dictionary<string, ModelPricingOptions>(options.Models, StringComparer.Ordinal);
        foreach (var (key, o) in adminOverrides) models[key] = o;
        string Label(string key) => adminOverrides.ContainsKey(key) ? $"Price override {key}" : $"{PricingOptions.Section}:Models:{key}";
        PriceSource Origin(string key) => adminOverrides.ContainsKey(key) ? PriceSource.Admin : options.Models.ContainsKey(key) ? PriceSource.Config : PriceSource.Catalog;
        var providers = catalog.Providers.Select(p => p with { Models = [.. p.Models] }).ToList();
        ApplyConfiguredModels(providers, models, Label);
        var errors = new List<string>();
        foreach (var p in providers)
        {
            var priced = new PricedModel[p.Models.Count];
            for (var i = 0; i < priced.Length; i++)
            {
                var m = p.Models[i];
                models.TryGetValue(m.Key, out var cfg);
                var own = cfg?.Markup ?? (options.Providers.TryGetValue(p.Id, out var po) ? po.Markup : null);
                var list = cfg?.ListPrice?.ToPriceSet();
                if (list is not null) CheckListPrice(m, list, Label(m.Key), errors);
                priced[i] = new PricedModel(m, own ?? options.DefaultMarkup, list, Origin(m.Key), markupIsDefault: own is null && list is null);
                _byKey.TryAdd(m.Key, priced[i]);
            }
            _providers[p.Id] = (p, priced);
            _providerOrder.Add((p, priced));
        }
        foreach (var id in options.Providers.Keys)
            if (!_providers.ContainsKey(id)) errors.Add($"Tollgate:Pricing:Providers:{id}: no provider '{id}' in the catalog.");
        if (errors.Count > 0) throw new OptionsValidationException(PricingOptions.Section, typeof(PricingOptions), errors);
        Models = _providerOrder.SelectMany(p => p.Models).ToList();
    }

    /// <summary>Where the catalog came from (embedded or a file path).</summary>
    public string Source { get; }

    /// <summary>The admin-API overrides (database) this snapshot was built with, by model id.</summary>
    public IReadOnlyDictionary<string, ModelPricingOptions> AdminOverrides { get; }

    /// <summary>Every priced model, in catalog order with configured additions last per provider.</summary>
    public IReadOnlyList<PricedModel> Models { get; }

    public ModelResolution Resolve(string name)
    {
        if (_resolved.TryGetValue(name, out var cached)) return cached;
        var result = ResolveUncached(name);
        // Bounded: arbitrary client-supplied names must not grow memory without limit.
        if (_resolved.Count < MaxCachedNames) _resolved.TryAdd(name, result);
        return result;
    }

    private ModelResolution ResolveUncached(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 300) return ModelResolution.None;
        if (_byKey.TryGetValue(name, out var exact)) return Found(exact);
        var slash = name.IndexOf('/');
        if (slash > 0 && _providers.TryGetValue(name[..slash], out var provider))
        {
            var modelName = name[(slash + 1)..];
            if (FindIn(provider.Models, modelName) is { } m) return Found(m);
            foreach (var fallback in provider.Provider.FallbackProviders)
                if (_providers.TryGetValue(fallback, out var fp) && FindIn(fp.Models, modelName) is { } fm) return Found(fm);
            return ModelResolution.None;
        }
        var matches = new List<PricedModel>();
        foreach (var (_, models) in _providerOrder)
            if (FindIn(models, name) is { } m) matches.Add(m);
        return matches.Count switch
        {
            0 => ModelResolution.None,
            1 => Found(matches[0]),
            _ => new ModelResolution(ResolveOutcome.Ambiguous, null, matches.Select(m => m.Key).ToList()),
        };
    }

    private static ModelResolution Found(PricedModel m) => new(ResolveOutcome.Found, m, [m.Key]);

    private static PricedModel? FindIn(PricedModel[] models, string name)
    {
        foreach (var m in models) if (string.Equals(m.Model.Id, name, StringComparison.Ordinal)) return m;
        foreach (var m in models) if (m.Model.Match.IsMatch(name)) return m;
        return null;
    }

    /// <summary>Configured models: new ones are appended to their provider (created if needed); known ones get the
    /// configured rates, from <see cref="ModelPricingOptions.EffectiveFrom"/> or always.</summary>
    private static void ApplyConfiguredModels(List<CatalogProvider> providers, Dictionary<string, ModelPricingOptions> models, Func<string, string> label)
    {
        var errors = new List<string>();
        foreach (var (key, cfg) in models)
        {
            var slash = key.IndexOf('/');
            var providerId = key[..slash];
            var modelId = key[(slash + 1)..];
            var index = providers.FindIndex(p => p.Id == providerId);
            if (index < 0)
            {
                providers.Add(new CatalogProvider { Id = providerId, Name = providerId, Models = [] });
                index = providers.Count - 1;
            }
            var provider = providers[index];
            var at = provider.Models.FindIndex(m => m.Id == modelId);
            var rates = cfg.Rates;
            if (at < 0)
            {
                if (rates.InputMtok is null || rates.OutputMtok is null)
                {
                    errors.Add($"{label(key)}: '{key}' is not in the catalog, so InputMtok and OutputMtok are required.");
                    continue;
                }
                PricePeriod[] periods = cfg.EffectiveFrom is { } from
                    ? [new PricePeriod(new PriceConstraint.StartDate(from), rates.ToPriceSet())]
                    : [new PricePeriod(null, rates.ToPriceSet())];
                provider.Models.Add(new CatalogModel
                {
                    ProviderId = providerId, Id = modelId, Name = cfg.Name ?? modelId, ContextWindow = cfg.ContextWindow,
                    Match = new MatchRule.EqualsRule(modelId), Periods = periods,
                });
                continue;
            }
            var existing = provider.Models[at];
            if (!rates.HasAny && cfg.Name is null && cfg.ContextWindow is null) continue;
            var periodsNow = existing.Periods;
            if (rates.HasAny)
            {
                // A partial override keeps the catalog's other rates as they were in the latest period.
                var basis = existing.Periods[^1].Prices;
                var merged = new PriceSet
                {
                    InputMtok = rates.InputMtok is { } i ? new TieredRate(i) : basis.InputMtok,
                    OutputMtok = rates.OutputMtok is { } o ? new TieredRate(o) : basis.OutputMtok,
                    CacheReadMtok = rates.CacheReadMtok is { } cr ? new TieredRate(cr) : basis.CacheReadMtok,
                    CacheWriteMtok = rates.CacheWriteMtok is { } cw ? new TieredRate(cw) : basis.CacheWriteMtok,
                    ReasoningMtok = rates.ReasoningMtok is { } r ? new TieredRate(r) : basis.ReasoningMtok,
                    RequestsKcount = rates.RequestsKcount ?? basis.RequestsKcount,
                };
                periodsNow = cfg.EffectiveFrom is { } from
                    ? [.. existing.Periods, new PricePeriod(new PriceConstraint.StartDate(from), merged)]
                    : [new PricePeriod(null, merged)];
            }
            provider.Models[at] = existing with
            {
                Name = cfg.Name ?? existing.Name,
                ContextWindow = cfg.ContextWindow ?? existing.ContextWindow,
                Periods = periodsNow,
            };
        }
        if (errors.Count > 0) throw new OptionsValidationException(PricingOptions.Section, typeof(PricingOptions), errors);
    }

    /// <summary>A list price must not undercut the provider in any period or tier (the user price is clamped anyway).</summary>
    private static void CheckListPrice(CatalogModel m, PriceSet list, string label, List<string> errors)
    {
        foreach (var period in m.Periods)
        {
            var p = period.Prices;
            Check("InputMtok", list.InputMtok, p.InputMtok);
            Check("OutputMtok", list.OutputMtok, p.OutputMtok);
            Check("CacheReadMtok", list.CacheReadMtok ?? list.InputMtok, p.CacheReadMtok ?? p.InputMtok);
            Check("CacheWriteMtok", list.CacheWriteMtok ?? list.InputMtok, p.CacheWriteMtok ?? p.InputMtok);
            Check("ReasoningMtok", list.ReasoningMtok ?? list.OutputMtok, p.ReasoningMtok ?? p.OutputMtok);
            if ((list.RequestsKcount ?? 0) < (p.RequestsKcount ?? 0))
                errors.Add($"{label}:ListPrice:RequestsKcount is below the provider's {p.RequestsKcount}.");
        }

        void Check(string name, TieredRate? user, TieredRate? provider)
        {
            if (provider is null) return;
            var highest = provider.Base;
            foreach (var t in provider.TierPerMtok) if (t > highest) highest = t;
            if (user is null || user.Min < highest)
                errors.Add($"{label}:ListPrice:{name} must be at least the provider's {TieredRate.Fmt(highest)} USD/Mtok.");
        }
    }
}
