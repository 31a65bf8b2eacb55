using System.Net;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>The builder plan set's $10 extra deploy slot: bought from credits once, raising the entitlement's limit.</summary>
public sealed class AddOnTests() : EngineApps(new Dictionary<string, string?> { ["Tollgate:PlanSet"] = "builder" })
{
    private static Task<HttpResponseMessage> Deploy(Customer c, string id) =>
        c.Client.PostAsync("/api/v1/entitlements/deploy_slots/usage", AdminApi.JsonBody($$"""{"id":"{{id}}","quantity":1}"""));

    private static Task<HttpResponseMessage> Buy(Customer c, string id, int quantity = 1) =>
        c.Client.PostAsync("/api/v1/addons/deploy_slot/purchase", AdminApi.JsonBody($$"""{"id":"{{id}}","quantity":{{quantity}}}"""));

    [Theory, MemberData(nameof(Engines))]
    public async Task An_extra_deploy_slot_is_paid_once_from_credits_and_raises_the_limit(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        using var other = await app.CustomerAsync(20_000_000);
        Assert.Equal(HttpStatusCode.OK, (await Deploy(c, "d1")).StatusCode);
        Assert.Equal("entitlement_exceeded", (await MeteringApi.BodyAsync(await Deploy(c, "d2"), HttpStatusCode.Forbidden)).Str("code"));

        var catalog = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/addons"), HttpStatusCode.OK)).GetProperty("data")[0];
        Assert.Equal(("deploy_slot", 1000L, 10_000_000L, "deploy_slots", 0L), (catalog.Str("id"), catalog.Long("price_cents"), catalog.Long("price_micros"), catalog.Str("entitlement"), catalog.Long("owned")));
        Assert.Equal("insufficient_credits", (await MeteringApi.BodyAsync(await Buy(c, "p1"), HttpStatusCode.PaymentRequired)).Str("code"));

        await app.GrantAsync(c.AccountId, 10_000_000);
        var bought = await MeteringApi.BodyAsync(await Buy(c, "p1"), HttpStatusCode.OK);
        Assert.Equal((10_000_000L, 2L, false), (bought.Long("amount_micros"), bought.Long("limit"), bought.GetProperty("replayed").GetBoolean()));
        var replay = await MeteringApi.BodyAsync(await Buy(c, "p1"), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());
        Assert.Equal("idempotency_conflict", (await MeteringApi.BodyAsync(await Buy(c, "p1", quantity: 2), HttpStatusCode.Conflict)).Str("code"));
        Assert.Equal(0, (await c.AccountAsync()).Long("balance_micros"));

        Assert.Equal(HttpStatusCode.OK, (await Deploy(c, "d2")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Deploy(c, "d3")).StatusCode);
        var slots = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/entitlements"), HttpStatusCode.OK)).GetProperty("entitlements")
            .EnumerateArray().Single(e => e.Str("feature") == "deploy_slots");
        Assert.Equal((2L, 2L), (slots.Long("limit"), slots.Long("used")));
        // Another account's limit is its own plan's.
        Assert.Equal(HttpStatusCode.OK, (await Deploy(other, "d1")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Deploy(other, "d2")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await c.Client.PostAsync("/api/v1/addons/nope/purchase", AdminApi.JsonBody("""{"id":"x"}"""))).StatusCode);
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_last_slot_fires_the_entitlement_alerts_and_an_extra_slot_resolves_those_no_longer_reached(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(10_000_000);
        static bool Slots(JsonElement a) => a.Str("subject") == "entitlement:deploy_slots";

        Assert.Equal(HttpStatusCode.OK, (await Deploy(c, "alert-d1")).StatusCode);
        var alerts = await c.WaitForAlertsAsync(app, a => a.Count(Slots) == 3);
        Assert.Equal([50L, 80L, 100L], alerts.Where(Slots).Select(a => a.Long("threshold_percent")).Order().ToArray());

        // 1 of 2 slots: still at 50 %, no longer at 80 % or 100 %.
        await MeteringApi.BodyAsync(await Buy(c, "alert-buy"), HttpStatusCode.OK);
        alerts = await c.WaitForAlertsAsync(app, a => a.Count(x => Slots(x) && x.Str("status") == "resolved") == 2);
        Assert.Equal(["50:active", "80:resolved", "100:resolved"],
            alerts.Where(Slots).OrderBy(a => a.Long("threshold_percent")).Select(a => $"{a.Long("threshold_percent")}:{a.Str("status")}").ToArray());
    }
}
