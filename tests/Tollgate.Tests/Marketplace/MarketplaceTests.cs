using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Marketplace;

/// <summary>Agents sold by creators: purchases and per-token usage split creator 90 % (rounded down) / platform the rest, atomically.</summary>
public sealed class MarketplaceTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    /// <summary>demo/echo: $1 / $2 per million tokens, default markup ×2 → 2 µ$ per prompt token, 4 µ$ per output token.</summary>
    private static long DemoPrice(long prompt, long output) => 2 * prompt + 4 * output;

    private static async Task<string> PublishAsync(Customer creator, string json) =>
        (await MeteringApi.BodyAsync(await creator.Client.PostAsync("/api/v1/agents", AdminApi.JsonBody(json)), HttpStatusCode.Created)).Str("id")!;

    private static Task<HttpResponseMessage> ChatAsync(Customer c, string? agent)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":30,"messages":[{"role":"user","content":"agents share revenue"}]}"""),
        };
        if (agent is not null) request.Headers.Add("x-tollgate-agent", agent);
        return c.Client.SendAsync(request);
    }

    private static Task<HttpResponseMessage> EventsAsync(Customer c, params string[] events) =>
        c.Client.PostAsync("/api/v1/usage/events", new StringContent($$"""{"events":[{{string.Join(",", events)}}]}""", Encoding.UTF8, "application/json"));

    /// <summary>1,000 input and 500 output tokens of demo/echo: 4,000 µ$; +50 % markup = 2,000 µ$; creator floor(2,000 × 90 %) = 1,800 µ$.</summary>
    private static string AgentEvent(string id, string agent) =>
        $$"""{"id":"{{id}}","model":"demo/echo","input_tokens":1000,"output_tokens":500,"agent_id":"{{agent}}"}""";

    private static async Task<JsonElement> EarningsAsync(Customer c, string groupBy = "agent") =>
        await MeteringApi.BodyAsync(await c.Client.GetAsync($"/api/v1/creator/earnings?group_by={groupBy}"), HttpStatusCode.OK);

    private static long AgentTotal(JsonElement earnings, string agent) =>
        earnings.GetProperty("data").EnumerateArray().Where(g => g.Str("agent_id") == agent).Sum(g => g.Long("amount_micros"));

    [Theory, MemberData(nameof(Engines))]
    public async Task A_user_buys_and_uses_agents_and_the_creator_earns_90_percent_to_the_micro_dollar(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var creator = await app.CustomerAsync(0);
        using var user = await app.CustomerAsync(50_000_000);
        using var stranger = await app.CustomerAsync(0);

        var once = await PublishAsync(creator, """{"name":"Summariser","pricing_mode":"one_time","price_micros":10000001}""");
        var perToken = await PublishAsync(creator, """{"name":"Translator","pricing_mode":"per_token","markup_bps":5000}""");
        // Money and markups are integers: a fractional markup is malformed JSON for this API.
        Assert.Equal(HttpStatusCode.BadRequest, (await creator.Client.PostAsync("/api/v1/agents",
            AdminApi.JsonBody("""{"name":"Bad","pricing_mode":"per_token","markup_bps":1.5}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await creator.Client.PostAsync("/api/v1/agents", AdminApi.JsonBody("""{"name":"Bad","pricing_mode":"monthly"}"""))).StatusCode);
        var listed = await MeteringApi.BodyAsync(await user.Client.GetAsync($"/api/v1/agents/{perToken}"), HttpStatusCode.OK);
        Assert.Equal(("per_token", 5000L, 90L), (listed.Str("pricing_mode"), listed.Long("markup_bps"), listed.Long("creator_share_percent")));

        // A one_time agent must be bought before use.
        var refused = await MeteringApi.BodyAsync(await ChatAsync(user, once), HttpStatusCode.PaymentRequired);
        Assert.Equal("agent_not_purchased", refused.GetProperty("error").Str("code"));
        Assert.Equal("agent_not_found", (await MeteringApi.BodyAsync(await ChatAsync(user, "agt_nope"), HttpStatusCode.BadRequest)).GetProperty("error").Str("code"));

        // 10,000,001 × 90 / 100 = 9,000,000.9 → creator 9,000,000, platform 1,000,001.
        var bought = await MeteringApi.BodyAsync(await user.Client.PostAsync($"/api/v1/agents/{once}/purchase", null), HttpStatusCode.OK);
        Assert.Equal((10_000_001L, 9_000_000L, 1_000_001L, false), (bought.Long("amount_micros"), bought.Long("creator_micros"), bought.Long("platform_micros"),
            bought.GetProperty("already_owned").GetBoolean()));
        var again = await MeteringApi.BodyAsync(await user.Client.PostAsync($"/api/v1/agents/{once}/purchase", null), HttpStatusCode.OK);
        Assert.True(again.GetProperty("already_owned").GetBoolean());
        Assert.Equal(50_000_000 - 10_000_001, (await user.AccountAsync()).Long("balance_micros"));

        var viaOnce = await ChatAsync(user, once);
        var onceUsage = (await MeteringApi.BodyAsync(viaOnce, HttpStatusCode.OK)).GetProperty("usage");
        Assert.Equal(DemoPrice(onceUsage.Long("prompt_tokens"), onceUsage.Long("completion_tokens")), long.Parse(viaOnce.Headers.GetValues("x-tollgate-charge-micros").Single()));

        // Per token through the gateway: user pays base + floor(base × 5000 / 10000); the creator floor(markup × 90 / 100).
        var viaToken = await ChatAsync(user, perToken);
        var usage = (await MeteringApi.BodyAsync(viaToken, HttpStatusCode.OK)).GetProperty("usage");
        var basePrice = DemoPrice(usage.Long("prompt_tokens"), usage.Long("completion_tokens"));
        var markup = basePrice * 5000 / 10000;
        Assert.Equal(basePrice + markup, long.Parse(viaToken.Headers.GetValues("x-tollgate-charge-micros").Single()));
        var gatewayShare = markup * 90 / 100;

        // Per token through usage events.
        var events = await MeteringApi.BodyAsync(await EventsAsync(user, AgentEvent("e1", perToken)), HttpStatusCode.OK);
        Assert.Equal(6_000, events.GetProperty("data")[0].Long("user_price_micros"));
        var unpaid = await MeteringApi.BodyAsync(await EventsAsync(stranger, AgentEvent("e1", once)), HttpStatusCode.OK);
        Assert.Equal("agent_not_purchased", unpaid.GetProperty("data")[0].GetProperty("error").Str("code"));

        var earnings = await EarningsAsync(creator);
        Assert.Equal(9_000_000, AgentTotal(earnings, once));
        Assert.Equal(gatewayShare + 1_800, AgentTotal(earnings, perToken));
        Assert.Equal(9_000_000 + gatewayShare + 1_800, earnings.Long("total_earned_micros"));
        Assert.Equal(earnings.Long("total_earned_micros"), earnings.Long("balance_micros"));
        var byPeriod = await EarningsAsync(creator, "agent_period");
        Assert.All(byPeriod.GetProperty("data").EnumerateArray(), g => Assert.Matches(@"^\d{4}-\d{2}$", g.Str("period")));

        // Nobody else sees the creator's earnings: their own are empty.
        var theirs = await EarningsAsync(stranger);
        Assert.Equal((0L, 0), (theirs.Long("total_earned_micros"), theirs.GetProperty("data").GetArrayLength()));
        Assert.Equal(0, (await EarningsAsync(user)).Long("total_earned_micros"));

        // Payouts: idempotent, never more than earned.
        var total = earnings.Long("total_earned_micros");
        var payout = await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/creators/{creator.AccountId}/payouts", AdminApi.JsonBody("""{"id":"po-1"}""")), HttpStatusCode.OK);
        Assert.Equal((total, false), (payout.Long("amount_micros"), payout.GetProperty("replayed").GetBoolean()));
        var replay = await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/creators/{creator.AccountId}/payouts", AdminApi.JsonBody("""{"id":"po-1"}""")), HttpStatusCode.OK);
        Assert.Equal((total, true), (replay.Long("amount_micros"), replay.GetProperty("replayed").GetBoolean()));
        Assert.Equal("insufficient_earnings", (await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/creators/{creator.AccountId}/payouts",
            AdminApi.JsonBody("""{"id":"po-2","amount_micros":1}""")), HttpStatusCode.Conflict)).Str("code"));
        Assert.Equal(0, (await EarningsAsync(creator)).Long("balance_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Concurrent_purchases_and_usage_split_exactly_once_each(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var creator = await app.CustomerAsync(0);
        using var user = await app.CustomerAsync(10_000_000);
        var monthly = await PublishAsync(creator, """{"name":"Coach","pricing_mode":"monthly","price_micros":3000000}""");
        var perToken = await PublishAsync(creator, """{"name":"Tutor","pricing_mode":"per_token","markup_bps":5000}""");

        var purchases = Enumerable.Range(0, 6).Select(_ => user.Client.PostAsync($"/api/v1/agents/{monthly}/purchase", null));
        var usage = Enumerable.Range(0, 20).Select(i => EventsAsync(user, AgentEvent($"c{i}", perToken)));
        var responses = await Task.WhenAll(purchases.Concat(usage));
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var purchaseBodies = await Task.WhenAll(responses.Take(6).Select(r => r.Content.ReadFromJsonAsync<JsonElement>()));
        Assert.Single(purchaseBodies, b => !b.GetProperty("already_owned").GetBoolean());

        // 3,000,000 × 90 % = 2,700,000 once; 20 × 1,800 for the usage.
        var earnings = await EarningsAsync(creator);
        Assert.Equal(2_700_000, AgentTotal(earnings, monthly));
        Assert.Equal(20 * 1_800, AgentTotal(earnings, perToken));
        Assert.Equal(10_000_000 - 3_000_000 - 20 * 6_000, (await user.AccountAsync()).Long("balance_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
