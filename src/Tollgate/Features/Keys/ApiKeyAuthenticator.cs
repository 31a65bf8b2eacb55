using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Tollgate.Features.Accounts;
using Tollgate.Features.Admin;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Keys;

/// <summary>
/// The authenticated caller of an <c>/api/v1</c> route: one live API key and the account it belongs to.
/// <see cref="KeyType"/> is <see cref="ApiKeyTypes.Standard"/> or <see cref="ApiKeyTypes.Internal"/>.
/// </summary>
public sealed record Caller(string KeyId, string AccountId, long LedgerAccountId, string KeyType = ApiKeyTypes.Standard)
{
    /// <summary>The operator's own traffic: usage is priced and recorded as <c>internal</c>, never debited.</summary>
    public bool IsInternal => KeyType == ApiKeyTypes.Internal;

    /// <summary>The key's own restrictions (allowed models, expiry, rate limits).</summary>
    public KeySettings Settings { get; init; } = KeySettings.None;

    /// <summary>The account's plan (a <c>Tollgate:Plans</c> id).</summary>
    public string PlanId { get; init; } = Plans.PlanCatalog.DefaultPlanId;

    /// <summary>When the account's plan began (its periods count from here).</summary>
    public DateTimeOffset PlanAnchor { get; init; }

    /// <summary>The plan version the account's subscription holds (null: the plan's current definition).</summary>
    public long? PlanVersion { get; init; }

    /// <summary>Length of the account's plan periods in months: 1 (monthly) or 12 (yearly).</summary>
    public int PlanPeriodMonths { get; init; } = 1;

    /// <summary>For a dashboard session, the member's role in the account; null for an API key (which acts as the account).</summary>
    public string? Role { get; init; }
    public string? UserId { get; init; }

    /// <summary>The first key of this key's rotation chain: its spend caps are counted there. Null for a session.</summary>
    public string? KeyLineageId { get; init; }

    /// <summary>True when the caller may change the account's keys, provider keys and members: an API key, or an owner or admin.</summary>
    public bool CanManage => Role is null or Members.Roles.Owner or Members.Roles.Admin;
}

/// <summary>The values of <c>api_keys.type</c>.</summary>
public static class ApiKeyTypes
{
    /// <summary>A customer's key: usage is charged to the account's credits.</summary>
    public const string Standard = "standard";
    /// <summary>The operator's own key: usage is priced and recorded, never debited.</summary>
    public const string Internal = "internal";

    public static bool IsValid(string? type) => type is Standard or Internal;
}

/// <summary>
/// Resolves <c>Authorization: Bearer tg_…</c> to a <see cref="Caller"/>: SHA-256 of the key, then the live key with that
/// hash and its account. Results (found or not) are cached in-process by hash for <see cref="CacheTtl"/>, so a revoked
/// key stops working within that time while a busy key costs one lookup per second, not one per request.
/// <c>last_used_at</c> is written at most once per <see cref="LastUsedResolution"/> per key.
/// </summary>
internal sealed class ApiKeyAuthenticator(IApiKeyStore keys, IAccountStore accounts, TimeProvider time)
{
    public static readonly TimeSpan CacheTtl = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan LastUsedResolution = TimeSpan.FromMinutes(1);

    /// <summary>Bound on cached hashes: unknown keys are cached too, so a flood of random keys must not grow memory without limit.</summary>
    private const int MaxCacheEntries = 10_000;

    private readonly SingleFlightCache<string, Caller?> _cache = new(CacheTtl, MaxCacheEntries);
    private readonly ConcurrentDictionary<string, DateTimeOffset> _touched = new(StringComparer.Ordinal);

    /// <summary>The caller for a presented key, or null if it is missing, malformed, unknown or revoked.</summary>
    public async ValueTask<Caller?> AuthenticateAsync(string? presented, CancellationToken ct)
    {
        // Admin keys ("tg_admin_…") are a different credential and never authenticate an account route.
        if (string.IsNullOrEmpty(presented) || !presented.StartsWith("tg_", StringComparison.Ordinal)
            || presented.StartsWith("tg_admin_", StringComparison.Ordinal) || presented.Length > 200)
            return null;
        var hash = Secrets.Hash(presented);
        var now = time.GetUtcNow();
        var caller = await _cache.GetAsync(Convert.ToHexString(hash), now, (Self: this, Hash: hash, Now: now), static (_, s) => s.Self.LoadAsync(s.Hash, s.Now), ct);
        return Live(caller, now);
    }

    private async Task<Caller?> LoadAsync(byte[] hash, DateTimeOffset now)
    {
        if (await keys.FindByHashAsync(hash, CancellationToken.None) is not { } key
            || await accounts.GetAsync(key.AccountId, CancellationToken.None) is not { } account)
            return null;
        var caller = new Caller(key.Id, account.Id, account.LedgerAccountId, key.Type)
        {
            Settings = key.Settings, PlanId = account.PlanId, PlanAnchor = account.PlanAnchor, PlanVersion = account.PlanVersion,
            PlanPeriodMonths = account.PlanPeriodMonths, KeyLineageId = key.LineageId,
        };
        if (Live(caller, now) is not null) await TouchAsync(key, now, CancellationToken.None);
        return caller;
    }

    /// <summary>An expired key is refused like a revoked one (the check is made on every use, cached or not).</summary>
    private static Caller? Live(Caller? caller, DateTimeOffset now) => caller?.Settings.ExpiresAt is { } e && e <= now ? null : caller;

    private async Task TouchAsync(ApiKeyRecord key, DateTimeOffset now, CancellationToken ct)
    {
        if (key.LastUsedAt is { } stored && now - stored < LastUsedResolution) return;
        if (_touched.TryGetValue(key.Id, out var last) && now - last < LastUsedResolution) return;
        _touched[key.Id] = now;
        await keys.TouchLastUsedAsync(key.Id, now, ct);
    }
}

