using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using System.Text;
using Tollgate.Tests.Api;
using Tollgate.Tests.Payments.Stripe;

namespace Tollgate.Tests.Examples;

/// <summary>
/// Boots the real app with an example's own configuration file (<c>examples/&lt;name&gt;/tollgate.json</c>, found from the
/// repository root, exactly what <c>serve --config</c> reads) plus test-only settings that point it at fakes.
/// </summary>
internal static class ExampleApp
{
    public static string ConfigFile(string example)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Tollgate.slnx")))
                return Path.Combine(dir.FullName, "examples", example, "tollgate.json");
        throw new InvalidOperationException($"The repository root (Tollgate.slnx) was not found above {AppContext.BaseDirectory}.");
    }

    public static Task<TestApp> StartAsync(string example, string engine, IDictionary<string, string?>? settings = null, TimeProvider? clock = null)
    {
        var all = new Dictionary<string, string?>(settings ?? new Dictionary<string, string?>()) { ["Tollgate:ConfigFile"] = ConfigFile(example) };
        return TestApp.StartAsync(engine, all, services: clock is null ? null : s => s.AddSingleton(clock));
    }

    /// <summary>A client of the app that sends <paramref name="key"/> as its bearer token.</summary>
    public static HttpClient Client(TestApp app, string key)
    {
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    /// <summary>POST with a JSON body; asserts the status and returns the parsed answer.</summary>
    public static async Task<JsonElement> PostJsonAsync(this HttpClient client, string path, string json, HttpStatusCode expected) =>
        await Metering.MeteringApi.BodyAsync(await client.PostAsync(path, AdminApi.JsonBody(json)), expected);

    public static async Task<JsonElement> GetJsonAsync(this HttpClient client, string path, HttpStatusCode expected = HttpStatusCode.OK) =>
        await Metering.MeteringApi.BodyAsync(await client.GetAsync(path), expected);

    /// <summary>A Stripe event envelope (API version pinned like Tollgate's) around <paramref name="obj"/>.</summary>
    public static string StripeEvent(string id, string type, string obj, long created) =>
        "{\"id\":\"" + id + "\",\"object\":\"event\",\"api_version\":\"2025-03-31.basil\",\"created\":" + created
        + ",\"livemode\":false,\"type\":\"" + type + "\",\"data\":{\"object\":" + obj + "}}";

    /// <summary>Delivers a Stripe webhook signed as Stripe signs it (timestamp from the app's clock) and returns the answer.</summary>
    public static async Task<JsonElement> DeliverStripeAsync(TestApp app, string payload, string secret, long timestamp)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Stripe-Signature", FakeStripe.Sign(payload, secret, timestamp));
        return await Metering.MeteringApi.BodyAsync(await app.Anonymous.SendAsync(request), HttpStatusCode.OK);
    }

    /// <summary>
    /// Buys a credit pack the way a browser would: the app asks Tollgate for a Checkout Session, the buyer pays on
    /// Stripe, and Stripe's signed <c>checkout.session.completed</c> arrives. Returns the session id.
    /// </summary>
    public static async Task<string> BuyPackAsync(TestApp app, HttpClient customer, string accountId, string pack, string secret, long now)
    {
        var checkout = await customer.PostJsonAsync("/api/v1/billing/checkout/credits", $$"""{"pack":"{{pack}}"}""", HttpStatusCode.Created);
        var session = checkout.GetProperty("id").GetString()!;
        var cents = checkout.GetProperty("amount_cents").GetInt64();
        var obj = $$$"""{"id":"{{{session}}}","object":"checkout.session","mode":"payment","status":"complete","payment_status":"paid","amount_total":{{{cents}}},"currency":"usd","payment_intent":"pi_{{{session}}}","client_reference_id":"{{{accountId}}}","metadata":{"tollgate_account":"{{{accountId}}}"}}""";
        var outcome = await DeliverStripeAsync(app, StripeEvent("evt_" + session, "checkout.session.completed", obj, now), secret, now);
        Assert.Equal("credited", outcome.GetProperty("outcome").GetString());
        return session;
    }
}
