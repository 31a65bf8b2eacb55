using System.ClientModel;
using System.ClientModel.Primitives;
using OpenAI;
using OpenAI.Chat;
using Tollgate.Tests.Payments.Stripe;

namespace Tollgate.Tests.Examples;

/// <summary>
/// examples/agent-marketplace end to end on a clock the test moves: a builder on Free hits its project and deploy-slot
/// limits, buys credits, Premium and an extra deploy slot, buys and uses a creator's agents; the creator earns exactly
/// 90 % and is paid out; October closes into a Stripe invoice for the usage beyond the builder's credits.
/// </summary>
public sealed class AgentMarketplaceExampleTests : IAsyncLifetime
{
    private const string WebhookSecret = "whsec_marketplace_test";
    private FakeStripe _stripe = null!;

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync() => _stripe = await FakeStripe.StartAsync();

    public async Task DisposeAsync() => await _stripe.DisposeAsync();

    /// <summary>Sends the marketplace agent header on every request of an OpenAI SDK client.</summary>
    private sealed class AgentHeader(string agentId) : PipelinePolicy
    {
        public override void Process(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            message.Request.Headers.Set("x-tollgate-agent", agentId);
            ProcessNext(message, pipeline, currentIndex);
        }

        public override async ValueTask ProcessAsync(PipelineMessage message, IReadOnlyList<PipelinePolicy> pipeline, int currentIndex)
        {
            message.Request.Headers.Set("x-tollgate-agent", agentId);
            await ProcessNextAsync(message, pipeline, currentIndex);
        }
    }

