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
        group.AddEndpointFilter(async (context, next) =>
        {
            var keys = context.HttpContext.RequestServices.GetRequiredService<AdminKeys>();
            if (!keys.IsAdmin(BearerToken(context.HttpContext.Request)))
            {
                context.HttpContext.Response.Headers.WWWAuthenticate = "Bearer";
                return Problems.Unauthorized("An admin key is required: send 'Authorization: Bearer <admin key>'.");
            }
            return await next(context);
        });
        return group;
    }

    public static string? BearerToken(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : null;
    }
}
