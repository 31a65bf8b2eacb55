using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Gateway;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Byok;

public sealed record ProviderKeyInput(string? ApiKey);

/// <summary><c>/api/v1/provider-keys</c>: the caller's account stores, lists and removes its own provider keys.</summary>
internal static class ProviderCredentialEndpoints
{
    public static RouteGroupBuilder MapProviderKeys(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/provider-keys").RequireApiKey().ManagersOnly().WithTags("BYOK");
        group.MapGet("/", List);
        group.MapPut("/{provider}", Set);
        group.MapDelete("/{provider}", Delete);
        return group;
    }

    private static async Task<Ok<Dictionary<string, object>>> List(HttpContext http, ProviderCredentialService credentials, CancellationToken ct) =>
        TypedResults.Ok(new Dictionary<string, object> { ["data"] = await credentials.ListAsync(http.GetCaller().AccountId, ct) });

    private static async Task<Results<Ok<ProviderCredentialView>, ProblemHttpResult>> Set(
        string provider, ProviderKeyInput? input, HttpContext http, ProviderCredentialService credentials, ProviderRegistry providers, CancellationToken ct)
    {
        if (providers.Find(provider) is not { } p || p.Kind == ProviderKind.Demo)
            return Problems.Create(StatusCodes.Status404NotFound, "provider_not_found",
                $"No provider '{provider}' takes customer keys here; use one of: {string.Join(", ", providers.All.Where(x => x.Kind != ProviderKind.Demo).Select(x => x.Name))}.");
        var key = input?.ApiKey?.Trim();
        if (string.IsNullOrEmpty(key) || key.Length > ProviderCredentialService.MaxKeyLength || key.Any(char.IsControl))
            return Problems.BadRequest("invalid_request", $"'api_key' is required: the provider's API key (at most {ProviderCredentialService.MaxKeyLength} characters).", "api_key");
        return TypedResults.Ok(await credentials.SetAsync(http.GetCaller().AccountId, provider, key, ct));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> Delete(string provider, HttpContext http, ProviderCredentialService credentials, CancellationToken ct) =>
        await credentials.DeleteAsync(http.GetCaller().AccountId, provider, ct) ? TypedResults.NoContent() : Problems.NotFound("provider key", provider);
}
