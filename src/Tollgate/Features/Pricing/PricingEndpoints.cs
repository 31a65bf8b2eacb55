using System.Globalization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure.Http;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Pricing;

/// <summary>
/// <c>POST /api/v1/pricing/quote</c> body. Token semantics are those of <see cref="TokenUsage"/>: <c>input_tokens</c>
/// is the whole prompt <b>including</b> cache reads and writes; <c>output_tokens</c> includes reasoning tokens.
/// Counts default to 0; <c>timestamp</c> defaults to now and picks the prices in force then.
/// </summary>
public sealed record QuoteInput(
    string? Model, long? InputTokens, long? OutputTokens, long? CacheReadTokens, long? CacheWriteTokens,
    long? ReasoningTokens, DateTimeOffset? Timestamp);

/// <summary>One priced part of a quote; <c>usd_per_unit</c> is per million tokens, or per thousand requests.</summary>
public sealed record QuoteLine(string Kind, long Units, string Unit, string UsdPerUnit, string CostUsd);

/// <summary>
/// A rated call. <c>provider_cost_usd</c> is exact and unrounded; <c>provider_cost_micros</c> and
/// <c>user_price_micros</c> are both rounded <b>up</b> to whole micro-USD.
/// </summary>
public sealed record QuoteResponse(
    string Model, string Provider, string? ModelName, DateTimeOffset Timestamp, string Plan,
    string Pricing, string? Markup, string? PriceEffectiveFrom, string? PriceConstraint, long? TierAboveInputTokens,
    IReadOnlyList<QuoteLine> Lines, string ProviderCostUsd, long ProviderCostMicros, string Rounding,
    string UserPriceUsd, long UserPriceMicros, string UserPriceCredits, PriceSource PriceSource);

/// <summary>A rate of the pricing list: provider and user price per million tokens (per request for fees).</summary>
public sealed record ListedRate(
    string Kind, string Unit, string ProviderUsd, decimal ProviderMicros, decimal UserMicros, string UserCredits,
    IReadOnlyList<ListedTier> Tiers);

/// <summary>A context-length tier: applies to all tokens of the kind when input exceeds <c>above_input_tokens</c>.</summary>
public sealed record ListedTier(long AboveInputTokens, string ProviderUsd, decimal ProviderMicros, decimal UserMicros, string UserCredits);

public sealed record ListedPlan(string Plan, string Pricing, string? Markup, IReadOnlyList<ListedRate> Rates);

/// <summary>A price change already in the catalog that starts after now (UTC midnight of <c>effective_from</c>).</summary>
public sealed record ScheduledPrice(string EffectiveFrom, string ProviderPrices);

public sealed record ListedModel(
    string Id, string Provider, string? Name, long? ContextWindow, bool Deprecated, string? PriceEffectiveFrom, string? PriceConstraint,
    IReadOnlyList<ListedPlan> Plans, IReadOnlyList<ScheduledPrice> ScheduledChanges, PriceSource PriceSource);

public sealed record PricingListResponse(
    DateTimeOffset AsOf, string Currency, long MicrosPerCredit, string CatalogSource, string CatalogLicense,
    IReadOnlyList<ListedModel> Models);

internal static class PricingEndpoints
{
    public static RouteGroupBuilder MapPricing(this IEndpointRouteBuilder routes)
    {
        // Public: prices are not secrets, and callers estimate costs before they have a key.
        var group = routes.MapGroup("/api/v1/pricing").WithTags("Pricing");
        group.MapGet("/", List);
        group.MapPost("/quote", Quote);
        return group;
    }

