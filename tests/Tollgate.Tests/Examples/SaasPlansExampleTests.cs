using Tollgate.Tests.Alerts;

namespace Tollgate.Tests.Examples;

/// <summary>
/// examples/saas-plans end to end on a clock the test moves through November: the SaaS back end calls providers itself
/// and reports every call to the metering API; the Free plan's 1,000 calls, the 80 % alert as a signed webhook, usage
/// trends by day and provider at the catalog's per-provider prices, and monthly versus yearly subscription fees.
/// </summary>
public sealed class SaasPlansExampleTests : IAsyncLifetime
{
    private static readonly DateTimeOffset November = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
    private WebhookReceiver _receiver = null!;

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync() => _receiver = await WebhookReceiver.StartAsync();

    public async Task DisposeAsync() => await _receiver.DisposeAsync();

    /// <summary>
    /// What one call of 1,000 input and 500 output tokens costs at the catalog's prices (USD per million tokens, so
    /// micro-USD per token), at the example's markup of 1.0: input × price + output × price.
    /// </summary>
    private static readonly (string Model, string Provider, long Micros)[] Models =
    [
        ("openai/gpt-4o-mini", "openai", 1000 * 15 / 100 + 500 * 60 / 100),              // 0.15 / 0.60 → 450
        ("google/gemini-2.5-flash", "google", 1000 * 30 / 100 + 500 * 250 / 100),        // 0.30 / 2.50 → 1,550
        ("anthropic/claude-haiku-4-5", "anthropic", 1000 * 1 + 500 * 5),                 // 1 / 5 → 3,500
        ("mistral/mistral-small-latest", "mistral", 1000 * 10 / 100 + 500 * 30 / 100),   // 0.10 / 0.30 → 250
    ];

    private static string Events(int from, int count) => "{\"events\":[" + string.Join(",", Enumerable.Range(from, count).Select(i =>
        $$$"""{"id":"call-{{{i}}}","model":"{{{Models[i % 4].Model}}}","input_tokens":1000,"output_tokens":500,"metadata":{"feature":"blog_post"}}""")) + "]}";

    private static async Task<JsonElement[]> ReportAsync(HttpClient app, int from, int count) =>
        (await app.PostJsonAsync("/api/v1/usage/events", Events(from, count), HttpStatusCode.OK)).GetProperty("data").EnumerateArray().ToArray();

