using System.ClientModel;
using System.Globalization;
using OpenAI.Chat;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Crypto;

namespace Tollgate.Tests.Examples;

/// <summary>
/// examples/crypto-credits end to end on a local EVM node (ganache, with a 6-decimal ERC-20 standing in for USDC): a
/// wallet signs up with Sign-In with Ethereum, manages its own API keys, tops up by a real token transfer verified on
/// chain (1 cent = 10 credits), calls a priced model (provider cost and 2.0× user price recorded) and an unpriced one
/// (answered, recorded needs_review, not debited), reads its usage history, summary and CSV export, and is rate-limited
/// when it confirms payments too often. Gateway calls use the official OpenAI .NET SDK against a fake OpenAI upstream.
/// </summary>
public sealed class CryptoCreditsExampleTests(GanacheNode node) : IClassFixture<GanacheNode>
{
    private const string PricedModel = "openai/gpt-4o-mini";
    private const string UnpricedModel = "openai/gpt-7-preview";

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task A_wallet_signs_up_tops_up_in_usdc_and_spends_credits_with_usage_records(string engine)
    {
        var usdc = await node.DeployTokenAsync(GanacheNode.Account0, 1_000_000_000_000);
        // A fresh treasury per run: both engines' apps watch the same chain.
        var treasury = TestWallet.Random().Address;
        await using var upstream = await FakeUpstream.StartAsync(_ => new FakeReply { Usage = new FakeUsage(1_200, 300) });
        await using var app = await Example.StartAsync("crypto-credits", engine, new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:RpcUrl"] = node.Url,
            ["Tollgate:Crypto:ChainId"] = GanacheNode.ChainId.ToString(CultureInfo.InvariantCulture),
            ["Tollgate:Crypto:UsdcContract"] = usdc,
            ["Tollgate:Crypto:TreasuryAddress"] = treasury,
            ["Tollgate:Providers:openai:BaseUrl"] = upstream.OpenAiBaseUrl.ToString(),
            ["Tollgate:Providers:openai:ApiKey"] = "sk-test-upstream",
        });

        // 1. Wallet sign-in: an unknown wallet signs up (the example turns WalletSignUp on) and owns a new, empty account.
        var wallet = new TestWallet(GanacheNode.Account0Key);
        var message = (await Dashboard.WalletSignInTests.SignInNonceAsync(app.Anonymous, wallet.Address)).GetProperty("message").GetString()!;
        var session = await Example.OkAsync(await Dashboard.WalletSignInTests.SignInAsync(app.Anonymous, message, wallet.PersonalSign(message)), HttpStatusCode.Created);
        Assert.Equal("owner", session.Str("role"));
        using var me = Example.Client(app, session.Str("token")!);
        var account = await me.GetFromJsonAsync<JsonElement>("/api/v1/account");
        Assert.Equal(0, account.Long("balance_micros"));
        Assert.Equal(wallet.ChecksumAddress, Assert.Single((await me.GetFromJsonAsync<JsonElement>("/api/v1/wallets")).EnumerateArray()).Str("address"));

        // 2. The user manages their own API keys: create (shown once), list, revoke.
        var key = await Example.OkAsync(await me.PostAsJsonAsync("/api/v1/keys", new { name = "laptop" }), HttpStatusCode.Created);
        var spare = await Example.OkAsync(await me.PostAsJsonAsync("/api/v1/keys", new { name = "spare" }), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.NoContent, (await me.DeleteAsync($"/api/v1/keys/{spare.Str("id")}")).StatusCode);
        var keys = (await me.GetFromJsonAsync<JsonElement>("/api/v1/keys")).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(2, keys.Count);
        Assert.All(keys, k => Assert.False(k.TryGetProperty("key", out _)));

        // 3. Top-up: 2.50 USDC from the signed-in wallet to the treasury, confirmed on chain → 2,500 credits (1 cent = 10 credits).
        var tx = await node.TransferAsync(usdc, GanacheNode.Account0, treasury, 2_500_000);
        var pending = await me.PostAsJsonAsync("/api/v1/payments/crypto/confirm", new { tx_hash = tx });
        Assert.Equal(HttpStatusCode.Accepted, pending.StatusCode);
        await node.MineAsync(11); // the example asks for 12 confirmations, its own block included
        var credited = await Example.OkAsync(await me.PostAsJsonAsync("/api/v1/payments/crypto/confirm", new { tx_hash = tx }));
        Assert.Equal("credited", credited.Str("status"));
        Assert.Equal(2_500_000, Assert.Single(credited.GetProperty("payments").EnumerateArray()).Long("credit_micros"));
        account = await me.GetFromJsonAsync<JsonElement>("/api/v1/account");
        Assert.Equal(2_500_000, account.Long("balance_micros"));
        Assert.Equal("2500", account.Str("balance_credits"));

