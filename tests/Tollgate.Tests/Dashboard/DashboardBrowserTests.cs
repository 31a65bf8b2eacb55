using System.Net.Http.Headers;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Stripe;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// The dashboard in real headless Chromium against the real app on Kestrel (and a fake Stripe speaking Stripe's wire
/// format): sign-in, keys shown once, a gateway call showing up in the usage chart and the balance, a credit pack bought
/// through Checkout and its webhook, roles (viewers see no buttons and their forged POSTs are refused), and the operator
/// pages. Each test saves screenshots under artifacts/screenshots/.
/// </summary>
public sealed class DashboardBrowserTests : IAsyncLifetime
{
    private const string WebhookSecret = "whsec_dashboard_test";
    private const string Password = "correct horse battery";
    private FakeStripe _stripe = null!;
    private Browser _browser = null!;
    private readonly Dictionary<string, TestApp> _apps = new();

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync()
    {
        _stripe = await FakeStripe.StartAsync();
        _browser = await Browser.LaunchAsync();
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
        await _browser.DisposeAsync();
        await _stripe.DisposeAsync();
    }

    private async Task<TestApp> AppAsync(string engine)
    {
        if (_apps.TryGetValue(engine, out var app)) return app;
        return _apps[engine] = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Stripe:SecretKey"] = FakeStripe.SecretKey,
            ["Tollgate:Stripe:WebhookSecrets:0"] = WebhookSecret,
            ["Tollgate:Stripe:ApiBaseUrl"] = _stripe.BaseUrl.ToString(),
            ["Tollgate:Billing:CreditPacks:starter:Name"] = "Starter pack",
            ["Tollgate:Billing:CreditPacks:starter:PriceCents"] = "500",
            ["Tollgate:Billing:CreditPacks:starter:Credits"] = "5000",
            ["Tollgate:Plans:pro:Name"] = "Pro",
            ["Tollgate:Plans:pro:MonthlyPriceCents"] = "1900",
            ["Tollgate:Plans:pro:IncludedRequests"] = "10000",
        });
    }

    /// <summary>An account with <paramref name="micros"/> of credits and a member of <paramref name="role"/>; returns (account id, email).</summary>
    private static async Task<(string AccountId, string Email)> AccountWithMemberAsync(TestApp app, string name, long micros, string role = "owner")
    {
        var accountId = await app.CreateAccountAsync(name);
        if (micros > 0) await app.GrantAsync(accountId, micros);
        var email = await AddMemberAsync(app, accountId, role);
        return (accountId, email);
    }

    private static async Task<string> AddMemberAsync(TestApp app, string accountId, string role)
    {
        var email = $"{role}-{Guid.NewGuid():N}@example.com";
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{Password}}","role":"{{role}}"}""")), HttpStatusCode.Created);
        return email;
    }

    private static async Task SignInAsync(IPage page, string email, string password = Password)
    {
        await page.GotoAsync("/");
        await page.GetByLabel("Email", new() { Exact = true }).FillAsync(email);
        await page.GetByLabel("Password", new() { Exact = true }).FillAsync(password);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        // The post lands on the dashboard (which has a Sign out button) or back on the form with an alert. Waiting for
        // either on the page itself: a load-state wait begun after the click once outlived a navigation that had ended.
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign out" }).Or(page.GetByRole(AriaRole.Alert)).First.WaitForAsync();
    }

    private static Task ShotAsync(IPage page, string name) => page.ScreenshotAsync(new() { Path = Browser.ScreenshotPath(name), FullPage = true });

    private static async Task<string> TextAsync(IPage page, string selector) => (await page.Locator(selector).TextContentAsync())!.Trim();

    /// <summary>The antiforgery token of the page's forms (every page has one, in the sign-out form at least).</summary>
    private static Task<string> CsrfAsync(IPage page) => page.Locator("input[name=__csrf]").First.InputValueAsync();

    private static async Task<int> LiveKeysAsync(TestApp app, string accountId) =>
        (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{accountId}/keys")).GetProperty("data").EnumerateArray()
        .Count(k => k.GetProperty("revoked_at").ValueKind == JsonValueKind.Null);

    [Theory, MemberData(nameof(Engines))]
    public async Task An_owner_signs_in_creates_a_key_seen_once_calls_the_gateway_and_sees_usage_and_balance_change(string engine)
    {
        var app = await AppAsync(engine);
        var (accountId, email) = await AccountWithMemberAsync(app, "Acme Robotics", 2_000_000);
        await using var context = await _browser.ContextAsync(app.BaseAddress);
        var page = await context.NewPageAsync();

        await SignInAsync(page, email);
        Assert.Equal("Acme Robotics", await TextAsync(page, "h1"));
        Assert.Equal(accountId, await TextAsync(page, "#account-id"));
        Assert.Equal("$2.00", await TextAsync(page, "#balance"));
        Assert.Equal("$2.00", await TextAsync(page, "#available"));
        var session = (await context.CookiesAsync()).Single(c => c.Name == "tg_session");
        Assert.True(session.HttpOnly);
        Assert.Equal(SameSiteAttribute.Strict, session.SameSite);
        Assert.StartsWith("tg_sess_", session.Value);

        await page.GetByRole(AriaRole.Link, new() { Name = "Keys", Exact = true }).ClickAsync();
        await page.GetByLabel("Name").FillAsync("browser key");
        await page.GetByLabel("Requests per minute").FillAsync("120");
        await page.GetByRole(AriaRole.Button, new() { Name = "Create key" }).ClickAsync();
        var key = await TextAsync(page, "#new-key");
        Assert.Matches("^tg_live_[A-Za-z0-9]+", key);
        Assert.Contains("120 req/min", await TextAsync(page, "#keys"));
        await ShotAsync(page, "keys");
        await page.ReloadAsync();
        Assert.Equal(0, await page.Locator("#new-key").CountAsync());
        Assert.DoesNotContain(key, await page.ContentAsync());
        Assert.Contains("browser key", await TextAsync(page, "#keys"));

        var usageBefore = await page.GotoAsync("/usage");
        Assert.True(usageBefore!.Ok, $"GET /usage: {usageBefore.Status} {await page.ContentAsync()}");
        Assert.Equal("0", await TextAsync(page, "#total-requests"));
        Assert.Equal(0, await page.Locator("#chart-days rect.bar[height]:not([height='0'])").CountAsync());

        // The key just shown works on the gateway.
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        var charges = 0L;
        foreach (var text in new[] { "Hello from the dashboard test", "and once more" })
        {
            var response = await client.PostAsync("/v1/chat/completions",
                AdminApi.JsonBody($$"""{"model":"demo/echo","messages":[{"role":"user","content":"{{text}}"}]}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            charges += long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single());
        }
        Assert.True(charges > 0);

        await page.GetByRole(AriaRole.Link, new() { Name = "Usage", Exact = true }).ClickAsync();
        Assert.Equal("page", await page.GetByRole(AriaRole.Link, new() { Name = "Usage", Exact = true }).GetAttributeAsync("aria-current"));
        // Usage records are written in batches: reload until both calls are in.
        for (var i = 0; i < 50 && await TextAsync(page, "#total-requests") != "2"; i++)
        {
            await Task.Delay(100);
            await page.ReloadAsync();
        }
        Assert.Equal("2", await TextAsync(page, "#total-requests"));
        var bars = await page.Locator("#chart-days rect.bar").EvaluateAllAsync<long[]>("bars => bars.map(b => Number(b.dataset.value))");
        Assert.Equal(30, bars.Length);
        Assert.Equal(charges, bars[^1]);
        Assert.Equal(charges, bars.Sum());
        Assert.Equal(1, await page.Locator("#chart-models rect.bar").CountAsync());
        Assert.Equal(2, await page.Locator("#recent tbody tr").CountAsync());
        Assert.Contains("demo/echo", await TextAsync(page, "#recent"));
        await page.GetByLabel("Billing status").SelectOptionAsync("needs_review");
        await page.GetByRole(AriaRole.Button, new() { Name = "Filter" }).ClickAsync();
        Assert.Contains("No usage yet", await TextAsync(page, "#recent"));
        await page.GotoAsync("/usage");
        await ShotAsync(page, "usage");

        await page.GetByRole(AriaRole.Link, new() { Name = "Overview" }).ClickAsync();
        var expected = 2_000_000 - charges;
        var balance = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{accountId}")).GetProperty("balance_micros").GetInt64();
        Assert.Equal(expected, balance);
        Assert.Equal(Tollgate.Features.Dashboard.Html.Usd(expected), await TextAsync(page, "#balance"));
        await ShotAsync(page, "overview");

        // Revoke from the page; the key stops working on the gateway (the authenticator caches for a second).
        await page.GotoAsync("/keys");
        await page.GetByRole(AriaRole.Button, new() { Name = "Revoke key browser key" }).ClickAsync();
        Assert.Contains("revoked", await TextAsync(page, "#keys"));
        Assert.Equal(0, await LiveKeysAsync(app, accountId));
        await Task.Delay(1100);
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"x"}]}"""))).StatusCode);

        // Signing out ends the session server-side too.
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign out" }).ClickAsync();
        Assert.Equal("Sign in", await TextAsync(page, "h1"));
        using var stolen = new HttpClient { BaseAddress = app.BaseAddress };
        stolen.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session.Value);
        Assert.Equal(HttpStatusCode.Unauthorized, (await stolen.GetAsync("/api/v1/account")).StatusCode);
    }

    [Fact]
    public async Task Buying_a_credit_pack_goes_through_stripe_checkout_and_the_signed_webhook_raises_the_balance()
    {
        var app = await AppAsync(TestDatabases.Sqlite);
        var (accountId, email) = await AccountWithMemberAsync(app, "Pack buyer", 1_000_000);
        await using var context = await _browser.ContextAsync(app.BaseAddress);
        var page = await context.NewPageAsync();
        // Stripe's hosted checkout is not reachable from a test: answer its address with a stand-in page.
        await page.RouteAsync("https://checkout.stripe.com/**", route => route.FulfillAsync(new()
        {
            Status = 200, ContentType = "text/html", Body = "<!doctype html><title>Stripe Checkout</title><h1>Pay $5.00</h1>",
        }));
        await SignInAsync(page, email);
        await page.GetByRole(AriaRole.Link, new() { Name = "Billing" }).ClickAsync();
        Assert.Contains("Pro", await TextAsync(page, "main"));
        Assert.Contains("$19.00", await TextAsync(page, "main"));
        await ShotAsync(page, "billing");

        await page.GetByRole(AriaRole.Button, new() { Name = "Buy Starter pack" }).ClickAsync();
        await page.WaitForURLAsync(new Regex("^https://checkout\\.stripe\\.com/c/pay/cs_test_"));
        var sessionId = page.Url[(page.Url.LastIndexOf('/') + 1)..];
        var created = _stripe.Sessions[sessionId];
        Assert.Equal(accountId, created.Field("metadata[tollgate_account]"));
        Assert.Equal("starter", created.Field("metadata[pack]"));
        Assert.Equal("500", created.Field("line_items[0][price_data][unit_amount]"));
        var amount = long.Parse(created.Field("metadata[amount_micros]")!);

        // Stripe tells Tollgate the session was paid, signed with the webhook secret.
        var payload = "{\"id\":\"evt_" + sessionId + "\",\"object\":\"event\",\"api_version\":\"2025-03-31.basil\",\"created\":" + DateTimeOffset.UtcNow.ToUnixTimeSeconds()
            + ",\"livemode\":false,\"type\":\"checkout.session.completed\",\"data\":{\"object\":"
            + $$$"""{"id":"{{{sessionId}}}","object":"checkout.session","mode":"payment","status":"complete","payment_status":"paid","amount_total":500,"currency":"usd","payment_intent":"pi_{{{sessionId}}}","client_reference_id":"{{{accountId}}}","metadata":{"tollgate_account":"{{{accountId}}}"}}"""
            + "}}";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Stripe-Signature", FakeStripe.Sign(payload, WebhookSecret, DateTimeOffset.UtcNow.ToUnixTimeSeconds()));
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.SendAsync(request)).StatusCode);

        // Stripe sends the buyer back to the success address.
        await page.GotoAsync("/billing/success?session_id=" + sessionId);
        Assert.Contains("Thank you", await TextAsync(page, "main"));
        Assert.Contains("starter", await TextAsync(page, "main"));
        await page.GetByRole(AriaRole.Link, new() { Name = "Overview" }).ClickAsync();
        Assert.Equal(Tollgate.Features.Dashboard.Html.Usd(1_000_000 + amount), await TextAsync(page, "#balance"));
    }

    [Fact]
    public async Task A_viewer_sees_no_change_buttons_and_posts_with_a_valid_token_are_still_refused()
    {
        var app = await AppAsync(TestDatabases.Sqlite);
        var (accountId, _) = await AccountWithMemberAsync(app, "Viewed", 1_000_000);
        var viewer = await AddMemberAsync(app, accountId, "viewer");
        var keyResponse = await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("""{"name":"ops"}""")), HttpStatusCode.Created);
        var keyId = keyResponse.GetProperty("id").GetString()!;
        await using var context = await _browser.ContextAsync(app.BaseAddress, width: 390, height: 844);
        var page = await context.NewPageAsync();
        await SignInAsync(page, viewer);
        Assert.Contains("viewer", await TextAsync(page, "header"));

        await page.GotoAsync("/keys");
        Assert.Contains("ops", await TextAsync(page, "#keys"));
        Assert.Equal(0, await page.GetByRole(AriaRole.Button, new() { Name = "Create key" }).CountAsync());
        Assert.Equal(0, await page.GetByRole(AriaRole.Button, new() { Name = "Revoke key ops" }).CountAsync());
        await ShotAsync(page, "keys-viewer-phone");
        await page.GotoAsync("/billing");
        Assert.Equal(0, await page.GetByRole(AriaRole.Button, new() { Name = "Buy Starter pack" }).CountAsync());

        // A POST the page never offered, with the viewer's own valid antiforgery token: refused by role.
        var token = await CsrfAsync(page);
        var create = await page.APIRequest.PostAsync("/keys", new() { Form = FormOf(page, ("__csrf", token), ("name", "sneaky")), MaxRedirects = 0 });
        Assert.Equal(403, create.Status);
        var revoke = await page.APIRequest.PostAsync($"/keys/{keyId}/revoke", new() { Form = FormOf(page, ("__csrf", token)), MaxRedirects = 0 });
        Assert.Equal(403, revoke.Status);
        var buy = await page.APIRequest.PostAsync("/billing/credits", new() { Form = FormOf(page, ("__csrf", token), ("pack", "starter")), MaxRedirects = 0 });
        Assert.Equal(403, buy.Status);
        // Without the token (a cross-site form would have none): refused before anything else.
        var forged = await page.APIRequest.PostAsync("/keys", new() { Form = FormOf(page, ("name", "forged")), MaxRedirects = 0 });
        Assert.Equal(400, forged.Status);
        Assert.Equal(1, await LiveKeysAsync(app, accountId));
        Assert.DoesNotContain(_stripe.Sessions.Values, s => s.Field("metadata[tollgate_account]") == accountId);
    }

    [Fact]
    public async Task An_owner_without_a_token_is_refused_and_never_reaches_another_accounts_keys()
    {
        var app = await AppAsync(TestDatabases.Sqlite);
        var (_, ownerA) = await AccountWithMemberAsync(app, "Account A", 0);
        var accountB = await app.CreateAccountAsync("Account B");
        var keyB = (await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountB}/keys", AdminApi.JsonBody("""{"name":"b-secret-key"}""")), HttpStatusCode.Created)).GetProperty("id").GetString()!;
        await using var context = await _browser.ContextAsync(app.BaseAddress);
        var page = await context.NewPageAsync();
        await SignInAsync(page, ownerA);
        await page.GotoAsync("/keys");
        Assert.DoesNotContain("b-secret-key", await page.ContentAsync());

        var token = await CsrfAsync(page);
        var revoke = await page.APIRequest.PostAsync($"/keys/{keyB}/revoke", new() { Form = FormOf(page, ("__csrf", token)), MaxRedirects = 0 });
        Assert.Equal(404, revoke.Status);
        Assert.Equal(1, await LiveKeysAsync(app, accountB));
        // A forged POST by the owner's browser (no token) changes nothing either.
        var forged = await page.APIRequest.PostAsync("/keys", new() { Form = FormOf(page, ("name", "forged")), MaxRedirects = 0 });
        Assert.Equal(400, forged.Status);
        // A token for another identity (anonymous sign-in page) does not validate for this session.
        await using var other = await _browser.ContextAsync(app.BaseAddress);
        var anonymous = await other.NewPageAsync();
        await anonymous.GotoAsync("/");
        var foreignToken = await CsrfAsync(anonymous);
        var mixed = await page.APIRequest.PostAsync("/keys", new() { Form = FormOf(page, ("__csrf", foreignToken), ("name", "mixed")), MaxRedirects = 0 });
        Assert.Equal(400, mixed.Status);
        Assert.Equal(0, (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{(await MemberAccountAsync(page))}/keys")).GetProperty("data").GetArrayLength());
    }

    private static async Task<string> MemberAccountAsync(IPage page)
    {
        var token = (await page.Context.CookiesAsync()).Single(c => c.Name == "tg_session").Value;
        using var client = new HttpClient { BaseAddress = new Uri(page.Url) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return (await client.GetFromJsonAsync<JsonElement>("/api/v1/account")).GetProperty("id").GetString()!;
    }

    [Fact]
    public async Task A_wrong_password_shows_an_error_and_sets_no_session()
    {
        var app = await AppAsync(TestDatabases.Sqlite);
        var (_, email) = await AccountWithMemberAsync(app, "Locked", 0);
        await using var context = await _browser.ContextAsync(app.BaseAddress);
        var page = await context.NewPageAsync();
        await page.GotoAsync("/");
        await ShotAsync(page, "sign-in");
        await SignInAsync(page, email, "not the password");
        Assert.Contains("Wrong email or password", await page.GetByRole(AriaRole.Alert).TextContentAsync());
        Assert.Equal(email, await page.GetByLabel("Email", new() { Exact = true }).InputValueAsync());
        Assert.DoesNotContain(await context.CookiesAsync(), c => c.Name == "tg_session");
        // The protected pages send an anonymous visitor back to the sign-in page.
        await page.GotoAsync("/keys");
        Assert.Equal("Sign in", await TextAsync(page, "h1"));
    }

    [Fact]
    public async Task The_operator_signs_in_with_the_admin_key_and_sees_accounts_pricing_review_and_reconciliation()
    {
        var app = await AppAsync(TestDatabases.Sqlite);
        var (accountId, member) = await AccountWithMemberAsync(app, "Operator visible", 3_500_000);
        // One billed call, so the margin page has this account's revenue to show.
        var key = await (await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("{}"))).Content.ReadFromJsonAsync<JsonElement>();
        using var caller = new HttpClient { BaseAddress = app.BaseAddress };
        caller.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key.GetProperty("key").GetString());
        var call = await caller.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"margin"}]}"""));
        var charge = long.Parse(call.Headers.GetValues("x-tollgate-charge-micros").Single());
        await using var context = await _browser.ContextAsync(app.BaseAddress);
        var page = await context.NewPageAsync();

        // A member is no operator.
        await SignInAsync(page, member);
        var memberSession = (await context.CookiesAsync()).Single(c => c.Name == "tg_session").Value;
        await page.GotoAsync("/admin");
        Assert.Equal("Operator sign-in", await TextAsync(page, "h1"));

        await page.GetByLabel("Admin key").FillAsync("tg_admin_wrong");
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        Assert.Contains("not an admin key", await page.GetByRole(AriaRole.Alert).TextContentAsync());
        await page.GetByLabel("Admin key").FillAsync(TestApp.AdminKey);
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        Assert.Equal("Accounts", await TextAsync(page, "h1"));
        var row = page.Locator("#accounts tr", new() { HasText = accountId });
        Assert.Contains(Tollgate.Features.Dashboard.Html.Usd(3_500_000 - charge), await row.TextContentAsync());
        Assert.DoesNotContain(await context.CookiesAsync(), c => c.Name == "tg_session");
        using (var stale = new HttpClient { BaseAddress = app.BaseAddress })
        {
            // Signing in as the operator ended the member's session, not just its cookie.
            stale.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", memberSession);
            Assert.Equal(HttpStatusCode.Unauthorized, (await stale.GetAsync("/api/v1/account")).StatusCode);
        }
        Assert.DoesNotContain(TestApp.AdminKey, (await context.CookiesAsync()).Single(c => c.Name == "tg_operator").Value);
        await ShotAsync(page, "admin-accounts");

        await page.GetByRole(AriaRole.Link, new() { Name = "Pricing" }).ClickAsync();
        await page.GetByLabel("Model contains").FillAsync("demo/echo");
        await page.GetByRole(AriaRole.Button, new() { Name = "Search" }).ClickAsync();
        Assert.Contains("demo/echo", await TextAsync(page, "#pricing"));
        await page.GetByRole(AriaRole.Link, new() { Name = "Margin" }).ClickAsync();
        await page.GetByLabel("Group by").SelectOptionAsync("account");
        await page.GetByRole(AriaRole.Button, new() { Name = "Show" }).ClickAsync();
        var marginRow = page.Locator("#margin tr", new() { HasText = accountId });
        Assert.Contains(Tollgate.Features.Dashboard.Html.Usd(charge), await marginRow.TextContentAsync());
        await ShotAsync(page, "admin-margin");
        await page.GetByRole(AriaRole.Link, new() { Name = "Needs review" }).ClickAsync();
        Assert.Equal("Needs review", await TextAsync(page, "h1"));
        await page.GetByRole(AriaRole.Link, new() { Name = "Reconciliation" }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Reconcile with Stripe" }).ClickAsync();
        Assert.Contains("checked", await TextAsync(page, "main"));

        await page.GetByRole(AriaRole.Button, new() { Name = "Sign out" }).ClickAsync();
        await page.GotoAsync("/admin");
        Assert.Equal("Operator sign-in", await TextAsync(page, "h1"));
    }

    private static IFormData FormOf(IPage page, params (string Name, string Value)[] fields)
    {
        var form = page.APIRequest.CreateFormData();
        foreach (var (name, value) in fields) form.Set(name, value);
        return form;
    }
}
