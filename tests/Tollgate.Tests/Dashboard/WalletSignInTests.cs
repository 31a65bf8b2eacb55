using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Tollgate.Features.Payments.Crypto;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Crypto;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// Wallet sign-in (Sign-In with Ethereum) over HTTP, with messages signed by test private keys: a linked wallet gets a
/// session in its account; replayed nonces, wrong domain or chain, expired messages, foreign signatures and unlinked
/// wallets are refused and create nothing. No chain is needed (the watcher is off, so the RPC URL is never called).
/// </summary>
public sealed class WalletSignInTests() : EngineApps(new Dictionary<string, string?>(Settings(signUp: false)) { ["Tollgate:Dashboard:SecureCookies"] = "true" })
{
    internal const string Domain = "tollgate.example.com";
    internal const string Uri = "https://tollgate.example.com";

    internal static Dictionary<string, string?> Settings(bool signUp) => new()
    {
        ["Tollgate:Crypto:Enabled"] = "true",
        ["Tollgate:Crypto:RpcUrl"] = "http://127.0.0.1:9/",
        ["Tollgate:Crypto:WatcherEnabled"] = "false",
        ["Tollgate:Crypto:ScanIntervalSeconds"] = "3600",
        ["Tollgate:Crypto:TreasuryAddress"] = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        ["Tollgate:Crypto:SiweDomain"] = Domain,
        ["Tollgate:Crypto:SiweUri"] = Uri,
        ["Tollgate:Dashboard:WalletSignUp"] = signUp ? "true" : "false",
    };

