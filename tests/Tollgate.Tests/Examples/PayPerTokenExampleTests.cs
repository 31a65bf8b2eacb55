using System.ClientModel;
using OpenAI.Chat;
using Tollgate.Tests.Api;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Examples;

/// <summary>
/// examples/pay-per-token end to end: a coding-task API priced $0.015 / $0.045 per 1K input / output tokens. The operator
/// grants credits and issues a standard and an internal key; the customer's app calls the gateway with the official
/// OpenAI SDK (workspaces as end customers) against a fake Anthropic upstream that reports the worked example's usage.
/// </summary>
public sealed class PayPerTokenExampleTests
{
    private const string Model = "anthropic/claude-sonnet-4-5";
    private const long WorkedExampleMicros = 103_080; // 6,548 × $0.015/1K + 108 × $0.045/1K = $0.09822 + $0.00486
    private const long GrantMicros = 500_000;

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Worked_example_internal_keys_caps_workspaces_and_402_when_the_balance_runs_out(string engine)
    {
        // The upstream reports the worked example's usage for every call (the coding agent's prompt and answer).
        await using var upstream = await FakeUpstream.StartAsync(_ => new FakeReply { Usage = new FakeUsage(6_548, 108) });
        await using var app = await Example.StartAsync("pay-per-token", engine, new Dictionary<string, string?>
        {
            ["Tollgate:Providers:anthropic:BaseUrl"] = upstream.BaseUrl.ToString(),
            ["Tollgate:Providers:anthropic:ApiKey"] = "sk-ant-test-upstream",
        });

        // The published price: the quote for the worked example is exact.
        var quote = await Example.OkAsync(await app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = Model, input_tokens = 6_548, output_tokens = 108 }));
        Assert.Equal(WorkedExampleMicros, quote.GetProperty("user_price_micros").GetInt64());
        Assert.Equal("0.10308", quote.GetProperty("user_price_usd").GetString());

        // Operator: an account, a credit grant (idempotent), a standard key, an internal key and a second standard key.
        var accountId = await app.CreateAccountAsync("Acme Robotics");
        var grant = new { amount_micros = GrantMicros, idempotency_key = "welcome-credit", reason = "welcome credit" };
        var granted = await Example.OkAsync(await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{accountId}/credits", grant));
        Assert.Equal((GrantMicros, false), (granted.Long("balance_micros"), granted.GetProperty("replayed").GetBoolean()));
        var replayed = await Example.OkAsync(await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{accountId}/credits", grant));
        Assert.Equal((GrantMicros, true), (replayed.Long("balance_micros"), replayed.GetProperty("replayed").GetBoolean()));
        async Task<JsonElement> KeyAsync(object body) => await Example.OkAsync(await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{accountId}/keys", body), HttpStatusCode.Created);
        var standard = await KeyAsync(new { name = "production", type = "standard" });
        var internalKey = await KeyAsync(new { name = "ci-evals", type = "internal" });
        var capped = await KeyAsync(new { name = "intern sandbox", type = "standard" });
        using var api = Example.Client(app, standard.Str("key")!);
        var balance = async () => (await api.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros");

        // Budget protection: daily and monthly caps per key; the sandbox key's daily cap is below one call's hold.
        await Example.OkAsync(await api.PutAsJsonAsync($"/api/v1/keys/{standard.Str("id")}/spend-caps", new { daily_micros = 2_000_000, monthly_micros = 20_000_000 }));
        await Example.OkAsync(await api.PutAsJsonAsync($"/api/v1/keys/{capped.Str("id")}/spend-caps", new { daily_micros = 50_000 }));

        var messages = new List<ChatMessage> { new SystemChatMessage("You are a coding agent."), new UserChatMessage("Fix the failing test in src/parser.rs.") };
        ChatCompletionOptions For(string workspace) => new() { MaxOutputTokenCount = 4_096, EndUserId = workspace };
        var chat = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), standard.Str("key")!).GetChatClient(Model);

        // 1. The worked example, billed: exactly $0.10308.
        var first = await chat.CompleteChatAsync(messages, For("acme-web"));
        Assert.Equal(6_548, first.Value.Usage.InputTokenCount);
        Assert.Equal(108, first.Value.Usage.OutputTokenCount);
        Assert.True(first.GetRawResponse().Headers.TryGetValue("x-tollgate-charge-micros", out var charge));
        Assert.Equal(WorkedExampleMicros, long.Parse(charge!, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(GrantMicros - WorkedExampleMicros, await balance());
        Assert.Equal("sk-ant-test-upstream", upstream.Requests[^1].ApiKey);

        // 2. The internal key's call is priced the same but never debited.
        var internalChat = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), internalKey.Str("key")!).GetChatClient(Model);
        await internalChat.CompleteChatAsync(messages, For("internal-evals"));
        Assert.Equal(GrantMicros - WorkedExampleMicros, await balance());
        var internalRecord = Assert.Single((await api.GetFromJsonAsync<JsonElement>($"/api/v1/usage?billing_status=internal")).GetProperty("data").EnumerateArray());
        Assert.Equal(WorkedExampleMicros, internalRecord.Long("user_price_micros"));
        Assert.Equal(internalKey.Str("id"), internalRecord.Str("key_id"));

        // 3. The sandbox key's daily cap refuses a call it cannot cover: 402 budget_exceeded, nothing charged.
        var sandbox = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), capped.Str("key")!).GetChatClient(Model);
        var capError = await Assert.ThrowsAsync<ClientResultException>(() => sandbox.CompleteChatAsync(messages, For("acme-web")));
        Assert.Equal(402, capError.Status);
        Assert.Equal("budget_exceeded", capError.GetRawResponse()!.Content.ToObjectFromJson<JsonElement>().GetProperty("error").Str("code"));
        Assert.Equal(GrantMicros - WorkedExampleMicros, await balance());

        // 4. Spend down in another workspace until the balance cannot cover the next call: 402, and nothing went negative.
        var billedCalls = 1;
        ClientResultException? refused = null;
        for (var i = 0; i < 10 && refused is null; i++)
        {
            try
            {
                await chat.CompleteChatAsync(messages, For("globex-ci"));
                billedCalls++;
                Assert.True(await balance() >= 0);
            }
            catch (ClientResultException e)
            {
                refused = e;
            }
        }
        Assert.NotNull(refused);
        Assert.Equal(402, refused.Status);
        var error = refused.GetRawResponse()!.Content.ToObjectFromJson<JsonElement>().GetProperty("error");
        Assert.Equal("insufficient_credits", error.Str("code"));
        var left = await balance();
        Assert.Equal(GrantMicros - billedCalls * WorkedExampleMicros, left);
        Assert.InRange(left, 0, WorkedExampleMicros - 1);
        Assert.Equal(left, error.Long("available_micros"));
        Assert.True(error.Long("required_micros") > left);
        Assert.Equal(0, (await api.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("held_micros"));

        // Usage by workspace (end customer): what each was charged, billed records only.
        var byWorkspace = (await api.GetFromJsonAsync<JsonElement>("/api/v1/usage/summary?group_by=customer&billing_status=billed"))
            .GetProperty("data").EnumerateArray().ToDictionary(r => r.Str("key") ?? "", r => r.Long("user_price_micros"));
        Assert.Equal(WorkedExampleMicros, byWorkspace["acme-web"]);
        Assert.Equal((billedCalls - 1) * WorkedExampleMicros, byWorkspace["globex-ci"]);
        Assert.False(byWorkspace.ContainsKey("internal-evals"));
        var caps = await api.GetFromJsonAsync<JsonElement>($"/api/v1/keys/{standard.Str("id")}/spend-caps");
        Assert.All(caps.GetProperty("caps").EnumerateArray(), c => Assert.Equal(billedCalls * WorkedExampleMicros, c.Long("spent_micros")));

        // The operator tops the account up again: the same calls go through.
        await app.GrantAsync(accountId, 1_000_000, "top-up-2");
        await chat.CompleteChatAsync(messages, For("globex-ci"));
        Assert.Equal(left + 1_000_000 - WorkedExampleMicros, await balance());
    }
}
