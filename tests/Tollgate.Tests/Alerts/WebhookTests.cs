using Tollgate.Features.Alerts;
using Tollgate.Features.Webhooks;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Alerts;

public sealed class WebhookSignatureTests
{
    [Fact]
    public void Sign_matches_an_independent_verifier_and_fails_on_any_change()
    {
        var secret = WebhookSignature.NewSecret();
        var body = """{"id":"evt_1","type":"alert.fired"}"""u8.ToArray();
        var now = DateTimeOffset.UtcNow;
        var header = WebhookSignature.Sign(secret, now.ToUnixTimeSeconds(), body);

        Assert.StartsWith("whsec_", secret);
        Assert.True(ReceiverSignature.Verify(header, body, secret, TimeSpan.FromMinutes(5), now));
        Assert.False(ReceiverSignature.Verify(header, [.. body, (byte)' '], secret, TimeSpan.FromMinutes(5), now));
        Assert.False(ReceiverSignature.Verify(header, body, WebhookSignature.NewSecret(), TimeSpan.FromMinutes(5), now));
        // Outside the tolerance a valid signature is refused (replayed old requests).
        Assert.False(ReceiverSignature.Verify(header, body, secret, TimeSpan.FromMinutes(5), now.AddMinutes(6)));
    }

    [Theory]
    [InlineData("*", "alert.fired", true)]
    [InlineData("alert.*", "alert.resolved", true)]
    [InlineData("alert.fired", "alert.fired", true)]
    [InlineData("alert.fired", "alert.resolved", false)]
    [InlineData("alerts.*", "alert.fired", false)]
    [InlineData("alert.*", "alerting.fired", false)]
    public void Event_patterns_match_exact_types_prefixes_and_everything(string pattern, string type, bool matches) =>
        Assert.Equal(matches, WebhookStore.Matches([pattern], type));
}

