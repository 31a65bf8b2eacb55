using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Plans;

public sealed record SubscribeInput(string? Plan, string? Interval);
public sealed record CancelInput(bool? AtPeriodEnd);
public sealed record AdminSubscribeInput(string? Plan, string? Interval, string? Billing);
public sealed record AdminSubscriptionPatch(string? Status, bool? CancelAtPeriodEnd);

public sealed record SubscriptionView(
    string Id, string Plan, long PlanVersion, string Interval, string Status, string Billing, DateTimeOffset CurrentPeriodStart, DateTimeOffset CurrentPeriodEnd,
    DateTimeOffset? TrialEnd, bool CancelAtPeriodEnd, string? PendingPlan, string? PendingInterval, DateTimeOffset? CanceledAt, string? StripeSubscriptionId,
    DateTimeOffset CreatedAt)
{
    public static SubscriptionView From(Subscription s) => new(s.Id, s.PlanId, s.PlanVersion, s.Interval, s.Status, s.Billing, s.CurrentPeriodStart,
        s.CurrentPeriodEnd, s.TrialEnd, s.CancelAtPeriodEnd, s.PendingPlanId, s.PendingInterval, s.CanceledAt, s.StripeSubscriptionId, s.CreatedAt);
}

/// <param name="Plan">The plan in force for the account (with or without a subscription).</param>
public sealed record SubscriptionResponse(string Plan, SubscriptionView? Subscription);

public sealed record SubscriptionChangeResponse(string Change, SubscriptionView Subscription, long ProrationCreditMicros, long FeeMicros);

public sealed record AdminSubscriptionResponse(string Plan, SubscriptionView? Subscription, IReadOnlyList<SubscriptionEvent> History);

/// <summary>
/// <c>/api/v1/subscription</c> (the caller's account; changes need an API key or an owner's or admin's session) and
/// <c>/admin/v1/accounts/{id}/subscription</c> (any account; the admin also sets the status and the billing).
/// </summary>
internal static class SubscriptionEndpoints
{
    public static void MapSubscriptions(this IEndpointRouteBuilder routes)
    {
        var self = routes.MapGroup("/api/v1/subscription").RequireApiKey().ManagersOnly().WithTags("Subscriptions");
        self.MapGet("/", Get);
        self.MapPost("/", Change);
        self.MapPost("/cancel", Cancel);
        self.MapPost("/resume", Resume);

        var admin = routes.MapGroup("/admin/v1/accounts/{id}/subscription").RequireAdminKey().WithTags("Admin: subscriptions");
        admin.MapGet("/", AdminGet);
        admin.MapPost("/", AdminChange);
        admin.MapPatch("/", AdminPatch);
    }

    private static async Task<Ok<SubscriptionResponse>> Get(HttpContext http, SubscriptionService subscriptions, CancellationToken ct)
    {
        var caller = http.GetCaller();
        var s = await subscriptions.GetAsync(caller.AccountId, ct);
        return TypedResults.Ok(new SubscriptionResponse(s is { IsLive: true } ? s.PlanId : caller.PlanId, s is null ? null : SubscriptionView.From(s)));
    }

    private static async Task<Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult>> Change(
        SubscribeInput input, HttpContext http, SubscriptionService subscriptions, CancellationToken ct)
    {
        if (Check(input.Plan, input.Interval, null) is { } invalid) return invalid;
        var accountId = http.GetCaller().AccountId;
        // Plan changes of a subscription paid elsewhere go through that payment provider (its checkout and webhooks).
        if (await subscriptions.GetAsync(accountId, ct) is { IsLive: true, Billing: SubscriptionBilling.External })
            return Problems.Conflict("billing_external", "This subscription is billed by the payment provider; change its plan there.");
        return Answer(await subscriptions.ChangePlanAsync(accountId, input.Plan!, input.Interval ?? BillingIntervals.Month, null, ct));
    }

    private static async Task<Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult>> Cancel(
        CancelInput? input, HttpContext http, SubscriptionService subscriptions, CancellationToken ct) =>
        Answer(await subscriptions.CancelAsync(http.GetCaller().AccountId, input?.AtPeriodEnd ?? true, ct));

    private static async Task<Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult>> Resume(HttpContext http, SubscriptionService subscriptions, CancellationToken ct) =>
        Answer(await subscriptions.ResumeAsync(http.GetCaller().AccountId, ct));

    private static async Task<Results<Ok<AdminSubscriptionResponse>, ProblemHttpResult>> AdminGet(
        string id, Accounts.IAccountStore accounts, SubscriptionService subscriptions, CancellationToken ct)
    {
        if (await accounts.GetAsync(id, ct) is not { } account) return Problems.NotFound("account", id);
        var s = await subscriptions.GetAsync(id, ct);
        return TypedResults.Ok(new AdminSubscriptionResponse(account.PlanId, s is null ? null : SubscriptionView.From(s), await subscriptions.HistoryAsync(id, ct)));
    }

