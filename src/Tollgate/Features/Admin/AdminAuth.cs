using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Admin;

/// <summary>
/// Operator credentials. <c>TOLLGATE_ADMIN_KEY</c> (or <c>Tollgate:AdminKey</c>) when configured; otherwise a key is
/// generated on first start, printed once, and only its hash stored. Comparison is by SHA-256 hash in constant time.
/// </summary>
internal sealed class AdminKeys(IConfiguration configuration, IApiKeyStore store)
{
    private volatile byte[][] _hashes = [];

    public string? ConfiguredKey => configuration["TOLLGATE_ADMIN_KEY"] is { Length: > 0 } env ? env
        : configuration["Tollgate:AdminKey"] is { Length: > 0 } cfg ? cfg : null;

    /// <summary>Loads admin key hashes; creates and returns the first key if there is none anywhere.</summary>
    public async Task<string?> InitialiseAsync(CancellationToken ct)
    {
        string? created = null;
        var hashes = (await store.GetAdminKeyHashesAsync(ct)).ToList();
        if (ConfiguredKey is { } configured)
        {
            hashes.Add(Secrets.Hash(configured));
        }
        else if (hashes.Count == 0)
        {
            var key = ApiKeyFormat.Generate("admin").Key;
            if (await store.TryCreateFirstAdminKeyAsync(Secrets.Hash(key), ct)) created = key;
            hashes = (await store.GetAdminKeyHashesAsync(ct)).ToList();
        }
        _hashes = hashes.ToArray();
        return created;
    }

    public bool IsAdmin(string? presented)
    {
        if (string.IsNullOrEmpty(presented)) return false;
        var hash = Secrets.Hash(presented);
        var match = false;
        // Check every stored hash without stopping early, so timing does not tell which (if any) matched.
        foreach (var h in _hashes) match |= Secrets.HashEquals(hash, h);
        return match;
    }
}

internal static class AdminAuthFilter
{
    /// <summary>Requires <c>Authorization: Bearer &lt;admin key&gt;</c> on every route of the group.</summary>
    public static RouteGroupBuilder RequireAdminKey(this RouteGroupBuilder group)
    {
        group.WithMetadata(new AdminOnly());
        // Also checked here, so a group is protected even in a pipeline without UseAdminKeyCheck.
        group.AddEndpointFilter(async (context, next) => await RefuseAsync(context.HttpContext) is { } refusal ? refusal : await next(context));
        return group;
    }

    /// <summary>
    /// Checks the admin key of routes marked by <see cref="RequireAdminKey"/> before their parameters are bound (an
    /// endpoint filter runs after binding), so without the key a malformed body is a 401 like any other request, and
    /// nobody learns a route's body schema from its 400s.
    /// </summary>
    public static void UseAdminKeyCheck(this IApplicationBuilder app) => app.Use(async (http, next) =>
    {
        if (http.GetEndpoint()?.Metadata.GetMetadata<AdminOnly>() is not null && await RefuseAsync(http) is { } refusal)
        {
            await refusal.ExecuteAsync(http);
            return;
        }
        await next(http);
    });

    private static Task<IResult?> RefuseAsync(HttpContext http)
    {
        var keys = http.RequestServices.GetRequiredService<AdminKeys>();
        var limiter = http.RequestServices.GetRequiredService<AuthFailureLimiter>();
        var token = BearerToken(http.Request);
        if (token is not null && limiter.RetryAfter(http) is { } wait)
        {
            http.Response.Headers.RetryAfter = AuthFailureLimiter.Seconds(wait);
            return Task.FromResult<IResult?>(Problems.Create(StatusCodes.Status429TooManyRequests, "too_many_failed_attempts", AuthFailureLimiter.Message(wait)));
        }
        if (keys.IsAdmin(token)) return Task.FromResult<IResult?>(null);
        if (token is not null) limiter.Failed(http);
        http.Response.Headers.WWWAuthenticate = "Bearer";
        return Task.FromResult<IResult?>(Problems.Unauthorized("An admin key is required: send 'Authorization: Bearer <admin key>'."));
    }

    private sealed record AdminOnly;

    public static string? BearerToken(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : null;
    }
}
