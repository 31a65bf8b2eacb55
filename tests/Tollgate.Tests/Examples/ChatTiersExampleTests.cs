using System.ClientModel;
using Anthropic.Models.Messages;
using OpenAI.Chat;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Payments.Stripe;

namespace Tollgate.Tests.Examples;

/// <summary>
/// examples/chat-tiers end to end: the example's own config file, a fake OpenAI/Anthropic upstream and a fake Stripe;
/// the chat app's user goes from Free to Pro through Stripe Checkout, brings their own Anthropic key and buys a pack.
/// </summary>
public sealed class ChatTiersExampleTests : IAsyncLifetime
{
    private const string WebhookSecret = "whsec_chat_tiers_test";
    private const string OperatorOpenAiKey = "sk-operator-openai";
    private readonly Ledger.ManualTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private FakeStripe _stripe = null!;
    private FakeUpstream _upstream = null!;

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync()
    {
        _stripe = await FakeStripe.StartAsync();
        _upstream = await FakeUpstream.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await _upstream.DisposeAsync();
        await _stripe.DisposeAsync();
    }

    private Task<TestApp> StartAsync(string engine) => ExampleApp.StartAsync("chat-tiers", engine, new Dictionary<string, string?>(_stripe.Settings(WebhookSecret))
    {
        // Test-only: the providers are the fake upstream; the operator has an OpenAI key but no Anthropic key.
        ["Tollgate:Providers:openai:BaseUrl"] = _upstream.OpenAiBaseUrl.ToString(),
        ["Tollgate:Providers:openai:ApiKey"] = OperatorOpenAiKey,
        ["Tollgate:Providers:anthropic:BaseUrl"] = _upstream.BaseUrl.ToString(),
        ["Tollgate:Providers:anthropic:ApiKeyEnv"] = "TOLLGATE_TEST_UNSET_ANTHROPIC_KEY",
    }, _clock);

    private static long Charge(ClientResult result) =>
        result.GetRawResponse().Headers.TryGetValue("x-tollgate-charge-micros", out var v) ? long.Parse(v!) : throw new InvalidOperationException("no charge header");

