using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Http;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Marketplace;

/// <summary>price_micros for monthly/one_time; markup_bps (basis points: 5000 = +50 %) for per_token.</summary>
public sealed record AgentInput(string? Name, string? PricingMode, long? PriceMicros, long? MarkupBps);

/// <summary>An agent as listed; <c>mine</c> tells the creator it is theirs (the creator's account id is not shown to others).</summary>
public sealed record AgentView(string Id, string Name, string PricingMode, long PriceMicros, long MarkupBps, int CreatorSharePercent, bool Mine,
    DateTimeOffset CreatedAt)
{
    public static AgentView From(Agent a, string callerAccountId) =>
        new(a.Id, a.Name, a.PricingMode, a.PriceMicros, a.MarkupBps, a.CreatorSharePercent, a.CreatorAccountId == callerAccountId, a.CreatedAt);
}

public sealed record AgentPurchaseResponse(string AgentId, string Period, long AmountMicros, long CreatorMicros, long PlatformMicros, bool AlreadyOwned,
    IReadOnlyList<string> TransferIds);

public sealed record EarningsGroup(string? AgentId, string? Period, long Count, long AmountMicros);

public sealed record EarningsResponse(string AccountId, long EarningsLedgerAccountId, long BalanceMicros, long TotalEarnedMicros, string GroupBy,
    IReadOnlyList<EarningsGroup> Data);

/// <param name="StripeDestination">The creator's Stripe connected account (<c>acct_…</c>): with Stripe configured the payout is also sent there.</param>
public sealed record PayoutInput(string? Id, long? AmountMicros, string? StripeDestination = null);

public sealed record PayoutResponse(string Id, string CreatorAccountId, long AmountMicros, string TransferId, DateTimeOffset CreatedAt, bool Replayed)
{
    public string? StripeTransferId { get; init; }
}

/// <summary>
/// <c>POST/GET /api/v1/agents</c>, <c>GET /api/v1/agents/{agentId}</c>, <c>POST /api/v1/agents/{agentId}/purchase</c>,
/// <c>GET /api/v1/creator/earnings?group_by=agent|period|agent_period</c>, admin <c>POST /admin/v1/creators/{account}/payouts</c>
/// and <c>GET /admin/v1/creators/{account}/earnings</c>.
/// </summary>
public static class MarketplaceEndpoints
{
    public static void AddMarketplace(IServiceCollection services)
    {
        services.AddSingleton<ConnectPayouts>();
        services.AddOptions<MarketplaceOptions>().BindConfiguration(MarketplaceOptions.Section)
            .Validate(o => o.CreatorSharePercent is >= 0 and <= 100, "Tollgate:Marketplace:CreatorSharePercent must be an integer 0–100.")
            .ValidateOnStart();
        services.AddSingleton<MarketplaceService>();
    }

    public static void MapMarketplace(IEndpointRouteBuilder routes)
    {
        var agents = routes.MapGroup("/api/v1/agents").RequireApiKey().WithTags("Marketplace");
        agents.MapGet("/", async (HttpContext http, MarketplaceService market, bool? mine, CancellationToken ct) =>
        {
            var caller = http.GetCaller().AccountId;
            return TypedResults.Ok(new Dictionary<string, object>
            {
                ["data"] = (await market.ListAsync(mine == true ? caller : null, ct)).Select(a => AgentView.From(a, caller)).ToList(),
            });
        });
        agents.MapGet("/{agentId}", async Task<Results<Ok<AgentView>, ProblemHttpResult>> (string agentId, HttpContext http, MarketplaceService market, CancellationToken ct) =>
            await market.GetAsync(agentId, ct) is { } a ? TypedResults.Ok(AgentView.From(a, http.GetCaller().AccountId)) : Problems.NotFound("agent", agentId));
        var managers = routes.MapGroup("/api/v1/agents").RequireApiKey().ManagersOnly().WithTags("Marketplace");
        managers.MapPost("/", CreateAsync);
        managers.MapPost("/{agentId}/purchase", PurchaseAsync);

        routes.MapGroup("/api/v1/creator").RequireApiKey().ManagersOnly().WithTags("Marketplace")
            .MapGet("/earnings", (HttpContext http, string? group_by, MarketplaceService market, LedgerService ledger, CancellationToken ct) =>
                EarningsAsync(http.GetCaller().AccountId, group_by, market, ledger, ct));

        var admin = routes.MapGroup("/admin/v1/creators/{account}").RequireAdminKey().WithTags("Admin: marketplace");
        admin.MapGet("/earnings", (string account, string? group_by, MarketplaceService market, LedgerService ledger, CancellationToken ct) =>
            EarningsAsync(account, group_by, market, ledger, ct));
        admin.MapPost("/payouts", PayoutAsync);
    }

