using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Metering;

/// <summary>Body of <c>POST /api/v1/authorizations</c>.</summary>
/// <param name="Id">Client-chosen idempotency key, 1–80 characters of letters, digits and <c>_-.:@+</c>; unique per account.</param>
/// <param name="AmountMicros">Micro-USD to hold; 1–10^15.</param>
/// <param name="TtlSeconds">Seconds until the hold expires and is released; 1–86,400, default 600.</param>
/// <param name="Metadata">Optional JSON object stored with the hold.</param>
/// <param name="Model">Instead of <paramref name="AmountMicros"/>: hold the user price of <paramref name="InputTokens"/> in and
/// <paramref name="MaxOutputTokens"/> out on this model, rated now (a hold by estimate).</param>
/// <param name="InputTokens">With <paramref name="Model"/>: the whole prompt, cache tokens included; 0–10,000,000.</param>
/// <param name="MaxOutputTokens">With <paramref name="Model"/>: the most output the call may produce; 0–10,000,000.</param>
/// <param name="CustomerId">The end customer the hold is for: its spend caps apply and a blocked customer is refused.</param>
public sealed record AuthorizationInput(
    string? Id, long? AmountMicros, int? TtlSeconds, JsonElement? Metadata,
    string? Model = null, long? InputTokens = null, long? MaxOutputTokens = null, string? CustomerId = null);

/// <summary>Body of <c>POST /api/v1/authorizations/{id}/capture</c>: micro-USD to charge, 0–10^15 (may exceed the hold).</summary>
public sealed record CaptureInput(long? AmountMicros);

/// <summary>
/// An authorization over HTTP. <see cref="Flagged"/> marks a capture that asked for more than was held; then
/// <see cref="ExcessMicros"/> is the part above the hold and <see cref="ExcessChargedMicros"/> the part the balance paid.
/// <see cref="AvailableMicros"/> is the account's available balance after the request.
/// </summary>
public sealed record AuthorizationResponse(
    string Id,
    AuthorizationStatus Status,
    long AmountMicros,
    long? RequestedMicros,
    long? CapturedMicros,
    long? ReleasedMicros,
    long ExcessMicros,
    long ExcessChargedMicros,
    bool Flagged,
    DateTimeOffset? ExpiresAt,
    DateTimeOffset CreatedAt,
    JsonElement? Metadata,
    long AvailableMicros,
    bool Replayed)
{
    public static AuthorizationResponse From(AuthorizationView v, long available, bool replayed) => new(v.Id, v.Status, v.AmountMicros,
        v.RequestedMicros, v.CapturedMicros, v.ReleasedMicros, v.ExcessMicros, v.ExcessChargedMicros, v.ExcessMicros > 0,
        v.ExpiresAt, v.CreatedAt, v.Metadata is null ? null : JsonDocument.Parse(v.Metadata).RootElement.Clone(), available, replayed);
}

/// <summary>
/// Account-facing metering API under <c>/api/v1</c>, authenticated by API key. A new authorization answers 201; a
/// replay of an identical request answers 200 with <c>replayed: true</c> and the authorization's current state.
/// </summary>
internal static class MeteringEndpoints
{
    public static RouteGroupBuilder MapMetering(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/authorizations").RequireApiKey().WithTags("Metering");
        group.MapPost("/", Create);
        group.MapGet("/{id}", Get);
        group.MapPost("/{id}/capture", Capture);
        group.MapPost("/{id}/void", Void);
        return group;
    }