    private static async Task<(int Status, JsonElement Error)> RefusedAsync(Func<Task> call)
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(call);
        var body = JsonDocument.Parse(e.GetRawResponse()!.Content.ToString()).RootElement.Clone();
        return (e.Status, body.GetProperty("error"));
    }

    private static ChatCompletionOptions WithTool() => new()
    {
        Tools = { ChatTool.CreateFunctionTool("search_web", "Searches the web", BinaryData.FromString("""{"type":"object","properties":{"q":{"type":"string"}}}""")) },
    };

    [Theory, MemberData(nameof(Engines))]
    public async Task A_free_user_hits_the_message_quota_upgrades_through_Stripe_brings_their_own_key_and_buys_a_pack(string engine)
    {
        await using var app = await StartAsync(engine);

        // The packs on sale are the example's: 1 credit = 1 cent.
        var packs = (await app.Anonymous.GetJsonAsync("/api/v1/billing/credit-packs")).GetProperty("data").EnumerateArray()
            .Select(p => (p.GetProperty("id").GetString(), p.GetProperty("price_cents").GetInt64(), p.GetProperty("credits").GetInt64(), p.GetProperty("amount_micros").GetInt64())).ToList();
        Assert.Equal([("usd5", 500L, 500L, 5_000_000L), ("usd20", 2000L, 2500L, 25_000_000L)], packs);

        // Sign-up: the chat app's back end creates the account, a welcome grant of 100 credits and the user's key.
        var accountId = await app.CreateAccountAsync("Ada");
        await app.GrantAsync(accountId, 1_000_000, "welcome:" + accountId);
        var key = (await app.Admin.PostJsonAsync($"/admin/v1/accounts/{accountId}/keys", "{}", HttpStatusCode.Created)).GetProperty("key").GetString()!;
        using var user = ExampleApp.Client(app, key);
        var plan = await user.GetJsonAsync("/api/v1/plan");
        Assert.Equal("Free", plan.GetProperty("name").GetString());
        // The shipped default packs the example switched off cannot be bought either.
        var off = await user.PostJsonAsync("/api/v1/billing/checkout/credits", """{"pack":"usd10"}""", HttpStatusCode.BadRequest);
        Assert.Equal("unknown_pack", off.GetProperty("code").GetString());

        var openai = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), key);
        var small = openai.GetChatClient("openai/gpt-4o-mini");
        var mid = openai.GetChatClient("openai/gpt-4.1-mini");
        long charged = 0;

        // 50 messages a month on Free, then 429 quota_exceeded.
        for (var i = 1; i <= 50; i++)
        {
            var answer = await small.CompleteChatAsync([new UserChatMessage($"message number {i}")]);
            Assert.Equal($"echo: message number {i}", answer.Value.Content[0].Text);
            charged += Charge(answer);
        }
        var (status, error) = await RefusedAsync(() => small.CompleteChatAsync([new UserChatMessage("one more")]));
        Assert.Equal((429, "quota_exceeded", 50L), (status, error.GetProperty("code").GetString(), error.GetProperty("limit").GetInt64()));
        // Free has only the small model and no tools.
        (status, error) = await RefusedAsync(() => mid.CompleteChatAsync([new UserChatMessage("a harder question")]));
        Assert.Equal((403, "model_not_allowed"), (status, error.GetProperty("code").GetString()));
        (status, error) = await RefusedAsync(() => small.CompleteChatAsync([new UserChatMessage("search for this")], WithTool()));
        Assert.Equal((403, "feature_not_in_plan"), (status, error.GetProperty("code").GetString()));
        Assert.Equal(50, _upstream.Requests.Count(r => r.BearerToken == OperatorOpenAiKey && r.LastUserText.StartsWith("message number", StringComparison.Ordinal)));

        // Upgrade: a Stripe Checkout Session for Pro's monthly Price; Stripe's signed webhook activates the plan.
        var checkout = await user.PostJsonAsync("/api/v1/billing/checkout/subscription", """{"plan":"pro","interval":"month"}""", HttpStatusCode.Created);
        var sessionId = checkout.GetProperty("id").GetString()!;
        Assert.Equal(("subscription", "price_chat_pro_monthly"), (_stripe.Sessions[sessionId].Field("mode"), _stripe.Sessions[sessionId].Field("line_items[0][price]")));
        var now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var session = $$"""{"id":"{{sessionId}}","object":"checkout.session","mode":"subscription","status":"complete","payment_status":"paid","amount_total":999,"currency":"usd","subscription":"sub_chat_{{engine}}","customer":"cus_chat","client_reference_id":"{{accountId}}"}""";
        var outcome = await ExampleApp.DeliverStripeAsync(app, ExampleApp.StripeEvent("evt_upgrade_" + engine, "checkout.session.completed", session, now), WebhookSecret, now);
        Assert.Equal("subscribed", outcome.GetProperty("outcome").GetString());
        // The plan is read with the key, which every process caches for a second.
        _clock.Advance(TimeSpan.FromSeconds(2));
        plan = await user.GetJsonAsync("/api/v1/plan");
        Assert.Equal(("Pro", 1000L), (plan.GetProperty("name").GetString(), plan.GetProperty("quotas")[0].GetProperty("limit").GetInt64()));

        // The same calls now succeed: the small model again (a new period), the mid model, and a tool call.
        charged += Charge(await small.CompleteChatAsync([new UserChatMessage("one more")]));
        charged += Charge(await mid.CompleteChatAsync([new UserChatMessage("a harder question")]));
        var tooled = await small.CompleteChatAsync([new UserChatMessage("search for this")], WithTool());
        charged += Charge(tooled);
        Assert.Contains("search_web", _upstream.Requests[^1].RawBody);

        // Bring your own key: the user's Anthropic key is used for their Anthropic calls, recorded `byok`.
        const string ownKey = "sk-ant-ada-own-key-4242";
        var stored = await user.SendAsync(new HttpRequestMessage(HttpMethod.Put, "/api/v1/provider-keys/anthropic") { Content = Api.AdminApi.JsonBody($$"""{"api_key":"{{ownKey}}"}""") });
        Assert.Equal(HttpStatusCode.OK, stored.StatusCode);
        var anthropic = Sdks.Anthropic(app.BaseAddress, key);
        var message = await anthropic.Messages.Create(new MessageCreateParams
        {
            Model = "anthropic/claude-haiku-4-5", MaxTokens = 64, Messages = [new UserMessageParam("hello with my own key")],
        });
        Assert.True(message.Content[0].TryPickText(out var text) && text.Text == "echo: hello with my own key");
        Assert.Equal(ownKey, _upstream.Requests[^1].ApiKey);
        var byok = (await user.GetJsonAsync("/api/v1/usage?billing_status=byok")).GetProperty("data").EnumerateArray().ToList();
        var record = Assert.Single(byok);
        Assert.Equal("anthropic/claude-haiku-4-5", record.GetProperty("model").GetString());
        // Only the platform fee (5 % of the provider cost, rounded up) is charged for a BYOK call.
        var fee = record.GetProperty("user_price_micros").GetInt64();
        var cost = (await app.Admin.GetJsonAsync($"/admin/v1/usage?account_id={accountId}&billing_status=byok")).GetProperty("data")[0].GetProperty("provider_cost_micros").GetInt64();
        Assert.Equal((cost * 5 + 99) / 100, fee);
        charged += fee;

        // A $20 pack through Checkout: 2,500 credits, in the user's transactions.
        var pack = await ExampleApp.BuyPackAsync(app, user, accountId, "usd20", WebhookSecret, _clock.GetUtcNow().ToUnixTimeSeconds());
        var ledger = (await user.GetJsonAsync("/api/v1/ledger")).GetProperty("data").EnumerateArray().ToList();
        var topup = Assert.Single(ledger, e => e.GetProperty("code").GetString() == "topup");
        Assert.Equal(25_000_000, topup.GetProperty("amount_micros").GetInt64());
        var checkouts = (await user.GetJsonAsync("/api/v1/billing/checkouts")).GetProperty("data").EnumerateArray();
        Assert.Equal(25_000_000, checkouts.Single(c => c.GetProperty("id").GetString() == pack).GetProperty("credited_micros").GetInt64());

        // Every message was charged exactly once: welcome credits − calls + the pack.
        var account = await user.GetJsonAsync("/api/v1/account");
        Assert.Equal(1_000_000 - charged + 25_000_000, account.GetProperty("balance_micros").GetInt64());
        await Api.AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
