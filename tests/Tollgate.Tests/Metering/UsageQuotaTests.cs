using Tollgate.Tests.Api;

namespace Tollgate.Tests.Metering;

/// <summary>
/// <c>Tollgate:Metering:CountTowardPlanQuota</c>: usage events reported by an app that calls providers itself count as
/// the plan's included requests, like gateway calls — and only events this request actually records count.
/// </summary>
public sealed class UsageQuotaTests() : EngineApps(new Dictionary<string, string?>
{
    ["Tollgate:Metering:CountTowardPlanQuota"] = "true",
    ["Tollgate:Plans:default:IncludedRequests"] = "3",
})
{
    // demo/echo: $1 per million input tokens × the default markup 2.0 → 2 µ$ per input token.
    private static string Event(string id, long inputTokens = 10) => $$"""{"id":"{{id}}","model":"demo/echo","input_tokens":{{inputTokens}},"output_tokens":0}""";

    private static async Task<JsonElement[]> ReportAsync(Customer c, params string[] events) =>
        (await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/usage/events", AdminApi.JsonBody("{\"events\":[" + string.Join(",", events) + "]}")), HttpStatusCode.OK))
        .GetProperty("data").EnumerateArray().ToArray();

    private static async Task<long> UsedAsync(Customer c) =>
        (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas")[0].GetProperty("used").GetInt64();

    [Theory, MemberData(nameof(Engines))]
    public async Task Recorded_events_take_the_plan_requests_refused_and_repeated_ones_give_them_back(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(100);
        // The second event costs 200 µ$ with 80 left after the first: refused for credits, its unit given back.
        var first = await ReportAsync(c, Event("a"), Event("b", inputTokens: 100));
        Assert.Equal(("accepted", "insufficient_credits"), (first[0].Str("status"), first[1].GetProperty("error").Str("code")));
        Assert.Equal(1, await UsedAsync(c));
        // A repeated event is a duplicate and takes nothing.
        Assert.Equal("duplicate", (await ReportAsync(c, Event("a")))[0].Str("status"));
        Assert.Equal(1, await UsedAsync(c));

        var more = await ReportAsync(c, Event("c"), Event("d"), Event("e"));
        Assert.Equal(["accepted", "accepted", "rejected"], more.Select(r => r.Str("status")));
        Assert.Equal("quota_exceeded", more[2].GetProperty("error").Str("code"));
        Assert.Equal(3, await UsedAsync(c));
        // The refused event was neither charged nor recorded: three events of 20 µ$.
        Assert.Equal(100 - 3 * 20, (await c.AccountAsync()).Long("balance_micros"));
        var usage = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/usage");
        Assert.Equal(3, usage.GetProperty("data").GetArrayLength());
    }
}

/// <summary>Without the setting (the default) usage events never touch the plan's request quota.</summary>
public sealed class UsageQuotaOffTests() : EngineApps(new Dictionary<string, string?> { ["Tollgate:Plans:default:IncludedRequests"] = "1" })
{
    [Theory, MemberData(nameof(Engines))]
    public async Task Events_do_not_count_unless_configured(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(1_000);
        var body = """{"events":[{"id":"x1","model":"demo/echo","input_tokens":1,"output_tokens":0},{"id":"x2","model":"demo/echo","input_tokens":1,"output_tokens":0}]}""";
        var results = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/usage/events", AdminApi.JsonBody(body)), HttpStatusCode.OK)).GetProperty("data");
        Assert.All(results.EnumerateArray(), r => Assert.Equal("accepted", r.Str("status")));
        Assert.Equal(0, (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas")[0].GetProperty("used").GetInt64());
    }
}
