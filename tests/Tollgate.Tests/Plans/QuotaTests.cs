using System.Net;
using Tollgate.Features.Plans;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

public sealed class PlanPeriodTests
{
    private static DateTimeOffset At(string s) => DateTimeOffset.Parse(s, System.Globalization.CultureInfo.InvariantCulture);

    [Theory]
    [InlineData("2026-01-15T10:00:00Z", "2026-01-15T10:00:00Z", "2026-01-15T10:00:00Z", "2026-02-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2026-02-15T09:59:59Z", "2026-01-15T10:00:00Z", "2026-02-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2026-02-15T10:00:00Z", "2026-02-15T10:00:00Z", "2026-03-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2027-01-20T00:00:00Z", "2027-01-15T10:00:00Z", "2027-02-15T10:00:00Z")]
    // An anchor on the 31st renews on the last day of shorter months, and on the 31st again afterwards.
    [InlineData("2026-01-31T00:00:00Z", "2026-03-01T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z")]
    [InlineData("2026-01-31T00:00:00Z", "2026-04-30T12:00:00Z", "2026-04-30T00:00:00Z", "2026-05-31T00:00:00Z")]
    [InlineData("2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z")]
    public void A_monthly_period_runs_from_the_anchors_anniversary(string anchor, string now, string start, string end) =>
        Assert.Equal(new PlanPeriod(At(start), At(end)), PlanPeriod.Monthly(At(anchor), At(now)));

    [Theory]
    [InlineData("2026-01-15T10:00:00Z", "2026-06-01T00:00:00Z", "2026-01-15T10:00:00Z", "2027-01-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2027-01-15T09:59:59Z", "2026-01-15T10:00:00Z", "2027-01-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2027-01-15T10:00:00Z", "2027-01-15T10:00:00Z", "2028-01-15T10:00:00Z")]
    [InlineData("2026-01-15T10:00:00Z", "2029-03-01T00:00:00Z", "2029-01-15T10:00:00Z", "2030-01-15T10:00:00Z")]
    // A leap day anchor renews on 28 February in common years and on the 29th again in leap years.
    [InlineData("2028-02-29T00:00:00Z", "2029-03-01T00:00:00Z", "2029-02-28T00:00:00Z", "2030-02-28T00:00:00Z")]
    [InlineData("2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2033-02-28T00:00:00Z")]
    public void A_yearly_period_runs_from_the_anchors_anniversary(string anchor, string now, string start, string end) =>
        Assert.Equal(new PlanPeriod(At(start), At(end)), PlanPeriod.Every(At(anchor), 12, At(now)));
}

/// <summary>A plan's included requests per period: exact under concurrency, refused with 429 quota_exceeded, and not used up by calls that deliver nothing.</summary>
public sealed class QuotaTests() : EngineApps(new Dictionary<string, string?>
{
    ["Tollgate:Plans:tiny:IncludedRequests"] = "5",
})
{
    private static HttpContent Chat() => AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":50,"messages":[{"role":"user","content":"count me"}]}""");

    [Theory, MemberData(nameof(Engines))]
    public async Task Concurrent_calls_use_exactly_the_included_requests_and_the_rest_get_quota_exceeded(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"tiny"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));

        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => c.Client.PostAsync("/v1/chat/completions", Chat())));

        Assert.Equal(5, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
        var refused = responses.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToList();
        Assert.Equal(15, refused.Count);
        var error = (await MeteringApi.BodyAsync(refused[0], HttpStatusCode.TooManyRequests)).GetProperty("error");
        Assert.Equal(("quota_exceeded", 5L), (error.Str("code"), error.Long("limit")));
        Assert.True(refused[0].Headers.RetryAfter!.Delta > TimeSpan.FromDays(27));
        var plan = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        var quota = plan.GetProperty("quotas")[0];
        Assert.Equal(("tiny", 5L, 5L, 0L), (plan.Str("id"), quota.Long("limit"), quota.Long("used"), quota.Long("remaining")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_call_that_delivers_nothing_does_not_use_the_quota(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"tiny"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));

        for (var i = 0; i < 7; i++) Assert.Equal(HttpStatusCode.PaymentRequired, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);

        var quota = (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas")[0];
        Assert.Equal((0L, 5L), (quota.Long("used"), quota.Long("remaining")));
    }
}

/// <summary>A plan's included credits are granted once per period, however often the grant runs.</summary>
public sealed class PlanCreditsTests
{
    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Included_credits_are_granted_when_the_plan_starts_and_once_per_period(string engine)
    {
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Plans:pro:IncludedCreditsMicros"] = "5000000",
        });
        using var c = await app.CustomerAsync(1_000);

        var account = await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"pro"}""")), HttpStatusCode.OK);
        Assert.Equal(5_001_000, account.Long("balance_micros"));
        var service = app.Get<Tollgate.Features.Plans.PlanCreditsService>();
        Assert.Equal(0, await service.GrantDueAsync(CancellationToken.None));
        Assert.Equal(0, await service.GrantDueAsync(CancellationToken.None, c.AccountId));
        Assert.Equal(5_001_000, (await c.AccountAsync()).Long("balance_micros"));
        var statement = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{c.AccountId}/ledger");
        Assert.Single(statement.GetProperty("data").EnumerateArray(), l => l.Str("code") == "plan_credits");
    }
}