/// <summary>Webhook endpoints, signed deliveries, retries, replays and account isolation, on both engines.</summary>
public sealed class WebhookTests() : EngineApps(AlertApi.FastSettings())
{
    /// <summary>Makes one alert.fired event for the customer (a one-threshold alert on a test subject).</summary>
    private static async Task<string> FireOneAsync(TestApp app, Customer c, string subject = "test:webhook")
    {
        await c.SetAlertSettingsAsync("""{"thresholds":[100]}""");
        await app.Get<AlertService>().ObserveUsageAsync(c.AccountId, subject, "p1", 5, 5, CancellationToken.None);
        var events = await c.EventsAsync();
        return events.First(e => e.GetProperty("data").Str("subject") == subject).Str("id")!;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Create_shows_the_secret_once_and_list_get_and_patch_never_do(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);

        var created = await c.CreateWebhookAsync("https://example.test/hooks/tollgate", """["alert.*"]""");
        var secret = created.Str("secret")!;
        var id = created.Str("id")!;
        Assert.StartsWith("whsec_", secret);
        Assert.True(secret.Length >= 40);
        Assert.Equal(new[] { "alert.*" }, created.GetProperty("events").EnumerateArray().Select(e => e.GetString()!).ToArray());

        var list = await c.Client.GetStringAsync("/api/v1/webhooks");
        var one = await c.Client.GetStringAsync($"/api/v1/webhooks/{id}");
        var patched = await (await c.Client.PatchAsync($"/api/v1/webhooks/{id}", AdminApi.JsonBody("""{"description":"ops","enabled":false}"""))).Content.ReadAsStringAsync();
        foreach (var text in new[] { list, one, patched })
        {
            Assert.DoesNotContain(secret, text);
            Assert.DoesNotContain("\"secret\"", text);
        }
        Assert.Contains(id, list);
        var after = JsonDocument.Parse(patched).RootElement;
        Assert.Equal(("ops", false), (after.Str("description"), after.GetProperty("enabled").GetBoolean()));

        var rotated = await MeteringApi.BodyAsync(await c.Client.PostAsync($"/api/v1/webhooks/{id}/rotate-secret", null), HttpStatusCode.OK);
        Assert.StartsWith("whsec_", rotated.Str("secret"));
        Assert.NotEqual(secret, rotated.Str("secret"));

        Assert.Equal(HttpStatusCode.NoContent, (await c.Client.DeleteAsync($"/api/v1/webhooks/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await c.Client.GetAsync($"/api/v1/webhooks/{id}")).StatusCode);
        Assert.Empty((await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/webhooks")).GetProperty("data").EnumerateArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_url_that_is_not_absolute_http_or_https_is_400_and_nothing_is_created(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        foreach (var url in new[] { "ftp://example.test/x", "/relative/path", "not a url", "https://user:pass@example.test/x", "" })
        {
            var response = await c.Client.PostAsync("/api/v1/webhooks", AdminApi.JsonBody(JsonSerializer.Serialize(new { url })));
            var problem = await MeteringApi.BodyAsync(response, HttpStatusCode.BadRequest);
            Assert.Equal(("invalid_url", "url"), (problem.Str("code"), problem.Str("param")));
        }
        var badEvents = await c.Client.PostAsync("/api/v1/webhooks", AdminApi.JsonBody("""{"url":"https://example.test/x","events":["Alert Fired"]}"""));
        Assert.Equal("events", (await MeteringApi.BodyAsync(badEvents, HttpStatusCode.BadRequest)).Str("param"));
        var created = await c.CreateWebhookAsync("https://example.test/x");
        var badPatch = await c.Client.PatchAsync($"/api/v1/webhooks/{created.Str("id")}", AdminApi.JsonBody("""{"url":"mailto:a@example.test"}"""));
        await MeteringApi.BodyAsync(badPatch, HttpStatusCode.BadRequest);

        var list = (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/webhooks")).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal("https://example.test/x", Assert.Single(list).Str("url"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_event_is_delivered_signed_with_its_id_type_and_body(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var c = await app.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync(receiver.Url);

        var eventId = await FireOneAsync(app, c);

        var got = Assert.Single(await receiver.WaitForAsync(1));
        Assert.True(ReceiverSignature.Verify(got.Signature, got.Body, hook.Str("secret")!, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow), got.Signature);
        // And by another implementation altogether: Node.js's crypto, on the bytes as delivered.
        Assert.Equal("valid", await NodeVerifier.VerifyAsync(got.Signature!, got.Body, hook.Str("secret")!, DateTimeOffset.UtcNow));
        Assert.Equal("invalid", await NodeVerifier.VerifyAsync(got.Signature!, [.. got.Body, (byte)'\n'], hook.Str("secret")!, DateTimeOffset.UtcNow));
        Assert.Equal("invalid", await NodeVerifier.VerifyAsync(got.Signature!, got.Body, hook.Str("secret")! + "x", DateTimeOffset.UtcNow));
        Assert.Equal("stale", await NodeVerifier.VerifyAsync(got.Signature!, got.Body, hook.Str("secret")!, DateTimeOffset.UtcNow.AddMinutes(10)));
        Assert.Equal((eventId, "alert.fired"), (got.EventId, got.EventType));
        Assert.StartsWith("application/json", got.ContentType);
        var body = got.Json;
        Assert.Equal((eventId, "alert.fired", c.AccountId), (body.Str("id"), body.Str("type"), body.Str("account_id")));
        Assert.InRange(body.Long("created"), DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.AddMinutes(1).ToUnixTimeSeconds());
        var data = body.GetProperty("data");
        Assert.Equal(("test:webhook", 100L, 5L, 5L, "p1"), (data.Str("subject"), data.Long("threshold_percent"), data.Long("used"), data.Long("limit"), data.Str("period")));

        var deliveries = await c.WaitForDeliveriesAsync(hook.Str("id")!, d => d.Count == 1 && d[0].Str("status") == "succeeded");
        Assert.Equal((eventId, 1L, 200L), (deliveries[0].Str("event_id"), deliveries[0].Long("attempts"), deliveries[0].Long("last_status_code")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_rotation_keeps_the_old_secret_signing_for_the_overlap_and_a_zero_overlap_stops_it_at_once(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var c = await app.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync(receiver.Url);
        var (id, original) = (hook.Str("id")!, hook.Str("secret")!);
        Assert.Equal(JsonValueKind.Null, hook.GetProperty("previous_secret_expires_at").ValueKind);

        var tooLong = await c.Client.PostAsync($"/api/v1/webhooks/{id}/rotate-secret", AdminApi.JsonBody("""{"expire_previous_in_seconds":604801}"""));
        Assert.Equal("expire_previous_in_seconds", (await MeteringApi.BodyAsync(tooLong, HttpStatusCode.BadRequest)).Str("param"));

        // Default overlap (no body): a day, during which both secrets sign.
        var rotated = await MeteringApi.BodyAsync(await c.Client.PostAsync($"/api/v1/webhooks/{id}/rotate-secret", null), HttpStatusCode.OK);
        var current = rotated.Str("secret")!;
        var until = rotated.GetProperty("previous_secret_expires_at").GetDateTimeOffset();
        Assert.InRange(until, DateTimeOffset.UtcNow.AddHours(23.9), DateTimeOffset.UtcNow.AddHours(24.1));
        Assert.Equal(until, (await c.Client.GetFromJsonAsync<JsonElement>($"/api/v1/webhooks/{id}")).GetProperty("previous_secret_expires_at").GetDateTimeOffset());
        await FireOneAsync(app, c, "test:overlap");
        var during = Assert.Single(await receiver.WaitForAsync(1));
        Assert.Equal(2, during.Signature!.Split(',').Count(p => p.StartsWith("v1=", StringComparison.Ordinal)));
        Assert.True(ReceiverSignature.Verify(during.Signature, during.Body, current, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));
        Assert.True(ReceiverSignature.Verify(during.Signature, during.Body, original, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));

        // Rotating again with no overlap: only the newest secret signs; neither older one verifies.
        var immediate = await MeteringApi.BodyAsync(await c.Client.PostAsync($"/api/v1/webhooks/{id}/rotate-secret",
            AdminApi.JsonBody("""{"expire_previous_in_seconds":0}""")), HttpStatusCode.OK);
        Assert.Equal(JsonValueKind.Null, immediate.GetProperty("previous_secret_expires_at").ValueKind);
        await FireOneAsync(app, c, "test:after");
        var after = (await receiver.WaitForAsync(2))[1];
        Assert.Single(after.Signature!.Split(","), p => p.StartsWith("v1=", StringComparison.Ordinal));
        Assert.True(ReceiverSignature.Verify(after.Signature, after.Body, immediate.Str("secret")!, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));
        Assert.False(ReceiverSignature.Verify(after.Signature, after.Body, current, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));
        Assert.False(ReceiverSignature.Verify(after.Signature, after.Body, original, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_failed_delivery_is_retried_after_the_backoff_and_then_succeeds(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.RespondWith(500, 503);
        using var c = await app.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync(receiver.Url);

        await FireOneAsync(app, c);

        var deliveries = await c.WaitForDeliveriesAsync(hook.Str("id")!, d => d.Count == 1 && d[0].Str("status") == "succeeded");
        var received = receiver.Received;
        Assert.Equal(3, received.Count);
        // The same event and body every time; each attempt freshly signed and valid.
        Assert.Single(received.Select(r => r.Text).Distinct());
        Assert.All(received, r => Assert.True(ReceiverSignature.Verify(r.Signature, r.Body, hook.Str("secret")!, TimeSpan.FromMinutes(5), DateTimeOffset.UtcNow)));
        // Backoff: 0.3 s after the first failure, 0.4 s after the second.
        Assert.True(received[1].At - received[0].At >= TimeSpan.FromMilliseconds(250), $"{received[1].At - received[0].At}");
        Assert.True(received[2].At - received[1].At >= TimeSpan.FromMilliseconds(350), $"{received[2].At - received[1].At}");

        var d = deliveries[0];
        Assert.Equal((3L, 200L), (d.Long("attempts"), d.Long("last_status_code")));
        var log = d.GetProperty("attempt_log").EnumerateArray().ToList();
        Assert.Equal([500L, 503L, 200L], log.Select(a => a.Long("status_code")).ToArray());
        Assert.All(log, a => Assert.Equal("scheduled", a.Str("kind")));
        Assert.NotEqual(JsonValueKind.Null, log[0].GetProperty("next_attempt_at").ValueKind);
        Assert.Equal("HTTP 500", log[0].Str("error"));
        Assert.Equal(JsonValueKind.Null, log[2].GetProperty("next_attempt_at").ValueKind);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_delivery_that_keeps_failing_is_given_up_after_max_attempts_and_replay_sends_it_again(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.RespondWith(500, 500, 500, 500);
        using var c = await app.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync(receiver.Url);

        await FireOneAsync(app, c);

        var deliveries = await c.WaitForDeliveriesAsync(hook.Str("id")!, d => d.Count == 1 && d[0].Str("status") == "failed");
        Assert.Equal((4L, 500L), (deliveries[0].Long("attempts"), deliveries[0].Long("last_status_code")));
        await Task.Delay(500);
        Assert.Equal(4, receiver.Received.Count);

        var deliveryId = deliveries[0].Str("id");
        var replay = await MeteringApi.BodyAsync(await c.Client.PostAsync($"/api/v1/webhooks/deliveries/{deliveryId}/replay", null), HttpStatusCode.OK);
        Assert.Equal(("replay", 200L), (replay.GetProperty("attempt").Str("kind"), replay.GetProperty("attempt").Long("status_code")));
        Assert.Equal(5, receiver.Received.Count);
        Assert.Equal(receiver.Received[0].Text, receiver.Received[4].Text);

        var after = (await c.WaitForDeliveriesAsync(hook.Str("id")!, d => d.Count == 1))[0];
        Assert.Equal(("succeeded", 4L), (after.Str("status"), after.Long("attempts")));
        Assert.Equal(5, after.GetProperty("attempt_log").GetArrayLength());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Only_subscribed_enabled_endpoints_receive_an_event(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var other = await WebhookReceiver.StartAsync();
        using var c = await app.CustomerAsync(0);
        await c.CreateWebhookAsync(receiver.Url, """["alert.fired"]""");
        await c.CreateWebhookAsync(other.Url, """["alert.resolved"]""");
        var disabled = await c.CreateWebhookAsync(other.Url + "?disabled");
        await c.Client.PatchAsync($"/api/v1/webhooks/{disabled.Str("id")}", AdminApi.JsonBody("""{"enabled":false}"""));

        await FireOneAsync(app, c);

        await receiver.WaitForAsync(1);
        await Task.Delay(500);
        Assert.Single(receiver.Received);
        Assert.Empty(other.Received);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_viewer_reads_webhooks_and_alerts_but_cannot_change_them(string engine)
    {
        var app = App(engine);
        using var c = await app.CustomerAsync(0);
        var hook = await c.CreateWebhookAsync("https://example.test/x");
        var email = $"viewer-{Guid.NewGuid():N}@example.com";
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"viewer password 1","role":"viewer"}""")), HttpStatusCode.Created);
        var session = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"viewer password 1"}""")), HttpStatusCode.Created);
        using var viewer = new HttpClient { BaseAddress = app.BaseAddress };
        viewer.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", session.Str("token"));

        Assert.Equal(HttpStatusCode.OK, (await viewer.GetAsync($"/api/v1/webhooks/{hook.Str("id")}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await viewer.GetAsync("/api/v1/alerts")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await viewer.GetAsync("/api/v1/events")).StatusCode);
        foreach (var response in new[]
                 {
                     await viewer.PostAsync("/api/v1/webhooks", AdminApi.JsonBody("""{"url":"https://example.test/y"}""")),
                     await viewer.PatchAsync($"/api/v1/webhooks/{hook.Str("id")}", AdminApi.JsonBody("""{"url":"https://evil.test/"}""")),
                     await viewer.PostAsync($"/api/v1/webhooks/{hook.Str("id")}/rotate-secret", null),
                     await viewer.DeleteAsync($"/api/v1/webhooks/{hook.Str("id")}"),
                     await viewer.PutAsync("/api/v1/alerts/settings", AdminApi.JsonBody("""{"thresholds":[10]}""")),
                 })
            Assert.Equal("forbidden", (await MeteringApi.BodyAsync(response, HttpStatusCode.Forbidden)).Str("code"));
        Assert.Equal("https://example.test/x", (await c.Client.GetFromJsonAsync<JsonElement>($"/api/v1/webhooks/{hook.Str("id")}")).Str("url"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Another_accounts_webhooks_deliveries_and_events_are_not_found(string engine)
    {
        var app = App(engine);
        await using var receiver = await WebhookReceiver.StartAsync();
        using var a = await app.CustomerAsync(0);
        using var b = await app.CustomerAsync(0);
        var hook = await a.CreateWebhookAsync(receiver.Url);
        var id = hook.Str("id")!;
        await FireOneAsync(app, a);
        var deliveryId = (await a.WaitForDeliveriesAsync(id, d => d.Count == 1))[0].Str("id");

        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.GetAsync($"/api/v1/webhooks/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.PatchAsync($"/api/v1/webhooks/{id}", AdminApi.JsonBody("""{"url":"https://evil.test/"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.PostAsync($"/api/v1/webhooks/{id}/rotate-secret", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.GetAsync($"/api/v1/webhooks/{id}/deliveries")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.PostAsync($"/api/v1/webhooks/deliveries/{deliveryId}/replay", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await b.Client.DeleteAsync($"/api/v1/webhooks/{id}")).StatusCode);
        Assert.Empty((await b.Client.GetFromJsonAsync<JsonElement>("/api/v1/webhooks")).GetProperty("data").EnumerateArray());
        Assert.Empty(await b.EventsAsync());
        Assert.Empty(await b.AlertsAsync());

        // A's endpoint is untouched by all of that.
        var mine = await MeteringApi.BodyAsync(await a.Client.GetAsync($"/api/v1/webhooks/{id}"), HttpStatusCode.OK);
        Assert.Equal(receiver.Url, mine.Str("url"));
        Assert.Single(await a.EventsAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/api/v1/webhooks")).StatusCode);
    }
}
