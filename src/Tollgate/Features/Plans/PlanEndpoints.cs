using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;

namespace Tollgate.Features.Plans;

public sealed record QuotaView(string Kind, long Limit, long Used, long Remaining);

public sealed record PlanView(
    string Id, string Name, string? Markup, IReadOnlyList<string>? Models, IReadOnlyList<string>? Features, long? MonthlyPriceCents,
    long? YearlyPriceCents, DateTimeOffset PeriodStart, DateTimeOffset PeriodEnd, IReadOnlyList<QuotaView> Quotas)
{
    /// <summary>The plan version the account holds (0: the configured definition).</summary>
    public long Version { get; init; }
    public string OveragePolicy { get; init; } = OveragePolicies.Block;
}

/// <summary><c>GET /api/v1/plan</c>: the caller's plan, its current period and what is left of its quotas.</summary>
internal static class PlanEndpoints
{
    public static void MapPlan(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/plan").RequireApiKey().WithTags("Plans");
        group.MapGet("/", Get);
    }

    private static async Task<Ok<PlanView>> Get(HttpContext http, PlanCatalog plans, QuotaStore quotas, TimeProvider time, CancellationToken ct)
    {
        var caller = http.GetCaller();
        var plan = plans.For(caller);
        var period = PlanPeriod.Of(caller, time.GetUtcNow());
        var views = new List<QuotaView>();
        if (plan.IncludedRequests is { } included)
        {
            var used = await quotas.UsedAsync(caller.AccountId, QuotaStore.Requests, period.Start, ct);
            views.Add(new QuotaView(QuotaStore.Requests, included, used, Math.Max(0, included - used)));
        }
        if (plan.IncludedTokens is { } tokens)
        {
            var used = await quotas.UsedAsync(caller.AccountId, QuotaStore.Tokens, period.Start, ct);
            views.Add(new QuotaView(QuotaStore.Tokens, tokens, used, Math.Max(0, tokens - used)));
        }
        return TypedResults.Ok(new PlanView(plan.Id, plan.Name, plan.Markup is { } m ? Pricing.PricingEndpoints.Dec(m) : null, plan.Models,
            plan.Features?.Order(StringComparer.Ordinal).ToList(), plan.MonthlyPriceCents, plan.YearlyPriceCents, period.Start, period.End, views)
        {
            Version = plan.Version, OveragePolicy = plan.OveragePolicy,
        });
    }
}