    private static async Task<Results<Created<AgentView>, ProblemHttpResult>> CreateAsync(AgentInput? input, HttpContext http, MarketplaceService market, CancellationToken ct)
    {
        if (input?.Name is not { } name || name.Trim().Length is 0 or > 100)
            return Problems.BadRequest("invalid_request", "'name' is required (1–100 characters).", "name");
        if (input.PricingMode is not { } mode || !PricingModes.All.Contains(mode))
            return Problems.BadRequest("invalid_request", $"'pricing_mode' must be one of: {string.Join(", ", PricingModes.All)}.", "pricing_mode");
        long price = 0, markup = 0;
        switch (mode)
        {
            case PricingModes.Monthly or PricingModes.OneTime:
                if (input.PriceMicros is not (> 0 and <= LedgerService.MaxAmountMicros) || input.MarkupBps is not null)
                    return Problems.BadRequest("invalid_request", $"A {mode} agent needs 'price_micros' (1–{LedgerService.MaxAmountMicros}) and no 'markup_bps'.", "price_micros");
                price = input.PriceMicros.Value;
                break;
            case PricingModes.PerToken:
                if (input.MarkupBps is not (> 0 and <= 1_000_000) || input.PriceMicros is not null)
                    return Problems.BadRequest("invalid_request", "A per_token agent needs 'markup_bps' (1–1,000,000 basis points: 5000 = +50 % on the model price) and no 'price_micros'.", "markup_bps");
                markup = input.MarkupBps.Value;
                break;
            default:
                if (input.PriceMicros is not null || input.MarkupBps is not null)
                    return Problems.BadRequest("invalid_request", "A free agent has no 'price_micros' or 'markup_bps'.", "pricing_mode");
                break;
        }
        var agent = await market.CreateAsync(http.GetCaller().AccountId, name.Trim(), mode, price, markup, ct);
        return TypedResults.Created($"/api/v1/agents/{agent.Id}", AgentView.From(agent, agent.CreatorAccountId));
    }

