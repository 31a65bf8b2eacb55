using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;

namespace Tollgate.Features.Plans;

/// <summary>
/// One plan as configured under <c>Tollgate:Plans:&lt;id&gt;</c>, or as sent to <c>PUT /admin/v1/plans/{id}</c> (the same
/// fields in snake_case). Everything optional: an empty plan allows everything at the default markup.
/// </summary>
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
    /// <summary>Gateway requests included per period; past it calls get 429 <c>quota_exceeded</c> until the period ends (unless <see cref="OveragePolicy"/> is <c>bill</c>). Absent = unlimited.</summary>
    public long? IncludedRequests { get; init; }
    /// <summary>Gateway tokens (input + output) included per period, counted at settlement. Absent = unlimited.</summary>
    public long? IncludedTokens { get; init; }
    /// <summary><c>block</c> (default): past the included requests or tokens calls get 429; <c>bill</c>: they go on, charged from credits as usual.</summary>
    public string? OveragePolicy { get; init; }
    /// <summary>Days of free trial for an account's first subscription to the plan (0 or absent = none).</summary>
    public int? TrialDays { get; init; }
    /// <summary>Counted entitlements for the application's own features, e.g. <c>projects: 5</c>, <c>deploy_slots: 1</c>.</summary>
    public Dictionary<string, long>? Entitlements { get; init; }
    /// <summary>Credits (micro-USD) granted at the start of every period of an account on the plan.</summary>
    public long? IncludedCreditsMicros { get; init; }
    /// <summary>True: included credits not spent by the end of their period are taken back then (never more than the balance).</summary>
    public bool? ExpireIncludedCredits { get; init; }
}

/// <summary>The values of <see cref="PlanOptions.OveragePolicy"/>.</summary>
public static class OveragePolicies
{
    public const string Block = "block";
    public const string Bill = "bill";
}

/// <summary>The checks every plan definition passes, from configuration or the admin API; every problem is listed.</summary>
public static class PlanValidation
{
    public const int MaxTrialDays = 366;
    public const int MaxNameLength = 200;

    public static bool IsValidId(string id) => id.Length is > 0 and <= 64 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <param name="at">How the plan is named in messages: <c>Tollgate:Plans:pro</c>, or <c>plan 'pro'</c>.</param>
    public static List<string> Errors(string at, string id, PlanOptions p)
    {
        var errors = new List<string>();
        if (!IsValidId(id)) errors.Add($"{at}: plan ids are 1–64 letters, digits, '-', '_' or '.'.");
        if (p.Name is { Length: > MaxNameLength }) errors.Add($"{at}:Name is longer than {MaxNameLength} characters.");
        if (p.Markup is < 1m) errors.Add($"{at}:Markup is {p.Markup}: a markup below 1 would charge users less than the provider cost; use 1 or more.");
        if (p.Markup is > Pricing.PricingOptionsValidator.MaxMarkup) errors.Add($"{at}:Markup is {p.Markup}: at most {Pricing.PricingOptionsValidator.MaxMarkup}.");
        const long maxCents = Ledger.LedgerService.MaxAmountMicros / Infrastructure.Money.Money.MicrosPerUsd * 100;
        if (p.MonthlyPriceCents is < 0 or > maxCents) errors.Add($"{at}:MonthlyPriceCents must be 0–{maxCents}.");
        if (p.YearlyPriceCents is < 0 or > maxCents) errors.Add($"{at}:YearlyPriceCents must be 0–{maxCents}.");
        if (p.IncludedRequests is < 0) errors.Add($"{at}:IncludedRequests must not be negative.");
        if (p.IncludedTokens is < 0) errors.Add($"{at}:IncludedTokens must not be negative.");
        if (p.OveragePolicy is not (null or OveragePolicies.Block or OveragePolicies.Bill)) errors.Add($"{at}:OveragePolicy is '{p.OveragePolicy}': use 'block' or 'bill'.");
        if (p.TrialDays is < 0 or > MaxTrialDays) errors.Add($"{at}:TrialDays must be 0–{MaxTrialDays}.");
        if (p.IncludedCreditsMicros is < 0 or > Ledger.LedgerService.MaxAmountMicros) errors.Add($"{at}:IncludedCreditsMicros must be 0–{Ledger.LedgerService.MaxAmountMicros}.");
        if (p.ExpireIncludedCredits == true && p.IncludedCreditsMicros is null or 0) errors.Add($"{at}:ExpireIncludedCredits needs IncludedCreditsMicros.");
        foreach (var (name, limit) in p.Entitlements ?? [])
        {
            if (string.IsNullOrWhiteSpace(name)) errors.Add($"{at}:Entitlements: empty entitlement name.");
            if (limit < 0) errors.Add($"{at}:Entitlements:{name} must not be negative.");
        }
        foreach (var m in p.Models ?? []) if (string.IsNullOrWhiteSpace(m) || m.Any(char.IsWhiteSpace)) errors.Add($"{at}:Models: '{m}' is not a model id or glob.");
        foreach (var f in p.Features ?? []) if (string.IsNullOrWhiteSpace(f)) errors.Add($"{at}:Features: empty feature name.");
        return errors;
    }
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
    public long? IncludedTokens { get; init; }
    public string OveragePolicy { get; init; } = OveragePolicies.Block;
    public int TrialDays { get; init; }
    public bool ExpireIncludedCredits { get; init; }
    /// <summary>0 for a definition from configuration; 1, 2, … for the admin API's versions.</summary>
    public long Version { get; init; }
    /// <summary>Archived plans take no new subscriptions; accounts already on them keep them.</summary>
    public bool Archived { get; init; }

