using Microsoft.Extensions.Options;
using Tollgate.Features.Metering;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway;

/// <summary>Where one attempt of a call goes: the provider, the model name it knows, and the price list that rates it (null: unpriced).</summary>
internal sealed record RouteTarget(UpstreamProvider Provider, string UpstreamModel, string ModelId, PricedModel? Priced)
{
    /// <summary>The customer's own provider key (bring your own key): used instead of the operator's, billed only the platform fee.</summary>
    public string? CustomerKey { get; init; }
    public bool IsByok => CustomerKey is not null;
    public string? ApiKey => CustomerKey ?? Provider.ApiKey;
}

/// <summary>
/// Resolves a requested model to the provider that serves it and the catalog entry that prices it.
/// <c>provider/model</c> names a configured provider directly; a bare name goes to the provider of the one catalog
/// model it matches. The upstream receives the requested name without the provider prefix, so dated variants
/// (<c>gpt-4o-2024-08-06</c>) reach the provider as asked while pricing follows the catalog's match rules.
/// </summary>
internal sealed class ModelRouter(ProviderRegistry providers, PricingCatalog catalog, IOptions<GatewayOptions> options, IOptions<MeteringOptions> metering)
{
    private readonly bool _allowUnpriced = metering.Value.UnknownModelPolicy == MeteringOptions.AllowAndReview;

    /// <summary>The primary target then its fallbacks, or the error to answer with.</summary>
    /// <param name="ownKeys">Providers the caller has its own key for: usable even when the operator has none.</param>
    public (IReadOnlyList<RouteTarget>? Targets, GatewayError? Error) Resolve(string requested, ApiDialect dialect, IReadOnlySet<string>? ownKeys = null)
    {
        var (primary, error) = ResolveOne(requested, dialect, ownKeys);
        if (primary is null) return (null, error);
        var targets = new List<RouteTarget> { primary };
        if (options.Value.Fallbacks.TryGetValue(primary.ModelId, out var alternatives)
            || options.Value.Fallbacks.TryGetValue(requested, out alternatives))
            foreach (var alternative in alternatives)
                if (ResolveOne(alternative, dialect, ownKeys).Target is { } t) targets.Add(t);
        return (targets, null);
    }

    private (RouteTarget? Target, GatewayError? Error) ResolveOne(string requested, ApiDialect dialect, IReadOnlySet<string>? ownKeys)
    {
        var slash = requested.IndexOf('/');
        var named = slash > 0 ? providers.Find(requested[..slash]) : null;
        var resolution = catalog.Resolve(requested);
        if (resolution.Outcome == ResolveOutcome.Ambiguous)
            return (null, new GatewayError(400, "model_ambiguous",
                $"'{requested}' matches models of several providers ({string.Join(", ", resolution.Candidates)}); name one as 'provider/model'.", "model") { Dialect = dialect });
        var priced = resolution.Model;
        var provider = named ?? (priced is not null ? providers.Find(priced.Model.ProviderId) : null);
        if (provider is null || (priced is null && !_allowUnpriced))
            return (null, new GatewayError(404, "model_not_found",
                $"The model '{requested}' does not exist or is not served here. GET /v1/models lists the models this key can use.", "model") { Dialect = dialect });
        if (!provider.Available && ownKeys?.Contains(provider.Name) != true)
            return (null, new GatewayError(503, "provider_unavailable", $"The provider '{provider.Name}' is not available: {provider.UnavailableReason}.", "model") { Dialect = dialect });
        if (dialect == ApiDialect.Anthropic && provider.Kind == ProviderKind.OpenAi)
            return (null, new GatewayError(400, "unsupported_model", $"/v1/messages serves Anthropic-kind providers; call '{requested}' through /v1/chat/completions.", "model") { Dialect = dialect });
        var upstreamModel = named is not null ? requested[(slash + 1)..] : requested;
        return (new RouteTarget(provider, upstreamModel, priced?.Key ?? $"{provider.Name}/{upstreamModel}", priced), null);
    }

    /// <summary>Models callable now: priced catalog models whose provider is configured and available.</summary>
    public IEnumerable<(PricedModel Model, UpstreamProvider Provider)> Callable() =>
        catalog.Models.Select(m => (m, providers.Find(m.Model.ProviderId))).Where(x => x.Item2 is { Available: true })!;
}
