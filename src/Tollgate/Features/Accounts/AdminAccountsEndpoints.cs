using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Http;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Accounts;

public sealed record NewAccountInput(string? Name, long? CreditLimitMicros);

public sealed record AccountResponse(
    string Id, string Name, long LedgerAccountId, long BalanceMicros, long AvailableMicros, long HeldMicros,
    long CreditLimitMicros, string Balance, string BalanceCredits, DateTimeOffset CreatedAt, string Plan)
{
    public static AccountResponse From(AccountWithBalance a, CreditUnit credits) => new(a.Account.Id, a.Account.Name, a.Ledger.Id,
        a.Ledger.BalanceMicros, a.Ledger.AvailableMicros, a.Ledger.HeldMicros, a.Ledger.CreditLimitMicros,
        Money.FormatMicros(a.Ledger.BalanceMicros), credits.Format(a.Ledger.BalanceMicros), a.Account.CreatedAt, a.Account.PlanId);
}

public sealed record PlanInput(string? Plan);

public sealed record GrantInput(long? AmountMicros, string? IdempotencyKey, string? Reason);

public sealed record GrantResponse(TransferResponse Transfer, long BalanceMicros, long AvailableMicros, bool Replayed);

/// <param name="Type"><c>standard</c> (default: usage is charged) or <c>internal</c> (usage is priced and recorded, never charged).</param>
internal static class AdminAccountsEndpoints
{
    public const int MaxPageSize = 500;

    public static RouteGroupBuilder MapAdminAccounts(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1/accounts").RequireAdminKey().WithTags("Admin: accounts");
        group.MapPost("/", Create);
        group.MapGet("/{id}", Get);
        group.MapPost("/{id}/credits", Grant);
        group.MapGet("/{id}/ledger", Ledger);
        KeyEndpoints.MapAdminKeyRoutes(group);
        Members.MemberEndpoints.MapAdminMemberRoutes(group);
        group.MapPut("/{id}/plan", SetPlan);
        return group;
    }