    /// <summary>Past the included requests or tokens, calls go on (billed from credits) instead of 429.</summary>
    public bool BillsOverage => OveragePolicy == OveragePolicies.Bill;

    /// <summary>The plan's price for one period of <paramref name="periodMonths"/> (1 or 12), in micro-USD; null when the plan has no such price.</summary>
    public long? PriceMicros(int periodMonths) => (periodMonths == 12 ? YearlyPriceCents : MonthlyPriceCents) is { } cents ? cents * 10_000 : null;

    /// <summary>True when the plan is free for every interval (no price configured).</summary>
    public bool IsFree => MonthlyPriceCents is null or 0 && YearlyPriceCents is null or 0;

    public static Plan From(string id, PlanOptions o, long version = 0) =>
        new(id, o.Name ?? id, o.Markup, o.Models, o.Features?.ToHashSet(StringComparer.Ordinal), o.MonthlyPriceCents, o.YearlyPriceCents)
        {
            IncludedRequests = o.IncludedRequests,
            Entitlements = new Dictionary<string, long>(o.Entitlements ?? [], StringComparer.Ordinal),
            IncludedCreditsMicros = o.IncludedCreditsMicros,
            IncludedTokens = o.IncludedTokens,
            OveragePolicy = o.OveragePolicy ?? OveragePolicies.Block,
            TrialDays = o.TrialDays ?? 0,
            ExpireIncludedCredits = o.ExpireIncludedCredits ?? false,
            Version = version,
        };

    public bool AllowsModel(string modelId) => Models is null || Models.Any(pattern => KeySettings.Glob(pattern, modelId));
    public bool Has(string feature) => Features is null || Features.Contains(feature);
}

/// <summary>
/// The plans in force: configuration (<c>Tollgate:Plans</c>, version 0) overlaid with the admin API's versioned
/// definitions (a database definition replaces the configured one of the same id). The plan <c>default</c> always
/// exists — every account starts on it; unless configured it allows every model and feature at the pricing's default
/// markup. Invalid configured plans stop start-up with every problem listed. Lookups read one immutable snapshot,
/// swapped whole by <see cref="PlanDefinitionService"/>, so the gateway never waits on the database for a plan.
/// </summary>
internal sealed class PlanCatalog
{
    public const string DefaultPlanId = "default";
    private readonly Dictionary<string, Plan> _configured;
    private volatile Snapshot _snapshot;

    /// <summary>A stored plan: its current version (0 = the configuration's definition) and every version.</summary>
    internal sealed record StoredPlan(string Id, long CurrentVersion, bool Archived, IReadOnlyDictionary<long, Plan> Versions);

    private sealed record Snapshot(IReadOnlyDictionary<string, Plan> Current, IReadOnlyDictionary<string, StoredPlan> Stored);