    internal static async Task<JsonElement> SignInNonceAsync(HttpClient anonymous, string? address = null)
    {
        var response = await anonymous.PostAsync("/api/v1/sessions/wallet/nonce", AdminApi.JsonBody(address is null ? "{}" : $$"""{"address":"{{address}}"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    internal static Task<HttpResponseMessage> SignInAsync(HttpClient anonymous, string message, string signature) =>
        anonymous.PostAsJsonAsync("/api/v1/sessions/wallet", new { message, signature });

    private static SiweMessage Message(TestWallet wallet, string nonce, DateTimeOffset issuedAt, DateTimeOffset? expires = null, string domain = Domain, long chainId = 8453) =>
        new(null, domain, wallet.ChecksumAddress, null, Uri, "1", chainId, nonce, issuedAt, expires, null, null, []);

    private static async Task<int> SessionCountAsync(TestApp app)
    {
        await using var c = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenAsync(default);
        await using var command = c.CreateCommand();
        command.CommandText = "SELECT count(*) FROM sessions";
        return Convert.ToInt32(await command.ExecuteScalarAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_linked_wallet_signs_in_to_its_account_and_its_nonce_cannot_be_replayed(string engine)
    {
        var app = App(engine);
        using var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);

        var nonce = await SignInNonceAsync(app.Anonymous, wallet.Address);
        var message = nonce.GetProperty("message").GetString()!;
        Assert.True(SiweMessage.TryParse(message, out var parsed, out var error), error);
        Assert.Equal((Domain, Uri, wallet.ChecksumAddress, 8453L), (parsed!.Domain, parsed.Uri, parsed.Address, parsed.ChainId));
        var signature = wallet.PersonalSign(message);
        var response = await SignInAsync(app.Anonymous, message, signature);
        var session = await MeteringApi.BodyAsync(response, HttpStatusCode.Created);
        Assert.Equal(customer.AccountId, session.Str("account_id"));
        Assert.Equal("admin", session.Str("role"));

        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session.Str("token"));
        Assert.Equal(customer.AccountId, (await client.GetFromJsonAsync<JsonElement>("/api/v1/account")).Str("id"));
        var members = await client.GetFromJsonAsync<JsonElement>("/api/v1/members");
        Assert.Contains(members.GetProperty("data").EnumerateArray(), m => m.Str("email") == wallet.Address + "@wallet.invalid" && m.Str("role") == "admin");

        var sessions = await SessionCountAsync(app);
        var replay = await SignInAsync(app.Anonymous, message, signature);
        Assert.Equal(HttpStatusCode.BadRequest, replay.StatusCode);
        Assert.Equal("nonce_used", await replay.ProblemCodeAsync());
        Assert.Equal(sessions, await SessionCountAsync(app));

        // A second sign-in (new nonce) is the same user, not a second member.
        var again = (await SignInNonceAsync(app.Anonymous, wallet.ChecksumAddress)).GetProperty("message").GetString()!;
        await MeteringApi.BodyAsync(await SignInAsync(app.Anonymous, again, wallet.PersonalSign(again)), HttpStatusCode.Created);
        var after = await client.GetFromJsonAsync<JsonElement>("/api/v1/members");
        Assert.Single(after.GetProperty("data").EnumerateArray(), m => m.Str("email") == wallet.Address + "@wallet.invalid");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Wrong_domain_wrong_chain_expired_and_foreign_signatures_are_refused_without_a_session(string engine)
    {
        var app = App(engine);
        using var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);
        var sessions = await SessionCountAsync(app);
        var now = DateTimeOffset.UtcNow;

        async Task Refused(string message, string signature, HttpStatusCode status, string code)
        {
            var response = await SignInAsync(app.Anonymous, message, signature);
            Assert.Equal(status, response.StatusCode);
            Assert.Equal(code, await response.ProblemCodeAsync());
        }

        var nonce = (await SignInNonceAsync(app.Anonymous)).GetProperty("nonce").GetString()!;
        var phished = Message(wallet, nonce, now, domain: "tollgate.example.com.evil.test").ToString();
        await Refused(phished, wallet.PersonalSign(phished), HttpStatusCode.BadRequest, "domain_mismatch");
        var otherChain = Message(wallet, nonce, now, chainId: 1).ToString();
        await Refused(otherChain, wallet.PersonalSign(otherChain), HttpStatusCode.BadRequest, "chain_mismatch");
        var expired = Message(wallet, nonce, now.AddMinutes(-10), now.AddMinutes(-1)).ToString();
        await Refused(expired, wallet.PersonalSign(expired), HttpStatusCode.BadRequest, "message_expired");
        var good = Message(wallet, nonce, now, now.AddMinutes(5)).ToString();
        await Refused(good, TestWallet.Random().PersonalSign(good), HttpStatusCode.Unauthorized, "invalid_signature");
        await Refused(good, "0x" + new string('0', 130), HttpStatusCode.Unauthorized, "invalid_signature");
        // A message whose nonce we never issued, and one issued for linking a wallet (to an account), do not sign anyone in.
        var invented = Message(wallet, "Inv3ntedNonce123", now).ToString();
        await Refused(invented, wallet.PersonalSign(invented), HttpStatusCode.BadRequest, "invalid_nonce");
        var linkNonce = (await customer.NonceAsync()).GetProperty("nonce").GetString()!;
        var linkMessage = Message(wallet, linkNonce, now).ToString();
        await Refused(linkMessage, wallet.PersonalSign(linkMessage), HttpStatusCode.BadRequest, "invalid_nonce");
        await Refused("not a SIWE message", "0x00", HttpStatusCode.BadRequest, "invalid_siwe_message");
        Assert.Equal(sessions, await SessionCountAsync(app));

        // None of the refusals used the nonce up: the correctly signed message still signs in, once.
        await MeteringApi.BodyAsync(await SignInAsync(app.Anonymous, good, wallet.PersonalSign(good)), HttpStatusCode.Created);
        Assert.Equal(sessions + 1, await SessionCountAsync(app));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_unlinked_wallet_is_refused_when_sign_up_is_off_and_nobody_can_take_its_user_email(string engine)
    {
        var app = App(engine);
        var wallet = TestWallet.Random();
        var message = (await SignInNonceAsync(app.Anonymous, wallet.Address)).GetProperty("message").GetString()!;
        var response = await SignInAsync(app.Anonymous, message, wallet.PersonalSign(message));
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("wallet_not_linked", await response.ProblemCodeAsync());

        // Linking it afterwards makes the very same signed message work (the refusal did not spend the nonce).
        using var customer = await app.CustomerAsync(0);
        await customer.LinkWalletAsync(wallet);
        var session = await MeteringApi.BodyAsync(await SignInAsync(app.Anonymous, message, wallet.PersonalSign(message)), HttpStatusCode.Created);
        Assert.Equal(customer.AccountId, session.Str("account_id"));

        // The wallet user's address-at-wallet.invalid e-mail cannot be given to a password user (which would share its memberships).
        var grab = await customer.Client.PostAsync("/api/v1/members",
            AdminApi.JsonBody($$"""{"email":"{{TestWallet.Random().Address}}@wallet.invalid","password":"0123456789abc","role":"member"}"""));
        Assert.Equal(HttpStatusCode.BadRequest, grab.StatusCode);
    }

    [Fact]
    public async Task With_sign_up_on_an_unknown_wallet_gets_its_own_account_as_owner_and_returns_to_it()
    {
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, Settings(signUp: true));
        var wallet = TestWallet.Random();
        var first = (await SignInNonceAsync(app.Anonymous, wallet.Address)).GetProperty("message").GetString()!;
        var session = await MeteringApi.BodyAsync(await SignInAsync(app.Anonymous, first, wallet.PersonalSign(first)), HttpStatusCode.Created);
        Assert.Equal("owner", session.Str("role"));
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session.Str("token"));
        var account = await client.GetFromJsonAsync<JsonElement>("/api/v1/account");
        Assert.Equal(session.Str("account_id"), account.Str("id"));
        Assert.Equal(0, account.Long("balance_micros"));
        var wallets = await client.GetFromJsonAsync<JsonElement>("/api/v1/wallets");
        Assert.Equal(wallet.ChecksumAddress, Assert.Single(wallets.EnumerateArray()).Str("address"));

        var second = (await SignInNonceAsync(app.Anonymous, wallet.Address)).GetProperty("message").GetString()!;
        var again = await MeteringApi.BodyAsync(await SignInAsync(app.Anonymous, second, wallet.PersonalSign(second)), HttpStatusCode.Created);
        Assert.Equal(session.Str("account_id"), again.Str("account_id"));
        Assert.Equal("owner", again.Str("role"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_dashboard_form_needs_its_token_and_sets_the_same_session_cookie_as_a_password_sign_in(string engine)
    {
        var app = App(engine);
        using var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);
        using var browser = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = app.BaseAddress };
        var page = await browser.GetAsync("/");
        var html = await page.Content.ReadAsStringAsync();
        Assert.Contains("Sign in with wallet", html);
        Assert.Contains("<script src=\"/dashboard-wallet.js\" defer></script>", html);
        var csrfCookie = page.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("tg_csrf=", StringComparison.Ordinal)).Split(';')[0];
        var token = Regex.Match(html, "name=\"__csrf\" value=\"([^\"]+)\"").Groups[1].Value;
        var script = await browser.GetAsync("/dashboard-wallet.js");
        Assert.Equal("text/javascript", script.Content.Headers.ContentType!.MediaType);
        Assert.Contains("personal_sign", await script.Content.ReadAsStringAsync());

        var message = (await SignInNonceAsync(app.Anonymous, wallet.Address)).GetProperty("message").GetString()!;
        // A browser submits the hidden field's line breaks as CRLF (HTML form encoding); the signature is over the LF text.
        HttpRequestMessage Form(string? csrf, string signature) => new(HttpMethod.Post, "/sign-in/wallet")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string>
            {
                ["message"] = message.Replace("\n", "\r\n", StringComparison.Ordinal), ["signature"] = signature, ["__csrf"] = csrf ?? "",
            }),
            Headers = { { "Cookie", csrfCookie } },
        };
        static bool SetsSession(HttpResponseMessage r) => r.Headers.TryGetValues("Set-Cookie", out var all) && all.Any(c => c.StartsWith("tg_session=", StringComparison.Ordinal));

        var forged = await browser.SendAsync(Form(null, wallet.PersonalSign(message)));
        Assert.Equal(HttpStatusCode.BadRequest, forged.StatusCode);
        Assert.False(SetsSession(forged));
        var wrongKey = await browser.SendAsync(Form(token, TestWallet.Random().PersonalSign(message)));
        Assert.Equal(HttpStatusCode.Unauthorized, wrongKey.StatusCode);
        Assert.Contains("Wallet sign-in failed", await wrongKey.Content.ReadAsStringAsync());
        Assert.False(SetsSession(wrongKey));

        var signedIn = await browser.SendAsync(Form(token, wallet.PersonalSign(message)));
        Assert.Equal(HttpStatusCode.Redirect, signedIn.StatusCode);
        var session = signedIn.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("tg_session=", StringComparison.Ordinal));
        Assert.StartsWith("tg_session=tg_sess_", session);
        foreach (var attribute in new[] { "secure", "httponly", "samesite=strict", "path=/", "expires=" }) Assert.Contains(attribute, session.ToLowerInvariant());
        using var api = new HttpClient { BaseAddress = app.BaseAddress };
        api.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session.Split(';')[0]["tg_session=".Length..]);
        Assert.Equal(customer.AccountId, (await api.GetFromJsonAsync<JsonElement>("/api/v1/account")).Str("id"));
    }
}
