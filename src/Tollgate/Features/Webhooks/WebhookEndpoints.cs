using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Webhooks;

/// <summary>An endpoint as shown: never its secret (that exists only in the creation and rotation responses).</summary>
public sealed record WebhookResponse(string Id, string Url, string? Description, IReadOnlyList<string> Events, bool Enabled, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt,
    DateTimeOffset? PreviousSecretExpiresAt)
{
    public static WebhookResponse From(WebhookEndpoint e) => new(e.Id, e.Url, e.Description, e.Events, e.Enabled, e.CreatedAt, e.UpdatedAt, e.PreviousSecretExpiresAt);
}

/// <summary>The creation or rotation response: the only time the signing <see cref="Secret"/> is shown.</summary>
public sealed record WebhookWithSecretResponse(string Id, string Url, string? Description, IReadOnlyList<string> Events, bool Enabled, DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt, DateTimeOffset? PreviousSecretExpiresAt, string Secret);

/// <summary>How long the replaced secret keeps signing (0: it stops at once); absent: <see cref="WebhookEndpoints.DefaultOverlap"/>.</summary>
public sealed record RotateSecretInput(long? ExpirePreviousInSeconds = null);

public sealed record NewWebhookInput(string? Url = null, IReadOnlyList<string>? Events = null, string? Description = null);

/// <summary>Fields to change; absent or null: unchanged; an empty description clears it.</summary>
public sealed record WebhookPatchInput(string? Url = null, IReadOnlyList<string>? Events = null, string? Description = null, bool? Enabled = null);

public sealed record DeliveryPage(IReadOnlyList<WebhookDelivery> Data, bool HasMore, string? NextCursor);

public sealed record EventResponse(string Id, string Type, DateTimeOffset CreatedAt, JsonElement Data);

public sealed record EventPage(IReadOnlyList<EventResponse> Data, bool HasMore, string? NextCursor);

public sealed record ReplayResponse(string DeliveryId, WebhookAttempt Attempt);

/// <summary>
/// <c>/api/v1/webhooks</c> (the caller's account's endpoints, deliveries and replays) and <c>/api/v1/events</c>. Any key
/// or member of the account reads; changes need <c>CanManage</c>. Every lookup is scoped by the caller's account, so
/// another account's ids are simply not found (404).
/// </summary>
internal static partial class WebhookEndpoints
{
    public const int MaxUrlLength = 2_000;
    public const int MaxDescriptionLength = 200;
    public const int MaxEventPatterns = 20;
    public const int MaxPageSize = 100;

    [GeneratedRegex(@"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")]
    private static partial Regex EventPattern();