    private static async Task<Results<Created<AccountResponse>, ProblemHttpResult>> Create(
        NewAccountInput input, AccountService accounts, CreditUnit credits, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(input.Name) || input.Name.Length > AccountService.MaxNameLength)
            return Problems.BadRequest("invalid_request", $"'name' is required (1–{AccountService.MaxNameLength} characters).", "name");
        if (input.CreditLimitMicros is < 0 or > LedgerService.MaxAmountMicros)
            return Problems.BadRequest("invalid_request", $"'credit_limit_micros' must be 0–{LedgerService.MaxAmountMicros} (0 = prepaid).", "credit_limit_micros");
        var account = await accounts.CreateAsync(input.Name.Trim(), input.CreditLimitMicros ?? 0, ct);
        return TypedResults.Created($"/admin/v1/accounts/{account.Account.Id}", AccountResponse.From(account, credits));
    }

    /// <summary>
    /// Puts an account without a subscription on a plan (effective on the gateway within the key cache time, 1 s).
    /// An account with a live subscription changes plan through its subscription, which keeps the two in step.
    /// </summary>
    private static async Task<Results<Ok<AccountResponse>, ProblemHttpResult>> SetPlan(
        string id, PlanInput input, AccountService accounts, IAccountStore store, Plans.PlanCatalog plans, Plans.PlanCreditsService planCredits,
        Plans.SubscriptionService subscriptions, CreditUnit credits, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(input.Plan) || !plans.Exists(input.Plan))
            return Problems.BadRequest("invalid_request", $"'plan' must be one of: {string.Join(", ", plans.All.Select(p => p.Id))}.", "plan");
        if (await subscriptions.GetAsync(id, ct) is { IsLive: true } live)
            return Problems.Conflict("subscription_active",
                $"The account has a live subscription ({live.Id}, plan '{live.PlanId}'); change it with POST /admin/v1/accounts/{id}/subscription.");
        if (!await store.SetPlanAsync(id, input.Plan, ct)) return Problems.NotFound("account", id);
        // A new plan's first period starts now: its included credits too.
        await planCredits.GrantDueAsync(ct, id);
        return TypedResults.Ok(AccountResponse.From((await accounts.GetAsync(id, ct))!, credits));
    }

    private static async Task<Results<Ok<AccountResponse>, ProblemHttpResult>> Get(string id, AccountService accounts, CreditUnit credits, CancellationToken ct) =>
        await accounts.GetAsync(id, ct) is { } a ? TypedResults.Ok(AccountResponse.From(a, credits)) : Problems.NotFound("account", id);

    private static async Task<Results<Ok<GrantResponse>, ProblemHttpResult>> Grant(string id, GrantInput input, AccountService accounts, Alerts.AlertService alerts, CancellationToken ct)
    {
        if (input.AmountMicros is not { } amount || amount == 0)
            return Problems.BadRequest("invalid_request", "'amount_micros' is required and must not be 0 (negative adjusts down).", "amount_micros");
        if (string.IsNullOrEmpty(input.IdempotencyKey))
            return Problems.BadRequest("invalid_request", "'idempotency_key' is required.", "idempotency_key");
        if (input.Reason?.Length > LedgerService.MaxDescriptionLength)
            return Problems.BadRequest("invalid_request", $"'reason' is longer than {LedgerService.MaxDescriptionLength} characters.", "reason");

        var result = await accounts.GrantAsync(id, amount, input.IdempotencyKey, input.Reason, ct);
        // A top-up may end a low-balance alert (an adjustment down may start one).
        if (result.Outcome == GrantOutcome.Granted) alerts.PostBalance(id, result.BalanceMicros);
        return result.Outcome switch
        {
            GrantOutcome.Granted or GrantOutcome.Replayed => TypedResults.Ok(new GrantResponse(
                TransferResponse.From(result.Transfer!), result.BalanceMicros, result.AvailableMicros, result.Outcome == GrantOutcome.Replayed)),
            GrantOutcome.AccountNotFound => Problems.NotFound("account", id),
            GrantOutcome.InvalidAmount => Problems.BadRequest("invalid_request", $"'amount_micros' must be between -{LedgerService.MaxAmountMicros} and {LedgerService.MaxAmountMicros}.", "amount_micros"),
            GrantOutcome.InvalidIdempotencyKey => Problems.BadRequest("invalid_request",
                $"'idempotency_key' must be 1–{AccountService.MaxIdempotencyKeyLength} characters of letters, digits and _-.:@+.", "idempotency_key"),
            GrantOutcome.IdempotencyConflict => Problems.Conflict("idempotency_conflict",
                "This idempotency key was already used for a different amount or reason; nothing was changed."),
            GrantOutcome.InsufficientCredits => Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient_credits",
                "The adjustment would take the account below its available balance; nothing was changed.",
                new Dictionary<string, object?> { ["available_micros"] = result.AvailableMicros }),
            GrantOutcome.Overflow => Problems.BadRequest("amount_overflow", "The amount would overflow the account's counters.", "amount_micros"),
            _ => throw new InvalidOperationException(result.Outcome.ToString()),
        };
    }

    private static async Task<Results<Ok<Page<StatementLineResponse>>, ProblemHttpResult>> Ledger(
        string id, AccountService accounts, LedgerService ledger, int? limit, string? cursor, CancellationToken ct)
    {
        var size = limit ?? 50;
        if (size is < 1 or > MaxPageSize) return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxPageSize}.", "limit");
        long? before = null;
        if (!string.IsNullOrEmpty(cursor))
        {
            if (!long.TryParse(cursor, System.Globalization.NumberStyles.None, null, out var v) || v < 1)
                return Problems.BadRequest("invalid_request", "'cursor' is not a cursor returned by this endpoint.", "cursor");
            before = v;
        }
        if (await accounts.GetAsync(id, ct) is not { } account) return Problems.NotFound("account", id);
        var lines = await ledger.GetStatementAsync(account.Ledger.Id, before, size + 1, ct);
        var hasMore = lines.Count > size;
        var page = lines.Take(size).Select(StatementLineResponse.From).ToList();
        return TypedResults.Ok(new Page<StatementLineResponse>(page, hasMore, hasMore ? page[^1].Sequence.ToString() : null));
    }
}