        // 4. A priced call: provider cost from the catalog, user price at the 2.0 markup, debited exactly.
        var quote = await Example.OkAsync(await app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = PricedModel, input_tokens = 1_200, output_tokens = 300 }));
        var providerCost = quote.Long("provider_cost_micros");
        Assert.Equal(360, providerCost); // 1,200 × $0.15/M + 300 × $0.60/M (the catalog's gpt-4o-mini)
        var chatOptions = new ChatCompletionOptions { MaxOutputTokenCount = 512 };
        var openai = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), key.Str("key")!);
        var priced = await openai.GetChatClient(PricedModel).CompleteChatAsync([new UserChatMessage("Summarise this contract in one line.")], chatOptions);
        Assert.StartsWith("echo: ", priced.Value.Content[0].Text);
        Assert.Equal(2_500_000 - 2 * providerCost, (await me.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros"));

        // 5. A model without a known price is answered, recorded needs_review with no price, and nothing is debited.
        var unpriced = await openai.GetChatClient(UnpricedModel).CompleteChatAsync([new UserChatMessage("And now in French.")], chatOptions);
        Assert.StartsWith("echo: ", unpriced.Value.Content[0].Text);
        Assert.Equal(2_500_000 - 2 * providerCost, (await me.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros"));

        // 6. Usage history (newest first), as the user and as the operator (who also sees the provider cost).
        var history = (await me.GetFromJsonAsync<JsonElement>("/api/v1/usage")).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(2, history.Count);
        Assert.Equal(("gpt-7-preview", "needs_review", JsonValueKind.Null), (history[0].Str("model")!.Split('/')[^1], history[0].Str("billing_status"), history[0].GetProperty("user_price_micros").ValueKind));
        Assert.Equal(("billed", 2 * providerCost), (history[1].Str("billing_status"), history[1].Long("user_price_micros")));
        var accountId = session.Str("account_id");
        var operatorView = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage?account_id={accountId}")).GetProperty("data").EnumerateArray()
            .Single(r => r.Str("billing_status") == "billed");
        Assert.Equal((providerCost, 2 * providerCost), (operatorView.Long("provider_cost_micros"), operatorView.Long("user_price_micros")));
        var review = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage/needs-review?account_id={accountId}")).GetProperty("data");
        Assert.Single(review.EnumerateArray());

        // 7. Summary by model, and the CSV export (header row + one line per record).
        var summary = await me.GetFromJsonAsync<JsonElement>("/api/v1/usage/summary?group_by=model");
        Assert.Equal(2, summary.GetProperty("totals").Long("requests"));
        Assert.Equal(2 * providerCost, summary.GetProperty("totals").Long("user_price_micros"));
        var csv = (await me.GetStringAsync("/api/v1/usage/export?format=csv")).Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("id,occurred_at,created_at,model,", csv[0]);
        Assert.Equal(3, csv.Length);
        Assert.Contains(csv, l => l.Contains(",needs_review,", StringComparison.Ordinal));
        Assert.Contains(csv, l => l.Contains($",{2 * providerCost},billed,", StringComparison.Ordinal));

        // 8. Payment confirmation is rate-limited per account (6 a minute in this example): replays answer from the
        //    database until the limit, then 429 with Retry-After; the balance moved once.
        HttpResponseMessage? limited = null;
        var replays = 0;
        for (var i = 0; i < 6 && limited is null; i++)
        {
            var again = await me.PostAsJsonAsync("/api/v1/payments/crypto/confirm", new { tx_hash = tx });
            if (again.StatusCode == HttpStatusCode.TooManyRequests) limited = again;
            else Assert.Equal(HttpStatusCode.OK, again.StatusCode);
            if (limited is null) replays++;
        }
        Assert.NotNull(limited);
        Assert.Equal(6 - 2, replays); // the two confirms above counted too
        Assert.Equal("rate_limited", await limited.ProblemCodeAsync());
        Assert.True(limited.Headers.RetryAfter is not null);
        Assert.Equal(2_500_000 - 2 * providerCost, (await me.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros"));

        // A revoked key no longer reaches the gateway.
        var revoked = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), spare.Str("key")!);
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => revoked.GetChatClient(PricedModel).CompleteChatAsync([new UserChatMessage("hi")], chatOptions));
        Assert.Equal(401, refused.Status);
    }
}