    private static async Task<Results<Ok<AgentPurchaseResponse>, ProblemHttpResult>> PurchaseAsync(string agentId, HttpContext http, MarketplaceService market, CancellationToken ct)
    {
        if (await market.GetAsync(agentId, ct) is not { } agent) return Problems.NotFound("agent", agentId);
        var caller = http.GetCaller();
        if (agent.CreatorAccountId == caller.AccountId)
            return Problems.BadRequest("own_agent", "Creators use their own agents without buying them.", "agent_id");
        if (!agent.NeedsPurchase)
            return Problems.BadRequest("not_for_sale", $"The agent '{agent.Id}' is {agent.PricingMode}: there is nothing to buy; call it with the x-tollgate-agent header.", "agent_id");
        var result = await market.PurchaseAsync(caller.AccountId, caller.LedgerAccountId, agent, ct);
        if (result.Outcome == MarketplaceService.PurchaseOutcome.InsufficientCredits)
            return Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient_credits",
                $"The agent costs {Money.FormatMicros(agent.PriceMicros)} USD and the available balance does not cover it; nothing was bought.",
                new Dictionary<string, object?> { ["required_micros"] = agent.PriceMicros });
        return TypedResults.Ok(new AgentPurchaseResponse(agent.Id, result.Period, result.Split.ChargeMicros, result.Split.CreatorMicros, result.Split.PlatformMicros,
            result.Outcome == MarketplaceService.PurchaseOutcome.AlreadyOwned, result.TransferIds));
    }

    private static async Task<Results<Ok<EarningsResponse>, ProblemHttpResult>> EarningsAsync(string accountId, string? groupBy, MarketplaceService market,
        LedgerService ledger, CancellationToken ct)
    {
        groupBy ??= "agent_period";
        if (groupBy is not ("agent" or "period" or "agent_period"))
            return Problems.BadRequest("invalid_request", "'group_by' must be agent, period or agent_period.", "group_by");
        var rows = await market.EarningsAsync(accountId, ct);
        var groups = rows
            .GroupBy(r => (Agent: groupBy == "period" ? null : r.AgentId, Period: groupBy == "agent" ? null : r.Period))
            .Select(g => new EarningsGroup(g.Key.Agent, g.Key.Period, g.Sum(r => r.Count), g.Aggregate(0L, (s, r) => checked(s + r.AmountMicros))))
            .ToList();
        var ledgerId = await market.EarningsAccountAsync(accountId, ct);
        var balance = (await ledger.GetAccountAsync(ledgerId, ct))?.BalanceMicros ?? 0;
        return TypedResults.Ok(new EarningsResponse(accountId, ledgerId, balance, rows.Aggregate(0L, (s, r) => checked(s + r.AmountMicros)), groupBy, groups));
    }

    private static async Task<Results<Ok<PayoutResponse>, ProblemHttpResult>> PayoutAsync(string account, PayoutInput? input, MarketplaceService market,
        Accounts.IAccountStore accounts, ConnectPayouts connect, Microsoft.Extensions.Options.IOptions<Payments.Stripe.StripeOptions> stripe, CancellationToken ct)
    {
        if (input?.StripeDestination is { } destination)
        {
            if (!stripe.Value.Enabled) return Problems.Create(StatusCodes.Status503ServiceUnavailable, "stripe_not_configured", "A Stripe payout needs Stripe configured (Tollgate:Stripe:SecretKey).");
            if (!destination.StartsWith("acct_", StringComparison.Ordinal) || destination.Length > 100)
                return Problems.BadRequest("invalid_request", "'stripe_destination' is a connected account id (acct_…).", "stripe_destination");
            if (input.AmountMicros is not { } whole || whole % 10_000 != 0)
                return Problems.BadRequest("invalid_request", "A Stripe payout needs 'amount_micros' in whole cents (a multiple of 10,000).", "amount_micros");
        }
        if (input?.Id is not { Length: > 0 and <= 80 } id || !LedgerService.IsValidId(id))
            return Problems.BadRequest("invalid_request", "'id' is required: your idempotency key for this payout (1–80 letters, digits and _-.:@+).", "id");
        if (input.AmountMicros is { } a && a is <= 0 or > LedgerService.MaxAmountMicros)
            return Problems.BadRequest("invalid_request", "'amount_micros' must be positive (omit it to pay out everything earned).", "amount_micros");
        if (await accounts.GetAsync(account, ct) is null) return Problems.NotFound("account", account);
        var (outcome, payout) = await market.PayoutAsync(account, id, input.AmountMicros, ct);
        return outcome switch
        {
            MarketplaceService.PayoutOutcome.Conflict => Problems.Conflict("idempotency_conflict", $"Payout id '{id}' was already used with another amount; nothing moved."),
            MarketplaceService.PayoutOutcome.InsufficientEarnings => Problems.Create(StatusCodes.Status409Conflict, "insufficient_earnings", "The creator has not earned that much (less what was paid out); nothing moved."),
            MarketplaceService.PayoutOutcome.NothingToPay => Problems.Create(StatusCodes.Status409Conflict, "nothing_to_pay", "The creator has no earnings to pay out."),
            _ => await SentAsync(payout!),
        };

        async Task<Results<Ok<PayoutResponse>, ProblemHttpResult>> SentAsync(MarketplaceService.Payout p)
        {
            var response = new PayoutResponse(p.Id, p.CreatorAccountId, p.AmountMicros, p.TransferId, p.CreatedAt, p.Replayed);
            if (input.StripeDestination is not { } to) return TypedResults.Ok(response);
            try
            {
                return TypedResults.Ok(response with { StripeTransferId = await connect.SendAsync(p.CreatorAccountId, p.Id, p.AmountMicros, to, ct) });
            }
            catch (Payments.Stripe.StripeException e)
            {
                return Problems.Create(StatusCodes.Status502BadGateway, "payment_provider_error",
                    $"The payout is recorded in the ledger but Stripe refused or failed the transfer ({e.Message}); repeat the same request to send it.");
            }
        }
    }
}
