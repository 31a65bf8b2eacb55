using System.Text.RegularExpressions;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// The dashboard's cookies and headers at the HTTP level (what a browser would be told), with
/// <c>Tollgate:Dashboard:SecureCookies</c> on as behind a TLS-terminating proxy; and the JSON APIs untouched by it.
/// </summary>
public sealed class DashboardHttpTests : IAsyncLifetime
{
    private TestApp _app = null!;

    public async Task InitializeAsync() =>
        _app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:Dashboard:SecureCookies"] = "true" });

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private static string Cookie(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues("Set-Cookie", out var all) ? all.Single(c => c.StartsWith(name + "=", StringComparison.Ordinal)) : throw new Xunit.Sdk.XunitException($"no {name} cookie");

    [Fact]
    public async Task SignIn_SetsSecureHttpOnlyStrictCookies_AndPagesSendSecurityHeaders()
    {
        var accountId = await _app.CreateAccountAsync("Cookies");
        await MeteringApi.BodyAsync(await _app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody("""{"email":"cookie@example.com","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);
        using var client = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = _app.BaseAddress };

        var page = await client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType!.MediaType);
        Assert.Contains("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Contains("frame-ancestors 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
        Assert.Contains("no-store", page.Headers.CacheControl!.ToString());
        var csrfCookie = Cookie(page, "tg_csrf");
        foreach (var attribute in new[] { "httponly", "samesite=strict" }) Assert.Contains(attribute, csrfCookie.ToLowerInvariant());
        var token = Regex.Match(await page.Content.ReadAsStringAsync(), "name=\"__csrf\" value=\"([^\"]+)\"").Groups[1].Value;
        Assert.NotEmpty(token);

        HttpRequestMessage SignIn(string? csrf) => new(HttpMethod.Post, "/sign-in")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["email"] = "cookie@example.com", ["password"] = "correct horse battery", ["__csrf"] = csrf ?? "",
            }),
            Headers = { { "Cookie", csrfCookie.Split(';')[0] } },
        };
        // Without the form token (what a cross-site form would send): 400, no session.
        var forged = await client.SendAsync(SignIn(null));
        Assert.Equal(HttpStatusCode.BadRequest, forged.StatusCode);
        Assert.False(forged.Headers.TryGetValues("Set-Cookie", out var none) && none.Any(c => c.StartsWith("tg_session=", StringComparison.Ordinal)));

        var signedIn = await client.SendAsync(SignIn(token));
        Assert.Equal(HttpStatusCode.Redirect, signedIn.StatusCode);
        var session = Cookie(signedIn, "tg_session");
        Assert.StartsWith("tg_session=tg_sess_", session);
        foreach (var attribute in new[] { "secure", "httponly", "samesite=strict", "path=/", "expires=" }) Assert.Contains(attribute, session.ToLowerInvariant());

        // A member's change through a dashboard form is audited as that member.
        var key = await MeteringApi.BodyAsync(await _app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("{}")), HttpStatusCode.Created);
        var cookies = csrfCookie.Split(';')[0] + "; " + session.Split(';')[0];
        var keysPage = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/keys") { Headers = { { "Cookie", cookies } } });
        var memberToken = Regex.Match(await keysPage.Content.ReadAsStringAsync(), "name=\"__csrf\" value=\"([^\"]+)\"").Groups[1].Value;
        var revoked = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, $"/keys/{key.Str("id")}/revoke")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["__csrf"] = memberToken }),
            Headers = { { "Cookie", cookies } },
        });
        Assert.Equal(HttpStatusCode.Redirect, revoked.StatusCode);
        var audit = (await _app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/audit?target=keys:{key.Str("id")}")).GetProperty("data");
        var entry = Assert.Single(audit.EnumerateArray());
        Assert.Equal(("member", "POST /keys/{keyId}/revoke", 302), (entry.Str("actor_type"), entry.Str("action"), entry.GetProperty("status").GetInt32()));
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("before").GetProperty("revoked_at").ValueKind);
        Assert.Equal(JsonValueKind.String, entry.GetProperty("after").GetProperty("revoked_at").ValueKind);

        var css = await client.GetAsync("/dashboard.css");
        Assert.Equal("text/css", css.Content.Headers.ContentType!.MediaType);
    }

    [Fact]
    public async Task Earnings_page_shows_a_creators_share_of_an_agent_sale()
    {
        using var creator = await _app.CustomerAsync(0);
        using var buyer = await _app.CustomerAsync(5_000_000);
        await MeteringApi.BodyAsync(await _app.Admin.PostAsync($"/admin/v1/accounts/{creator.AccountId}/members",
            AdminApi.JsonBody("""{"email":"creator@example.com","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);
        var agent = await MeteringApi.BodyAsync(await creator.Client.PostAsync("/api/v1/agents",
            AdminApi.JsonBody("""{"name":"Helper","pricing_mode":"one_time","price_micros":1000000}""")), HttpStatusCode.Created);
        var purchase = await buyer.Client.PostAsync($"/api/v1/agents/{agent.Str("id")}/purchase", AdminApi.JsonBody("{}"));
        Assert.True(purchase.IsSuccessStatusCode, await purchase.Content.ReadAsStringAsync());

        using var client = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = _app.BaseAddress };
        var page = await client.GetAsync("/");
        var csrfCookie = Cookie(page, "tg_csrf").Split(';')[0];
        var token = Regex.Match(await page.Content.ReadAsStringAsync(), "name=\"__csrf\" value=\"([^\"]+)\"").Groups[1].Value;
        var signedIn = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/sign-in")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["email"] = "creator@example.com", ["password"] = "correct horse battery", ["__csrf"] = token }),
            Headers = { { "Cookie", csrfCookie } },
        });
        var session = Cookie(signedIn, "tg_session").Split(';')[0];
        var earnings = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/earnings") { Headers = { { "Cookie", session + "; " + csrfCookie } } });
        Assert.Equal(HttpStatusCode.OK, earnings.StatusCode);
        var html = await earnings.Content.ReadAsStringAsync();
        // 90 % of $1.00 to the creator, not yet paid out.
        Assert.Matches("id=\"earnings-balance\">\\$0\\.90<", html);
        Assert.Contains(agent.Str("id")!, html);
    }

    [Fact]
    public async Task JsonApis_NeedNoAntiforgeryToken_AndRootlessRoutesStillAnswerProblems()
    {
        var accountId = await _app.CreateAccountAsync("Api");
        await MeteringApi.BodyAsync(await _app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody("""{"email":"api@example.com","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);
        var session = await MeteringApi.BodyAsync(await _app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody("""{"email":"api@example.com","password":"correct horse battery"}""")), HttpStatusCode.Created);
        using var client = new HttpClient { BaseAddress = _app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", session.GetProperty("token").GetString());
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"json"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _app.Anonymous.GetAsync("/health")).StatusCode);
        var missing = await _app.Anonymous.GetAsync("/no-such-page");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType!.MediaType);
    }
}
