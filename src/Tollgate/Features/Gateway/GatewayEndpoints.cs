using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;

namespace Tollgate.Features.Gateway;

/// <summary>The OpenAI-compatible and Anthropic-native routes under <c>/v1</c>.</summary>
internal static class GatewayEndpoints
{
    public static IServiceCollection AddGateway(this IServiceCollection services)
    {
        services.AddOptions<GatewayOptions>().BindConfiguration(GatewayOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsValidator>();
        services.AddOptions<GatewayRateLimitOptions>().BindConfiguration(GatewayOptions.Section + ":RateLimits")
            .Validate(o => Valid(o.PerKey) && Valid(o.PerAccount), "Tollgate:Gateway:RateLimits: limits must be 0 (unlimited) or positive.")
            .Validate(o => o.SyncIntervalMs is >= 10 and <= 10_000, "Tollgate:Gateway:RateLimits:SyncIntervalMs must be 10–10000.")
            .Validate(o => o.LeaseSeconds is >= 1 and <= 600 && o.LeaseSeconds * 1000 >= 3 * o.SyncIntervalMs,
                "Tollgate:Gateway:RateLimits:LeaseSeconds must be 1–600 and at least three sync intervals.")
            .ValidateOnStart();
        services.AddSingleton<GatewayRateLimiter>();
        services.AddSingleton<IRateLimitStore, PostgresRateLimitStore>();
        services.AddSingleton<RateLimitSync>();
        services.AddSingleton<GatewayCallTracker>();
        services.AddHostedService<GatewayLifecycle>();
        // Kestrel's graceful stop waits this long for requests in flight (streams included) before aborting them.
        services.AddOptions<HostOptions>().Configure<IOptions<GatewayOptions>>((host, gateway) =>
            host.ShutdownTimeout = TimeSpan.FromSeconds(gateway.Value.ShutdownGraceSeconds));
        ProviderRegistry.Register(services);
        services.AddSingleton<ModelRouter>();
        services.AddSingleton<GatewayBilling>();
        services.AddSingleton<GatewayHandler>();
        return services;
    }

    private static bool Valid(RateLimitOptions o) => o.RequestsPerMinute >= 0 && o.TokensPerMinute >= 0 && o.ConcurrentRequests >= 0;

    public static void MapGateway(this IEndpointRouteBuilder routes)
    {
        var v1 = routes.MapGroup("/v1").WithTags("Gateway");
        v1.MapPost("/chat/completions", (HttpContext http, GatewayHandler handler, GatewayCallTracker calls) => Tracked(calls, handler.HandleAsync(http, ApiDialect.OpenAi)));
        v1.MapPost("/messages", (HttpContext http, GatewayHandler handler, GatewayCallTracker calls) => Tracked(calls, handler.HandleAsync(http, ApiDialect.Anthropic)));
        v1.MapGet("/models", ListModels);
        v1.MapGet("/models/{**id}", GetModel);
    }

    /// <summary>Counts the call as in flight until it has settled, so shutdown waits for it.</summary>
    private static async Task Tracked(GatewayCallTracker calls, Task call)
    {
        // Entered before the handler's first await: the call has not yielded yet, so it cannot have finished.
        calls.Enter();
        try
        {
            await call;
        }
        finally
        {
            calls.Exit();
        }
    }

    private static async Task<IResult> ListModels(HttpContext http, ApiKeyAuthenticator authenticator, ModelRouter router, Plans.PlanCatalog plans)
    {
        if (await AuthenticateAsync(http, authenticator) is not { } caller) return GatewayError.InvalidApiKey();
        var plan = plans.For(caller);
        var data = router.Callable().Where(x => caller.Settings.AllowsModel(x.Model.Key) && plan.AllowsModel(x.Model.Key))
            .Select(x => ModelObject(x.Model.Key, x.Provider.Name, x.Model.Model.ContextWindow)).ToList();
        return TypedResults.Json(new Dictionary<string, object> { ["object"] = "list", ["data"] = data });
    }

    private static async Task<IResult> GetModel(string id, HttpContext http, ApiKeyAuthenticator authenticator, ModelRouter router, Plans.PlanCatalog plans)
    {
        if (await AuthenticateAsync(http, authenticator) is not { } caller) return GatewayError.InvalidApiKey();
        var found = router.Callable().FirstOrDefault(x => x.Model.Key == id && caller.Settings.AllowsModel(id) && plans.For(caller).AllowsModel(id));
        return found.Model is null
            ? new GatewayError(404, "model_not_found", $"The model '{id}' does not exist or is not served here.", "model")
            : TypedResults.Json(ModelObject(found.Model.Key, found.Provider.Name, found.Model.Model.ContextWindow));
    }

    private static Dictionary<string, object?> ModelObject(string id, string provider, long? contextWindow) => new()
    {
        ["id"] = id,
        ["object"] = "model",
        ["created"] = 0,
        ["owned_by"] = provider,
        ["context_window"] = contextWindow,
    };

    private static async Task<Caller?> AuthenticateAsync(HttpContext http, ApiKeyAuthenticator authenticator)
    {
        var auth = http.Request.Headers.Authorization.ToString();
        var key = auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? auth[7..].Trim()
            : http.Request.Headers["x-api-key"] is [{ Length: > 0 } k] ? k : null;
        return await authenticator.AuthenticateAsync(key, http.RequestAborted);
    }
}
