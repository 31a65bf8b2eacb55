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
        var deliveries = (await c.Client.GetFromJsonAsync<JsonElement>($"/api/v1/webhooks/{hook.Str("id")}/deliveries?limit=100")).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(20, deliveries.Count);
        Assert.All(deliveries, d => Assert.Equal(("succeeded", 1L), (d.Str("status"), d.Long("attempts"))));
    }
}
