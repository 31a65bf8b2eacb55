using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Faults;

/// <summary>One app per engine for the abuse suite; failed-authentication limiting is tested on its own app below.</summary>
public sealed class AbuseFixture() : SharedEngineApps(new Dictionary<string, string?> { ["Tollgate:Security:MaxFailedAuthPerMinute"] = "0" });

/// <summary>
/// Hostile input on every route the running app maps (taken from its EndpointDataSource, so a new route is attacked
/// too): malformed, truncated, wrongly typed, deeply nested, invalid UTF-8, oversized and overflowing bodies; SQL
/// metacharacters and path traversal in every route value and query filter; CR/LF in headers. Every answer is a clean
/// 4xx (or a harmless 2xx/3xx of a route that ignores its body) and never a 5xx; afterwards the ledger audit is clean,
/// nothing in the ledger or the account moved, and the process is ready.
/// </summary>
public sealed class AbuseTests(AbuseFixture fixture) : IClassFixture<AbuseFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private const string Sql = "1' OR '1'='1'; DROP TABLE ledger_transfers; --";
    private const string Traversal = "..%2F..%2F..%2Fetc%2Fpasswd";

    private static readonly string Nested = new string('[', 5_000) + new string(']', 5_000);

    /// <summary>The bad bodies sent to every POST/PUT/PATCH route, by name.</summary>
    private static IEnumerable<(string Name, HttpContent Content)> BadBodies()
    {
        static HttpContent Json(string s) => new StringContent(s, Encoding.UTF8, "application/json");
        yield return ("malformed", Json("{\"name\": "));
        yield return ("truncated", Json("""{"model":"demo/echo","messages":[{"role":"us"""));
        yield return ("wrong types", Json("""{"name":12,"amount_micros":"ten","model":[],"messages":"x","max_tokens":"many","plan":{},"url":false}"""));
        yield return ("overflow", Json("""{"amount_micros":99999999999999999999999,"max_tokens":-1,"ttl_seconds":-5,"limit":-9223372036854775808,"credit_limit_micros":-1}"""));
        yield return ("negative", Json("""{"amount_micros":-9223372036854775808,"idempotency_key":"neg","reason":"x"}"""));
        yield return ("nested", Json("{\"a\":" + Nested + "}"));
        var invalidUtf8 = new ByteArrayContent([(byte)'{', (byte)'"', (byte)'n', (byte)'a', (byte)'m', (byte)'e', (byte)'"', (byte)':', (byte)'"', 0xC3, 0x28, 0xFF, (byte)'"', (byte)'}']);
        invalidUtf8.Headers.ContentType = new("application/json");
        yield return ("invalid utf-8", invalidUtf8);
        yield return ("sql", Json($$"""{"name":"{{Sql}}","id":"{{Sql}}","email":"{{Sql}}","model":"{{Sql}}","url":"http://x/{{Sql}}"}"""));
        yield return ("not json", new StringContent("a=1&b=2", Encoding.UTF8, "application/x-www-form-urlencoded"));
    }

    private sealed record Route(string Method, string Template, bool HasBody);

    private static List<Route> Routes(TestApp app)
    {
        var routes = new List<Route>();
        foreach (var endpoint in app.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>())
        {
            if (endpoint.RoutePattern.RawText is not { } raw) continue;
            foreach (var method in endpoint.Metadata.GetMetadata<Microsoft.AspNetCore.Routing.HttpMethodMetadata>()?.HttpMethods ?? [])
                routes.Add(new Route(method, raw, method is "POST" or "PUT" or "PATCH"));
        }
        return routes.Distinct().OrderBy(r => r.Template, StringComparer.Ordinal).ThenBy(r => r.Method, StringComparer.Ordinal).ToList();
    }

    /// <summary>The template with every parameter replaced by <paramref name="value"/> (already URL-encoded).</summary>
    private static string Fill(string template, string value) =>
        System.Text.RegularExpressions.Regex.Replace(template, @"\{\**[^}]+\}", value);

    private static HttpClient ClientFor(string path, TestApp app, Customer c) =>
        path.StartsWith("/admin/v1", StringComparison.Ordinal) || path == "/metrics" ? app.Admin
        : path.StartsWith("/v1/", StringComparison.Ordinal) || path.StartsWith("/api/", StringComparison.Ordinal) ? c.Client
        : app.Anonymous;

    /// <summary>Declares a body of <paramref name="length"/> bytes, sends a few, and returns the answer (asserting 413).</summary>
    private static async Task<string> OverLimitAsync(TestApp app, string path, string key, long length)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(app.BaseAddress.Host, app.BaseAddress.Port);
        await using var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{{\"model\":"));
        using var reader = new StreamReader(stream, Encoding.ASCII);
        Assert.StartsWith("HTTP/1.1 413", await reader.ReadLineAsync());
        return await reader.ReadToEndAsync();
    }

    private static async Task<HttpResponseMessage> SendAsync(HttpClient client, HttpRequestMessage request, string what)
    {
        try
        {
            return await client.SendAsync(request);
        }
        catch (HttpRequestException e)
        {
            throw new Xunit.Sdk.XunitException($"{what}: no clean answer ({e.Message} {e.InnerException?.Message})");
        }
    }

    private static async Task<string> StateAsync(TestApp app, Customer c)
    {
        var audit = await AdminApi.AssertAuditHealthyAsync(app.Admin);
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{c.AccountId}"), HttpStatusCode.OK);
        return $"transfers {audit.GetProperty("transfers")} entries {audit.GetProperty("entries")} balance {account.Long("balance_micros")} held {account.Long("held_micros")}";
    }

    private static async Task AssertCleanAsync(HttpResponseMessage response, string what)
    {
        var status = (int)response.StatusCode;
        var body = await response.Content.ReadAsStringAsync();
        // A feature that is not configured (Stripe, crypto) says so with 503 *_not_configured: clean, not a failure.
        Assert.True(status < 500 || (status == 503 && body.Contains("_not_configured\"", StringComparison.Ordinal)), $"{what}: {status} {body}");
        if (status is < 400 or 404 or 405) return;
        // Kestrel itself refuses a NUL in the path with an empty 400, before any of the app's code runs.
        if (status == 400 && body.Length == 0 && response.RequestMessage!.RequestUri!.OriginalString.Contains("%00", StringComparison.Ordinal)) return;
        var path = response.RequestMessage!.RequestUri!.AbsolutePath;
        var media = response.Content.Headers.ContentType?.MediaType;
        if (path.StartsWith("/v1/", StringComparison.Ordinal))
            Assert.True(media == "application/json" && JsonDocument.Parse(body).RootElement.TryGetProperty("error", out _), $"{what}: not an OpenAI error: {status} {body}");
        else if (path.StartsWith("/api/", StringComparison.Ordinal) || path.StartsWith("/admin/v1", StringComparison.Ordinal) || path.StartsWith("/webhooks", StringComparison.Ordinal))
            Assert.True(media == "application/problem+json", $"{what}: not a problem document: {status} {media} {body}");
        Assert.DoesNotContain("   at ", body);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Hostile_input_on_every_route_gets_a_clean_4xx_and_changes_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var before = await StateAsync(app, c);
        var routes = Routes(app);
        Assert.True(routes.Count > 60, $"only {routes.Count} routes found");
        var maxBody = Tollgate.TollgateApp.DefaultMaxRequestBodyBytes;
        var huge = new byte[maxBody + 1];
        Array.Fill(huge, (byte)' ');
        huge[0] = (byte)'[';
        var sent = 0;

        foreach (var route in routes)
        {
            var values = route.Template.Contains('{') ? new[] { Uri.EscapeDataString(Sql), Traversal, "%00", "99999999999999999999999" } : [""];
            foreach (var value in values)
            {
                var path = Fill(route.Template, value);
                var client = ClientFor(path, app, c);
                // SQL metacharacters, traversal and overflowing numbers in every query filter a route might read.
                var query = $"?limit=-1&cursor={Uri.EscapeDataString(Sql)}&from={Uri.EscapeDataString(Sql)}&to=99999-99-99&model={Uri.EscapeDataString(Sql)}" +
                            $"&status={Traversal}&format=..%2F..%2Fx&period={Traversal}&group_by={Uri.EscapeDataString(Sql)}&customer={Uri.EscapeDataString(Sql)}";
                using (var request = new HttpRequestMessage(new HttpMethod(route.Method), path + query))
                {
                    if (route.HasBody) request.Content = new StringContent("{}", Encoding.UTF8, "application/json");
                    await AssertCleanAsync(await SendAsync(client, request, $"{route.Method} {path}{query}"), $"{route.Method} {path}{query}");
                    sent++;
                }
                if (!route.HasBody || value != values[0]) continue;
                foreach (var (name, content) in BadBodies())
                {
                    using var request = new HttpRequestMessage(new HttpMethod(route.Method), path) { Content = content };
                    await AssertCleanAsync(await SendAsync(client, request, $"{route.Method} {path} with a {name} body"), $"{route.Method} {path} with a {name} body");
                    sent++;
                }
                // A connection of its own: the server may close it instead of draining the unread megabyte.
                using (var own = new HttpClient { BaseAddress = app.BaseAddress })
                using (var request = new HttpRequestMessage(new HttpMethod(route.Method), path) { Content = new ByteArrayContent(huge) })
                {
                    own.DefaultRequestHeaders.Authorization = client.DefaultRequestHeaders.Authorization;
                    request.Content.Headers.ContentType = new("application/json");
                    HttpResponseMessage response;
                    try
                    {
                        response = await own.SendAsync(request);
                    }
                    catch (HttpRequestException)
                    {
                        // Kestrel answered before reading the body (e.g. 401) and closed the connection rather than
                        // drain a megabyte: the body was refused unread. The process must still be healthy (checked below).
                        continue;
                    }
                    await AssertCleanAsync(response, $"{route.Method} {path} with a {huge.Length}-byte body");
                    // Routes that read a JSON body refuse it by size; others refuse it for who is asking or what it names.
                    // (Dashboard forms answer an anonymous POST by sending the browser to the sign-in page.)
                    if (path.StartsWith("/v1/", StringComparison.Ordinal) || path.StartsWith("/api/", StringComparison.Ordinal) || path.StartsWith("/admin/v1", StringComparison.Ordinal))
                        Assert.True((int)response.StatusCode is >= 400 and < 500 or 503, $"{route.Method} {path} accepted a huge body: {(int)response.StatusCode}");
                    sent++;
                }
            }
        }
        Assert.True(sent > 500, $"only {sent} requests sent");

        // The limits themselves, per route: a JSON route refuses a body over Tollgate:Http:MaxRequestBodyBytes (1 MiB) with
        // 413 before reading it; the gateway takes up to Tollgate:Gateway:MaxRequestBodyBytes (32 MiB: prompts with
        // images). Declared lengths over the limit, sent raw so the early answer is read rather than a broken pipe.
        Assert.Contains("\"payload_too_large\"", await OverLimitAsync(app, $"/admin/v1/accounts/{c.AccountId}/credits", TestApp.AdminKey, maxBody + 1));
        Assert.Contains("\"payload_too_large\"", await OverLimitAsync(app, "/v1/chat/completions", c.Key, 40L << 20));

        Assert.Equal(before, await StateAsync(app, c));
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/ready")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Header_injection_is_refused_and_nothing_is_echoed_with_a_line_break(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var before = await StateAsync(app, c);

        // Encoded or unusual line breaks in the one header the gateway takes an id from: refused, not echoed.
        foreach (var evil in new[] { "evil%0d%0aSet-Cookie:%20x=1", "evil%E2%80%A8x", "evil\tSet-Cookie: x=1", new string('a', 5_000) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"""),
            };
            request.Headers.TryAddWithoutValidation("x-tollgate-customer", evil);
            var response = await c.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.False(response.Headers.Contains("Set-Cookie"));
            Assert.All(response.Headers.SelectMany(h => h.Value), v => Assert.DoesNotContain('\n', v));
        }

        // Raw CR/LF inside a header value never reaches the app: the server refuses the request line by line.
        foreach (var raw in new[] { "x-tollgate-customer: a\rSet-Cookie: x=1", "Authorization: Bearer tg_x\r\n Set-Cookie: x=1" })
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(app.BaseAddress.Host, app.BaseAddress.Port);
            await using var stream = tcp.GetStream();
            var request = $"GET /api/v1/account HTTP/1.1\r\nHost: x\r\n{raw}\r\nConnection: close\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
            using var reader = new StreamReader(stream, Encoding.ASCII);
            var statusLine = await reader.ReadLineAsync();
            Assert.StartsWith("HTTP/1.1 400", statusLine);
            var rest = await reader.ReadToEndAsync();
            Assert.DoesNotContain("Set-Cookie: x=1", rest);
        }

        Assert.Equal(before, await StateAsync(app, c));
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/ready")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Without_credentials_a_malformed_body_is_a_401_not_a_400_that_describes_the_body(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var checkedRoutes = 0;
        foreach (var route in Routes(app).Where(r => r.HasBody && (r.Template.StartsWith("/api/v1", StringComparison.Ordinal) || r.Template.StartsWith("/admin/v1", StringComparison.Ordinal))))
        {
            var path = Fill(route.Template, "1");
            // Only routes that want credentials (a well-formed empty body without any gets 401; sign-in does not).
            using (var probe = new HttpRequestMessage(new HttpMethod(route.Method), path) { Content = new StringContent("{}", Encoding.UTF8, "application/json") })
                if ((await app.Anonymous.SendAsync(probe)).StatusCode != HttpStatusCode.Unauthorized) continue;
            using var request = new HttpRequestMessage(new HttpMethod(route.Method), path) { Content = new StringContent("""{"amount_micros":"not a number",""", Encoding.UTF8, "application/json") };
            var response = await app.Anonymous.SendAsync(request);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{route.Method} {path} without credentials: {(int)response.StatusCode} {body}");
            checkedRoutes++;
        }
        Assert.True(checkedRoutes > 40, $"only {checkedRoutes} routes");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Account_keys_reach_no_admin_route(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var before = await StateAsync(app, c);
        var walked = 0;
        foreach (var route in Routes(app).Where(r => r.Template.StartsWith("/admin/v1", StringComparison.Ordinal) || r.Template == "/metrics"))
        {
            // "1" fits every route constraint (ids, numbers), so the route is reached and only the key decides.
            var path = Fill(route.Template, "1");
            using var request = new HttpRequestMessage(new HttpMethod(route.Method), path);
            if (route.HasBody) request.Content = AdminApi.JsonBody($$"""{"amount_micros":1000000,"idempotency_key":"steal","reason":"x","plan":"pro","name":"x"}""");
            var response = await c.Client.SendAsync(request);
            Assert.True(response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden,
                $"{route.Method} {path} with an account key: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            walked++;
        }
        Assert.True(walked > 30, $"only {walked} admin routes");
        // The dashboard's operator pages likewise: an account key is no operator credential.
        foreach (var page in new[] { "/admin", "/admin/pricing", "/admin/review", "/admin/margin", "/admin/reconciliation" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, page);
            request.Headers.Authorization = new("Bearer", c.Key);
            using var noRedirects = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = app.BaseAddress };
            var response = await noRedirects.SendAsync(request);
            Assert.True(response.StatusCode is HttpStatusCode.Redirect or HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden
                && !(await response.Content.ReadAsStringAsync()).Contains(c.AccountId, StringComparison.Ordinal), $"{page}: {(int)response.StatusCode}");
        }
        Assert.Equal(before, await StateAsync(app, c));
    }
}

/// <summary>Many wrong keys from one address are cut off with 429, on the gateway, the account API and the admin API.</summary>
public sealed class KeyGuessingTests
{
    [Fact]
    public async Task Guessing_keys_from_one_address_is_rate_limited_and_then_even_a_valid_key_waits()
    {
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:Security:MaxFailedAuthPerMinute"] = "20" });
        using var c = await app.CustomerAsync(1_000_000);
        using var guesser = new HttpClient { BaseAddress = app.BaseAddress };
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 30; i++)
        {
            var path = (i % 3) switch { 0 => "/v1/chat/completions", 1 => "/api/v1/account", _ => "/admin/v1/ledger/audit" };
            using var request = new HttpRequestMessage(i % 3 == 0 ? HttpMethod.Post : HttpMethod.Get, path);
            request.Headers.Authorization = new("Bearer", $"tg_live_guess{i:D4}{new string('x', 30)}");
            if (i % 3 == 0) request.Content = AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"x"}]}""");
            statuses.Add((await guesser.SendAsync(request)).StatusCode);
        }
        Assert.True(statuses.Count(s => s == HttpStatusCode.Unauthorized) == 20, string.Join(",", statuses.Select(s => (int)s)));
        Assert.True(statuses.Count(s => s == HttpStatusCode.TooManyRequests) == 10, string.Join(",", statuses.Select(s => (int)s)));
        Assert.All(statuses.Skip(20), s => Assert.Equal(HttpStatusCode.TooManyRequests, s));

        // Blocked addresses are blocked whatever they present (the test's customer shares the loopback address).
        var blocked = await c.Client.GetAsync("/api/v1/account");
        var problem = await AdminApi.AssertProblemAsync(blocked, HttpStatusCode.TooManyRequests, "too_many_failed_attempts");
        Assert.NotNull(blocked.Headers.RetryAfter?.Delta);
        var gateway = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"x"}]}"""));
        Assert.Equal("too_many_failed_attempts", (await MeteringApi.BodyAsync(gateway, HttpStatusCode.TooManyRequests)).GetProperty("error").Str("code"));
        Assert.NotNull(problem.Str("detail"));
        // Requests without credentials are no guesses: public routes still answer.
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/ready")).StatusCode);
    }
}
