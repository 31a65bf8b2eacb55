using System.Net;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Api;

/// <summary>
/// A key of account A can never read or change anything of account B, on every self-service route. The routes are
/// taken from the running app, not listed by hand, so a new route is attacked too: one that names a resource fails
/// this test until its parameter is given one of B's resources below; one without parameters (a listing) is called
/// with A's key and must not show any of B's ids, names, emails or URLs.
/// </summary>
public sealed class CrossAccountTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    [Theory, MemberData(nameof(Engines))]
    public async Task No_self_service_route_lets_a_key_of_one_account_touch_another(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var a = await app.CustomerAsync(1_000_000);
        using var b = await app.CustomerAsync(1_000_000);

        // B's resources, one of each kind a route can name.
        var bKey = await MeteringApi.BodyAsync(await b.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"b-second"}""")), HttpStatusCode.Created);
        await MeteringApi.BodyAsync(await b.Client.PutAsync("/api/v1/customers/cust-b", AdminApi.JsonBody("""{"name":"B's customer","spend_caps":{"daily_micros":500}}""")), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await b.Client.PutAsync($"/api/v1/keys/{bKey.Str("id")}/spend-caps", AdminApi.JsonBody("""{"total_micros":900}""")), HttpStatusCode.OK);
        var bMember = await MeteringApi.BodyAsync(await b.Client.PostAsync("/api/v1/members",
            AdminApi.JsonBody("""{"email":"b-member@example.test","password":"correct horse battery","role":"member"}""")), HttpStatusCode.Created);
        await MeteringApi.BodyAsync(await b.AuthorizeAsync("auth-b", 1_000), HttpStatusCode.Created);
        await MeteringApi.BodyAsync(await b.Client.PutAsync("/api/v1/provider-keys/openai", AdminApi.JsonBody("""{"api_key":"sk-b-own-key-0000"}""")), HttpStatusCode.OK);
        // A webhook endpoint (unreachable, so its delivery stays) and a balance alert that fires on B's call.
        var bHook = await MeteringApi.BodyAsync(await b.Client.PostAsync("/api/v1/webhooks", AdminApi.JsonBody("""{"url":"http://127.0.0.1:9/hook"}""")), HttpStatusCode.Created);
        await MeteringApi.BodyAsync(await b.Client.PutAsync("/api/v1/alerts/settings", AdminApi.JsonBody("""{"balance_low_micros":5000000}""")), HttpStatusCode.OK);
        var bCall = await b.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"b's call"}]}"""));
        Assert.Equal(HttpStatusCode.OK, bCall.StatusCode);
        // A marketplace agent of B's, priced beyond A's credits (A may buy agents; it must not change B's account).
        var bAgent = await MeteringApi.BodyAsync(await b.Client.PostAsync("/api/v1/agents",
            AdminApi.JsonBody("""{"name":"B's agent","pricing_mode":"monthly","price_micros":900000000000}""")), HttpStatusCode.Created);
        var bDelivery = (await b.WaitForDeliveriesAsync(bHook.Str("id")!, d => d.Count > 0))[0].Str("id")!;

        var values = new Dictionary<string, string>
        {
            ["keyId"] = bKey.Str("id")!, ["customerId"] = "cust-b", ["userId"] = bMember.Str("user_id")!, ["id"] = "auth-b",
            ["provider"] = "openai", ["feature"] = "projects", ["deliveryId"] = bDelivery, ["addOnId"] = "deploy_slot",
            ["agentId"] = bAgent.Str("id")!, ["period"] = DateTimeOffset.UtcNow.ToString("yyyy-MM", System.Globalization.CultureInfo.InvariantCulture),
            // Per route group where a name means another resource:
            ["/api/v1/webhooks:id"] = bHook.Str("id")!,
        };
        var before = await SnapshotAsync(b, bKey.Str("id")!);
        var bEvent = (await b.EventsAsync()).First().Str("id")!;

        // Everything that names B or one of B's things: none may appear in an answer to A, listings included (a
        // route's own path parameter may be echoed in its 404, so that one value is allowed there).
        var secrets = new[]
        {
            b.AccountId, "B's customer", "cust-b", b.KeyId, bKey.Str("id")!, bKey.Str("prefix")!, b.Key[..14], b.Key, bMember.Str("user_id")!,
            "b-member@example.test", "auth-b", "sk-b-own", bHook.Str("id")!, "127.0.0.1:9/hook", bDelivery, bEvent,
            bCall.Headers.GetValues("x-tollgate-request-id").Single(), "b-second",
        };

        // A's API key, and A's owner signed in to the dashboard: both credentials, every route.
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{a.AccountId}/members",
            AdminApi.JsonBody("""{"email":"a-owner@example.test","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);
        var session = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"a-owner@example.test","password":"correct horse battery","account_id":"{{a.AccountId}}"}""")), HttpStatusCode.Created);
        using var aSession = new HttpClient { BaseAddress = app.BaseAddress };
        aSession.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", session.Str("token"));
        foreach (var (attacker, who) in new[] { (a.Client, "A's key"), (aSession, "A's owner session") })
        {
            var attacked = 0;
            foreach (var (method, path) in SelfServiceRoutes(app, values))
            {
                // Signing the session out would only end the attack early.
                if (attacker == aSession && method == "DELETE" && path == "/api/v1/sessions/current") continue;
                using var request = new HttpRequestMessage(new HttpMethod(method), path);
                if (method is "POST" or "PUT" or "PATCH") request.Content = AdminApi.JsonBody("{}");
                var response = await attacker.SendAsync(request);
                var body = await response.Content.ReadAsStringAsync();
                // Payment routes of a provider this app does not configure answer 503 "not configured" to anyone.
                var notConfigured = response.StatusCode == HttpStatusCode.ServiceUnavailable && body.Contains("_not_configured\"", StringComparison.Ordinal);
                Assert.True((int)response.StatusCode < 500 || notConfigured, $"{who}: {method} {path}: {(int)response.StatusCode} {body}");
                Assert.NotEqual(HttpStatusCode.Unauthorized, response.StatusCode);
                // The second attacker may see B's ids that A itself put in paths, in A's own records (its audit log,
                // a customer 'cust-b' of A's own): those name nothing of B's. Everything else of B's must stay unseen.
                foreach (var secret in secrets.Where(x => !path.Contains(x, StringComparison.Ordinal) && (attacker == a.Client || !values.Values.Contains(x))))
                    Assert.False(body.Contains(secret, StringComparison.Ordinal), $"{method} {path} with {who} shows B's '{secret}': {body}");
                if (path.Contains(values["keyId"]) || path.Contains(values["userId"]) || path.Contains("auth-b") || path.Contains(bHook.Str("id")!) || path.Contains(bDelivery))
                    Assert.True(response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.BadRequest, $"{method} {path} with {who}: {(int)response.StatusCode} {body}");
                attacked++;
            }
            Assert.True(attacked >= 60, $"only {attacked} routes attacked with {who}");
        }
        Assert.Equal(before, await SnapshotAsync(b, bKey.Str("id")!));
    }

    /// <summary>
    /// Every <c>/api/v1</c> route, once per HTTP method: those with route parameters get B's resource ids, those without
    /// (listings, the account's own settings) are called as they are and must show nothing of B's.
    /// </summary>
    private static IEnumerable<(string Method, string Path)> SelfServiceRoutes(TestApp app, IReadOnlyDictionary<string, string> values)
    {
        var routes = new List<(string, string)>();
        foreach (var endpoint in app.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>())
        {
            var pattern = endpoint.RoutePattern;
            if (pattern.RawText is not { } raw || !raw.StartsWith("/api/v1/", StringComparison.Ordinal)) continue;
            // The public price list is not an account's resource.
            if (raw.StartsWith("/api/v1/pricing", StringComparison.Ordinal)) continue;
            var path = raw;
            foreach (var p in pattern.Parameters)
            {
                var scoped = values.FirstOrDefault(v => v.Key.Contains(':') && raw.StartsWith(v.Key[..v.Key.IndexOf(':')], StringComparison.Ordinal) && v.Key[(v.Key.IndexOf(':') + 1)..] == p.Name).Value;
                var value = scoped;
                Assert.True(value is not null || values.TryGetValue(p.Name, out value), $"Route {raw} has a parameter '{p.Name}' this test does not know: give it one of B's resources.");
                path = System.Text.RegularExpressions.Regex.Replace(path, $@"\{{\**{p.Name}(:[^}}]*)?\}}", value!);
            }
            foreach (var method in endpoint.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? [])
                routes.Add((method, path));
        }
        return routes.Distinct().OrderBy(r => r.Item2).ThenBy(r => r.Item1);
    }

    /// <summary>What B can see of itself; must not change while A attacks.</summary>
    private static async Task<string> SnapshotAsync(Customer b, string secondKeyId)
    {
        var parts = new List<string>();
        foreach (var path in new[]
                 {
                     "/api/v1/account", "/api/v1/keys", "/api/v1/customers", "/api/v1/customers/cust-b", "/api/v1/spend-caps",
                     $"/api/v1/keys/{secondKeyId}/spend-caps", "/api/v1/members", "/api/v1/authorizations/auth-b", "/api/v1/usage",
                     "/api/v1/provider-keys", "/api/v1/entitlements", "/api/v1/plan", "/api/v1/alerts/settings", "/api/v1/creator/earnings",
                     "/api/v1/statements",
                 })
        {
            var response = await b.Client.GetAsync(path);
            parts.Add($"{path} {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
        return string.Join("\n", parts);
    }
}
