using Tollgate.Features.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Alerts;

public sealed class AlertArithmeticTests
{
    [Theory]
    [InlineData(5, 10, 50, true)]
    [InlineData(4, 10, 50, false)]
    [InlineData(7, 9, 80, false)] // 77.7…%
    [InlineData(8, 10, 80, true)]
    [InlineData(1, 3, 33, true)] // 33.3…% ≥ 33%
    [InlineData(1, 3, 34, false)]
    [InlineData(10, 10, 100, true)]
    [InlineData(9_999_999, 10_000_000, 100, false)]
    [InlineData(long.MaxValue, long.MaxValue, 100, true)] // no overflow
    [InlineData(long.MaxValue - 1, long.MaxValue, 100, false)]
    public void A_threshold_is_crossed_when_used_times_100_reaches_limit_times_percent(long used, long limit, int percent, bool crossed) =>
        Assert.Equal(crossed, AlertService.Crossed(used, limit, percent));
}

/// <summary>Usage and balance alerts: once per threshold and period under concurrency, resolved by a new period or a top-up, delivered as webhooks.</summary>
public sealed class AlertTests() : EngineApps(AlertApi.FastSettings())
{
    private static HttpContent Chat() => AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":20,"messages":[{"role":"user","content":"alert me"}]}""");

    private static int[] Thresholds(IEnumerable<JsonElement> alerts) => alerts.Select(a => (int)a.Long("threshold_percent")).Order().ToArray();

    [Theory, MemberData(nameof(Engines))]
    public async Task Concurrent_gateway_calls_fire_each_quota_threshold_exactly_once(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var c = await app.CustomerAsync(10_000_000);
        var hook = await c.CreateWebhookAsync(receiver.Url, """["alert.*"]""");
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"tiny10"}"""));
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));

        var responses = await Task.WhenAll(Enumerable.Range(0, 60).Select(_ => c.Client.PostAsync("/v1/chat/completions", Chat())));
        Assert.Equal(10, responses.Count(r => r.StatusCode == HttpStatusCode.OK));

        var alerts = await c.WaitForAlertsAsync(app, a => a.Count(x => x.Str("subject") == "quota:requests") >= 3);
        var quota = alerts.Where(a => a.Str("subject") == "quota:requests").ToList();
        Assert.Equal([50, 80, 100], Thresholds(quota));
        Assert.All(quota, a => Assert.Equal(("active", 10L), (a.Str("status"), a.Long("limit"))));
        // Each alert records the first observation that reached its threshold (observations may arrive out of order, but
        // never below the threshold nor above the quota).
        Assert.All(quota, a => Assert.InRange(a.Long("used"), a.Long("threshold_percent") / 10, 10));
        Assert.Single(quota.Select(a => a.Str("period")).Distinct());

        var received = await receiver.WaitForAsync(3);
        await Task.Delay(300);
        Assert.Equal(3, receiver.Received.Count);
        Assert.All(received, r =>
        {
            Assert.Equal("alert.fired", r.EventType);
            Assert.True(ReceiverSignature.Verify(r.Signature, r.Body, hook.Str("secret")!, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));
        });
        Assert.Equal([50, 80, 100], received.Select(r => (int)r.Json.GetProperty("data").Long("threshold_percent")).Order().ToArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Racing_observations_fire_once_a_new_period_resolves_once_and_fires_again(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        var alerts = app.Get<AlertService>();
        const string subject = "cap:account:daily";

        // 40 observers of the same crossing at once (as several processes would be): the unique insert decides.
        await Task.WhenAll(Enumerable.Range(0, 40).Select(i => Task.Run(() =>
            alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-21", 1_000 + i, 1_000, CancellationToken.None))));
        var fired = (await c.AlertsAsync()).Where(a => a.Str("subject") == subject).ToList();
        Assert.Equal([50, 80, 100], Thresholds(fired));
        Assert.Equal(3, (await c.EventsAsync()).Count(e => e.Str("type") == "alert.fired"));

        // The next day starts low: every alert of the old period is resolved, once, however many observe it.
        await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Task.Run(() =>
            alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-22", 10, 1_000, CancellationToken.None))));
        var after = (await c.AlertsAsync()).Where(a => a.Str("subject") == subject).ToList();
        Assert.Equal(3, after.Count);
        Assert.All(after, a => Assert.Equal("resolved", a.Str("status")));
        var resolvedEvents = (await c.EventsAsync()).Where(e => e.Str("type") == "alert.resolved").ToList();
        Assert.Equal([50, 80, 100], resolvedEvents.Select(e => (int)e.GetProperty("data").Long("threshold_percent")).Order().ToArray());
        Assert.All(resolvedEvents, e => Assert.Equal("2026-11-21", e.GetProperty("data").Str("period")));

        // In the new period the thresholds fire again, once each.
        await alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-22", 500, 1_000, CancellationToken.None);
        await alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-22", 600, 1_000, CancellationToken.None);
        var active = (await c.AlertsAsync()).Where(a => a.Str("subject") == subject && a.Str("status") == "active").ToList();
        Assert.Equal(("2026-11-22", 50L), (Assert.Single(active).Str("period"), active[0].Long("threshold_percent")));

        // A raised limit in the same period resolves what is now below its threshold; a stale lower reading does not.
        await alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-22", 450, 1_000, CancellationToken.None);
        Assert.Single(await c.AlertsAsync(), a => a.Str("subject") == subject && a.Str("status") == "active");
        await alerts.ObserveUsageAsync(c.AccountId, subject, "2026-11-22", 600, 2_000, CancellationToken.None);
        Assert.DoesNotContain(await c.AlertsAsync(), a => a.Str("subject") == subject && a.Str("status") == "active");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_low_balance_fires_once_resolves_on_a_top_up_and_can_fire_again(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var c = await app.CustomerAsync(1_000_000);
        await c.CreateWebhookAsync(receiver.Url);
        await c.SetAlertSettingsAsync("""{"thresholds":[80,100],"balance_low_micros":2000000}""");

        // Two small top-ups that leave the balance below the line: one alert.
        await app.GrantAsync(c.AccountId, 1);
        await app.GrantAsync(c.AccountId, 1);
        var alerts = await c.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low"));
        var low = Assert.Single(alerts, a => a.Str("subject") == "balance:low");
        Assert.Equal(("active", 2_000_000L), (low.Str("status"), low.Long("limit")));
        Assert.InRange(low.Long("balance_micros"), 1_000_001, 1_000_002);

        // A top-up above the line resolves it.
        await app.GrantAsync(c.AccountId, 5_000_000);
        alerts = await c.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low" && x.Str("status") == "resolved"));
        Assert.Equal("resolved", Assert.Single(alerts, a => a.Str("subject") == "balance:low").Str("status"));

        // An adjustment down to just above the line (2,000,002) fires nothing; a gateway call's settlement that
        // takes the balance below it starts a new alert.
        var adjust = await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            new { amount_micros = -4_000_000, idempotency_key = "down-1", reason = "test" });
        adjust.EnsureSuccessStatusCode();
        await Task.Delay(300);
        Assert.Single(await c.AlertsAsync(), a => a.Str("subject") == "balance:low");
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        alerts = await c.WaitForAlertsAsync(app, a => a.Count(x => x.Str("subject") == "balance:low") == 2);
        Assert.Equal(new[] { "active", "resolved" }, alerts.Where(a => a.Str("subject") == "balance:low").Select(a => a.Str("status")!).ToArray());

        var events = (await c.EventsAsync()).Where(e => e.GetProperty("data").Str("subject") == "balance:low").Select(e => e.Str("type")!).Reverse().ToArray();
        Assert.Equal(new[] { "alert.fired", "alert.resolved", "alert.fired" }, events);
        var received = await receiver.WaitForAsync(3);
        Assert.Equal(new[] { "alert.fired", "alert.resolved", "alert.fired" }, received.OrderBy(r => r.EventId, StringComparer.Ordinal).Select(r => r.EventType!).ToArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_usage_event_charge_below_the_line_fires_and_removing_the_line_resolves(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await c.SetAlertSettingsAsync("""{"balance_low_micros":995000}""");

        // demo/echo costs $1 per million input tokens before markup: 10,000 tokens take the balance below 995,000.
        var response = await c.Client.PostAsync("/api/v1/usage/events",
            AdminApi.JsonBody("""{"id":"ev-low-1","model":"demo/echo","input_tokens":10000,"output_tokens":0}"""));
        var result = (await MeteringApi.BodyAsync(response, HttpStatusCode.OK)).GetProperty("data")[0];
        Assert.Equal("accepted", result.Str("status"));
        var alerts = await c.WaitForAlertsAsync(app, a => a.Count > 0);
        var low = Assert.Single(alerts);
        Assert.Equal(("balance:low", 1_000_000 - result.Long("user_price_micros"), "active"), (low.Str("subject"), low.Long("balance_micros"), low.Str("status")));
        Assert.True(low.Long("balance_micros") < 995_000);

        await c.SetAlertSettingsAsync("""{"balance_low_micros":null}""");
        Assert.Equal("resolved", Assert.Single(await c.AlertsAsync()).Str("status"));
        Assert.Equal(new[] { "alert.resolved", "alert.fired" }, (await c.EventsAsync()).Select(e => e.Str("type")!).ToArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Settings_default_validate_and_are_the_accounts_own(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        using var other = await app.CustomerAsync(0);

        var defaults = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/alerts/settings");
        Assert.Equal([50, 80, 100], defaults.GetProperty("thresholds").EnumerateArray().Select(t => t.GetInt32()).ToArray());
        Assert.True(defaults.GetProperty("is_default").GetBoolean());

        foreach (var bad in new[] { """{"thresholds":[0]}""", """{"thresholds":[1001]}""", """{"balance_low_micros":-1}""", """{"thresholds":[1,2,3,4,5,6,7,8,9,10,11]}""", """{"thresholds":[50.5]}""" })
            await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/alerts/settings", AdminApi.JsonBody(bad)), HttpStatusCode.BadRequest);

        await c.SetAlertSettingsAsync("""{"thresholds":[90,25,90],"balance_low_micros":0}""");
        var mine = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/alerts/settings");
        Assert.Equal([25, 90], mine.GetProperty("thresholds").EnumerateArray().Select(t => t.GetInt32()).ToArray());
        Assert.Equal((0L, false), (mine.Long("balance_low_micros"), mine.GetProperty("is_default").GetBoolean()));
        Assert.True((await other.Client.GetFromJsonAsync<JsonElement>("/api/v1/alerts/settings")).GetProperty("is_default").GetBoolean());

        // The account's own thresholds are the ones that fire.
        await app.Get<AlertService>().ObserveUsageAsync(c.AccountId, "quota:requests", "p", 30, 100, CancellationToken.None);
        var fired = Thresholds(await c.AlertsAsync());
        Assert.Equal(new[] { 25 }, fired);
    }
}
