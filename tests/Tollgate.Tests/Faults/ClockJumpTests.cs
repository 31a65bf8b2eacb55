using Microsoft.Extensions.DependencyInjection;
using Tollgate.Features.Plans;
using Tollgate.Tests.Api;
using Tollgate.Tests.Ledger;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Faults;

/// <summary>
/// The wall clock (an injected TimeProvider) jumps forward over period boundaries and back again, as after an NTP
/// correction or a VM resumed from a snapshot. Quota periods, spend caps, hold expiry and included plan credits must
/// neither reset twice nor show negative windows or amounts, and nothing answers 500.
/// </summary>
public sealed class ClockJumpTests
{
    // One minute before a day, month and short-month boundary: the plan's anniversary is the 31st, so its next period
    // starts on 28 February (the last day of that month).
    private static readonly DateTimeOffset Start = new(2026, 1, 31, 23, 59, 0, TimeSpan.Zero);

    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["Tollgate:Subscriptions:SweepSeconds"] = "86400",
        ["Tollgate:PlanCredits:SweepSeconds"] = "86400",
        ["Tollgate:Plans:jumpy:IncludedRequests"] = "2",
        ["Tollgate:Plans:jumpy:IncludedCreditsMicros"] = "5000000",
        ["Tollgate:Plans:jumpy:ExpireIncludedCredits"] = "true",
    };

    private static HttpContent Chat() => AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"tick"}]}""");

    /// <summary>Sends one call; it may succeed or be refused for quota, never anything else.</summary>
    private static async Task<HttpStatusCode> CallAsync(Customer c)
    {
        var response = await c.Client.PostAsync("/v1/chat/completions", Chat());
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, $"{(int)response.StatusCode} {body}");
        if (response.StatusCode == HttpStatusCode.TooManyRequests) Assert.Equal("quota_exceeded", JsonDocument.Parse(body).RootElement.GetProperty("error").Str("code"));
        return response.StatusCode;
    }

    /// <summary>The plan's quota and the caps as the account sees them: no negative count, no window that ends before it starts.</summary>
    private static async Task<(long Used, long Remaining)> AssertSaneViewsAsync(Customer c)
    {
        var plan = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/plan"), HttpStatusCode.OK);
        var quota = plan.GetProperty("quotas")[0];
        Assert.True(quota.Long("used") >= 0 && quota.Long("remaining") >= 0 && quota.Long("used") <= quota.Long("limit"), quota.GetRawText());
        var caps = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK);
        foreach (var cap in caps.GetProperty("caps").EnumerateArray())
        {
            Assert.True(cap.Long("spent_micros") >= 0, cap.GetRawText());
            if (cap.TryGetProperty("resets_at", out var resets) && resets.ValueKind == JsonValueKind.String)
                Assert.True(resets.GetDateTimeOffset() > Start.AddDays(-2), cap.GetRawText());
        }
        var account = await c.AccountAsync();
        Assert.True(account.Long("balance_micros") >= 0 && account.Long("held_micros") >= 0, account.GetRawText());
        return (quota.Long("used"), quota.Long("remaining"));
    }

    private static async Task<long> HeldAsync(Customer c) => (await c.AccountAsync()).Long("held_micros");

    private static async Task<int> LinesAsync(TestApp app, string accountId, string code) =>
        (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{accountId}/ledger?limit=500"))
        .GetProperty("data").EnumerateArray().Count(l => l.Str("code") == code);

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Jumps_forward_over_a_period_boundary_and_back_never_reset_twice_or_go_negative(string engine)
    {
        var clock = new ManualTimeProvider(Start);
        await using var app = await TestApp.StartAsync(engine, Settings, services: s => s.AddSingleton<TimeProvider>(clock));
        var subscriptions = app.Get<SubscriptionService>();
        var credits = app.Get<PlanCreditsService>();
        using var c = await app.CustomerAsync(1_000_000);
        await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/subscription", AdminApi.JsonBody("""{"plan":"jumpy","interval":"month"}""")), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/spend-caps", AdminApi.JsonBody("""{"daily_micros":50000000,"monthly_micros":90000000}""")), HttpStatusCode.OK);
        clock.Advance(TimeSpan.FromSeconds(1));

        // First period: two included requests, then quota_exceeded. A hold of 1,000 µ$ for two minutes.
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], [await CallAsync(c), await CallAsync(c), await CallAsync(c)]);
        await MeteringApi.BodyAsync(await c.AuthorizeAsync("jump-hold", 1_000, ttlSeconds: 120), HttpStatusCode.Created);
        Assert.Equal(1_000, await HeldAsync(c));
        var firstPeriodMark = clock.GetUtcNow();

        // A day back, before the plan even started: the first period still counts (no fresh quota), the hold is not
        // expired, nothing renews or is granted.
        clock.Advance(TimeSpan.FromDays(-1));
        Assert.Equal(HttpStatusCode.TooManyRequests, await CallAsync(c));
        Assert.Equal((2L, 0L), await AssertSaneViewsAsync(c));
        Assert.Equal(0, await subscriptions.RenewDueAsync(CancellationToken.None));
        Assert.Equal(0, await credits.GrantDueAsync(CancellationToken.None));
        await Task.Delay(400); // several hold-expiry sweeps
        Assert.Equal(1_000, await HeldAsync(c));

        // Forward over the anniversary (28 February 23:59, the short month's last day) in one jump: one renewal, the
        // unspent included credits expire once and are granted once, the hold expires, the quota is fresh.
        clock.Advance(new DateTimeOffset(2026, 2, 28, 23, 59, 30, TimeSpan.Zero) - clock.GetUtcNow());
        Assert.Equal(1, await subscriptions.RenewDueAsync(CancellationToken.None));
        Assert.Equal(0, await credits.GrantDueAsync(CancellationToken.None));
        for (var i = 0; i < 100 && await HeldAsync(c) != 0; i++) await Task.Delay(50);
        Assert.Equal(0, await HeldAsync(c));
        var balanceAfterRenewal = (await c.AccountAsync()).Long("balance_micros");
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], [await CallAsync(c), await CallAsync(c), await CallAsync(c)]);
        Assert.Equal((2L, 0L), await AssertSaneViewsAsync(c));
        var secondPeriodMark = clock.GetUtcNow();

        // Back into the first period: its quota is still used up; the expired hold cannot be captured; nothing renews.
        clock.Advance(firstPeriodMark - clock.GetUtcNow());
        Assert.Equal(HttpStatusCode.TooManyRequests, await CallAsync(c));
        var capture = await c.CaptureAsync("jump-hold", 500);
        Assert.True((int)capture.StatusCode is >= 400 and < 500, $"capture of an expired hold: {(int)capture.StatusCode} {await capture.Content.ReadAsStringAsync()}");
        Assert.Equal(0, await subscriptions.RenewDueAsync(CancellationToken.None));
        Assert.Equal(0, await credits.GrantDueAsync(CancellationToken.None));
        await AssertSaneViewsAsync(c);

        // And forward again: the second period is not reset a second time, nothing is granted or expired again.
        clock.Advance(secondPeriodMark - clock.GetUtcNow());
        Assert.Equal(HttpStatusCode.TooManyRequests, await CallAsync(c));
        Assert.Equal(0, await subscriptions.RenewDueAsync(CancellationToken.None));
        Assert.Equal(0, await credits.GrantDueAsync(CancellationToken.None));
        Assert.Equal((2L, 0L), await AssertSaneViewsAsync(c));
        Assert.Equal(2, await LinesAsync(app, c.AccountId, "plan_credits"));
        Assert.Equal(1, await LinesAsync(app, c.AccountId, "plan_credits_expired"));
        Assert.True((await c.AccountAsync()).Long("balance_micros") < balanceAfterRenewal);
        Assert.Equal(0, await HeldAsync(c));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
