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
    /// <summary>How stale the stored keys may be: a key created or deleted through the admin API (in any process) counts within this.</summary>
    public static readonly TimeSpan RefreshInterval = TimeSpan.FromSeconds(1);

    private volatile byte[][] _hashes = [];
    private long _loadedAt = Environment.TickCount64;
    private readonly SemaphoreSlim _reload = new(1, 1);

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
        Volatile.Write(ref _loadedAt, Environment.TickCount64);
        return created;
    }

    /// <summary>Reloads the stored keys when the last load is older than <see cref="RefreshInterval"/> (one reload at a time).</summary>
    public async ValueTask RefreshIfStaleAsync(CancellationToken ct)
    {
        if (Environment.TickCount64 - Volatile.Read(ref _loadedAt) < RefreshInterval.TotalMilliseconds) return;
        if (!await _reload.WaitAsync(0, ct)) return; // another request is reloading; this one uses the current set
        try
        {
            if (Environment.TickCount64 - Volatile.Read(ref _loadedAt) >= RefreshInterval.TotalMilliseconds) await ReloadAsync(ct);
        }
        finally
        {
            _reload.Release();
        }
    }

    /// <summary>Reads the stored keys now (after a change in this process).</summary>
    public async Task ReloadAsync(CancellationToken ct)
    {
        var hashes = (await store.GetAdminKeyHashesAsync(ct)).ToList();
        if (ConfiguredKey is { } configured) hashes.Add(Secrets.Hash(configured));
        _hashes = hashes.ToArray();
        Volatile.Write(ref _loadedAt, Environment.TickCount64);
    }

    /// <summary>The actor id a key's hash is known by (see <see cref="Authenticate"/>).</summary>
    public static string ActorOf(byte[] hash) => "adm_" + Convert.ToHexStringLower(hash, 0, 6);

    /// <summary>For callers that cannot wait (the dashboard's operator cookie): starts a refresh of stale hashes for the next check.</summary>
    public bool IsAdmin(string? presented)
    {
        if (Environment.TickCount64 - Volatile.Read(ref _loadedAt) >= RefreshInterval.TotalMilliseconds) _ = RefreshQuietlyAsync();
        return Authenticate(presented) is not null;
    }

    private async Task RefreshQuietlyAsync()
    {
        try { await RefreshIfStaleAsync(CancellationToken.None); }
        catch (Exception e) when (e is System.Data.Common.DbException or TimeoutException or InvalidOperationException) { } // the next check retries
    }

    /// <summary>
    /// The admin actor id for a valid admin key (<c>adm_</c> + the first 12 hex digits of its SHA-256: names the key in
    /// logs and the audit without revealing it), or null.
    /// </summary>
    public string? Authenticate(string? presented)
    {
        if (string.IsNullOrEmpty(presented)) return null;
        var hash = Secrets.Hash(presented);
        var match = false;
        // Check every stored hash without stopping early, so timing does not tell which (if any) matched.
        foreach (var h in _hashes) match |= Secrets.HashEquals(hash, h);
        return match ? ActorOf(hash) : null;
    }
}

internal static class AdminAuthFilter
{
    /// <summary>Requires <c>Authorization: Bearer &lt;admin key&gt;</c> on every route of the group.</summary>
    public static RouteGroupBuilder RequireAdminKey(this RouteGroupBuilder group)
    {
        group.WithMetadata(new AdminOnly());
        // Normally checked already by UseAdminKeyCheck (before binding); here too so a group is protected in any pipeline.
        group.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            if (await RefuseAsync(http) is { } refusal) return refusal;
            if (Audit.AuditFilter.IsMutation(http.Request.Method))
                return await Audit.AuditFilter.AroundAsync(context, next, new Audit.AuditActor("admin", (string)http.Items[ActorItem]!), null);
            return await next(context);
        });
        return group;
    }

    /// <summary>HttpContext item: the admin actor id of a request authenticated by <see cref="RequireAdminKey"/>.</summary>
    public const string ActorItem = "tollgate.admin_actor";

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

    /// <summary>Null when the request carries a valid admin key (its actor id then in <see cref="ActorItem"/>), else the refusal.</summary>
    private static async Task<IResult?> RefuseAsync(HttpContext http)
    {
        if (http.Items.ContainsKey(ActorItem)) return null;
        var keys = http.RequestServices.GetRequiredService<AdminKeys>();
        await keys.RefreshIfStaleAsync(http.RequestAborted);
        var limiter = http.RequestServices.GetRequiredService<AuthFailureLimiter>();
        var attempts = http.RequestServices.GetRequiredService<SignInAttempts>();
        var ip = http.Connection.RemoteIpAddress;
        var token = BearerToken(http.Request);
        if (token is not null && limiter.RetryAfter(http) is { } wait)
        {
            http.Response.Headers.RetryAfter = AuthFailureLimiter.Seconds(wait);
            return Problems.Create(StatusCodes.Status429TooManyRequests, "too_many_failed_attempts", AuthFailureLimiter.Message(wait));
        }
        // Someone guessing admin keys from one address is stopped before the comparison, right or wrong.
        if (token is not null && attempts.RetryAfter(SignInAttempts.AdminScope, ip, null) is { } slow)
            return SignInAttempts.TooMany(http, slow);
        if (keys.Authenticate(token) is { } actor)
        {
            http.Items[ActorItem] = actor;
            return null;
        }
        if (token is not null)
        {
            limiter.Failed(http);
            attempts.RecordFailure(SignInAttempts.AdminScope, ip, null);
        }
        http.Response.Headers.WWWAuthenticate = "Bearer";
        return Problems.Unauthorized("An admin key is required: send 'Authorization: Bearer <admin key>'.");
    }

    private sealed record AdminOnly;

    public static string? BearerToken(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : null;
    }
}