    private static ChatClient AgentChat(TestApp app, string key, string agentId)
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(app.BaseAddress, "v1"), RetryPolicy = new ClientRetryPolicy(maxRetries: 0) };
        options.AddPolicy(new AgentHeader(agentId), PipelinePosition.PerCall);
        return new OpenAIClient(new ApiKeyCredential(key), options).GetChatClient("demo/echo");
    }

    private static long Charge(ClientResult result) =>
        result.GetRawResponse().Headers.TryGetValue("x-tollgate-charge-micros", out var v) ? long.Parse(v!) : throw new InvalidOperationException("no charge header");

    private static async Task<string> KeyAsync(TestApp app, string accountId) =>
        (await app.Admin.PostJsonAsync($"/admin/v1/accounts/{accountId}/keys", "{}", HttpStatusCode.Created)).GetProperty("key").GetString()!;

    private static async Task<(long Limit, long Used)> EntitlementAsync(HttpClient client, string feature)
    {
        var e = (await client.GetJsonAsync("/api/v1/entitlements")).GetProperty("entitlements").EnumerateArray().Single(x => x.GetProperty("feature").GetString() == feature);
        return (e.GetProperty("limit").GetInt64(), e.GetProperty("used").GetInt64());
    }

    private static Task<HttpResponseMessage> UseAsync(HttpClient client, string feature, string id, long quantity) =>
        client.PostAsync($"/api/v1/entitlements/{feature}/usage", Api.AdminApi.JsonBody($$"""{"id":"{{id}}","quantity":{{quantity}}}"""));

    [Theory, MemberData(nameof(Engines))]
    public async Task Limits_are_enforced_an_agent_is_bought_and_used_the_creator_earns_90_percent_and_the_month_closes_into_an_invoice(string engine)
    {
        var clock = new Ledger.ManualTimeProvider(new DateTimeOffset(2026, 10, 20, 10, 0, 0, TimeSpan.Zero));
        await using var app = await ExampleApp.StartAsync("agent-marketplace", engine, _stripe.Settings(WebhookSecret), clock);
        long Now() => clock.GetUtcNow().ToUnixTimeSeconds();

        // A creator (prepaid) and a builder whose usage beyond credits is invoiced monthly (postpaid: a $20 credit line).
        var creatorId = await app.CreateAccountAsync("Agent Smith Labs");
        using var creator = ExampleApp.Client(app, await KeyAsync(app, creatorId));
        var builderId = await app.CreateAccountAsync("Builder Bea", creditLimitMicros: 20_000_000);
        var builderKey = await KeyAsync(app, builderId);
        using var builder = ExampleApp.Client(app, builderKey);

        // Free: 1 project, 1 deploy slot, enforced by the entitlements API the platform calls before creating either.
        Assert.Equal((1L, 0L), await EntitlementAsync(builder, "projects"));
        Assert.Equal(HttpStatusCode.OK, (await UseAsync(builder, "projects", "project-1", 1)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await UseAsync(builder, "deploy_slots", "deploy-1", 1)).StatusCode);
        var refused = await Metering.MeteringApi.BodyAsync(await UseAsync(builder, "projects", "project-2", 1), HttpStatusCode.Forbidden);
        Assert.Equal("entitlement_exceeded", refused.GetProperty("code").GetString());
        var check = await builder.PostJsonAsync("/api/v1/entitlements/check", """{"feature":"deploy_slots","quantity":1}""", HttpStatusCode.OK);
        Assert.False(check.GetProperty("allowed").GetBoolean());

        // The $10 credit package through Stripe Checkout, then Premium ($5/month from credits) and an extra deploy slot ($10).
        var packs = (await app.Anonymous.GetJsonAsync("/api/v1/billing/credit-packs")).GetProperty("data").EnumerateArray().Select(p => p.GetProperty("price_cents").GetInt64());
        Assert.Equal([500L, 1000L, 5000L], packs);
        await ExampleApp.BuyPackAsync(app, builder, builderId, "usd10", WebhookSecret, Now());
        var premium = await builder.PostJsonAsync("/api/v1/subscription", """{"plan":"premium","interval":"month"}""", HttpStatusCode.OK);
        Assert.Equal(5_000_000, premium.GetProperty("fee_micros").GetInt64());
        var slot = await builder.PostJsonAsync("/api/v1/addons/deploy_slot/purchase", """{"id":"slot-1","quantity":1}""", HttpStatusCode.OK);
        Assert.Equal(10_000_000, slot.GetProperty("amount_micros").GetInt64());
        clock.Advance(TimeSpan.FromSeconds(2)); // the plan is read with the key (cached for a second)
        Assert.Equal((5L, 1L), await EntitlementAsync(builder, "projects"));
        Assert.Equal((6L, 1L), await EntitlementAsync(builder, "deploy_slots"));
        Assert.Equal(HttpStatusCode.OK, (await UseAsync(builder, "projects", "project-2", 1)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await UseAsync(builder, "deploy_slots", "deploy-2-to-6", 5)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await UseAsync(builder, "deploy_slots", "deploy-7", 1)).StatusCode);

        // The creator publishes one agent of each pricing mode.
        async Task<string> PublishAsync(string body) => (await creator.PostJsonAsync("/api/v1/agents", body, HttpStatusCode.Created)).GetProperty("id").GetString()!;
        var free = await PublishAsync("""{"name":"Readme writer","pricing_mode":"free"}""");
        var monthly = await PublishAsync("""{"name":"Code reviewer","pricing_mode":"monthly","price_micros":2990000}""");
        var once = await PublishAsync("""{"name":"Logo maker","pricing_mode":"one_time","price_micros":1999999}""");
        var perToken = await PublishAsync("""{"name":"Test writer","pricing_mode":"per_token","markup_bps":1234}""");

        // A paid agent must be bought first; then the builder's app uses it through the gateway with the OpenAI SDK.
        var reviewer = AgentChat(app, builderKey, monthly);
        var notBought = await Assert.ThrowsAsync<ClientResultException>(() => reviewer.CompleteChatAsync([new UserChatMessage("review my code")]));
        Assert.Equal(402, notBought.Status);
        var bought = await builder.PostJsonAsync($"/api/v1/agents/{monthly}/purchase", "{}", HttpStatusCode.OK);
        Assert.Equal((2_990_000L, 2_691_000L, 299_000L), (bought.GetProperty("amount_micros").GetInt64(), bought.GetProperty("creator_micros").GetInt64(), bought.GetProperty("platform_micros").GetInt64()));
        var boughtOnce = await builder.PostJsonAsync($"/api/v1/agents/{once}/purchase", "{}", HttpStatusCode.OK);
        var gatewayCharges = Charge(await reviewer.CompleteChatAsync([new UserChatMessage("review my code")]));
        gatewayCharges += Charge(await AgentChat(app, builderKey, free).CompleteChatAsync([new UserChatMessage("write a readme")]));
        // Buying again in the same month charges nothing.
        Assert.True((await builder.PostJsonAsync($"/api/v1/agents/{monthly}/purchase", "{}", HttpStatusCode.OK)).GetProperty("already_owned").GetBoolean());

        // The builder's back end reports a run of the per-token agent: 333,333 input tokens of demo/echo ($1 per million,
        // ×2 markup) = 666,666 µ$, plus the agent's 12.34 %: floor(666,666 × 1,234 / 10,000) = 82,266.
        var run = (await builder.PostJsonAsync("/api/v1/usage/events",
            $$"""{"events":[{"id":"run-1","model":"demo/echo","input_tokens":333333,"output_tokens":0,"agent_id":"{{perToken}}"}]}""", HttpStatusCode.OK)).GetProperty("data")[0];
        const long modelPrice = 333_333 * 2;
        const long agentMarkup = modelPrice * 1234 / 10_000;
        Assert.Equal(("accepted", modelPrice + agentMarkup), (run.GetProperty("status").GetString(), run.GetProperty("user_price_micros").GetInt64()));

        // The creator's earnings: 90 % of every agent charge, each rounded down, to the micro-dollar.
        var expected = new Dictionary<string, long>
        {
            [monthly] = 2_990_000 * 90 / 100,
            [once] = 1_999_999 * 90 / 100,
            [perToken] = agentMarkup * 90 / 100,
        };
        Assert.Equal(1_799_999, boughtOnce.GetProperty("creator_micros").GetInt64());
        var earnings = await creator.GetJsonAsync("/api/v1/creator/earnings?group_by=agent");
        Assert.Equal(expected, earnings.GetProperty("data").EnumerateArray().ToDictionary(g => g.GetProperty("agent_id").GetString()!, g => g.GetProperty("amount_micros").GetInt64()));
        Assert.Equal(expected.Values.Sum(), earnings.GetProperty("total_earned_micros").GetInt64());
        Assert.Equal(4_565_038, expected.Values.Sum());

        // Payout of the whole cents to the creator's Stripe connected account; the rest stays earned.
        var payout = await app.Admin.PostJsonAsync($"/admin/v1/creators/{creatorId}/payouts", """{"id":"2026-10","amount_micros":4560000,"stripe_destination":"acct_smith"}""", HttpStatusCode.OK);
        Assert.StartsWith("tr_", payout.GetProperty("stripe_transfer_id").GetString());
        Assert.Equal(("456", "acct_smith"), (_stripe.Calls.Last(c => c.Path == "/v1/transfers").Field("amount"), _stripe.Calls.Last(c => c.Path == "/v1/transfers").Field("destination")));
        Assert.Equal(4_565_038 - 4_560_000, (await creator.GetJsonAsync("/api/v1/creator/earnings")).GetProperty("balance_micros").GetInt64());

        // October closes: credits were applied first, only the negative balance is invoiced, rounded up to cents.
        var balance = (await builder.GetJsonAsync("/api/v1/account")).GetProperty("balance_micros").GetInt64();
        Assert.Equal(10_000_000 - 5_000_000 - 10_000_000 - 2_990_000 - 1_999_999 - gatewayCharges - (modelPrice + agentMarkup), balance);
        clock.Advance(new DateTimeOffset(2026, 11, 1, 0, 30, 0, TimeSpan.Zero) - clock.GetUtcNow());
        var closed = await app.Admin.PostJsonAsync("/admin/v1/payments/invoice-usage?period=2026-10", "{}", HttpStatusCode.OK);
        var invoice = Assert.Single(closed.GetProperty("data").EnumerateArray(), i => i.GetProperty("account_id").GetString() == builderId);
        Assert.DoesNotContain(closed.GetProperty("data").EnumerateArray(), i => i.GetProperty("account_id").GetString() == creatorId);
        var cents = (-balance + 9_999) / 10_000;
        Assert.Equal((cents, cents * 10_000, "open"), (invoice.GetProperty("amount_cents").GetInt64(), invoice.GetProperty("amount_micros").GetInt64(), invoice.GetProperty("status").GetString()));
        var item = _stripe.Calls.Last(c => c.Path == "/v1/invoiceitems" && c.Field("metadata[tollgate_account]") == builderId);
        Assert.Equal((cents.ToString(System.Globalization.CultureInfo.InvariantCulture), "2026-10"), (item.Field("amount"), item.Field("metadata[period]")));

        // The statement of October says the same: every line from the ledger, the amount due = what was invoiced before rounding.
        var statement = await builder.GetJsonAsync("/api/v1/statements/2026-10");
        var totals = statement.GetProperty("totals_by_category");
        Assert.Equal((balance, -balance), (statement.GetProperty("closing_balance_micros").GetInt64(), statement.GetProperty("amount_due_micros").GetInt64()));
        Assert.Equal((10_000_000L, -5_000_000L, -10_000_000L, -(2_990_000L + 1_999_999L)),
            (totals.GetProperty("topups").GetInt64(), totals.GetProperty("subscription_fees").GetInt64(), totals.GetProperty("addons").GetInt64(), totals.GetProperty("marketplace").GetInt64()));

        // Stripe collects the invoice; the payment is credited back to the account.
        var paid = $$"""{"id":"{{invoice.GetProperty("id").GetString()}}","object":"invoice","status":"paid","amount_paid":{{cents}},"customer":"cus_x"}""";
        var outcome = await ExampleApp.DeliverStripeAsync(app, ExampleApp.StripeEvent("evt_paid_" + engine, "invoice.paid", paid, Now()), WebhookSecret, Now());
        Assert.Equal("usage_invoice_paid", outcome.GetProperty("outcome").GetString());
        Assert.Equal(balance + cents * 10_000, (await builder.GetJsonAsync("/api/v1/account")).GetProperty("balance_micros").GetInt64());
        await Api.AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