internal static class ApiKeyAuthFilter
{
    private const string CallerItem = "tollgate.caller";

    /// <summary>Requires <c>Authorization: Bearer tg_…</c> (a live API key) on every route of the group; 401 <c>invalid_api_key</c> otherwise.</summary>
    public static RouteGroupBuilder RequireApiKey(this RouteGroupBuilder group)
    {
        group.WithMetadata(new ApiKeyRequired());
        // Normally done already by UseApiKeyCheck (before binding); here too so a group is protected in any pipeline.
        group.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            if (!http.Items.ContainsKey(CallerItem) && await AuthenticateAsync(http) is { } refusal) return refusal;
            // Account-admin changes (the ManagersOnly groups) are audited; data-plane writes (usage, holds) are not.
            if (Audit.AuditFilter.IsMutation(http.Request.Method) && http.GetEndpoint()?.Metadata.GetMetadata<ManagerOnly>() is not null)
            {
                var caller = http.GetCaller();
                return await Audit.AuditFilter.AroundAsync(context, next, Audit.AuditActor.For(caller), caller.AccountId);
            }
            return await next(context);
        });
        return group;
    }

    /// <summary>
    /// Authenticates routes marked by <see cref="RequireApiKey"/> before their parameters are bound (an endpoint filter
    /// runs after binding), so without a valid key a malformed body is a 401 like any other request.
    /// </summary>
    public static void UseApiKeyCheck(this IApplicationBuilder app) => app.Use(async (http, next) =>
    {
        if (http.GetEndpoint()?.Metadata.GetMetadata<ApiKeyRequired>() is not null && await AuthenticateAsync(http) is { } refusal)
        {
            await refusal.ExecuteAsync(http);
            return;
        }
        await next(http);
    });

    /// <summary>Sets the caller, or returns the refusal.</summary>
    private static async Task<IResult?> AuthenticateAsync(HttpContext http)
    {
        var token = AdminAuthFilter.BearerToken(http.Request);
        var limiter = http.RequestServices.GetRequiredService<AuthFailureLimiter>();
        if (token is not null && limiter.RetryAfter(http) is { } wait)
        {
            http.Response.Headers.RetryAfter = AuthFailureLimiter.Seconds(wait);
            return Problems.Create(StatusCodes.Status429TooManyRequests, "too_many_failed_attempts", AuthFailureLimiter.Message(wait));
        }
        // A dashboard session authenticates the self-service API too (with its member's role); API keys act as the account.
        var caller = Members.MemberService.IsSessionToken(token)
            ? await http.RequestServices.GetRequiredService<Members.MemberService>().AuthenticateAsync(token!, http.RequestAborted)
            : await http.RequestServices.GetRequiredService<ApiKeyAuthenticator>().AuthenticateAsync(token, http.RequestAborted);
        if (caller is null)
        {
            if (token is not null) limiter.Failed(http);
            http.Response.Headers.WWWAuthenticate = "Bearer";
            return Problems.Create(StatusCodes.Status401Unauthorized, "invalid_api_key",
                "A valid API key or session is required: send 'Authorization: Bearer tg_…'. It may be missing, unknown, expired or revoked.");
        }
        // Changes to keys, provider keys and members need an owner or admin; members may also use the account (usage,
        // holds, entitlement use); viewers only read (a POST that only asks, like an entitlement check, is a read).
        if (!HttpMethods.IsGet(http.Request.Method) && http.GetEndpoint()?.Metadata is { } metadata)
        {
            if (!caller.CanManage && metadata.GetMetadata<ManagerOnly>() is not null)
                return Problems.Create(StatusCodes.Status403Forbidden, "forbidden", $"Your role '{caller.Role}' cannot change this; an owner or admin can.");
            if (caller.Role == Members.Roles.Viewer && metadata.GetMetadata<ReadOnlyRoute>() is null)
                return Problems.Create(StatusCodes.Status403Forbidden, "forbidden", $"Your role '{caller.Role}' can only read; a member, admin or owner can do this.");
        }
        http.Items[CallerItem] = caller;
        return null;
    }

    private sealed record ApiKeyRequired;

    /// <summary>Marks a route group whose changes (non-GET) need an API key or an owner's or admin's session.</summary>
    public static RouteGroupBuilder ManagersOnly(this RouteGroupBuilder group) => group.WithMetadata(new ManagerOnly());

    /// <summary>Marks a POST that changes nothing (it only asks), so a viewer's session may call it.</summary>
    public static RouteHandlerBuilder ReadOnly(this RouteHandlerBuilder route) => route.WithMetadata(new ReadOnlyRoute());

    /// <summary>The caller, if the request has been authenticated as one (null on other routes, for logs).</summary>
    public static Caller? TryGetCaller(this HttpContext http) => http.Items.TryGetValue(CallerItem, out var c) ? c as Caller : null;

    /// <summary>Records the caller of a route that authenticates by itself (the gateway), for the access log.</summary>
    public static void SetCaller(this HttpContext http, Caller caller) => http.Items[CallerItem] = caller;

    /// <summary>The caller set by <see cref="RequireApiKey"/>; only valid inside such a group.</summary>
    public static Caller GetCaller(this HttpContext http) =>
        http.Items[CallerItem] as Caller ?? throw new InvalidOperationException("No API key caller: the route is not behind RequireApiKey().");
}

/// <summary>Endpoint metadata: see <see cref="ApiKeyAuthFilter.ManagersOnly"/>.</summary>
internal sealed record ManagerOnly;

/// <summary>Endpoint metadata: see <see cref="ApiKeyAuthFilter.ReadOnly"/>.</summary>
internal sealed record ReadOnlyRoute;
