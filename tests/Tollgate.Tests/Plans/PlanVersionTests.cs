using Microsoft.Extensions.Options;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>Plans through the admin API: versions, grandfathered subscriptions, archiving, validation, other processes.</summary>
public sealed class PlanVersionTests() : EngineApps(new Dictionary<string, string?>
{
    ["Tollgate:PlanReloadSeconds"] = "1",
    ["Tollgate:Plans:configured:IncludedRequests"] = "7",
})
{
    private static HttpContent Body(string json) => AdminApi.JsonBody(json);

    private static Task<HttpResponseMessage> SubscribeAsync(Customer c, string plan) =>
        c.Client.PostAsync("/api/v1/subscription", Body($$"""{"plan":"{{plan}}"}"""));

    [Theory, MemberData(nameof(Engines))]
    public async Task A_subscription_keeps_the_version_it_subscribed_to_and_new_subscribers_get_the_newest(string engine)
    {
        var app = App(engine);
        var id = "v" + Guid.NewGuid().ToString("N")[..12];
        var created = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/plans/{id}",
            Body("""{"name":"Team","monthly_price_cents":1000,"included_requests":5,"entitlements":{"projects":2}}""")), HttpStatusCode.Created);
        Assert.Equal((1L, "database"), (created.Long("version"), created.Str("source")));
        // The same definition again: nothing new.
        var same = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/plans/{id}",
            Body("""{"entitlements":{"projects":2},"included_requests":5,"monthly_price_cents":1000,"name":"Team"}""")), HttpStatusCode.OK);
        Assert.Equal(1L, same.Long("version"));

        using var early = await app.CustomerAsync(100_000_000);
        var first = await MeteringApi.BodyAsync(await SubscribeAsync(early, id), HttpStatusCode.OK);
        Assert.Equal(1L, first.GetProperty("subscription").Long("plan_version"));

        var v2 = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/plans/{id}",
            Body("""{"name":"Team","monthly_price_cents":1000,"included_requests":10,"entitlements":{"projects":2}}""")), HttpStatusCode.OK);
        Assert.Equal(2L, v2.Long("version"));
        Assert.Equal([1L, 2L], v2.GetProperty("versions").EnumerateArray().Select(v => v.Long("version")).ToArray());

        using var late = await app.CustomerAsync(100_000_000);
        var second = await MeteringApi.BodyAsync(await SubscribeAsync(late, id), HttpStatusCode.OK);
        Assert.Equal(2L, second.GetProperty("subscription").Long("plan_version"));

        await Task.Delay(TimeSpan.FromMilliseconds(1_100));
        var earlyPlan = await early.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        var latePlan = await late.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        Assert.Equal((1L, 5L), (earlyPlan.Long("version"), earlyPlan.GetProperty("quotas")[0].Long("limit")));
        Assert.Equal((2L, 10L), (latePlan.Long("version"), latePlan.GetProperty("quotas")[0].Long("limit")));

        var version1 = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/plans/{id}/versions/1");
        Assert.Equal(5L, version1.GetProperty("definition").Long("included_requests"));
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.GetAsync($"/admin/v1/plans/{id}/versions/3")).StatusCode);

        // Archived: no new subscriptions; the accounts on it keep it.
        var archived = await MeteringApi.BodyAsync(await app.Admin.DeleteAsync($"/admin/v1/plans/{id}"), HttpStatusCode.OK);
        Assert.True(archived.GetProperty("archived").GetBoolean());
        using var after = await app.CustomerAsync(100_000_000);
        Assert.Equal("plan", (await MeteringApi.BodyAsync(await SubscribeAsync(after, id), HttpStatusCode.BadRequest)).Str("param"));
        Assert.Equal(id, (await early.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).Str("id"));
        Assert.Contains((await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/plans")).EnumerateArray(), p => p.Str("id") == id && p.GetProperty("archived").GetBoolean());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_invalid_plan_lists_every_problem_and_stores_nothing(string engine)
    {
        var app = App(engine);
        var id = "bad" + Guid.NewGuid().ToString("N")[..8];
        var problem = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/plans/{id}",
            Body("""{"markup":0.5,"included_requests":-1,"included_tokens":-2,"overage_policy":"maybe","trial_days":-1,"monthly_price_cents":-5}""")), HttpStatusCode.BadRequest);
        Assert.Equal("invalid_plan", problem.Str("code"));
        var errors = problem.GetProperty("errors").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Equal(6, errors.Count);
        foreach (var field in new[] { "Markup", "IncludedRequests", "IncludedTokens", "OveragePolicy", "TrialDays", "MonthlyPriceCents" })
            Assert.Contains(errors, e => e.Contains(field, StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.GetAsync($"/admin/v1/plans/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.PutAsync("/admin/v1/plans/bad%20id", Body("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.DeleteAsync("/admin/v1/plans/default")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_database_definition_overrides_the_configured_one_and_reaches_other_processes(string engine)
    {
        var app = App(engine);
        await using var other = await TestApp.StartAsync(engine, new Dictionary<string, string?> { ["Tollgate:PlanReloadSeconds"] = "1", ["Tollgate:Plans:configured:IncludedRequests"] = "7" },
            database: app.DatabaseConnection);
        var before = await other.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/plans/configured");
        Assert.Equal(("configuration", 0L), (before.Str("source"), before.Long("version")));

        await MeteringApi.BodyAsync(await app.Admin.PutAsync("/admin/v1/plans/configured", Body("""{"included_requests":70}""")), HttpStatusCode.OK);
        JsonElement seen = default;
        for (var i = 0; i < 50; i++)
        {
            seen = await other.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/plans/configured");
            if (seen.Str("source") == "database") break;
            await Task.Delay(200);
        }
        Assert.Equal(("database", 70L), (seen.Str("source"), seen.GetProperty("definition").Long("included_requests")));
        Assert.Equal([0L, 1L], seen.GetProperty("versions").EnumerateArray().Select(v => v.Long("version")).ToArray());
    }

    [Fact]
    public async Task Invalid_configured_plans_stop_start_up_with_every_problem_listed()
    {
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?>
        {
            ["Tollgate:Plans:x:IncludedTokens"] = "-1",
            ["Tollgate:Plans:x:OveragePolicy"] = "sometimes",
            ["Tollgate:Plans:x:TrialDays"] = "-3",
        }));
        Assert.Equal(3, error.Failures.Count());
        Assert.Contains(error.Failures, f => f.Contains("Tollgate:Plans:x:OveragePolicy", StringComparison.Ordinal));
    }
}
