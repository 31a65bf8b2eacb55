using System.Net;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>The entitlements API: feature flags and counted entitlements of the caller's plan, exact and idempotent.</summary>
public sealed class EntitlementTests() : EngineApps(new Dictionary<string, string?>
{
    ["Tollgate:Plans:builder:Entitlements:projects"] = "2",
    ["Tollgate:Plans:builder:Features:0"] = "api",
})
{
    private static async Task<Customer> BuilderAsync(TestApp app)
    {
        var c = await app.CustomerAsync(0);
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"builder"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));
        return c;
    }

    private static Task<HttpResponseMessage> UseAsync(Customer c, string id, long quantity = 1) =>
        c.Client.PostAsync("/api/v1/entitlements/projects/usage", AdminApi.JsonBody($$"""{"id":"{{id}}","quantity":{{quantity}}}"""));

    [Theory, MemberData(nameof(Engines))]
    public async Task Counted_entitlements_are_enforced_idempotent_and_can_be_given_back(string engine)
    {
        var app = App(engine);
        using var c = await BuilderAsync(app);

        var check = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/check", AdminApi.JsonBody("""{"feature":"projects"}""")), HttpStatusCode.OK);
        Assert.Equal((true, 2L, 0L), (check.GetProperty("allowed").GetBoolean(), check.Long("limit"), check.Long("used")));

        Assert.Equal(1, (await MeteringApi.BodyAsync(await UseAsync(c, "p1"), HttpStatusCode.OK)).Long("used"));
        Assert.Equal(2, (await MeteringApi.BodyAsync(await UseAsync(c, "p2"), HttpStatusCode.OK)).Long("used"));
        var exceeded = await MeteringApi.BodyAsync(await UseAsync(c, "p3"), HttpStatusCode.Forbidden);
        Assert.Equal(("entitlement_exceeded", 2L), (exceeded.Str("code"), exceeded.Long("used")));
        var replay = await MeteringApi.BodyAsync(await UseAsync(c, "p1"), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());
        Assert.Equal(1, replay.Long("used"));
        Assert.Equal("idempotency_conflict", (await MeteringApi.BodyAsync(await UseAsync(c, "p1", 2), HttpStatusCode.Conflict)).Str("code"));

        Assert.Equal(1, (await MeteringApi.BodyAsync(await UseAsync(c, "delete-p1", -1), HttpStatusCode.OK)).Long("used"));
        Assert.Equal(2, (await MeteringApi.BodyAsync(await UseAsync(c, "p3"), HttpStatusCode.OK)).Long("used"));

        var list = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/entitlements");
        var projects = list.GetProperty("entitlements")[0];
        Assert.Equal(("builder", "projects", 2L, 2L, 0L), (list.Str("plan"), projects.Str("feature"), projects.Long("limit"), projects.Long("used"), projects.Long("remaining")));
        var api = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/check", AdminApi.JsonBody("""{"feature":"api"}""")), HttpStatusCode.OK);
        var tools = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/check", AdminApi.JsonBody("""{"feature":"tools"}""")), HttpStatusCode.OK);
        Assert.Equal((true, false), (api.GetProperty("allowed").GetBoolean(), tools.GetProperty("allowed").GetBoolean()));
        Assert.Equal("feature_not_in_plan", (await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/seats/usage",
            AdminApi.JsonBody("""{"id":"s1"}""")), HttpStatusCode.Forbidden)).Str("code"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_check_answers_feature_flags_as_the_gateway_gates_them(string engine)
    {
        var app = App(engine);
        const string withTools = """{"model":"demo/echo","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}]}""";
        static async Task<bool> AllowedAsync(Customer c, string feature) => (await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/check",
            AdminApi.JsonBody($$"""{"feature":"{{feature}}"}""")), HttpStatusCode.OK)).GetProperty("allowed").GetBoolean();

        // The default plan has no Features list: every feature, on the gateway and in the check alike.
        using var open = await app.CustomerAsync(1_000_000);
        Assert.True(await AllowedAsync(open, "tools"));
        Assert.Equal(HttpStatusCode.OK, (await open.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody(withTools))).StatusCode);

        // builder lists only "api": the check and the gateway both refuse tools.
        using var builder = await BuilderAsync(app);
        await app.GrantAsync(builder.AccountId, 1_000_000); // so a refusal cannot be the balance's
        Assert.False(await AllowedAsync(builder, "tools"));
        var refused = await MeteringApi.BodyAsync(await builder.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody(withTools)), HttpStatusCode.Forbidden);
        Assert.Equal(("feature_not_in_plan", "tools"), (refused.GetProperty("error").Str("code"), refused.GetProperty("error").Str("param")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Using_a_counted_entitlement_fires_each_threshold_once(string engine)
    {
        var app = App(engine);
        using var c = await BuilderAsync(app);
        static bool Projects(JsonElement a) => a.Str("subject") == "entitlement:projects";

        await MeteringApi.BodyAsync(await UseAsync(c, "alert-p1"), HttpStatusCode.OK);
        var alerts = await c.WaitForAlertsAsync(app, a => a.Any(Projects));
        Assert.Equal([50L], alerts.Where(Projects).Select(a => a.Long("threshold_percent")).ToArray());

        // The second of two projects crosses 80 % and 100 % at once; a replay and a refused third fire nothing more.
        await MeteringApi.BodyAsync(await UseAsync(c, "alert-p2"), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await UseAsync(c, "alert-p2"), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await UseAsync(c, "alert-p3"), HttpStatusCode.Forbidden);
        alerts = await c.WaitForAlertsAsync(app, a => a.Count(Projects) == 3);
        Assert.Equal([50L, 80L, 100L], alerts.Where(Projects).Select(a => a.Long("threshold_percent")).Order().ToArray());
        Assert.All(alerts.Where(Projects), a => Assert.Equal(2, a.Long("limit")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Concurrent_uses_never_exceed_the_limit(string engine)
    {
        var app = App(engine);
        using var c = await BuilderAsync(app);

        var responses = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => UseAsync(c, $"race-{i}")));

        Assert.Equal(2, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        Assert.Equal(10, responses.Count(r => r.StatusCode == HttpStatusCode.Forbidden));
        var list = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/entitlements");
        Assert.Equal(2, list.GetProperty("entitlements")[0].Long("used"));
    }
}
