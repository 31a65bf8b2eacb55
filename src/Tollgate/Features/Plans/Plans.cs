using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;

namespace Tollgate.Features.Plans;

/// <summary>One plan as configured under <c>Tollgate:Plans:&lt;id&gt;</c>. Everything optional: an empty plan allows everything at the default markup.</summary>
public sealed record PlanOptions
{
    public string? Name { get; init; }
    /// <summary>User price = provider cost × this, for models without a markup of their own (≥ 1).</summary>
    public decimal? Markup { get; init; }
    /// <summary>Models the plan may call: globs over <c>provider/model</c> ids (<c>openai/gpt-4o-mini</c>, <c>demo/*</c>); absent = all.</summary>
    public string[]? Models { get; init; }
    /// <summary>Feature flags: <c>tools</c>, <c>byok</c>, … (see <see cref="PlanFeatures"/>); absent = all features.</summary>
    public string[]? Features { get; init; }
    public long? MonthlyPriceCents { get; init; }
    public long? YearlyPriceCents { get; init; }
    /// <summary>Gateway requests included per monthly period; past it calls get 429 <c>quota_exceeded</c> until the period ends. Absent = unlimited.</summary>
    public long? IncludedRequests { get; init; }
    /// <summary>Counted entitlements for the application's own features, e.g. <c>projects: 5</c>, <c>deploy_slots: 1</c>.</summary>
    public Dictionary<string, long> Entitlements { get; init; } = new(StringComparer.Ordinal);
    /// <summary>Credits (micro-USD) granted at the start of every period of an account on the plan.</summary>
    public long? IncludedCreditsMicros { get; init; }
}

/// <summary>Feature flags the gateway checks.</summary>
public static class PlanFeatures
{
    /// <summary>Requests with tool definitions.</summary>
    public const string Tools = "tools";
    /// <summary>Calls with the customer's own provider key.</summary>
    public const string Byok = "byok";
}

/// <summary>A plan ready to check against: what it allows and its markup.</summary>
public sealed record Plan(string Id, string Name, decimal? Markup, IReadOnlyList<string>? Models, IReadOnlySet<string>? Features, long? MonthlyPriceCents, long? YearlyPriceCents)
{
    public long? IncludedRequests { get; init; }
    public IReadOnlyDictionary<string, long> Entitlements { get; init; } = new Dictionary<string, long>();
    public long? IncludedCreditsMicros { get; init; }

    public bool AllowsModel(string modelId) => Models is null || Models.Any(pattern => KeySettings.Glob(pattern, modelId));
    public bool Has(string feature) => Features is null || Features.Contains(feature);
}

/// <summary>
/// The plans in force, from configuration (<c>Tollgate:Plans</c>). The plan <c>default</c> always exists — every
/// account starts on it; unless configured it allows every model and feature at the pricing's default markup.
/// Invalid plans stop start-up with every problem listed.
/// </summary>
internal sealed class PlanCatalog
{
    public const string DefaultPlanId = "default";
    private readonly Dictionary<string, Plan> _plans;

    public PlanCatalog(IOptions<Dictionary<string, PlanOptions>> options)
    {
        _plans = new Dictionary<string, Plan>(StringComparer.Ordinal);
        foreach (var (id, o) in options.Value)
            _plans[id] = new Plan(id, o.Name ?? id, o.Markup, o.Models, o.Features?.ToHashSet(StringComparer.Ordinal), o.MonthlyPriceCents, o.YearlyPriceCents)
            {
                IncludedRequests = o.IncludedRequests,
                Entitlements = new Dictionary<string, long>(o.Entitlements, StringComparer.Ordinal),
                IncludedCreditsMicros = o.IncludedCreditsMicros,
            };
        _plans.TryAdd(DefaultPlanId, new Plan(DefaultPlanId, "Default", null, null, null, null, null));
    }

    public Plan Default => _plans[DefaultPlanId];
    public IReadOnlyCollection<Plan> All => _plans.Values;

    /// <summary>The plan by id; an account on a plan removed from configuration falls back to the default one.</summary>
    public Plan Get(string? id) => id is not null && _plans.TryGetValue(id, out var plan) ? plan : Default;

    public bool Exists(string id) => _plans.ContainsKey(id);

    public static void Register(IServiceCollection services)
    {
        services.AddOptions<Dictionary<string, PlanOptions>>()
            .Configure<IConfiguration>((d, config) =>
            {
                foreach (var section in config.GetSection("Tollgate:Plans").GetChildren())
                    d[section.Key] = section.Get<PlanOptions>() ?? new PlanOptions();
            })
            .Validate(Validate).ValidateOnStart();
        services.AddSingleton<PlanCatalog>();
        services.AddSingleton<QuotaStore>();
        services.AddSingleton<EntitlementStore>();
        services.AddSingleton<PlanCreditsService>();
        services.AddHostedService<PlanCreditsSweeper>();
    }

    private static bool Validate(Dictionary<string, PlanOptions> plans)
    {
        var errors = new List<string>();
        foreach (var (id, p) in plans)
        {
            var at = $"Tollgate:Plans:{id}";
            if (id.Length is 0 or > 64 || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
                errors.Add($"{at}: plan ids are 1–64 letters, digits, '-', '_' or '.'.");
            if (p.Markup is < 1m) errors.Add($"{at}:Markup is {p.Markup}: a markup below 1 would charge users less than the provider cost; use 1 or more.");
            if (p.Markup is > Pricing.PricingOptionsValidator.MaxMarkup) errors.Add($"{at}:Markup is {p.Markup}: at most {Pricing.PricingOptionsValidator.MaxMarkup}.");
            if (p.MonthlyPriceCents is < 0) errors.Add($"{at}:MonthlyPriceCents must not be negative.");
            if (p.YearlyPriceCents is < 0) errors.Add($"{at}:YearlyPriceCents must not be negative.");
            if (p.IncludedRequests is < 0) errors.Add($"{at}:IncludedRequests must not be negative.");
            if (p.IncludedCreditsMicros is < 0 or > Ledger.LedgerService.MaxAmountMicros) errors.Add($"{at}:IncludedCreditsMicros must be 0–{Ledger.LedgerService.MaxAmountMicros}.");
            foreach (var (name, limit) in p.Entitlements)
                if (limit < 0) errors.Add($"{at}:Entitlements:{name} must not be negative.");
            foreach (var m in p.Models ?? []) if (string.IsNullOrWhiteSpace(m) || m.Any(char.IsWhiteSpace)) errors.Add($"{at}:Models: '{m}' is not a model id or glob.");
            foreach (var f in p.Features ?? []) if (string.IsNullOrWhiteSpace(f)) errors.Add($"{at}:Features: empty feature name.");
        }
        if (errors.Count > 0) throw new OptionsValidationException("Tollgate:Plans", typeof(PlanOptions), errors);
        return true;
    }
}