    [Theory, MemberData(nameof(Engines))]
    public async Task A_month_of_metered_calls_alerts_once_at_80_percent_stops_at_the_quota_and_is_reported_by_day_and_provider(string engine)
    {
        var clock = new Ledger.ManualTimeProvider(November);
        await using var app = await ExampleApp.StartAsync("saas-plans", engine, clock: clock);

        // A new customer on Free. The SaaS back end reports calls with the account's internal key: priced and
        // recorded, never charged (the plan's fee pays for them); the customer's own key manages the account.
        var accountId = await app.CreateAccountAsync("Acme Content");
        var ownKey = (await app.Admin.PostJsonAsync($"/admin/v1/accounts/{accountId}/keys", """{"name":"dashboard"}""", HttpStatusCode.Created)).GetProperty("key").GetString()!;
        var meterKey = (await app.Admin.PostJsonAsync($"/admin/v1/accounts/{accountId}/keys", """{"name":"backend","type":"internal"}""", HttpStatusCode.Created)).GetProperty("key").GetString()!;
        using var customer = ExampleApp.Client(app, ownKey);
        using var backend = ExampleApp.Client(app, meterKey);
        var hook = await customer.PostJsonAsync("/api/v1/webhooks", $$"""{"url":"{{_receiver.Url}}","events":["alert.*"]}""", HttpStatusCode.Created);
        var secret = hook.GetProperty("secret").GetString()!;
        var plan = await customer.GetJsonAsync("/api/v1/plan");
        Assert.Equal(("Free", 1000L), (plan.GetProperty("name").GetString(), plan.GetProperty("quotas")[0].GetProperty("limit").GetInt64()));

        // November: 33 calls a day for 30 days (990), reported at noon each day.
        var sent = 0;
        for (var day = 0; day < 30; day++)
        {
            clock.Advance((November.AddDays(day).AddHours(12)) - clock.GetUtcNow());
            var results = await ReportAsync(backend, sent, 33);
            Assert.All(results, r => Assert.Equal(("accepted", "internal"), (r.GetProperty("status").GetString(), r.GetProperty("billing_status").GetString())));
            sent += 33;
            // The alert is sent once the 800th call is counted (day 25: calls 793–825), and only once.
            if (day == 24)
            {
                var first = Assert.Single(await _receiver.WaitForAsync(1));
                // Verified as a receiver would on arrival: HMAC over the raw body with the endpoint's secret, fresh timestamp.
                Assert.True(ReceiverSignature.Verify(first.Signature, first.Body, secret, TimeSpan.FromMinutes(5), clock.GetUtcNow()));
                Assert.False(ReceiverSignature.Verify(first.Signature, first.Body, "whsec_someone_else", TimeSpan.FromMinutes(5), clock.GetUtcNow()));
            }
        }
        // The last ten of the 1,000, then the quota: the 1,001st call is refused, nothing recorded.
        clock.Advance(TimeSpan.FromHours(6));
        var last = await ReportAsync(backend, sent, 11);
        Assert.All(last[..10], r => Assert.Equal("accepted", r.GetProperty("status").GetString()));
        Assert.Equal(("rejected", "quota_exceeded"), (last[10].GetProperty("status").GetString(), last[10].GetProperty("error").GetProperty("code").GetString()));
        // A redelivered call is a duplicate: not counted again, not refused.
        Assert.Equal("duplicate", (await ReportAsync(backend, 999, 1))[0].GetProperty("status").GetString());
        plan = await customer.GetJsonAsync("/api/v1/plan");
        Assert.Equal((1000L, 0L), (plan.GetProperty("quotas")[0].GetProperty("used").GetInt64(), plan.GetProperty("quotas")[0].GetProperty("remaining").GetInt64()));

        // The webhooks: 80 % once, 100 % once, each signed with the endpoint's secret over the raw body.
        var received = await _receiver.WaitForAsync(2);
        await Task.Delay(200);
        received = _receiver.Received;
        Assert.Equal(2, received.Count);
        Assert.True(ReceiverSignature.Verify(received[1].Signature, received[1].Body, secret, TimeSpan.FromMinutes(5), clock.GetUtcNow()));
        Assert.Equal(2, received.Select(r => r.EventId).Distinct().Count());
        var alerts = received.Select(r => r.Json).Where(j => j.GetProperty("type").GetString() == "alert.fired")
            .Select(j => j.GetProperty("data")).OrderBy(d => d.GetProperty("threshold_percent").GetInt32()).ToList();
        Assert.Equal([(80, 800L, 1000L), (100, 1000L, 1000L)], alerts.Select(d => (d.GetProperty("threshold_percent").GetInt32(), d.GetProperty("used").GetInt64(), d.GetProperty("limit").GetInt64())));
        Assert.All(alerts, d => Assert.Equal("quota:requests", d.GetProperty("subject").GetString()));
        var eighty = Assert.Single(received, r => r.Json.GetProperty("data").GetProperty("threshold_percent").GetInt32() == 80);
        // Fired on 25 November (the day of the 800th call).
        Assert.StartsWith("2026-11-25", eighty.Json.GetProperty("data").GetProperty("fired_at").GetString());

        // Trends: by provider at the catalog's prices, and by day.
        var byProvider = (await customer.GetJsonAsync("/api/v1/usage/summary?group_by=provider&from=2026-11-01&to=2026-12-01")).GetProperty("data").EnumerateArray()
            .ToDictionary(g => g.GetProperty("key").GetString()!, g => (g.GetProperty("requests").GetInt64(), g.GetProperty("user_price_micros").GetInt64()));
        Assert.Equal(Models.ToDictionary(m => m.Provider, m => (250L, 250 * m.Micros)), byProvider);
        var byDay = (await customer.GetJsonAsync("/api/v1/usage/summary?group_by=day&from=2026-11-01&to=2026-12-01")).GetProperty("data").EnumerateArray()
            .ToDictionary(g => g.GetProperty("key").GetString()!, g => g.GetProperty("requests").GetInt64());
        Assert.Equal(30, byDay.Count);
        Assert.Equal((33L, 43L, 1000L), (byDay["2026-11-01"], byDay["2026-11-30"], byDay.Values.Sum()));
        // Tracked, never charged.
        Assert.Equal(0, (await customer.GetJsonAsync("/api/v1/account")).GetProperty("balance_micros").GetInt64());

        // The customer upgrades to Starter, paid yearly ($290) from credits bought for it: 10,000 calls from now.
        await app.GrantAsync(accountId, 290_000_000, "invoice-acme-2026-11");
        var upgrade = await customer.PostJsonAsync("/api/v1/subscription", """{"plan":"starter","interval":"year"}""", HttpStatusCode.OK);
        Assert.Equal(290_000_000, upgrade.GetProperty("fee_micros").GetInt64());
        clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal("accepted", (await ReportAsync(backend, 1000, 1))[0].GetProperty("status").GetString());
        plan = await customer.GetJsonAsync("/api/v1/plan");
        Assert.Equal(("Starter", 10_000L, 1L), (plan.GetProperty("name").GetString(), plan.GetProperty("quotas")[0].GetProperty("limit").GetInt64(), plan.GetProperty("quotas")[0].GetProperty("used").GetInt64()));
        Assert.Equal(0, (await customer.GetJsonAsync("/api/v1/account")).GetProperty("balance_micros").GetInt64());
        // The new period resolves November's two alerts (alert.resolved) and fires nothing new.
        var after = await _receiver.WaitForAsync(4);
        await Task.Delay(200);
        Assert.Equal(["alert.resolved", "alert.resolved"], _receiver.Received.Skip(2).Select(r => r.EventType));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Monthly_and_yearly_subscriptions_charge_the_plan_prices_for_their_periods(string engine)
    {
        var clock = new Ledger.ManualTimeProvider(November.AddDays(14));
        await using var app = await ExampleApp.StartAsync("saas-plans", engine, clock: clock);
        // (plan, interval) → price in micro-USD and months per period, from the example's plan set.
        var cases = new (string Plan, string Interval, long Fee, int Months)[]
        {
            ("starter", "month", 29_000_000, 1), ("starter", "year", 290_000_000, 12),
            ("professional", "month", 99_000_000, 1), ("professional", "year", 990_000_000, 12),
            ("enterprise", "month", 299_000_000, 1), ("enterprise", "year", 2_990_000_000, 12),
        };
        foreach (var (planId, interval, fee, months) in cases)
        {
            var accountId = await app.CreateAccountAsync($"{planId}-{interval}");
            await app.GrantAsync(accountId, 3_000_000_000);
            var key = (await app.Admin.PostJsonAsync($"/admin/v1/accounts/{accountId}/keys", "{}", HttpStatusCode.Created)).GetProperty("key").GetString()!;
            using var customer = ExampleApp.Client(app, key);
            var subscribed = await customer.PostJsonAsync("/api/v1/subscription", $$"""{"plan":"{{planId}}","interval":"{{interval}}"}""", HttpStatusCode.OK);
            Assert.Equal(fee, subscribed.GetProperty("fee_micros").GetInt64());
            var state = (await customer.GetJsonAsync("/api/v1/subscription")).GetProperty("subscription");
            Assert.Equal(November.AddDays(14).AddMonths(months), state.GetProperty("current_period_end").GetDateTimeOffset());
            var entry = (await customer.GetJsonAsync("/api/v1/ledger")).GetProperty("data").EnumerateArray().Single(e => e.GetProperty("code").GetString() == "subscription_fee");
            Assert.Equal(-fee, entry.GetProperty("amount_micros").GetInt64());
            Assert.Equal(3_000_000_000 - fee, (await customer.GetJsonAsync("/api/v1/account")).GetProperty("balance_micros").GetInt64());
        }
        // A year costs ten months: two months free on every paid plan.
        foreach (var plan in new[] { "starter", "professional", "enterprise" })
            Assert.Equal(cases.Single(c => c.Plan == plan && c.Interval == "month").Fee * 10, cases.Single(c => c.Plan == plan && c.Interval == "year").Fee);
    }
}