    private static async Task<Results<Created<AuthorizationResponse>, Ok<AuthorizationResponse>, ProblemHttpResult>> Create(
        AuthorizationInput input, HttpContext http, AuthorizationService authorizations, PricingCatalog catalog, Plans.PlanCatalog plans,
        TimeProvider time, CancellationToken ct)
    {
        if (!AuthorizationService.IsValidClientId(input.Id)) return InvalidId("id");
        if (input.Model is not null)
        {
            var estimate = Estimate(input, catalog, plans.For(http.GetCaller()).Markup, time.GetUtcNow());
            if (estimate.Problem is { } problem) return problem;
            input = input with { AmountMicros = estimate.Amount };
        }
        else if (input.InputTokens is not null || input.MaxOutputTokens is not null)
        {
            return Problems.BadRequest("invalid_request", "'input_tokens' and 'max_output_tokens' go with 'model' (a hold by estimate).", "model");
        }
        if (input.AmountMicros is not (> 0 and <= LedgerService.MaxAmountMicros))
            return Problems.BadRequest("invalid_request", $"'amount_micros' is required and must be 1–{LedgerService.MaxAmountMicros}.", "amount_micros");
        var ttl = input.TtlSeconds ?? AuthorizationService.DefaultTtlSeconds;
        if (ttl is < 1 or > AuthorizationService.MaxTtlSeconds)
            return Problems.BadRequest("invalid_request", $"'ttl_seconds' must be 1–{AuthorizationService.MaxTtlSeconds} (default {AuthorizationService.DefaultTtlSeconds}).", "ttl_seconds");
        string? metadata = null;
        if (input.Metadata is { ValueKind: not JsonValueKind.Null } m)
        {
            if (m.ValueKind != JsonValueKind.Object) return Problems.BadRequest("invalid_request", "'metadata' must be a JSON object.", "metadata");
            metadata = JsonSerializer.Serialize(m);
            if (metadata.Length > LedgerService.MaxMetadataLength)
                return Problems.BadRequest("invalid_request", $"'metadata' is longer than {LedgerService.MaxMetadataLength} characters.", "metadata");
        }

        if (input.CustomerId is { } customer && !Budgets.EndCustomerIds.IsValid(customer))
            return Problems.BadRequest("invalid_request", $"'customer_id' {Budgets.EndCustomerIds.Rule}.", "customer_id");
        if (input.CustomerId is { } named && http.GetCaller().Settings.CustomerId is { } bound && named != bound)
            return Problems.Create(StatusCodes.Status403Forbidden, "customer_not_allowed", $"This API key belongs to the end customer '{bound}' and cannot act for '{named}'.");
        var result = await authorizations.CreateAsync(http.GetCaller(), input.Id!, input.AmountMicros.Value, ttl, metadata, input.CustomerId, ct);
        return result.Outcome switch
        {
            AuthorizationOutcome.Created => TypedResults.Created($"/api/v1/authorizations/{input.Id}",
                AuthorizationResponse.From(result.Authorization!, result.AvailableMicros, replayed: false)),
            AuthorizationOutcome.Replayed => TypedResults.Ok(AuthorizationResponse.From(result.Authorization!, result.AvailableMicros, replayed: true)),
            _ => Failure(result, input.Id!),
        };
    }

    private static async Task<Results<Ok<AuthorizationResponse>, ProblemHttpResult>> Get(
        string id, HttpContext http, AuthorizationService authorizations, CancellationToken ct)
    {
        if (!AuthorizationService.IsValidClientId(id)) return Problems.NotFound("authorization", id);
        var result = await authorizations.GetAsync(http.GetCaller(), id, ct);
        return result.Authorization is { } a ? TypedResults.Ok(AuthorizationResponse.From(a, result.AvailableMicros, replayed: false)) : Failure(result, id);
    }

    private static async Task<Results<Ok<AuthorizationResponse>, ProblemHttpResult>> Capture(
        string id, CaptureInput input, HttpContext http, AuthorizationService authorizations, CancellationToken ct)
    {
        if (!AuthorizationService.IsValidClientId(id)) return Problems.NotFound("authorization", id);
        if (input.AmountMicros is not (>= 0 and <= LedgerService.MaxAmountMicros))
            return Problems.BadRequest("invalid_request", $"'amount_micros' is required and must be 0–{LedgerService.MaxAmountMicros}.", "amount_micros");
        var result = await authorizations.CaptureAsync(http.GetCaller(), id, input.AmountMicros.Value, ct);
        return Settled(result, id);
    }

    private static async Task<Results<Ok<AuthorizationResponse>, ProblemHttpResult>> Void(
        string id, HttpContext http, AuthorizationService authorizations, CancellationToken ct)
    {
        if (!AuthorizationService.IsValidClientId(id)) return Problems.NotFound("authorization", id);
        return Settled(await authorizations.VoidAsync(http.GetCaller(), id, ct), id);
    }

    private static Results<Ok<AuthorizationResponse>, ProblemHttpResult> Settled(AuthorizationResult result, string id) => result.Outcome switch
    {
        AuthorizationOutcome.Done or AuthorizationOutcome.Replayed => TypedResults.Ok(
            AuthorizationResponse.From(result.Authorization!, result.AvailableMicros, result.Outcome == AuthorizationOutcome.Replayed)),
        _ => Failure(result, id),
    };

