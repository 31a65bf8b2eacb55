using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Pricing;

/// <summary>
/// A stored price override. <c>override</c> has the fields of <c>Tollgate:Pricing:Models:…</c> in snake_case;
/// <c>in_catalog</c> says whether it overrides a catalog model (else it adds one); <c>applied</c> whether the prices in
/// force include it (false only for an old override that no longer validates against the catalog: see the log).
/// </summary>
public sealed record PriceOverrideResponse(
    string Model, string Provider, bool InCatalog, bool Applied, ModelPricingOptions Override, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

public sealed record PriceOverrideList(IReadOnlyList<PriceOverrideResponse> Data);

/// <summary>
/// <c>/admin/v1/pricing/models</c>: price overrides stored in the database, effective at once in this process and
/// within <c>Tollgate:Pricing:OverridesReloadSeconds</c> in the others. Precedence: these over configuration over catalog.
/// </summary>
internal static class AdminPricingEndpoints
{
    public static RouteGroupBuilder MapAdminPricing(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1/pricing/models").RequireAdminKey().WithTags("Admin: pricing");
        group.MapGet("/", List);
        // The model part may itself contain '/', as catalog ids do (openrouter/anthropic/claude-…).
        group.MapGet("/{provider}/{**model}", Get);
        group.MapPut("/{provider}/{**model}", Put);
        group.MapDelete("/{provider}/{**model}", Delete);
        return group;
    }

    private static async Task<Ok<PriceOverrideList>> List(IPriceOverrideStore store, PricingCatalog catalog, CancellationToken ct)
    {
        var set = await store.ListAsync(ct);
        return TypedResults.Ok(new PriceOverrideList(set.Overrides.Select(o => View(o, catalog)).ToList()));
    }

    private static async Task<Results<Ok<PriceOverrideResponse>, ProblemHttpResult>> Get(
        string provider, string model, IPriceOverrideStore store, PricingCatalog catalog, CancellationToken ct)
    {
        var id = $"{provider}/{model}";
        var set = await store.ListAsync(ct);
        return set.Overrides.FirstOrDefault(o => o.ModelId == id) is { } found
            ? TypedResults.Ok(View(found, catalog))
            : Problems.NotFound("price override", id);
    }

    private static async Task<Results<Ok<PriceOverrideResponse>, ProblemHttpResult>> Put(
        string provider, string model, ModelPricingOptions input, PriceOverrideService overrides, PricingCatalog catalog, CancellationToken ct)
    {
        var result = await overrides.UpsertAsync($"{provider}/{model}", input, ct);
        return result.Outcome switch
        {
            PriceOverrideOutcome.Saved => TypedResults.Ok(View(result.Override!, catalog)),
            PriceOverrideOutcome.Invalid => Problems.Create(StatusCodes.Status400BadRequest, "invalid_price_override",
                string.Join(" ", result.Errors!), new Dictionary<string, object?> { ["errors"] = result.Errors }),
            var other => throw new InvalidOperationException($"Unexpected outcome {other} of an upsert."),
        };
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> Delete(
        string provider, string model, PriceOverrideService overrides, CancellationToken ct)
    {
        var id = $"{provider}/{model}";
        var result = await overrides.DeleteAsync(id, ct);
        return result.Outcome == PriceOverrideOutcome.Deleted ? TypedResults.NoContent() : Problems.NotFound("price override", id);
    }

    private static PriceOverrideResponse View(PriceOverride o, PricingCatalog catalog)
    {
        var slash = o.ModelId.IndexOf('/');
        var provider = o.ModelId[..slash];
        var modelId = o.ModelId[(slash + 1)..];
        var inCatalog = catalog.Base.Providers.Any(p => p.Id == provider && p.Models.Any(m => m.Id == modelId));
        return new PriceOverrideResponse(o.ModelId, provider, inCatalog, catalog.Current.AdminOverrides.ContainsKey(o.ModelId), o.Spec, o.CreatedAt, o.UpdatedAt);
    }
}
