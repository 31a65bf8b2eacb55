using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Gateway.Tokens;
using Tollgate.Features.Keys;
using Tollgate.Features.Metering;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure.Money;

using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Gateway;

/// <summary>How a call ended, as recorded on its usage record.</summary>
internal enum CallOutcome { Completed, CutOff, ClientAborted, UpstreamFailed }

/// <summary>
/// One gateway call from key to charge: authenticate, parse, route, estimate and hold, forward (with fallbacks before
/// any byte reached the client), relay, meter, settle, record. See docs/GATEWAY.md for the contract.
/// </summary>
internal sealed partial class GatewayHandler(
    ApiKeyAuthenticator authenticator,
    ModelRouter router,
    GatewayBilling billing,
    IUsageStore records,
    GatewayRateLimiter limiter,
    Byok.ProviderCredentialService credentials,
    Plans.PlanCatalog plans,
    Plans.QuotaStore quotas,
    Budgets.BudgetService budgets,
    Alerts.AlertService alerts,
    Infrastructure.Metrics.TollgateMetrics metrics,
    GatewayCallTracker calls,
    Marketplace.MarketplaceService market,
    IOptions<Byok.ByokOptions> byokOptions,
    IOptions<GatewayOptions> options,
    TimeProvider time,
    ILogger<GatewayHandler> logger)
{
    /// <summary>Extra lifetime of a hold beyond the provider's timeout, so it outlives the call it covers.</summary>
    private const int HoldMarginSeconds = 120;

    private readonly GatewayOptions _options = options.Value;

    public const string RequestIdItem = "tollgate.request_id";

    public static string NewRequestId() => "req_" + Guid.CreateVersion7().ToString("N");

    private static readonly IReadOnlySet<string> NoOwnKeys = new HashSet<string>();

    public async Task HandleAsync(HttpContext http, ApiDialect dialect)
    {
        var started = Stopwatch.GetTimestamp();
        // The request's own id when Tollgate made it (so logs, x-request-id and usage records agree); a client's
        // x-request-id is only a label that may repeat, and holds and usage records are keyed on this id.
        var requestId = http.GetRequestId() is { FromClient: false } own ? own.Value : NewRequestId();
        http.Response.Headers["x-tollgate-request-id"] = requestId;
        // The exception handler clears headers; it puts the id back from here, so even a 503 names its hold.
        http.Items[RequestIdItem] = requestId;
        var ct = http.RequestAborted;

        var presented = PresentedKey(http.Request, dialect);
        var failures = http.RequestServices.GetRequiredService<AuthFailureLimiter>();
        if (presented is not null && failures.RetryAfter(http) is { } wait)
        {
            http.Response.Headers.RetryAfter = AuthFailureLimiter.Seconds(wait);
            await new GatewayError(429, "too_many_failed_attempts", AuthFailureLimiter.Message(wait)) { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        var caller = await authenticator.AuthenticateAsync(presented, ct);
        if (caller is not null) http.SetCaller(caller);
        if (caller is null)
        {
            if (presented is not null) failures.Failed(http);
            http.Response.Headers.WWWAuthenticate = "Bearer";
            await (GatewayError.InvalidApiKey() with { Dialect = dialect }).ExecuteAsync(http);
            return;
        }

        var body = await ReadBodyAsync(http, dialect);
        if (body.Error is not null) { await body.Error.ExecuteAsync(http); return; }
        using var request = GatewayRequest.Parse(body.Bytes, dialect, out var parseError);
        if (request is null) { await parseError!.ExecuteAsync(http); return; }

        var (customerId, customerError) = ResolveCustomer(http.Request, caller, request, dialect);
        if (customerError is not null) { await customerError.ExecuteAsync(http); return; }

        var (agent, agentError) = await ResolveAgentAsync(http.Request, caller, ct);
        if (agentError is not null) { await (agentError with { Dialect = dialect }).ExecuteAsync(http); return; }

        var plan = plans.For(caller);
        if (request.HasTools && !plan.Has(Plans.PlanFeatures.Tools))
        {
            await new GatewayError(403, "feature_not_in_plan", $"Tool calling is not part of the plan '{plan.Id}'.", "tools") { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        // Without the plan's BYOK feature, stored customer keys are not used (the operator's keys are).
        var ownKeys = plan.Has(Plans.PlanFeatures.Byok) ? await credentials.ProvidersAsync(caller.AccountId, ct) : NoOwnKeys;
        var (targets, routeError) = router.Resolve(request.Model, dialect, ownKeys);
        if (targets is null) { await routeError!.ExecuteAsync(http); return; }
        if (!plan.AllowsModel(targets[0].ModelId))
        {
            await new GatewayError(403, "model_not_allowed", $"The model '{targets[0].ModelId}' is not part of the plan '{plan.Id}'.", "model") { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        if (plan.Models is not null) targets = targets.Where(t => plan.AllowsModel(t.ModelId)).ToList();
        if (caller.Settings.AllowedModels is not null)
        {
            if (!caller.Settings.AllowsModel(targets[0].ModelId))
            {
                await new GatewayError(403, "model_not_allowed", $"This API key may not call '{targets[0].ModelId}'.", "model") { Dialect = dialect }.ExecuteAsync(http);
                return;
            }
            targets = targets.Where(t => caller.Settings.AllowsModel(t.ModelId)).ToList();
        }
        if (ownKeys.Count > 0)
        {
            var withKeys = new List<RouteTarget>(targets.Count);
            foreach (var t in targets)
                withKeys.Add(ownKeys.Contains(t.Provider.Name) && t.Provider.Kind != ProviderKind.Demo
                    ? t with { CustomerKey = await credentials.FindAsync(caller.AccountId, t.Provider.Name, ct) }
                    : t);
            targets = withKeys;
        }

        var primary = targets[0];
        var encoding = TokenEstimator.ForModel(primary.Provider.Kind == ProviderKind.Demo ? "demo" : primary.Priced?.Model.ProviderId ?? primary.Provider.Name, primary.UpstreamModel);
        // Exact with the model's tokenizer; without one (Anthropic and most others) an upper bound, so the hold covers the prompt.
        var promptTokens = dialect == ApiDialect.Anthropic
            ? TokenEstimator.CountAnthropicPrompt(request.Root)
            : TokenEstimator.CountChatPrompt(request.Root, encoding);
        var now = time.GetUtcNow();
        // Internal keys are never debited, so caps (which count debits) do not apply to them.
        var budget = caller.IsInternal ? Budgets.CallBudget.None : await budgets.ForCallAsync(caller, customerId, now, ct);
        if (budget.CustomerBlocked)
        {
            await new GatewayError(403, "customer_blocked", $"The end customer '{customerId}' is blocked by the account.", "user") { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        var maxOutput = request.MaxOutputTokens ?? _options.DefaultMaxOutputTokens;
        long? clampedOutput = null;

        if (dialect == ApiDialect.OpenAi && primary.Provider.Kind == ProviderKind.Anthropic)
        {
            // Refuse what Anthropic cannot honour before anything is held.
            try
            {
                Anthropic.ChatToMessages.TranslateRequest(request.Root, primary.UpstreamModel, maxOutput);
            }
            catch (Anthropic.TranslationException e)
            {
                await new GatewayError(400, e.Code, e.Message, e.Param).ExecuteAsync(http);
                return;
            }
        }

        if (limiter.TryAcquire(caller.KeyId, caller.AccountId, promptTokens, caller.Settings) is { } limited)
        {
            metrics.RateLimited.Add(1, new KeyValuePair<string, object?>("reason", "rate_limited"));
            http.Response.Headers.RetryAfter = ((long)limited.RetryAfter.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
            await new GatewayError(429, "rate_limited",
                $"Rate limit reached: the {limited.Scope}'s {limited.Limit.Replace('_', ' ')} limit. Retry after {(long)limited.RetryAfter.TotalSeconds} s.",
                Extra: new Dictionary<string, object?> { ["limit"] = limited.Limit, ["scope"] = limited.Scope }) { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        // The plan's included requests and tokens: checked and taken now (a call straddling the period end counts in the
        // period it started), the request given back below if the call delivers nothing.
        var (quotaPeriod, quotaError) = await TakeQuotasAsync(http, caller, plan, now);
        if (quotaError is not null)
        {
            metrics.RateLimited.Add(1, new KeyValuePair<string, object?>("reason", "quota_exceeded"));
            limiter.Release(caller.KeyId, caller.AccountId, 0);
            await (quotaError with { Dialect = dialect }).ExecuteAsync(http);
            return;
        }
        var call = new Call(caller, requestId, request, targets, promptTokens, encoding, now, started)
        {
            CustomerId = customerId,
            AnthropicVersion = http.Request.Headers["anthropic-version"] is [{ Length: > 0 } version] ? version : null,
            AnthropicBeta = http.Request.Headers["anthropic-beta"] is [{ Length: > 0 } beta] ? beta : null,
            PlanMarkup = plan.Markup,
            Agent = agent,
        };
        try
        {
            // Internal keys are priced and recorded but never debited, so they hold nothing either.
            if (primary.Priced is not null && !caller.IsInternal)
            {
                var fee = byokOptions.Value.FeePercent;
                var amount = HoldAmount(targets, promptTokens, maxOutput * request.N, now, plan.Markup, fee, agent);
                var timeout = (int)targets.Max(t => t.Provider.Timeout.TotalSeconds) + HoldMarginSeconds;
                // Not cancelled by the client: a hold queued just before a hang-up would otherwise commit unseen and sit until it expires.
                var held = await billing.HoldAsync(caller, requestId, amount, timeout, HoldMetadata(primary), budget.Legs, CancellationToken.None);
                if (held.Hold is null && _options.ClampMaxTokens && Affordable(targets, promptTokens, request.N, held.AvailableMicros, maxOutput, plan.Markup, fee, agent) is { } affordable
                    && affordable >= _options.MinClampedOutputTokens)
                {
                    clampedOutput = affordable;
                    maxOutput = affordable;
                    held = await billing.HoldAsync(caller, requestId, HoldAmount(targets, promptTokens, affordable * request.N, now, plan.Markup, fee, agent),
                        timeout, HoldMetadata(primary), budget.Legs, CancellationToken.None);
                }
                if (held.Hold is null)
                {
                    var available = Math.Max(0, held.AvailableMicros);
                    var refusal = held.ExceededCap is { } cap
                        ? new GatewayError(402, "budget_exceeded",
                            $"Budget exceeded: this call may cost up to {Money.FormatMicros(amount)} USD and {cap.Describe()} of {Money.FormatMicros(cap.Cap.LimitMicros)} USD has {Money.FormatMicros(available)} USD left; {cap.ResetText()}.",
                            Extra: new Dictionary<string, object?> { ["cap"] = cap.Details(), ["available_micros"] = available, ["required_micros"] = amount })
                        : new GatewayError(402, "insufficient_credits",
                            $"Insufficient credits: this call may cost up to {Money.FormatMicros(amount)} USD ({promptTokens} prompt tokens, up to {maxOutput * request.N} output tokens) and the available balance is {Money.FormatMicros(available)} USD.",
                            Extra: new Dictionary<string, object?> { ["available_micros"] = held.AvailableMicros, ["required_micros"] = amount });
                    metrics.RateLimited.Add(1, new KeyValuePair<string, object?>("reason", refusal.Code));
                    await (refusal with { Dialect = dialect }).ExecuteAsync(http);
                    return;
                }
                call.Hold = held.Hold;
                call.CapHolds = held.CapHolds;
                call.CapLegs = budget.Legs;
            }
            call.MaxOutputTokens = maxOutput;
            call.ClampedOutputTokens = clampedOutput;

            try
            {
                await RelayAsync(http, call, dialect);
            }
            catch (Exception e) when (call.Hold is not null && !call.Settled)
            {
                // Whatever went wrong, an unsettled hold must not sit until it expires.
                LogRelayFailed(logger, e, requestId);
                await FinishAsync(call, CallOutcome.UpstreamFailed, null, call.Output?.Count ?? 0);
                if (!http.Response.HasStarted) await new GatewayError(502, "upstream_error", "The upstream call failed.") { Dialect = dialect }.ExecuteAsync(http);
            }
        }
        finally
        {
            limiter.Release(caller.KeyId, caller.AccountId, call.UsedTokens);
            if (quotaPeriod is { } taken) await SettleQuotasAsync(caller, plan, taken, call.Delivered, call.UsedTokens);
        }
    }

    /// <summary>
    /// The end customer a call is for: the key's own (a key bound to a customer cannot speak for another), else the
    /// <c>x-tollgate-customer</c> header, else the body's end-user field (OpenAI <c>user</c>, Anthropic
    /// <c>metadata.user_id</c>) when it is a usable id. Null when none is named.
    /// </summary>
    private static (string? Id, GatewayError? Error) ResolveCustomer(HttpRequest http, Caller caller, GatewayRequest request, ApiDialect dialect)
    {
        string? named = null;
        if (http.Headers[CustomerHeader] is [{ } header])
        {
            if (!Budgets.EndCustomerIds.IsValid(header))
                return (null, GatewayError.BadRequest($"The {CustomerHeader} header {Budgets.EndCustomerIds.Rule}.", CustomerHeader) with { Dialect = dialect });
            named = header;
        }
        // The body's field is free text meant for abuse monitoring: only an id-shaped value names a customer.
        named ??= Budgets.EndCustomerIds.IsValid(request.User) ? request.User : null;
        if (caller.Settings.CustomerId is { } bound)
            return named is null || named == bound || http.Headers[CustomerHeader].Count == 0
                ? (bound, null)
                : (null, new GatewayError(403, "customer_not_allowed", $"This API key belongs to the end customer '{bound}' and cannot act for '{named}'.", CustomerHeader) { Dialect = dialect });
        return (named, null);
    }

    public const string CustomerHeader = "x-tollgate-customer";

    /// <summary>Names the marketplace agent a call is made through: its per-token markup is charged and shared with its creator.</summary>
    public const string AgentHeader = "x-tollgate-agent";

    /// <summary>The agent named by <see cref="AgentHeader"/>, if any: it must exist and, if sold monthly or once, be bought.</summary>
    private async Task<(Marketplace.Agent? Agent, GatewayError? Error)> ResolveAgentAsync(HttpRequest request, Caller caller, CancellationToken ct)
    {
        if (request.Headers[AgentHeader] is not [{ Length: > 0 } agentId]) return (null, null);
        if (await market.GetAsync(agentId, ct) is not { } agent)
            return (null, new GatewayError(400, "agent_not_found", $"No marketplace agent '{agentId}' (header {AgentHeader}).", AgentHeader));
        if (!await market.HasAccessAsync(caller.AccountId, agent, ct))
            return (null, new GatewayError(402, "agent_not_purchased",
                $"The agent '{agent.Id}' is sold {agent.PricingMode.Replace('_', ' ')}: buy it first with POST /api/v1/agents/{agent.Id}/purchase.", AgentHeader));
        return (agent, null);
    }

    private static string? PresentedKey(HttpRequest request, ApiDialect dialect)
    {
        if (dialect == ApiDialect.Anthropic && request.Headers["x-api-key"] is [{ Length: > 0 } apiKey]) return apiKey;
        var auth = request.Headers.Authorization.ToString();
        return auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? auth[7..].Trim() : null;
    }

    private async Task<(byte[] Bytes, GatewayError? Error)> ReadBodyAsync(HttpContext http, ApiDialect dialect)
    {
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = _options.MaxRequestBodyBytes;
        if (http.Request.ContentLength > _options.MaxRequestBodyBytes) return ([], TooLarge());
        try
        {
            using var buffer = new MemoryStream(http.Request.ContentLength is { } n and > 0 ? (int)n : 4096);
            await http.Request.Body.CopyToAsync(buffer, http.RequestAborted);
            return (buffer.ToArray(), null);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return ([], TooLarge());
        }

        GatewayError TooLarge() => new(413, "payload_too_large", $"The request body exceeds {_options.MaxRequestBodyBytes} bytes.") { Dialect = dialect };
    }

    /// <summary>
    /// What the caller pays for a rated call on this target: the user price, or with the customer's own key only the
    /// platform fee (a percentage of the provider cost, rounded up).
    /// </summary>
    private static long UserPrice(RouteTarget target, in Rating rating, decimal byokFeePercent) =>
        target.IsByok ? Money.FromUsd(rating.ProviderCostUsd * byokFeePercent / 100m, Rounding.Up).Micros : rating.UserPriceMicros;

    /// <summary>The most any target could charge for this call: its prompt plus the full output bound.</summary>
    private static long HoldAmount(IReadOnlyList<RouteTarget> targets, long promptTokens, long outputTokens, DateTimeOffset at, decimal? planMarkup, decimal byokFeePercent,
        Marketplace.Agent? agent = null)
    {
        long max = 0;
        var usage = new TokenUsage(Math.Min(promptTokens, TokenUsage.MaxTokens), Math.Min(outputTokens, TokenUsage.MaxTokens));
        foreach (var t in targets)
            if (t.Priced is not null) max = Math.Max(max, UserPrice(t, Rater.Rate(t.Priced, usage, at, planMarkup), byokFeePercent));
        // A per-token agent's markup sits on top of the model price, so the hold covers it too.
        if (agent is not null) max = agent.UserPrice(max);
        // A hold of zero is not a hold; one micro-dollar keeps "free" models on the same path.
        return Math.Max(1, max);
    }

    /// <summary>The largest output bound (tokens per choice) the available balance covers, or null if not even the prompt.</summary>
    private static long? Affordable(IReadOnlyList<RouteTarget> targets, long promptTokens, int n, long available, long requested, decimal? planMarkup, decimal byokFeePercent,
        Marketplace.Agent? agent)
    {
        if (available <= 0) return null;
        var now = DateTimeOffset.UtcNow;
        long lo = 0, hi = requested;
        while (lo < hi)
        {
            var mid = lo + (hi - lo + 1) / 2;
            if (HoldAmount(targets, promptTokens, mid * n, now, planMarkup, byokFeePercent, agent) <= available) lo = mid; else hi = mid - 1;
        }
        return lo > 0 ? lo : null;
    }

    private static string HoldMetadata(RouteTarget t) => JsonSerializer.Serialize(new Dictionary<string, string> { ["model"] = t.ModelId });

    /// <summary>Per-call state shared by the relay and the settlement.</summary>
    private sealed class Call(Caller caller, string requestId, GatewayRequest request, IReadOnlyList<RouteTarget> targets, long promptTokens,
        BpeEncoding? encoding, DateTimeOffset startedAt, long startedTimestamp)
    {
        public Caller Caller { get; } = caller;
        public string RequestId { get; } = requestId;
        public GatewayRequest Request { get; } = request;
        public IReadOnlyList<RouteTarget> Targets { get; } = targets;
        public long PromptTokens { get; } = promptTokens;
        public BpeEncoding? Encoding { get; } = encoding;
        public DateTimeOffset StartedAt { get; } = startedAt;
        public long StartedTimestamp { get; } = startedTimestamp;
        public Ledger.Transfer? Hold { get; set; }
        /// <summary>The holds on the call's spend caps, settled and released together with <see cref="Hold"/>.</summary>
        public IReadOnlyList<Ledger.Transfer> CapHolds { get; set; } = [];
        /// <summary>The caps behind <see cref="CapHolds"/>, in the same order.</summary>
        public IReadOnlyList<Budgets.CapLeg> CapLegs { get; set; } = [];
        public string? CustomerId { get; init; }
        public long MaxOutputTokens { get; set; }
        public long? ClampedOutputTokens { get; set; }
        public RouteTarget Target { get; set; } = targets[0];
        public OutputCounter? Output { get; set; }
        public bool Settled { get; set; }
        public Settlement Settlement { get; set; }
        /// <summary>Prompt plus output tokens of the settled call, for the tokens-per-minute limits.</summary>
        public long UsedTokens { get; set; }
        /// <summary>Something was delivered and charged or recorded (so the request counts against quotas).</summary>
        public bool Delivered { get; set; }
        /// <summary>Completes when the usage record is durable (at once if there is none).</summary>
        public Task RecordWritten { get; set; } = Task.CompletedTask;
        public string? AnthropicVersion { get; init; }
        public decimal? PlanMarkup { get; init; }
        /// <summary>The marketplace agent the call goes through (x-tollgate-agent), if any.</summary>
        public Marketplace.Agent? Agent { get; init; }
        public string? AnthropicBeta { get; init; }
    }
}
