using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Tollgate.Features.Payments.Crypto;
using Tollgate.Tests.Infrastructure;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>Wallet linking by Sign-In with Ethereum over HTTP: nonces, strict message checks, signatures, single use.</summary>
public sealed class WalletApiTests(FakeChainFixture fixture) : IClassFixture<FakeChainFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;
    private const string Domain = "tollgate.example.com";
    private const string Uri = "https://tollgate.example.com/wallets";

    private static SiweMessage Message(TestWallet wallet, string nonce, DateTimeOffset issuedAt, DateTimeOffset? expires = null, string domain = Domain,
        long chainId = 8453) =>
        new(null, domain, wallet.ChecksumAddress, null, Uri, "1", chainId, nonce, issuedAt, expires, null, null, []);

    [Theory, MemberData(nameof(Engines))]
    public async Task Nonce_DescribesTheMessageToSign(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        var nonce = await customer.NonceAsync(wallet.Address);
        Assert.Matches("^[A-Za-z0-9]{16,}$", nonce.GetProperty("nonce").GetString());
        Assert.Equal(Domain, nonce.GetProperty("domain").GetString());
        Assert.Equal(Uri, nonce.GetProperty("uri").GetString());
        Assert.Equal(8453, nonce.GetProperty("chain_id").GetInt64());
        Assert.True(SiweMessage.TryParse(nonce.GetProperty("message").GetString(), out var m, out var error), error);
        Assert.Equal(wallet.ChecksumAddress, m!.Address);
        Assert.Equal(nonce.GetProperty("nonce").GetString(), m.Nonce);
        Assert.Equal(nonce.GetProperty("expiration_time").GetString(), SiweMessage.FormatTime(m.ExpirationTime!.Value));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Nonce_WithoutBody_GivesFieldsButNoMessage(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var response = await customer.Client.PostAsync("/api/v1/wallets/nonce", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(JsonValueKind.Null, body.GetProperty("message").ValueKind);
        Assert.Equal(Domain, body.GetProperty("domain").GetString());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_ValidSignature_LinksListsAndUnlinks(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);

        var listed = Assert.Single((await customer.Client.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray());
        Assert.Equal(wallet.ChecksumAddress, listed.GetProperty("address").GetString());

        Assert.Equal(HttpStatusCode.NoContent, (await customer.Client.DeleteAsync($"/api/v1/wallets/{wallet.ChecksumAddress}")).StatusCode);
        Assert.Empty((await customer.Client.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray());
        Assert.Equal(HttpStatusCode.NotFound, (await customer.Client.DeleteAsync($"/api/v1/wallets/{wallet.Address}")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_SignedByAnotherKey_Is400AndLinksNothing(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        var message = (await customer.NonceAsync(wallet.Address)).GetProperty("message").GetString()!;
        var response = await customer.LinkAsync(message, TestWallet.Random().PersonalSign(message));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_signature", await response.ProblemCodeAsync());
        Assert.Empty((await customer.Client.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray());

        // Garbage instead of a signature is the same error, not a crash.
        var garbage = await customer.LinkAsync(message, "0x" + new string('z', 130));
        Assert.Equal("invalid_signature", await garbage.ProblemCodeAsync());
        // The nonce was not spent by the bad attempts: the right signature still links.
        Assert.Equal(HttpStatusCode.Created, (await customer.LinkAsync(message, wallet.PersonalSign(message))).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_NonceNotIssuedOrIssuedToAnotherAccount_Is400InvalidNonce(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        var invented = Message(wallet, "Qm9vYmFyYmF6MTIz", DateTimeOffset.UtcNow).ToString();
        var response = await customer.LinkAsync(invented, wallet.PersonalSign(invented));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_nonce", await response.ProblemCodeAsync());

        var other = await app.CustomerAsync(0);
        var othersMessage = (await other.NonceAsync(wallet.Address)).GetProperty("message").GetString()!;
        var stolen = await customer.LinkAsync(othersMessage, wallet.PersonalSign(othersMessage));
        Assert.Equal(HttpStatusCode.BadRequest, stolen.StatusCode);
        Assert.Equal("invalid_nonce", await stolen.ProblemCodeAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_ExpiredMessage_Is400(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        var nonce = (await customer.NonceAsync()).GetProperty("nonce").GetString()!;
        var now = DateTimeOffset.UtcNow;
        var expired = Message(wallet, nonce, now.AddMinutes(-5), now.AddMinutes(-1)).ToString();
        var response = await customer.LinkAsync(expired, wallet.PersonalSign(expired));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("message_expired", await response.ProblemCodeAsync());
        Assert.Empty((await customer.Client.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_ReusedNonce_Is400NonceUsed(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        var message = (await customer.NonceAsync(wallet.Address)).GetProperty("message").GetString()!;
        var signature = wallet.PersonalSign(message);
        Assert.Equal(HttpStatusCode.Created, (await customer.LinkAsync(message, signature)).StatusCode);
        var replay = await customer.LinkAsync(message, signature);
        Assert.Equal(HttpStatusCode.BadRequest, replay.StatusCode);
        Assert.Equal("nonce_used", await replay.ProblemCodeAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_WrongDomainChainOrLayout_Is400(string engine)
    {
        var customer = await (await fixture.AppAsync(engine)).CustomerAsync(0);
        var wallet = TestWallet.Random();
        var nonce = (await customer.NonceAsync()).GetProperty("nonce").GetString()!;
        var now = DateTimeOffset.UtcNow;
        foreach (var (message, code) in new[]
        {
            (Message(wallet, nonce, now, now.AddMinutes(5), domain: "evil.example.com").ToString(), "domain_mismatch"),
            (Message(wallet, nonce, now, now.AddMinutes(5), chainId: 1).ToString(), "chain_mismatch"),
            (Message(wallet, nonce, now, now.AddMinutes(5)) + "\n", "invalid_siwe_message"),
            (Message(wallet, nonce, now, now.AddMinutes(5)).ToString().Replace(wallet.ChecksumAddress, wallet.Address), "invalid_siwe_message"),
        })
        {
            var response = await customer.LinkAsync(message, wallet.PersonalSign(message));
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal(code, await response.ProblemCodeAsync());
        }
        Assert.Empty((await customer.Client.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Link_WalletOfAnotherAccount_Is409(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var first = await app.CustomerAsync(0);
        var second = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await first.LinkWalletAsync(wallet);
        var message = (await second.NonceAsync(wallet.Address)).GetProperty("message").GetString()!;
        var response = await second.LinkAsync(message, wallet.PersonalSign(message));
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("wallet_linked_elsewhere", await response.ProblemCodeAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Wallets_Viewer_CanListButNotLink(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("crypto viewer");
        var email = $"viewer-{Guid.NewGuid():N}@example.com";
        Assert.Equal(HttpStatusCode.Created, (await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            Api.AdminApi.JsonBody($$"""{"email":"{{email}}","password":"viewer password 1","role":"viewer"}"""))).StatusCode);
        var signIn = await app.Anonymous.PostAsync("/api/v1/sessions", Api.AdminApi.JsonBody($$"""{"email":"{{email}}","password":"viewer password 1"}"""));
        var token = (await signIn.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString();
        using var viewer = new HttpClient { BaseAddress = app.BaseAddress };
        viewer.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);

        Assert.Equal(HttpStatusCode.OK, (await viewer.GetAsync("/api/v1/wallets")).StatusCode);
        var nonce = await viewer.PostAsync("/api/v1/wallets/nonce", Api.AdminApi.JsonBody("{}"));
        Assert.Equal(HttpStatusCode.Forbidden, nonce.StatusCode);
        Assert.Equal("forbidden", await nonce.ProblemCodeAsync());
    }

    [Fact]
    public async Task Crypto_Disabled_RoutesAreAbsent()
    {
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite);
        var customer = await app.CustomerAsync(0);
        Assert.Equal(HttpStatusCode.NotFound, (await customer.Client.PostAsync("/api/v1/wallets/nonce", null)).StatusCode);
    }

    [Fact]
    public async Task Crypto_EnabledWithoutTreasury_StopsStartUp()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:Enabled"] = "true",
            ["Tollgate:Crypto:RpcUrl"] = "http://127.0.0.1:1/",
        }));
        Assert.Contains("TreasuryAddress", e.ToString());
    }
}
