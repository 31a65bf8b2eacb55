using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// Every dashboard page and form, taken from the running app's routes: pages send the security headers, and every
/// form POST without the antiforgery token — or with another session's token — is refused with 400 and changes nothing,
/// even for a signed-in owner. Cookies on plain HTTP (no SecureCookies) are HttpOnly and SameSite=Strict but not
/// Secure, so a browser still sends them back; behind TLS Tollgate:Dashboard:SecureCookies makes them Secure
/// (DashboardHttpTests).
/// </summary>
public sealed class DashboardSecurityTests : IAsyncLifetime
{
    private TestApp _app = null!;

    public async Task InitializeAsync() => _app = await TestApp.StartAsync(TestDatabases.Sqlite);

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private static string Cookie(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues("Set-Cookie", out var all) ? all.Single(c => c.StartsWith(name + "=", StringComparison.Ordinal)) : throw new Xunit.Sdk.XunitException($"no {name} cookie");

    private static string Token(string html) => Regex.Match(html, "name=\"__csrf\" value=\"([^\"]+)\"").Groups[1].Value;

    /// <summary>Dashboard routes: everything outside the JSON APIs, the gateway, webhooks, health and metrics.</summary>
    private List<(string Method, string Template)> DashboardRoutes() =>
        _app.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.RoutePattern.RawText is { } raw && !raw.StartsWith("/api/", StringComparison.Ordinal) && !raw.StartsWith("/admin/v1", StringComparison.Ordinal)
                        && !raw.StartsWith("/v1/", StringComparison.Ordinal) && !raw.StartsWith("/webhooks", StringComparison.Ordinal)
                        && !raw.StartsWith("/health", StringComparison.Ordinal) && raw != "/metrics" && !raw.StartsWith("/payments", StringComparison.Ordinal))
            .SelectMany(e => (e.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? []).Select(m => (m, e.RoutePattern.RawText!)))
            .Distinct().ToList();

    private async Task<(HttpClient Client, string Cookies, string Token, Customer Owner)> SignInAsync(string email)
    {
        var owner = await _app.CustomerAsync(1_000_000);
        await MeteringApi.BodyAsync(await _app.Admin.PostAsync($"/admin/v1/accounts/{owner.AccountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);
        var client = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = _app.BaseAddress };
        var page = await client.GetAsync("/");
        var csrf = Cookie(page, "tg_csrf").Split(';')[0];
        var signedIn = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/sign-in")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["email"] = email, ["password"] = "correct horse battery", ["__csrf"] = Token(await page.Content.ReadAsStringAsync()) }),
            Headers = { { "Cookie", csrf } },
        });
        Assert.Equal(HttpStatusCode.Redirect, signedIn.StatusCode);
        var session = Cookie(signedIn, "tg_session");
        foreach (var attribute in new[] { "httponly", "samesite=strict" }) Assert.Contains(attribute, session.ToLowerInvariant());
        Assert.DoesNotContain("secure", session.ToLowerInvariant());
        var cookies = session.Split(';')[0] + "; " + csrf;
        // The session's own token (antiforgery tokens are bound to the signed-in identity).
        var keys = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/keys") { Headers = { { "Cookie", cookies } } });
        return (client, cookies, Token(await keys.Content.ReadAsStringAsync()), owner);
    }

    [Fact]
    public async Task Every_page_sends_the_security_headers_and_every_form_post_needs_its_token()
    {
        var (client, cookies, token, owner) = await SignInAsync("csrf-owner@example.com");
        var (_, _, otherToken, _) = await SignInAsync("csrf-other@example.com");
        Assert.NotEmpty(token);
        var keyId = (await MeteringApi.BodyAsync(await owner.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"keep me"}""")), HttpStatusCode.Created)).Str("id")!;
        async Task<string> StateAsync() => await owner.Client.GetStringAsync("/api/v1/keys") + (await owner.AccountAsync()).GetRawText();
        var before = await StateAsync();
        var routes = DashboardRoutes();

        var pages = 0;
        foreach (var (_, template) in routes.Where(r => r.Method == "GET" && !r.Template.Contains('{') && r.Template != "/dashboard.css"))
        {
            var page = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, template) { Headers = { { "Cookie", cookies } } });
            if (page.StatusCode != HttpStatusCode.OK) continue; // redirects (e.g. operator pages for a member)
            Assert.True(page.Headers.Contains("Content-Security-Policy") && page.Headers.Contains("X-Frame-Options"),
                $"GET {template}: {page.Content.Headers.ContentType} without the security headers: {page.Headers}");
            Assert.Contains("frame-ancestors 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
            Assert.Contains("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());
            Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
            Assert.Equal("DENY", page.Headers.GetValues("X-Frame-Options").Single());
            Assert.Equal("same-origin", page.Headers.GetValues("Referrer-Policy").Single());
            pages++;
        }
        Assert.True(pages >= 4, $"only {pages} pages checked");

        var forms = 0;
        foreach (var (_, template) in routes.Where(r => r.Method == "POST"))
        {
            var path = template.Replace("{keyId}", keyId, StringComparison.Ordinal);
            foreach (var sent in new[] { "", "forged-token", otherToken })
            {
                var fields = new Dictionary<string, string> { ["name"] = "forged", ["pack"] = "small", ["key"] = TestApp.AdminKey, ["email"] = "csrf-owner@example.com", ["password"] = "correct horse battery" };
                if (sent.Length > 0) fields["__csrf"] = sent;
                var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = new FormUrlEncodedContent(fields), Headers = { { "Cookie", cookies } } });
                Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"POST {path} with token '{sent[..Math.Min(8, sent.Length)]}': {(int)response.StatusCode}");
                Assert.False(response.Headers.TryGetValues("Set-Cookie", out var set) && set.Any(c => c.StartsWith("tg_session=", StringComparison.Ordinal) || c.StartsWith("tg_operator=", StringComparison.Ordinal)),
                    $"POST {path} without a valid token set a credential cookie");
            }
            forms++;
        }
        Assert.True(forms >= 6, $"only {forms} forms checked");

        // Still signed in (sign-out was refused too), and nothing changed.
        var overview = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/keys") { Headers = { { "Cookie", cookies } } });
        Assert.Contains("keep me", await overview.Content.ReadAsStringAsync());
        Assert.Equal(before, await StateAsync());
        client.Dispose();
    }
}