    internal static Ok<PricingListResponse> List(PricingCatalog catalog, CreditUnit credits, TimeProvider time, Plans.PlanCatalog plans, string? provider)
    {
        var now = time.GetUtcNow();
        var models = new List<ListedModel>();
        // One snapshot for the whole list, even if an override changes meanwhile.
        var snapshot = catalog.Current;
        foreach (var m in snapshot.Models)
        {
            if (provider is not null && m.Model.ProviderId != provider) continue;
            var period = m.Model.PeriodAt(now, out _);
            var user = m.ListPrice;
            var listed = new List<ListedPlan>();
            foreach (var plan in plans.All.OrderBy(p => p.Id == Plans.PlanCatalog.DefaultPlanId ? "" : p.Id, StringComparer.Ordinal))
            {
                if (!plan.AllowsModel(m.Key)) continue;
                var markup = plan.Markup is { } pm && m.MarkupIsDefault ? pm : m.Markup;
                var rates = new List<ListedRate>();
                AddRate(rates, "input", period.Prices.InputMtok, user?.InputMtok, markup, credits);
                AddRate(rates, "cache_read", period.Prices.CacheReadMtok, user?.CacheReadMtok, markup, credits);
                AddRate(rates, "cache_write", period.Prices.CacheWriteMtok, user?.CacheWriteMtok, markup, credits);
                AddRate(rates, "output", period.Prices.OutputMtok, user?.OutputMtok, markup, credits);
                AddRate(rates, "reasoning", period.Prices.ReasoningMtok, user?.ReasoningMtok, markup, credits);
                if (period.Prices.RequestsKcount is { } perK)
                {
                    // USD per thousand requests × 1,000 = micro-USD per request.
                    var userPerK = user is null ? perK * markup : Math.Max(user.RequestsKcount ?? 0, perK);
                    rates.Add(new ListedRate("request", "request", Dec(perK / 1000m), Norm(perK * 1000m), Norm(userPerK * 1000m),
                        Dec(userPerK * 1000m / credits.MicrosPerCredit), []));
                }
                listed.Add(new ListedPlan(plan.Id, user is null ? "markup" : "list_price", user is null ? Dec(markup) : null, rates));
            }
            var today = DateOnly.FromDateTime(now.UtcDateTime);
            var scheduled = new List<ScheduledPrice>();
            foreach (var p in m.Model.Periods)
                if (p.Constraint is PriceConstraint.StartDate sd && sd.From > today)
                    scheduled.Add(new ScheduledPrice(sd.From.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), p.Prices.Describe()));
            models.Add(new ListedModel(m.Key, m.Model.ProviderId, m.Model.Name, m.Model.ContextWindow, m.Model.Deprecated,
                (period.Constraint as PriceConstraint.StartDate)?.From.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                period.Constraint?.ToString(),
                listed,
                scheduled, m.Origin));
        }
        return TypedResults.Ok(new PricingListResponse(now, "USD", credits.MicrosPerCredit, snapshot.Source,
            "Prices derived from genai-prices (https://github.com/pydantic/genai-prices), © Pydantic Services Inc., MIT licence.", models));
    }

    private static void AddRate(List<ListedRate> rates, string kind, TieredRate? provider, TieredRate? list, decimal markup, CreditUnit credits)
    {
        if (provider is null && list is null) return;
        var p = provider ?? new TieredRate(0);
        decimal UserMicros(decimal providerPerMtok, int tier)
        {
            if (list is null) return Norm(providerPerMtok * markup * 1_000_000m);
            var l = list.PerMtok(Math.Min(tier, list.TierStarts.Length - 1));
            return Norm(Math.Max(l, providerPerMtok) * 1_000_000m);
        }
        var tiers = new List<ListedTier>();
        for (var i = 0; i < p.TierStarts.Length; i++)
        {
            var um = UserMicros(p.TierPerMtok[i], i);
            tiers.Add(new ListedTier(p.TierStarts[i], Dec(p.TierPerMtok[i]), Norm(p.TierPerMtok[i] * 1_000_000m), um, Dec(um / credits.MicrosPerCredit)));
        }
        var baseUser = UserMicros(p.Base, -1);
        rates.Add(new ListedRate(kind, "million_tokens", Dec(p.Base), Norm(p.Base * 1_000_000m), baseUser, Dec(baseUser / credits.MicrosPerCredit), tiers));
    }

    private static async Task<Results<Ok<QuoteResponse>, ProblemHttpResult>> Quote(
        QuoteInput input, PricingCatalog catalog, CreditUnit credits, TimeProvider time, Plans.PlanCatalog plans,
        Keys.ApiKeyAuthenticator authenticator, HttpContext http)
    {
        // Public, or keyed: with a valid API key the price is the one under the caller's plan.
        var caller = await authenticator.AuthenticateAsync(Admin.AdminAuthFilter.BearerToken(http.Request), http.RequestAborted);
        var plan = caller is null ? plans.Default : plans.For(caller);
        if (string.IsNullOrWhiteSpace(input.Model))
            return Problems.BadRequest("invalid_request", "'model' is required, e.g. \"openai/gpt-4o\" or a bare name such as \"gpt-4o\".", "model");
        var usage = new TokenUsage(input.InputTokens ?? 0, input.OutputTokens ?? 0, input.CacheReadTokens ?? 0,
            input.CacheWriteTokens ?? 0, input.ReasoningTokens ?? 0);
        if (usage.Validate() is { } invalid)
            return Problems.BadRequest("invalid_request", $"'{invalid.Field}': {invalid.Message}.", invalid.Field);

        var resolution = catalog.Resolve(input.Model);
        switch (resolution.Outcome)
        {
            case ResolveOutcome.NotFound:
                return Problems.Create(StatusCodes.Status404NotFound, "model_not_found",
                    $"No priced model '{input.Model}'. Use 'provider/model' ids from GET /api/v1/pricing.",
                    new Dictionary<string, object?> { ["param"] = "model" });
            case ResolveOutcome.Ambiguous:
                return Problems.Create(StatusCodes.Status400BadRequest, "model_ambiguous",
                    $"'{input.Model}' matches models of several providers; name one as 'provider/model'.",
                    new Dictionary<string, object?> { ["param"] = "model", ["candidates"] = resolution.Candidates });
        }

        var model = resolution.Model!;
        var at = input.Timestamp ?? time.GetUtcNow();
        var rating = Rater.Rate(model, usage, at, plan.Markup);
        var period = model.Model.Periods[rating.PeriodIndex];
        long? tierStart = null;
        if (rating.Tier >= 0)
        {
            // The tier start of whichever rate applied it (rates of one model share their thresholds in practice).
            foreach (var r in (TieredRate?[])[period.Prices.InputMtok, period.Prices.OutputMtok, period.Prices.CacheReadMtok, period.Prices.CacheWriteMtok])
                if (r is not null && r.TierStarts.Length > rating.Tier) { tierStart = r.TierStarts[rating.Tier]; break; }
        }
        var lines = rating.Lines.Select(l => new QuoteLine(
            Kind(l.Kind), l.Units, l.Kind == LineKind.Request ? "thousand_requests" : "million_tokens", Dec(l.Rate), Dec(l.CostUsd))).ToList();
        return TypedResults.Ok(new QuoteResponse(
            model.Key, model.Model.ProviderId, model.Model.Name, at, plan.Id,
            model.ListPrice is null ? "markup" : "list_price", model.ListPrice is null ? Dec(plan.Markup is { } pm && model.MarkupIsDefault ? pm : model.Markup) : null,
            (period.Constraint as PriceConstraint.StartDate)?.From.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
            period.Constraint?.ToString(), tierStart, lines,
            Dec(rating.ProviderCostUsd), rating.ProviderCostMicros, "up",
            Dec(rating.UserPriceUsd), rating.UserPriceMicros, credits.Format(rating.UserPriceMicros), model.Origin));
    }

    private static string Kind(LineKind k) => k switch
    {
        LineKind.Input => "input",
        LineKind.CacheRead => "cache_read",
        LineKind.CacheWrite => "cache_write",
        LineKind.Output => "output",
        LineKind.Reasoning => "reasoning",
        LineKind.Request => "request",
        _ => throw new ArgumentOutOfRangeException(nameof(k)),
    };

    /// <summary>The same value without trailing zeros (2000000.0 → 2000000), for JSON numbers.</summary>
    internal static decimal Norm(decimal d) => d / 1.000000000000000000000000000000000m;

    /// <summary>An exact decimal as a plain string without trailing zeros ("0.10308").</summary>
    internal static string Dec(decimal d) => TieredRate.Fmt(d);
}

public static class PricingRegistration
{
    public static IServiceCollection AddPricing(this IServiceCollection services)
    {
        services.AddOptions<PricingOptions>().BindConfiguration(PricingOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<PricingOptions>, PricingOptionsValidator>();
        services.AddSingleton(sp => PricingCatalog.Create(sp.GetRequiredService<IOptions<PricingOptions>>()));
        services.AddSingleton<IPriceOverrideStore, PriceOverrideStore>();
        services.AddSingleton<PriceOverrideService>();
        services.AddHostedService<PriceOverrideReloader>();
        return services;
    }
}