    public static IServiceCollection AddWebhooks(this IServiceCollection services)
    {
        services.AddOptions<WebhookOptions>().BindConfiguration(WebhookOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<WebhookOptions>, WebhookOptionsValidator>();
        services.AddSingleton<WebhookStore>();
        services.AddSingleton<WebhookSignal>();
        services.AddSingleton<WebhookSender>();
        services.AddSingleton<WebhookDispatcher>();
        services.AddHostedService(sp => sp.GetRequiredService<WebhookDispatcher>());
        services.AddHttpClient(WebhookSender.ClientName, c => c.Timeout = Timeout.InfiniteTimeSpan)
            // No redirects (a delivery goes to the registered URL only), no cookies, no ambient proxy.
            .ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false, UseProxy = false });
        return services;
    }

    public static RouteGroupBuilder MapWebhooks(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/webhooks").RequireApiKey().ManagersOnly().WithTags("Webhooks");
        group.MapPost("/", Create);
        group.MapGet("/", async (HttpContext http, WebhookStore store, CancellationToken ct) =>
            TypedResults.Ok(new Dictionary<string, object> { ["data"] = (await store.ListAsync(http.GetCaller().AccountId, ct)).Select(WebhookResponse.From).ToList() }));
        group.MapGet("/{id}", async Task<Results<Ok<WebhookResponse>, ProblemHttpResult>> (string id, HttpContext http, WebhookStore store, CancellationToken ct) =>
            await store.GetAsync(http.GetCaller().AccountId, id, ct) is { } e ? TypedResults.Ok(WebhookResponse.From(e)) : Problems.NotFound("webhook endpoint", id));
        group.MapPatch("/{id}", Update);
        group.MapDelete("/{id}", async Task<Results<NoContent, ProblemHttpResult>> (string id, HttpContext http, WebhookStore store, TimeProvider time, CancellationToken ct) =>
            await store.DeleteAsync(http.GetCaller().AccountId, id, time.GetUtcNow(), ct) ? TypedResults.NoContent() : Problems.NotFound("webhook endpoint", id));
        group.MapPost("/{id}/rotate-secret", RotateSecret);
        group.MapGet("/{id}/deliveries", Deliveries);
        group.MapPost("/deliveries/{deliveryId}/replay", ReplayAsync);

        routes.MapGroup("/api/v1/events").RequireApiKey().WithTags("Webhooks").MapGet("/", Events);
        return group;
    }

    private static async Task<Results<Created<WebhookWithSecretResponse>, ProblemHttpResult>> Create(
        NewWebhookInput input, HttpContext http, WebhookStore store, WebhookSender sender, TimeProvider time, CancellationToken ct)
    {
        if (input.Url is null) return Problems.BadRequest("invalid_request", "'url' is required.", "url");
        if (Invalid(input.Url, input.Events, input.Description) is { } problem) return problem;
        var secret = WebhookSignature.NewSecret();
        var e = await store.CreateAsync(http.GetCaller().AccountId, input.Url, input.Events ?? ["*"], NullIfEmpty(input.Description), sender.Protect(secret), time.GetUtcNow(), ct);
        return TypedResults.Created("/api/v1/webhooks/" + e.Id, WithSecret(e, secret));
    }

    private static async Task<Results<Ok<WebhookResponse>, ProblemHttpResult>> Update(
        string id, WebhookPatchInput input, HttpContext http, WebhookStore store, TimeProvider time, CancellationToken ct)
    {
        if (Invalid(input.Url, input.Events, input.Description) is { } problem) return problem;
        return await store.UpdateAsync(http.GetCaller().AccountId, id, input.Url, input.Events, input.Description, input.Enabled, time.GetUtcNow(), ct) is { } e
            ? TypedResults.Ok(WebhookResponse.From(e))
            : Problems.NotFound("webhook endpoint", id);
    }

    /// <summary>Default overlap of a rotation: the replaced secret signs too for a day, so receivers can switch unhurried.</summary>
    public static readonly TimeSpan DefaultOverlap = TimeSpan.FromHours(24);
    public static readonly TimeSpan MaxOverlap = TimeSpan.FromDays(7);

    /// <summary>
    /// A new secret, which signs every delivery from now on; the replaced one keeps signing beside it (a second
    /// <c>v1</c>) for the overlap asked for, so a receiver that still has the old secret keeps verifying.
    /// </summary>
    private static async Task<Results<Ok<WebhookWithSecretResponse>, ProblemHttpResult>> RotateSecret(
        string id, RotateSecretInput? input, HttpContext http, WebhookStore store, WebhookSender sender, TimeProvider time, CancellationToken ct)
    {
        var overlapSeconds = input?.ExpirePreviousInSeconds ?? (long)DefaultOverlap.TotalSeconds;
        if (overlapSeconds < 0 || overlapSeconds > (long)MaxOverlap.TotalSeconds)
            return Problems.BadRequest("invalid_request", $"'expire_previous_in_seconds' must be 0–{(long)MaxOverlap.TotalSeconds} (7 days).", "expire_previous_in_seconds");
        var accountId = http.GetCaller().AccountId;
        var secret = WebhookSignature.NewSecret();
        var now = time.GetUtcNow();
        if (!await store.SetSecretAsync(accountId, id, sender.Protect(secret), now, overlapSeconds == 0 ? null : now.AddSeconds(overlapSeconds), ct))
            return Problems.NotFound("webhook endpoint", id);
        return TypedResults.Ok(WithSecret((await store.GetAsync(accountId, id, ct))!, secret));
    }

    private static async Task<Results<Ok<DeliveryPage>, ProblemHttpResult>> Deliveries(
        string id, HttpContext http, WebhookStore store, int? limit, string? cursor, CancellationToken ct)
    {
        var size = limit ?? 20;
        if (size is < 1 or > MaxPageSize) return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxPageSize}.", "limit");
        var accountId = http.GetCaller().AccountId;
        if (!await store.EndpointExistsAsync(accountId, id, ct)) return Problems.NotFound("webhook endpoint", id);
        var rows = await store.ListDeliveriesAsync(accountId, id, string.IsNullOrEmpty(cursor) ? null : cursor, size + 1, ct);
        var page = rows.Take(size).ToList();
        return TypedResults.Ok(new DeliveryPage(page, rows.Count > size, rows.Count > size ? page[^1].Id : null));
    }

    /// <summary>Sends the delivery again now, whatever its state, as an extra attempt (it does not count against the retries).</summary>
    private static async Task<Results<Ok<ReplayResponse>, ProblemHttpResult>> ReplayAsync(
        string deliveryId, HttpContext http, WebhookStore store, WebhookSender sender, TimeProvider time, CancellationToken ct)
    {
        var target = await store.TargetAsync(deliveryId, http.GetCaller().AccountId, ct);
        if (target is null) return Problems.NotFound("webhook delivery", deliveryId);
        if (!target.EndpointUsable) return Problems.Conflict("endpoint_unavailable", "The delivery's endpoint was deleted or is disabled; nothing was sent.");
        var (code, error, ms) = await sender.SendAsync(target, ct);
        var attempt = await store.RecordAttemptAsync(deliveryId, WebhookStore.Replay, null, time.GetUtcNow(), code, error, ms,
            error is null ? WebhookStore.Succeeded : target.Status, null, CancellationToken.None);
        return TypedResults.Ok(new ReplayResponse(deliveryId, attempt));
    }

    private static async Task<Results<Ok<EventPage>, ProblemHttpResult>> Events(
        HttpContext http, WebhookStore store, int? limit, string? cursor, string? type, CancellationToken ct)
    {
        var size = limit ?? 20;
        if (size is < 1 or > MaxPageSize) return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxPageSize}.", "limit");
        var rows = await store.ListEventsAsync(http.GetCaller().AccountId, string.IsNullOrEmpty(type) ? null : type, string.IsNullOrEmpty(cursor) ? null : cursor, size + 1, ct);
        var page = rows.Take(size).Select(e => new EventResponse(e.Id, e.Type, e.CreatedAt, JsonDocument.Parse(e.Payload).RootElement.GetProperty("data").Clone())).ToList();
        return TypedResults.Ok(new EventPage(page, rows.Count > size, rows.Count > size ? page[^1].Id : null));
    }

    private static WebhookWithSecretResponse WithSecret(WebhookEndpoint e, string secret) =>
        new(e.Id, e.Url, e.Description, e.Events, e.Enabled, e.CreatedAt, e.UpdatedAt, e.PreviousSecretExpiresAt, secret);

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    private static ProblemHttpResult? Invalid(string? url, IReadOnlyList<string>? events, string? description)
    {
        if (url is not null && (url.Length > MaxUrlLength || !Uri.TryCreate(url, UriKind.Absolute, out var uri)
                                || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) || !string.IsNullOrEmpty(uri.UserInfo) || uri.Host.Length == 0))
            return Problems.BadRequest("invalid_url", $"'url' must be an absolute http:// or https:// URL without credentials, at most {MaxUrlLength} characters.", "url");
        if (events is not null && (events.Count is 0 or > MaxEventPatterns || events.Any(e => e is null || !EventPattern().IsMatch(e))))
            return Problems.BadRequest("invalid_request",
                $"'events' must list 1–{MaxEventPatterns} event types or patterns such as \"alert.fired\", \"alert.*\" or \"*\".", "events");
        if (description?.Length > MaxDescriptionLength)
            return Problems.BadRequest("invalid_request", $"'description' is longer than {MaxDescriptionLength} characters.", "description");
        return null;
    }
}