    public PlanCatalog(IOptions<Dictionary<string, PlanOptions>> options)
    {
        _configured = new Dictionary<string, Plan>(StringComparer.Ordinal);
        foreach (var (id, o) in options.Value) _configured[id] = Plan.From(id, o);
        _configured.TryAdd(DefaultPlanId, new Plan(DefaultPlanId, "Default", null, null, null, null, null));
        _snapshot = Build([]);
    }

    public Plan Default => _snapshot.Current[DefaultPlanId];
    /// <summary>Every plan's current definition, archived ones included.</summary>
    public IReadOnlyCollection<Plan> All => (IReadOnlyCollection<Plan>)_snapshot.Current.Values;

    /// <summary>The plan by id; an account on a plan removed from configuration falls back to the default one.</summary>
    public Plan Get(string? id) => id is not null && _snapshot.Current.TryGetValue(id, out var plan) ? plan : Default;

    /// <summary>
    /// The terms an account holds: <paramref name="version"/> of the plan when it is a stored version (grandfathered
    /// subscriptions), else the plan's current definition.
    /// </summary>
    public Plan Get(string? id, long? version)
    {
        var snapshot = _snapshot;
        if (id is not null && version is > 0 && snapshot.Stored.TryGetValue(id, out var stored) && stored.Versions.TryGetValue(version.Value, out var held))
            return held;
        return Get(id);
    }

    /// <summary>The caller's plan terms (the version its subscription holds).</summary>
    public Plan For(Keys.Caller caller) => Get(caller.PlanId, caller.PlanVersion);

    public bool Exists(string id) => _snapshot.Current.ContainsKey(id);

    /// <summary>Every definition an account may hold: the current ones and every stored version.</summary>
    public IEnumerable<Plan> AllVersions
    {
        get
        {
            var snapshot = _snapshot;
            return snapshot.Current.Values.Concat(snapshot.Stored.Values.SelectMany(s => s.Versions.Values));
        }
    }

    /// <summary>True when new subscriptions may choose the plan (it exists and is not archived).</summary>
    public bool IsOpen(string id) => _snapshot.Current.TryGetValue(id, out var p) && !p.Archived;

    public bool IsConfigured(string id) => _configured.ContainsKey(id);
    public Plan? Configured(string id) => _configured.GetValueOrDefault(id);
    public StoredPlan? Stored(string id) => _snapshot.Stored.GetValueOrDefault(id);

    /// <summary>Swaps in the stored plans read from the database.</summary>
    internal void Swap(IReadOnlyList<StoredPlan> stored) => _snapshot = Build(stored);

    private Snapshot Build(IReadOnlyList<StoredPlan> stored)
    {
        var current = new Dictionary<string, Plan>(_configured, StringComparer.Ordinal);
        var byId = new Dictionary<string, StoredPlan>(StringComparer.Ordinal);
        foreach (var s in stored)
        {
            byId[s.Id] = s;
            var plan = s.Versions.TryGetValue(s.CurrentVersion, out var v) ? v : _configured.GetValueOrDefault(s.Id);
            if (plan is null) continue;
            current[s.Id] = plan with { Archived = s.Archived && s.Id != DefaultPlanId };
        }
        return new Snapshot(current, byId);
    }

    public static void Register(IServiceCollection services)
    {
        Infrastructure.Configuration.NamedOptions.Add<PlanOptions>(services, "Tollgate:Plans", Validate);
        services.AddSingleton<PlanCatalog>();
        services.AddSingleton<PlanStore>();
        services.AddSingleton<PlanDefinitionService>();
        services.AddHostedService<PlanReloader>();
        services.AddSingleton<QuotaStore>();
        services.AddSingleton<EntitlementStore>();
        services.AddSingleton<PlanCreditsService>();
        services.AddHostedService<PlanCreditsSweeper>();
        services.AddSingleton<SubscriptionStore>();
        services.AddSingleton<SubscriptionService>();
        services.AddHostedService<SubscriptionRenewalSweeper>();
    }

    private static bool Validate(Dictionary<string, PlanOptions> plans)
    {
        var errors = new List<string>();
        foreach (var (id, p) in plans) errors.AddRange(PlanValidation.Errors($"Tollgate:Plans:{id}", id, p));
        if (errors.Count > 0) throw new OptionsValidationException("Tollgate:Plans", typeof(PlanOptions), errors);
        return true;
    }
}