    private static async Task<Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult>> AdminChange(
        string id, AdminSubscribeInput input, SubscriptionService subscriptions, CancellationToken ct)
    {
        if (Check(input.Plan, input.Interval, input.Billing) is { } invalid) return invalid;
        return Answer(await subscriptions.ChangePlanAsync(id, input.Plan!, input.Interval ?? BillingIntervals.Month, input.Billing, ct));
    }

    private static async Task<Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult>> AdminPatch(
        string id, AdminSubscriptionPatch input, SubscriptionService subscriptions, CancellationToken ct)
    {
        if (input.Status is null && input.CancelAtPeriodEnd is null)
            return Problems.BadRequest("invalid_request", "Send 'status' (active, past_due, canceled) or 'cancel_at_period_end'.");
        if (input.Status is not null && (!SubscriptionStatuses.IsValid(input.Status) || input.Status == SubscriptionStatuses.Trialing))
            return Problems.BadRequest("invalid_request", "'status' must be active, past_due or canceled.", "status");
        SubscriptionResult? result = null;
        if (input.Status is not null)
        {
            result = await subscriptions.SetStatusAsync(id, input.Status, ct);
            if (!result.Succeeded) return Answer(result);
        }
        if (input.CancelAtPeriodEnd is { } cancel && input.Status != SubscriptionStatuses.Canceled)
            result = cancel ? await subscriptions.CancelAsync(id, atPeriodEnd: true, ct) : await subscriptions.ResumeAsync(id, ct);
        return Answer(result!);
    }

    private static ProblemHttpResult? Check(string? plan, string? interval, string? billing)
    {
        if (string.IsNullOrEmpty(plan)) return Problems.BadRequest("invalid_request", "'plan' is required.", "plan");
        if (interval is not null && !BillingIntervals.IsValid(interval)) return Problems.BadRequest("invalid_request", "'interval' must be 'month' or 'year'.", "interval");
        if (billing is not null && !SubscriptionBilling.IsValid(billing)) return Problems.BadRequest("invalid_request", "'billing' must be 'credits' or 'external'.", "billing");
        return null;
    }

    private static string ChangeName(SubscriptionOutcome o) => o switch
    {
        SubscriptionOutcome.DowngradeScheduled => "downgrade_scheduled",
        SubscriptionOutcome.CancelScheduled => "cancel_scheduled",
        _ => o.ToString().ToLowerInvariant(),
    };

    private static Results<Ok<SubscriptionChangeResponse>, ProblemHttpResult> Answer(SubscriptionResult r)
    {
        if (r.Succeeded && r.Subscription is { } s)
            return TypedResults.Ok(new SubscriptionChangeResponse(ChangeName(r.Outcome), SubscriptionView.From(s), r.ProrationCreditMicros, r.FeeMicros));
        return r.Outcome switch
        {
            SubscriptionOutcome.AccountNotFound => Problems.Create(StatusCodes.Status404NotFound, "not_found", "No such account."),
            SubscriptionOutcome.NoSubscription => Problems.Create(StatusCodes.Status404NotFound, "no_subscription", "The account has no active subscription."),
            SubscriptionOutcome.PlanNotAvailable => Problems.BadRequest("invalid_request", r.Message ?? "No such plan.", "plan"),
            SubscriptionOutcome.IntervalNotOffered => Problems.BadRequest("invalid_request", r.Message ?? "The plan has no price for this interval.", "interval"),
            SubscriptionOutcome.InsufficientCredits => Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient_credits",
                $"This change costs {Infrastructure.Money.Money.FormatMicros(r.FeeMicros)} USD (after a proration credit of {Infrastructure.Money.Money.FormatMicros(r.ProrationCreditMicros)} USD) and the available balance is {Infrastructure.Money.Money.FormatMicros(Math.Max(0, r.AvailableMicros))} USD; nothing changed.",
                new Dictionary<string, object?>
                {
                    ["fee_micros"] = r.FeeMicros, ["proration_credit_micros"] = r.ProrationCreditMicros, ["required_micros"] = r.RequiredMicros,
                    ["available_micros"] = r.AvailableMicros,
                }),
            SubscriptionOutcome.Conflict => Problems.Conflict("subscription_conflict", r.Message ?? "Another change to this subscription came first; nothing changed."),
            SubscriptionOutcome.InvalidState => Problems.Conflict("invalid_state", r.Message ?? "The subscription cannot make this change."),
            _ => throw new InvalidOperationException($"Unexpected subscription outcome {r.Outcome}."),
        };
    }
}
