using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.Logging;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Stripe;

namespace Tollgate.Tests.Api;

/// <summary>
/// Logs: every line of a request carries its request id, every request has one access line, and no key, password,
/// session token or secret used in a representative run ever appears in any line (message, values, scopes, errors).
/// </summary>
public sealed class LoggingTests
{
    private static HttpRequestMessage Post(string path, string json, string? bearer = null, string? requestId = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (requestId is not null) request.Headers.TryAddWithoutValidation("x-request-id", requestId);
        return request;
    }

    [Fact]
    public async Task Secrets_never_reach_the_logs_and_every_request_line_carries_its_request_id()
    {
        const string stripeWebhookSecret = "whsec_logtest_0123456789abcdefghijklmnop";
        const string providerKey = "sk-proj-logtest-0123456789abcdefghijklmnopqrstuv";
        const string password = "correct horse battery staple 42";
        const string wrongPassword = "a wrong password that is secret too";
        const string wrongAdminKey = "tg_admin_wrong_0123456789abcdefghijklmnopqrstu";
        await using var stripe = await FakeStripe.StartAsync();
        await using var receiver = await WebhookReceiver.StartAsync();
        var capture = new LogCapture();
        var settings = new Dictionary<string, string?>(AlertApi.FastSettings())
        {
            ["Logging:LogLevel:Default"] = "Debug",
            ["Logging:LogLevel:Microsoft"] = "Debug",
            ["Logging:LogLevel:Microsoft.AspNetCore"] = "Debug",
            ["Logging:LogLevel:System"] = "Debug",
        };
        foreach (var (k, v) in stripe.Settings(stripeWebhookSecret)) settings[k] = v;
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, settings, configure: b =>
        {
            b.Logging.AddProvider(capture);
            b.Logging.SetMinimumLevel(LogLevel.Debug);
        });

