using Tollgate.Features.Alerts;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Alerts;

/// <summary>Two app processes on one database: alerts fire once across them, and each event is delivered once.</summary>
public sealed class AlertMultiProcessTests
{
    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Two_processes_fire_each_threshold_once_and_deliver_each_event_exactly_once(string engine)
    {
        await using var one = await TestApp.StartAsync(engine, AlertApi.FastSettings());
        await using var two = await TestApp.StartAsync(engine, AlertApi.FastSettings(), one.DatabaseConnection);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var c = await one.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync(receiver.Url);
        await c.SetAlertSettingsAsync("""{"thresholds":[50,100]}""");
        AlertService[] engines = [one.Get<AlertService>(), two.Get<AlertService>()];

        // Ten subjects, each seen at 100 % six times, alternately by either process, all at once.
        await Task.WhenAll(Enumerable.Range(0, 10).SelectMany(s => Enumerable.Range(0, 6).Select(i => Task.Run(() =>
            engines[i % 2].ObserveUsageAsync(c.AccountId, $"cap:key:k{s}:monthly", "2026-11", 100, 100, CancellationToken.None)))));

        var alerts = await c.AlertsAsync();
        Assert.Equal(20, alerts.Count);
        Assert.Equal(20, alerts.Select(a => (a.Str("subject"), a.Long("threshold_percent"))).Distinct().Count());

        // Both dispatchers poll the same deliveries; the lease gives each to one of them.
        var received = await receiver.WaitForAsync(20);
        await Task.Delay(1_000);
        Assert.Equal(20, receiver.Received.Count);
        Assert.Equal(20, receiver.Received.Select(r => r.EventId).Distinct().Count());
        // Either process decrypts the secret the other stored (one Data Protection key ring in the database).
        Assert.All(received, r => Assert.True(ReceiverSignature.Verify(r.Signature, r.Body, hook.Str("secret")!, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow)));
        // The sender records the outcome just after the receiver answered: wait for the records, not a fixed time.
        var deliveries = await c.WaitForDeliveriesAsync(hook.Str("id")!, d => d.Count == 20 && d.All(x => x.Str("status") != "pending"), limit: 100);
        Assert.All(deliveries, d => Assert.Equal(("succeeded", 1L), (d.Str("status"), d.Long("attempts"))));
    }
}

/// <summary>The plan quota's alerts end to end on a manual clock: fired during one period, resolved when the next begins.</summary>
public sealed class QuotaAlertPeriodTests
{
    private static HttpContent Chat() => Api.AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":20,"messages":[{"role":"user","content":"next month"}]}""");

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task The_first_call_of_a_new_period_resolves_the_last_periods_quota_alerts(string engine)
    {
        var clock = new Ledger.ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var app = await TestApp.StartAsync(engine, AlertApi.FastSettings(), configure: b =>
            Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<TimeProvider>(b.Services, clock));
        using var c = await app.CustomerAsync(10_000_000);
        await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", Api.AdminApi.JsonBody("""{"plan":"tiny10"}"""));
        clock.Advance(TimeSpan.FromSeconds(2)); // past the authenticator's cache

        for (var i = 0; i < 8; i++) Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var fired = await c.WaitForAlertsAsync(app, a => a.Count == 2);
        Assert.All(fired, a => Assert.Equal(("quota:requests", "active"), (a.Str("subject"), a.Str("status"))));
        var period = fired[0].Str("period");

        clock.Advance(TimeSpan.FromDays(32));
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var resolved = await c.WaitForAlertsAsync(app, a => a.All(x => x.Str("status") == "resolved"));
        Assert.Equal(2, resolved.Count);
        Assert.All(resolved, a => Assert.Equal(period, a.Str("period")));
        var events = await c.EventsAsync();
        Assert.Equal(2, events.Count(e => e.Str("type") == "alert.resolved"));
        Assert.All(events.Where(e => e.Str("type") == "alert.resolved"), e => Assert.Equal(1L, e.GetProperty("data").Long("used")));
    }
}

public sealed class WebhookOptionsTests
{
    [Theory]
    [InlineData("Tollgate:Webhooks:MaxAttempts", "0", "MaxAttempts")]
    [InlineData("Tollgate:Webhooks:RetryDelays:0", "-00:00:01", "RetryDelays")]
    [InlineData("Tollgate:Webhooks:Lease", "00:00:05", "Lease")]
    [InlineData("Tollgate:Alerts:DefaultThresholds:0", "0", "DefaultThresholds")]
    [InlineData("Tollgate:Alerts:DefaultBalanceLowMicros", "-5", "DefaultBalanceLowMicros")]
    public async Task A_bad_setting_stops_start_up_with_its_name(string key, string value, string named)
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { [key] = value });
        });
        Assert.Contains(named, e.ToString());
    }
}
