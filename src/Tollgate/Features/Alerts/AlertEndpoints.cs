using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Alerts;

public sealed record AlertResponse(
    string Id, string Subject, string? Period, int? ThresholdPercent, long? Used, long? Limit, long? BalanceMicros, string Status,
    DateTimeOffset FiredAt, DateTimeOffset? ResolvedAt)
{
    public static AlertResponse From(Alert a) => new(a.Id, a.Subject, a.Period, a.Subject == AlertStore.BalanceLowSubject ? null : a.ThresholdPercent,
        a.Used, a.Limit, a.BalanceMicros, a.ResolvedAt is null ? "active" : "resolved", a.FiredAt, a.ResolvedAt);
}

public sealed record AlertSettingsResponse(IReadOnlyList<int> Thresholds, long? BalanceLowMicros, bool IsDefault)
{
    public static AlertSettingsResponse From(AlertSettings s) => new(s.Thresholds, s.BalanceLowMicros, s.IsDefault);
}

/// <summary><c>thresholds</c> in percent (1–1000, up to 10); <c>balance_low_micros</c> ≥ 0 or null (no low-balance alerts).</summary>
public sealed record AlertSettingsInput(IReadOnlyList<int>? Thresholds = null, long? BalanceLowMicros = null);

/// <summary><c>/api/v1/alerts</c>: the account's alerts (active first, then recent) and its alert settings (changes need <c>CanManage</c>).</summary>
internal static class AlertEndpoints
{
    public const int MaxPageSize = 500;

    public static IServiceCollection AddAlerts(this IServiceCollection services)
    {
        services.AddOptions<AlertOptions>().BindConfiguration(AlertOptions.Section)
            .Validate(o => o.DefaultThresholds is null || AlertOptions.ThresholdProblem(o.DefaultThresholds) is null,
                $"Tollgate:Alerts:DefaultThresholds: at most {AlertOptions.MaxThresholds} thresholds, each 1–{AlertOptions.MaxThresholdPercent} (percent).")
            .Validate(o => o.DefaultBalanceLowMicros is null or >= 0, "Tollgate:Alerts:DefaultBalanceLowMicros must be ≥ 0.")
            .Validate(o => o.CacheTtl >= TimeSpan.Zero && o.CacheTtl <= TimeSpan.FromMinutes(10), "Tollgate:Alerts:CacheTtl must be 0–10 minutes.")
            .Validate(o => o.QueueCapacity is >= 1 and <= 10_000_000, "Tollgate:Alerts:QueueCapacity must be 1–10,000,000.")
            .ValidateOnStart();
        services.AddSingleton<AlertStore>();
        services.AddSingleton<AlertService>();
        services.AddHostedService(sp => sp.GetRequiredService<AlertService>());
        return services;
    }

    public static RouteGroupBuilder MapAlerts(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/alerts").RequireApiKey().ManagersOnly().WithTags("Alerts");
        group.MapGet("/", List);
        group.MapGet("/settings", async (HttpContext http, AlertService alerts, CancellationToken ct) =>
            TypedResults.Ok(AlertSettingsResponse.From(await alerts.SettingsAsync(http.GetCaller().AccountId, ct))));
        group.MapPut("/settings", PutSettings);
        return group;
    }

    private static async Task<Results<Ok<Dictionary<string, object>>, ProblemHttpResult>> List(
        HttpContext http, AlertStore store, string? status, int? limit, CancellationToken ct)
    {
        var size = limit ?? 100;
        if (size is < 1 or > MaxPageSize) return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxPageSize}.", "limit");
        if (status is not (null or "" or "active" or "all")) return Problems.BadRequest("invalid_request", "'status' must be 'active' or 'all'.", "status");
        var alerts = await store.ListAsync(http.GetCaller().AccountId, status == "active", size, ct);
        return TypedResults.Ok(new Dictionary<string, object> { ["data"] = alerts.Select(AlertResponse.From).ToList() });
    }

    private static async Task<Results<Ok<AlertSettingsResponse>, ProblemHttpResult>> PutSettings(
        AlertSettingsInput input, HttpContext http, AlertService alerts, IOptions<AlertOptions> options, CancellationToken ct)
    {
        var thresholds = input.Thresholds ?? options.Value.EffectiveThresholds;
        if (AlertOptions.ThresholdProblem(thresholds) is { } problem) return Problems.BadRequest("invalid_request", $"'thresholds': {problem}.", "thresholds");
        if (input.BalanceLowMicros is < 0) return Problems.BadRequest("invalid_request", "'balance_low_micros' must be ≥ 0 (or null for none).", "balance_low_micros");
        return TypedResults.Ok(AlertSettingsResponse.From(await alerts.SaveSettingsAsync(http.GetCaller().AccountId, thresholds, input.BalanceLowMicros, ct)));
    }
}