        // Operator: account, credits, a key; a member with a password.
        using var c = await app.CustomerAsync(5_000_000);
        const string email = "logs@example.com";
        Assert.Equal(HttpStatusCode.Created, (await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{password}}","role":"owner"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{wrongPassword}}"}"""))).StatusCode);
        var session = (await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{password}}"}""")), HttpStatusCode.Created)).Str("token")!;
        using var member = new HttpClient { BaseAddress = app.BaseAddress };
        member.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session);
        var memberKey = await MeteringApi.BodyAsync(await member.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"by a member"}""")), HttpStatusCode.Created);

        // BYOK provider key, an outgoing webhook (its secret) delivered to a receiver, a Stripe webhook signed with its secret.
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PutAsync("/api/v1/provider-keys/openai", AdminApi.JsonBody($$"""{"api_key":"{{providerKey}}"}"""))).StatusCode);
        var hook = await c.CreateWebhookAsync(receiver.Url);
        await c.SetAlertSettingsAsync("""{"thresholds":[100]}""");
        await app.Get<Tollgate.Features.Alerts.AlertService>().ObserveUsageAsync(c.AccountId, "test:logs", "p1", 5, 5, CancellationToken.None);
        await receiver.WaitForAsync(1);
        var stripeEvent = "{\"id\":\"evt_logs_1\",\"object\":\"event\",\"api_version\":\"2025-03-31.basil\",\"created\":" + DateTimeOffset.UtcNow.ToUnixTimeSeconds()
            + ",\"livemode\":false,\"type\":\"customer.created\",\"data\":{\"object\":{\"id\":\"cus_logs\",\"object\":\"customer\"}}}";
        using (var signed = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(stripeEvent, Encoding.UTF8, "application/json") })
        {
            signed.Headers.TryAddWithoutValidation("Stripe-Signature", FakeStripe.Sign(stripeEvent, stripeWebhookSecret, DateTimeOffset.UtcNow.ToUnixTimeSeconds()));
            Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.SendAsync(signed)).StatusCode);
        }

        // A billed gateway call with the key (Tollgate picks the request id), one with the client's own request id,
        // one with an unacceptable request id, and a wrong admin key.
        var call = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"log me"}]}"""));
        Assert.Equal(HttpStatusCode.OK, call.StatusCode);
        var callId = call.Headers.GetValues("x-request-id").Single();
        Assert.StartsWith("req_", callId);
        Assert.Equal(callId, call.Headers.GetValues("x-tollgate-request-id").Single());
        var own = await c.Client.SendAsync(Post("/v1/chat/completions", """{"model":"demo/echo","messages":[{"role":"user","content":"again"}]}""", requestId: "client-trace:42"));
        Assert.Equal("client-trace:42", own.Headers.GetValues("x-request-id").Single());
        // A client's id is only a label: the call's own id (holds, usage records) is still Tollgate's.
        Assert.StartsWith("req_", own.Headers.GetValues("x-tollgate-request-id").Single());
        var forged = await app.Anonymous.SendAsync(Post("/api/v1/account", "{}", requestId: "evil\tinjected=1"));
        Assert.StartsWith("req_", forged.Headers.GetValues("x-request-id").Single());
        var tooLong = await app.Anonymous.SendAsync(Post("/nowhere", "{}", requestId: new string('a', 129)));
        Assert.Equal(HttpStatusCode.NotFound, tooLong.StatusCode);
        Assert.StartsWith("req_", tooLong.Headers.GetValues("x-request-id").Single());
        using (var wrongAdmin = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/audit"))
        {
            wrongAdmin.Headers.Authorization = new AuthenticationHeaderValue("Bearer", wrongAdminKey);
            var refused = await app.Anonymous.SendAsync(wrongAdmin);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.True(refused.Headers.Contains("x-request-id"));
        }

        // The member's change is audited as the member (and the audit keeps no secret either).
        var audit = await app.Admin.GetStringAsync("/admin/v1/audit?limit=500");
        var memberEntry = JsonDocument.Parse(audit).RootElement.GetProperty("data").EnumerateArray()
            .Single(e => e.Str("target_id") == memberKey.Str("id"));
        Assert.Equal("member", memberEntry.Str("actor_type"));
        Assert.StartsWith("user_", memberEntry.Str("actor_id"));

        // Delivery outcomes are counted.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!(await app.Admin.GetStringAsync("/metrics")).Contains("tollgate_webhook_deliveries_total{outcome=\"delivered\"} 1") && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        Assert.Contains("tollgate_webhook_deliveries_total{outcome=\"delivered\"} 1", await app.Admin.GetStringAsync("/metrics"));

        await app.App.StopAsync();
        var lines = capture.Lines.ToList();
        string[] secrets = [TestApp.AdminKey, wrongAdminKey, c.Key, memberKey.Str("key")!, session, password, wrongPassword, providerKey,
            hook.Str("secret")!, stripeWebhookSecret, stripe.Settings()["Tollgate:Stripe:SecretKey"]!];
        foreach (var secret in secrets)
        {
            var leak = lines.FirstOrDefault(l => l.Text.Contains(secret, StringComparison.Ordinal));
            Assert.True(leak is null, $"a secret was logged by {leak?.Category}: {leak?.Text}");
            Assert.DoesNotContain(secret, audit);
        }

        // One access line per request, each in its request's scope; the id the client saw is on the lines.
        var access = lines.Where(l => l.Category == "Tollgate.Access").ToList();
        Assert.All(access, l => Assert.True(l.Scopes.ContainsKey("request_id"), l.Text));
        var callLine = Assert.Single(access, l => l.Scopes["request_id"] == callId);
        Assert.Contains("POST /v1/chat/completions 200", callLine.Text);
        Assert.Contains($"key={c.KeyId}", callLine.Text);
        Assert.Contains($"account={c.AccountId}", callLine.Text);
        Assert.Single(access, l => l.Scopes["request_id"] == "client-trace:42");
        Assert.Contains(access, l => l.Text.Contains("GET /admin/v1/audit 401", StringComparison.Ordinal));
        // Framework lines logged while a request runs carry its id too.
        Assert.Contains(lines, l => l.Category.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal) && l.Scopes.GetValueOrDefault("request_id") == callId);
        Assert.DoesNotContain(lines, l => l.Text.Contains("evil", StringComparison.Ordinal));
    }
}