    private static ProblemHttpResult Failure(AuthorizationResult result, string id) => result.Outcome switch
    {
        AuthorizationOutcome.NotFound => Problems.NotFound("authorization", id),
        AuthorizationOutcome.IdempotencyConflict => Problems.Conflict("idempotency_conflict",
            $"Authorization '{id}' was already used with different content; nothing was changed."),
        AuthorizationOutcome.InsufficientCredits => Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient_credits",
            "The account's available balance does not cover this amount; nothing was held.",
            new Dictionary<string, object?> { ["available_micros"] = result.AvailableMicros }),
        AuthorizationOutcome.BudgetExceeded => Problems.Create(StatusCodes.Status402PaymentRequired, "budget_exceeded",
            $"Budget exceeded: {result.ExceededCap!.Describe()} cannot cover this amount; nothing was held; {result.ExceededCap.ResetText()}.",
            new Dictionary<string, object?> { ["cap"] = result.ExceededCap.Details(), ["available_micros"] = result.AvailableMicros }),
        AuthorizationOutcome.CustomerBlocked => Problems.Create(StatusCodes.Status403Forbidden, "customer_blocked", "The end customer is blocked by the account; nothing was held."),
        AuthorizationOutcome.Expired => Problems.Conflict("authorization_expired", $"Authorization '{id}' has expired; its funds were released."),
        AuthorizationOutcome.AlreadyCaptured => Problems.Conflict("authorization_captured", $"Authorization '{id}' was already captured."),
        AuthorizationOutcome.AlreadyVoided => Problems.Conflict("authorization_voided", $"Authorization '{id}' was already voided."),
        _ => throw new InvalidOperationException(result.Outcome.ToString()),
    };

    /// <summary>
    /// The amount of a hold by estimate: the user price of the given input and maximum output, rated now. Either a
    /// problem or the amount. Unknown models are refused whatever the usage-event policy: a hold needs a price.
    /// </summary>
    private static (ProblemHttpResult? Problem, long Amount) Estimate(AuthorizationInput input, PricingCatalog catalog, decimal? planMarkup, DateTimeOffset now)
    {
        if (input.AmountMicros is not null)
            return (Problems.BadRequest("invalid_request", "Give either 'amount_micros' or 'model' with token counts, not both.", "amount_micros"), 0);
        if (string.IsNullOrWhiteSpace(input.Model) || input.Model.Length > UsageEventService.MaxModelLength)
            return (Problems.BadRequest("invalid_request", "'model' must name a priced model, e.g. \"openai/gpt-4o\".", "model"), 0);
        var usage = new TokenUsage(input.InputTokens ?? 0, input.MaxOutputTokens ?? 0);
        if (usage.Validate() is { } invalid)
        {
            var field = invalid.Field == "output_tokens" ? "max_output_tokens" : invalid.Field;
            return (Problems.BadRequest("invalid_request", $"'{field}': {invalid.Message}.", field), 0);
        }
        var resolution = catalog.Resolve(input.Model);
        switch (resolution.Outcome)
        {
            case ResolveOutcome.NotFound:
                return (Problems.Create(StatusCodes.Status404NotFound, "model_not_found",
                    $"No priced model '{input.Model}'. Use 'provider/model' ids from GET /api/v1/pricing.",
                    new Dictionary<string, object?> { ["param"] = "model" }), 0);
            case ResolveOutcome.Ambiguous:
                return (Problems.Create(StatusCodes.Status400BadRequest, "model_ambiguous",
                    $"'{input.Model}' matches models of several providers; name one as 'provider/model'.",
                    new Dictionary<string, object?> { ["param"] = "model", ["candidates"] = resolution.Candidates }), 0);
        }
        var price = Rater.Rate(resolution.Model!, usage, now, planMarkup).UserPriceMicros;
        if (price <= 0)
            return (Problems.BadRequest("invalid_request", "The estimate prices at 0 micro-USD: there is nothing to hold.", "max_output_tokens"), 0);
        return (null, price);
    }

    private static ProblemHttpResult InvalidId(string param) => Problems.BadRequest("invalid_request",
        $"'{param}' is required: 1–{AuthorizationService.MaxIdLength} characters of letters, digits and _-.:@+.", param);
}
