using System.Net;
using Microsoft.Extensions.Options;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>
/// Plans from configuration: the account's plan sets the markup (where the model has none of its own) and gates models
/// and features on the gateway. demo/echo costs p + 2o micro-USD for p prompt and o output tokens.
/// </summary>
public sealed class PlanTests() : EngineApps(Settings)
{
    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["Tollgate:Plans:free:Markup"] = "3",
        ["Tollgate:Plans:free:Models:0"] = "demo/echo",
        ["Tollgate:Plans:free:Features:0"] = "none",
        ["Tollgate:Plans:pro:Markup"] = "1.5",
        ["Tollgate:Plans:pro:Features:0"] = "tools",
        ["Tollgate:Plans:pro:Features:1"] = "byok",
        ["Tollgate:Pricing:Models:demo/other:InputMtok"] = "1",
        ["Tollgate:Pricing:Models:demo/other:OutputMtok"] = "2",
    };

    private static HttpContent Chat(string model, bool tools = false) => AdminApi.JsonBody(tools
        ? $$$$"""{"model":"{{{{model}}}}","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}]}"""
        : $$"""{"model":"{{model}}","messages":[{"role":"user","content":"how much with my plan"}]}""");

    private static async Task<(long Charge, long Prompt, long Output)> CallAsync(Customer c, string model = "demo/echo")
    {
        var response = await c.Client.PostAsync("/v1/chat/completions", Chat(model));
        var body = await MeteringApi.BodyAsync(response, HttpStatusCode.OK);
        var usage = body.GetProperty("usage");
        return (long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single()), usage.Long("prompt_tokens"), usage.Long("completion_tokens"));
    }

    private static long Ceil(decimal d) => (long)Math.Ceiling(d);

    [Theory, MemberData(nameof(Engines))]
    public async Task The_accounts_plan_sets_the_markup_of_its_calls_quotes_and_usage_events(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(1_000_000);

        var (charge, p, o) = await CallAsync(c);
        Assert.Equal(2 * (p + 2 * o), charge);

        var account = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"pro"}""")), HttpStatusCode.OK);
        Assert.Equal("pro", account.Str("plan"));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));
        (charge, p, o) = await CallAsync(c);
        Assert.Equal(Ceil(1.5m * (p + 2 * o)), charge);

        var quote = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/pricing/quote",
            AdminApi.JsonBody("""{"model":"demo/echo","input_tokens":1000,"output_tokens":1000}""")), HttpStatusCode.OK);
        Assert.Equal(("pro", "1.5", 4_500L), (quote.Str("plan"), quote.Str("markup"), quote.Long("user_price_micros")));
        var anonymous = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/pricing/quote",
            AdminApi.JsonBody("""{"model":"demo/echo","input_tokens":1000,"output_tokens":1000}""")), HttpStatusCode.OK);
        Assert.Equal(("default", 6_000L), (anonymous.Str("plan"), anonymous.Long("user_price_micros")));

        var events = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/usage/events",
            AdminApi.JsonBody("""{"id":"plan-evt-1","model":"demo/echo","input_tokens":1000,"output_tokens":1000}""")), HttpStatusCode.OK);
        Assert.Equal(4_500, events.GetProperty("data")[0].Long("user_price_micros"));

        var list = await app.Anonymous.GetFromJsonAsync<JsonElement>("/api/v1/pricing?provider=demo");
        var echo = list.GetProperty("models").EnumerateArray().Single(m => m.Str("id") == "demo/echo");
        var plans = echo.GetProperty("plans").EnumerateArray().ToDictionary(x => x.Str("plan")!, x => x.Str("markup"));
        Assert.Equal(new Dictionary<string, string?> { ["default"] = "2", ["free"] = "3", ["pro"] = "1.5" }, plans);
        var other = list.GetProperty("models").EnumerateArray().Single(m => m.Str("id") == "demo/other");
        Assert.DoesNotContain(other.GetProperty("plans").EnumerateArray(), x => x.Str("plan") == "free");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_plan_gates_models_and_tools_on_the_gateway(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"free"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));

        var (charge, p, o) = await CallAsync(c);
        Assert.Equal(3 * (p + 2 * o), charge);
        var model = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat("demo/other")), HttpStatusCode.Forbidden)).GetProperty("error");
        Assert.Equal(("model_not_allowed", "model"), (model.Str("code"), model.Str("param")));
        var tools = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat("demo/echo", tools: true)), HttpStatusCode.Forbidden)).GetProperty("error");
        Assert.Equal(("feature_not_in_plan", "tools"), (tools.Str("code"), tools.Str("param")));
        var models = await c.Client.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Equal(["demo/echo"], models.GetProperty("data").EnumerateArray().Select(m => m.Str("id")!).ToArray());

        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"pro"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat("demo/echo", tools: true))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat("demo/other"))).StatusCode);
    }

    [Fact]
    public async Task An_unknown_plan_is_refused_and_a_contradictory_plan_stops_start_up()
    {
        var app = App(TestDatabases.Sqlite);
        var accountId = await app.CreateAccountAsync("plans");
        var problem = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/accounts/{accountId}/plan", AdminApi.JsonBody("""{"plan":"gold"}""")), HttpStatusCode.BadRequest);
        Assert.Contains("default", problem.Str("detail"));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?>
        {
            ["Tollgate:Plans:cheap:Markup"] = "0.5",
            ["Tollgate:Plans:cheap:MonthlyPriceCents"] = "-1",
        }));
        Assert.Contains(error.Failures, f => f.Contains("cheap:Markup", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("MonthlyPriceCents", StringComparison.Ordinal));
    }
}

/// <summary>The shipped example plan sets load with one setting and pass the start-up validation.</summary>
public sealed class PlanSetTests
{
    [Theory]
    [InlineData("chat", "Free", 50L)]
    [InlineData("saas", "Free", 1000L)]
    [InlineData("builder", "Free", null)]
    public async Task A_shipped_plan_set_loads_with_one_setting(string set, string defaultName, long? includedRequests)
    {
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:PlanSet"] = set });
        using var c = await app.CustomerAsync(1_000_000);
        var plan = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        Assert.Equal(("default", defaultName), (plan.Str("id"), plan.Str("name")));
        Assert.Equal(includedRequests, plan.GetProperty("quotas").EnumerateArray().Select(q => (long?)q.Long("limit")).FirstOrDefault());
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"hi"}]}"""))).StatusCode);
    }

    /// <summary>One plan as the admin API shows it: name, monthly and yearly cents, included requests, models, features, entitlements.</summary>
    private static string Tier(JsonElement plan)
    {
        var d = plan.GetProperty("definition");
        static string? List(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? "[" + string.Join(",", v.EnumerateArray().Select(x => x.GetString()).Order(StringComparer.Ordinal)) + "]" : null;
        static string? Num(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64().ToString(System.Globalization.CultureInfo.InvariantCulture) : null;
        var entitlements = d.TryGetProperty("entitlements", out var ent) && ent.ValueKind == JsonValueKind.Object && ent.EnumerateObject().Any()
            ? string.Join(",", ent.EnumerateObject().OrderBy(x => x.Name, StringComparer.Ordinal).Select(x => $"{x.Name}={x.Value.GetInt64()}")) : null;
        return $"{plan.Str("id")}|{d.Str("name")}|{Num(d, "monthly_price_cents") ?? "-"}|{Num(d, "yearly_price_cents") ?? "-"}|{Num(d, "included_requests") ?? "unlimited"}|"
               + $"{List(d, "models") ?? "all"}|{List(d, "features") ?? "all"}|{entitlements ?? "-"}";
    }

    /// <summary>The issue's three products, tier by tier: prices in cents, included requests (messages, calls), models, flags, counted entitlements.</summary>
    [Theory]
    [InlineData("chat", new[]
    {
        "default|Free|-|-|50|[anthropic/claude-haiku-4-5,demo/echo,openai/gpt-4o-mini]|[]|-",
        "max|Max|2999|-|unlimited|all|[api_access,byok,multiple_providers,tools]|-",
        "pro|Pro|999|-|1000|[anthropic/claude-haiku-4-5,anthropic/claude-sonnet-4-5,demo/*,openai/gpt-4.1-mini,openai/gpt-4o-mini]|[byok,tools]|-",
    })]
    [InlineData("saas", new[]
    {
        "default|Free|-|-|1000|all|[api_access]|-",
        "enterprise|Enterprise|29900|299000|unlimited|all|[api_access,byok,multiple_providers,tools]|-",
        "professional|Professional|9900|99000|100000|all|[api_access,byok,tools]|-",
        "starter|Starter|2900|29000|10000|all|[api_access,tools]|-",
    })]
    [InlineData("builder", new[]
    {
        "default|Free|-|-|unlimited|all|[tools]|deploy_slots=1,projects=1",
        "premium|Premium|500|-|unlimited|all|[api_access,byok,tools]|deploy_slots=5,projects=5",
    })]
    public async Task A_shipped_plan_set_has_the_products_tiers_and_prices(string set, string[] tiers)
    {
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:PlanSet"] = set });
        var plans = await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/plans");
        Assert.Equal(tiers, plans.EnumerateArray().Select(Tier).ToArray());

        using var c = await app.CustomerAsync(1_000_000);
        var addOns = (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/addons")).GetProperty("data").EnumerateArray()
            .Select(a => $"{a.Str("id")}|{a.Long("price_cents")}|{a.Str("entitlement")}|{a.Long("units")}").ToArray();
        Assert.Equal(set == "builder" ? ["deploy_slot|1000|deploy_slots|1"] : Array.Empty<string>(), addOns);
        if (set != "chat") return;
        // The free chat tier: no tools on the gateway, and the entitlements API says the same.
        var tools = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody(
            """{"model":"demo/echo","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object"}}}]}"""));
        Assert.Equal("feature_not_in_plan", (await MeteringApi.BodyAsync(tools, HttpStatusCode.Forbidden)).GetProperty("error").Str("code"));
        var check = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/entitlements/check", AdminApi.JsonBody("""{"feature":"tools"}""")), HttpStatusCode.OK);
        Assert.False(check.GetProperty("allowed").GetBoolean());
    }

    [Fact]
    public async Task A_config_file_names_a_plan_set_and_outranks_it()
    {
        var file = Path.Combine(Path.GetTempPath(), $"tollgate-config-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(file, """{"Tollgate":{"PlanSet":"saas","Plans":{"default":{"Name":"Hobby"}}}}""");
        try
        {
            await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:ConfigFile"] = file });
            using var c = await app.CustomerAsync(1_000_000);
            var plan = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
            Assert.Equal(("Hobby", 1000L), (plan.Str("name"), plan.GetProperty("quotas")[0].Long("limit")));
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public async Task A_plan_file_with_contradictions_stops_start_up_listing_every_one()
    {
        var file = Path.Combine(Path.GetTempPath(), $"tollgate-plans-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(file, """
            {"Tollgate":{"Plans":{
              "cheap":{"Markup":0.5,"IncludedRequests":-10,"Entitlements":{"projects":-1}},
              "typo":{"MonthlyPriceCents":999,"IncludedRequest":1000,"ExpireIncludedCredits":true},
              "words":{"IncludedTokens":"lots"}
            }}}
            """);
        try
        {
            var error = await Assert.ThrowsAsync<OptionsValidationException>(() =>
                TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:ConfigFile"] = file }));
            var failures = error.Failures.ToList();
            foreach (var expected in new[]
                     {
                         "Tollgate:Plans:cheap:Markup", "Tollgate:Plans:cheap:IncludedRequests", "Tollgate:Plans:cheap:Entitlements:projects",
                         // A misspelt field would otherwise leave the plan unlimited.
                         "Tollgate:Plans:typo:IncludedRequest is not a setting", "Tollgate:Plans:typo:ExpireIncludedCredits",
                         "Tollgate:Plans:words",
                     })
                Assert.Contains(failures, f => f.Contains(expected, StringComparison.Ordinal));
            Assert.Equal(6, failures.Count);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public async Task A_missing_config_file_stops_start_up_naming_it()
    {
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:ConfigFile"] = "/nonexistent/tollgate.json" }));
        Assert.Contains("/nonexistent/tollgate.json", error.Message);
    }

    [Fact]
    public async Task An_unknown_plan_set_stops_start_up_with_the_choices()
    {
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:PlanSet"] = "gold" }));
        Assert.Contains("chat", error.Message);
    }
}
