using Tollgate.Features.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Alerts;

/// <summary>Settings for apps that send webhooks fast: short retries and polling, no alert caches.</summary>
internal static class AlertApi
{
    public static Dictionary<string, string?> FastSettings(int maxAttempts = 4) => new()
    {
        ["Tollgate:Webhooks:RetryDelays:0"] = "00:00:00.300",
        ["Tollgate:Webhooks:RetryDelays:1"] = "00:00:00.400",
        ["Tollgate:Webhooks:PollInterval"] = "00:00:00.050",
        ["Tollgate:Webhooks:MaxAttempts"] = maxAttempts.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Tollgate:Webhooks:Timeout"] = "00:00:05",
        ["Tollgate:Webhooks:Lease"] = "00:00:30",
        ["Tollgate:Alerts:CacheTtl"] = "00:00:00",
        ["Tollgate:Plans:tiny10:IncludedRequests"] = "10",
    };

    /// <summary>Registers <paramref name="url"/> for the customer; the created endpoint (with its secret).</summary>
    public static async Task<JsonElement> CreateWebhookAsync(this Customer c, string url, string? eventsJson = null)
    {
        var events = eventsJson is null ? "" : $$""","events":{{eventsJson}}""";
        var response = await c.Client.PostAsync("/api/v1/webhooks", AdminApi.JsonBody($$"""{"url":"{{url}}"{{events}}}"""));
        return await MeteringApi.BodyAsync(response, HttpStatusCode.Created);
    }

    public static async Task SetAlertSettingsAsync(this Customer c, string json)
    {
        var response = await c.Client.PutAsync("/api/v1/alerts/settings", AdminApi.JsonBody(json));
        await MeteringApi.BodyAsync(response, HttpStatusCode.OK);
    }

    public static async Task<List<JsonElement>> AlertsAsync(this Customer c) =>
        (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/alerts"))!.GetProperty("data").EnumerateArray().ToList();

    public static async Task<List<JsonElement>> EventsAsync(this Customer c) =>
        (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/events?limit=100"))!.GetProperty("data").EnumerateArray().ToList();

    /// <summary>
    /// Polls the alerts API until <paramref name="done"/> holds, then lets the alert queue drain and returns the
    /// alerts as they are after it (so a test can assert nothing more arrived).
    /// </summary>
    public static async Task<List<JsonElement>> WaitForAlertsAsync(this Customer c, TestApp app, Func<List<JsonElement>, bool> done, int seconds = 20)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        List<JsonElement> alerts;
        while (!done(alerts = await c.AlertsAsync()))
        {
            Assert.True(DateTime.UtcNow < until, $"alerts did not reach the expected state within {seconds} s: {JsonSerializer.Serialize(alerts)}");
            await Task.Delay(50);
        }
        var service = app.Get<AlertService>();
        while (service.Queued > 0) await Task.Delay(20);
        await Task.Delay(200);
        return await c.AlertsAsync();
    }

    /// <summary>Polls an endpoint's deliveries until <paramref name="done"/> holds for them.</summary>
    public static async Task<List<JsonElement>> WaitForDeliveriesAsync(this Customer c, string webhookId, Func<List<JsonElement>, bool> done, int seconds = 20, int limit = 50)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            var page = await c.Client.GetFromJsonAsync<JsonElement>($"/api/v1/webhooks/{webhookId}/deliveries?limit={limit}");
            var data = page.GetProperty("data").EnumerateArray().ToList();
            if (done(data)) return data;
            Assert.True(DateTime.UtcNow < until, $"deliveries did not reach the expected state within {seconds} s: {page}");
            await Task.Delay(50);
        }
    }
}
