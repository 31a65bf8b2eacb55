using System.Net;
using System.Text;
using Anthropic.Models.Messages;
using OpenAI.Chat;
using Tollgate.Features.Metering;
using Tollgate.Tests.Api;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Gateway;

/// <summary>One fake provider (OpenAI and Anthropic wire formats) behind one Tollgate per engine, shared by a test class.</summary>
public sealed class GatewayUpstreamFixture : IAsyncLifetime
{
    public const string OpenAiKey = "sk-fake-openai-123";
    public const string AnthropicKey = "sk-ant-fake-456";
    private readonly Dictionary<string, Task<TestApp>> _apps = new();

    public FakeUpstream Fake { get; private set; } = null!;

    public Task<TestApp> AppAsync(string engine)
    {
        lock (_apps)
        {
            if (!_apps.TryGetValue(engine, out var app)) _apps[engine] = app = TestApp.StartAsync(engine, Settings(Fake));
            return app;
        }
    }

    public static Dictionary<string, string?> Settings(FakeUpstream fake) => new()
    {
        // Catalog providers pointed at the fake, so catalog prices apply (openai/gpt-4o-mini, anthropic/claude-sonnet-4-5).
        ["Tollgate:Providers:openai:BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
        ["Tollgate:Providers:openai:ApiKey"] = OpenAiKey,
        ["Tollgate:Providers:anthropic:BaseUrl"] = fake.BaseUrl.ToString(),
        ["Tollgate:Providers:anthropic:ApiKey"] = AnthropicKey,
        // A provider nobody listens for (connection refused), falling back to OpenAI.
        ["Tollgate:Providers:down:Kind"] = "openai",
        ["Tollgate:Providers:down:BaseUrl"] = "http://127.0.0.1:9/v1",
        ["Tollgate:Providers:down:ApiKey"] = "sk-down",
        ["Tollgate:Pricing:Models:down/model:InputMtok"] = "0.15",
        ["Tollgate:Pricing:Models:down/model:OutputMtok"] = "0.60",
        ["Tollgate:Gateway:Fallbacks:down/model:0"] = "openai/gpt-4o-mini",
        // The fake again, with a one-second patience.
        ["Tollgate:Providers:slow:Kind"] = "openai",
        ["Tollgate:Providers:slow:BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
        ["Tollgate:Providers:slow:ApiKey"] = "sk-slow",
        ["Tollgate:Providers:slow:FirstByteTimeoutSeconds"] = "1",
        ["Tollgate:Pricing:Models:slow/model:InputMtok"] = "0.15",
        ["Tollgate:Pricing:Models:slow/model:OutputMtok"] = "0.60",
        // The fake again, with two seconds for the whole call (a stream that stalls midway).
        ["Tollgate:Providers:stall:Kind"] = "openai",
        ["Tollgate:Providers:stall:BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
        ["Tollgate:Providers:stall:ApiKey"] = "sk-stall",
        ["Tollgate:Providers:stall:TimeoutSeconds"] = "2",
        ["Tollgate:Providers:stall:FirstByteTimeoutSeconds"] = "1",
        ["Tollgate:Pricing:Models:stall/model:InputMtok"] = "0.15",
        ["Tollgate:Pricing:Models:stall/model:OutputMtok"] = "0.60",
        // No operator key: callable only with a customer's own key.
        ["Tollgate:Providers:byokonly:Kind"] = "openai",
        ["Tollgate:Providers:byokonly:BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
        ["Tollgate:Pricing:Models:byokonly/model:InputMtok"] = "0.15",
        ["Tollgate:Pricing:Models:byokonly/model:OutputMtok"] = "0.60",
    };

    public async Task InitializeAsync() => Fake = await FakeUpstream.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await (await app).DisposeAsync();
        await Fake.DisposeAsync();
    }
}

/// <summary>
/// The gateway driven by the official OpenAI and Anthropic SDKs (and raw HTTP where an SDK hides the wire) against a
/// fake provider. Prices are hand-computed from the catalog: gpt-4o-mini $0.15 input, $0.075 cached input, $0.60
/// output per million tokens; claude-sonnet-4-5 $3 input, $0.30 cache read, $3.75 cache write, $15 output; markup 2.0.
/// </summary>
public sealed class GatewayUpstreamTests(GatewayUpstreamFixture fixture) : IClassFixture<GatewayUpstreamFixture>, IDisposable
{
    public static TheoryData<string> Engines => TestDatabases.Engines;
    private FakeUpstream Fake => fixture.Fake;

    public void Dispose()
    {
        Fake.Script = null;
        Fake.ClearRequests();
    }

    private static ChatClient OpenAi(TestApp app, Customer c, string model = "openai/gpt-4o-mini") =>
        Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), c.Key).GetChatClient(model);

    private static async Task<UsageRecord> RecordAsync(TestApp app, Customer c, string requestId) =>
        await app.Get<IUsageStore>().GetAsync(c.AccountId, requestId, CancellationToken.None) ?? throw new Xunit.Sdk.XunitException("no usage record " + requestId);

    private static async Task<UsageRecord> OnlyRecordAsync(TestApp app, Customer c)
    {
        var records = await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None);
        return Assert.Single(records);
    }

    private static async Task AssertBalanceAsync(Customer c, long balance)
    {
        var account = await c.AccountAsync();
        Assert.Equal((balance, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
    }

    // 176 uncached × 0.15 + 1,024 cached × 0.075 + 300 output × 0.60 = 283.2 µ$ cost; × 2.0 = 566.4 → 567 (reasoning is inside output).
    private static readonly FakeUsage CachedUsage = new(Input: 1200, Output: 300, CacheRead: 1024, Reasoning: 128);
    private const long CachedUsagePrice = 567;

    [Theory, MemberData(nameof(Engines))]
    public async Task The_openai_sdk_is_charged_exactly_the_rating_of_the_reported_usage(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Usage = CachedUsage };

        ChatCompletion completion = await OpenAi(app, c).CompleteChatAsync([new UserChatMessage("what does caching cost")]);

        Assert.Equal("echo: what does caching cost", completion.Content[0].Text);
        Assert.Equal(1024, completion.Usage.InputTokenDetails.CachedTokenCount);
        await AssertBalanceAsync(c, 1_000_000 - CachedUsagePrice);
        var forwarded = Assert.Single(Fake.Requests);
        Assert.Equal(("gpt-4o-mini", GatewayUpstreamFixture.OpenAiKey), (forwarded.Model, forwarded.BearerToken));
        Assert.Null(forwarded.Header("traceparent"));
        var record = await OnlyRecordAsync(app, c);
        Assert.Equal((1200L, 300L, 1024L, 128L, CachedUsagePrice, 284L), (record.InputTokens, record.OutputTokens, record.CacheReadTokens,
            record.ReasoningTokens, record.UserPriceMicros!.Value, record.ProviderCostMicros!.Value));
        Assert.Equal("0.0002832", record.ProviderCostUsd);
    }

    [Fact]
    public async Task The_openai_sdk_streams_and_reads_usage_and_the_charge_matches_it()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Usage = CachedUsage };

        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        await foreach (var update in OpenAi(app, c).CompleteChatStreamingAsync([new UserChatMessage("stream with the sdk")]))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            usage ??= update.Usage;
        }

        Assert.Equal("echo: stream with the sdk", text.ToString());
        Assert.Equal(1200, usage!.InputTokenCount);
        await AssertBalanceAsync(c, 1_000_000 - CachedUsagePrice);
        Assert.True(Assert.Single(Fake.Requests).IncludeUsage);
    }

    [Fact]
    public async Task A_stream_whose_client_did_not_ask_for_usage_still_asks_upstream_and_hides_the_chunk()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Usage = CachedUsage };

        var response = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"raw stream"}]}"""));
        var events = Sse.Data(await response.Content.ReadAsStringAsync());

        Assert.True(Assert.Single(Fake.Requests).IncludeUsage);
        Assert.DoesNotContain(events, e => e.Contains("\"prompt_tokens\"", StringComparison.Ordinal));
        Assert.Equal("[DONE]", events[^1]);
        await AssertBalanceAsync(c, 1_000_000 - CachedUsagePrice);
    }

    [Fact]
    public async Task A_provider_that_reports_no_usage_is_charged_an_estimate_marked_estimated()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { OmitUsage = true, Text = "one two three four five six seven eight" };

        ChatCompletion completion = await OpenAi(app, c).CompleteChatAsync([new UserChatMessage("no usage from this provider")]);
        Assert.Null(completion.Usage);
        var streamed = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"no usage here either"}]}"""));
        Assert.Equal("[DONE]", Sse.Data(await streamed.Content.ReadAsStringAsync())[^1]);

        var records = await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None);
        Assert.Equal(2, records.Count);
        foreach (var record in records)
        {
            Assert.Contains("\"estimated\":true", record.Metadata);
            // o200k counts of the prompt (a dozen tokens with message overheads) and of the eight-word answer.
            Assert.InRange(record.InputTokens, 5, 40);
            Assert.InRange(record.OutputTokens, 8, 12);
            Assert.Equal(RatedPrice(record.InputTokens, record.OutputTokens), record.UserPriceMicros);
        }
        await AssertBalanceAsync(c, 1_000_000 - records.Sum(r => r.UserPriceMicros!.Value));
    }

    /// <summary>gpt-4o-mini without cache: (0.15 p + 0.60 o) × 2 µ$, rounded up.</summary>
    private static long RatedPrice(long prompt, long output) => (long)Math.Ceiling((0.15m * prompt + 0.60m * output) * 2m);

    [Theory, MemberData(nameof(Engines))]
    public async Task An_upstream_that_overruns_the_hold_is_cut_off_and_never_overdraws(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        // Asked for at most 20 tokens; the provider streams 2,000 and reports no usage.
        Fake.Script = _ => new FakeReply { OutputTokens = 2_000, OmitUsage = true };

        var response = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"talk forever"}]}"""));
        var events = Sse.Data(await response.Content.ReadAsStringAsync());

        Assert.Equal("[DONE]", events[^1]);
        var error = JsonDocument.Parse(events[^2]).RootElement.GetProperty("error");
        Assert.Equal("hold_exhausted", error.Str("code"));
        Assert.InRange(events.Length, 10, 100);
        var record = await OnlyRecordAsync(app, c);
        Assert.Contains("\"outcome\":\"cut_off\"", record.Metadata);
        var hold = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/transfers/gw:{c.AccountId}:{record.Id}"), HttpStatusCode.OK);
        Assert.InRange(record.UserPriceMicros!.Value, 1, hold.Long("amount_micros"));
        await AssertBalanceAsync(c, 1_000_000 - record.UserPriceMicros.Value);
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Upstream_failures_before_any_output_charge_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var chat = OpenAi(app, c);

        Fake.Script = _ => FakeReply.OpenAiError(500, "server_error", "boom");
        var failed = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("a")]));
        Assert.Equal(502, failed.Status);
        Assert.Contains("upstream_error", failed.GetRawResponse()!.Content.ToString());

        Fake.Script = _ => new FakeReply { ResetBeforeAnyByte = true };
        Assert.Equal(502, (await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("b")]))).Status);

        Fake.Script = _ => new FakeReply { DelayBeforeHeaders = TimeSpan.FromSeconds(3) };
        var slow = Sdks.OpenAi(new Uri(app.BaseAddress, "v1"), c.Key).GetChatClient("slow/model");
        var timeout = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => slow.CompleteChatAsync([new UserChatMessage("c")]));
        Assert.Equal(504, timeout.Status);
        Assert.Contains("upstream_timeout", timeout.GetRawResponse()!.Content.ToString());

        // A request the provider rejects passes through as the provider said it.
        Fake.Script = _ => FakeReply.OpenAiError(400, "invalid_request_error", "context too long", "context_length_exceeded");
        var rejected = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"d"}]}"""));
        Assert.Equal("context_length_exceeded", (await MeteringApi.BodyAsync(rejected, HttpStatusCode.BadRequest)).GetProperty("error").Str("code"));

        // The provider refusing Tollgate's own key is not the caller's fault.
        Fake.Script = _ => FakeReply.OpenAiError(401, "invalid_request_error", "Incorrect API key provided", "invalid_api_key");
        var refused = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"e"}]}"""));
        Assert.Equal("upstream_error", (await MeteringApi.BodyAsync(refused, HttpStatusCode.BadGateway)).GetProperty("error").Str("code"));

        await AssertBalanceAsync(c, 1_000_000);
        Assert.Empty(await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Fact]
    public async Task An_upstream_rate_limit_passes_through_with_retry_after_and_charges_nothing()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => FakeReply.OpenAiError(429, "requests", "Rate limit reached for requests", "rate_limit_exceeded") with
        {
            Headers = new Dictionary<string, string> { ["retry-after"] = "7" },
        };

        var response = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"slow down"}]}"""));

        Assert.Equal("rate_limit_exceeded", (await MeteringApi.BodyAsync(response, HttpStatusCode.TooManyRequests)).GetProperty("error").Str("code"));
        Assert.Equal(TimeSpan.FromSeconds(7), response.Headers.RetryAfter!.Delta);
        await AssertBalanceAsync(c, 1_000_000);
    }

    [Fact]
    public async Task A_stream_the_provider_drops_is_charged_for_what_was_delivered()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        // Paced, so the chunks reach the gateway before the reset (a reset may discard data not yet read).
        Fake.Script = _ => new FakeReply { Chunks = 40, DropAfterChunks = 5, DelayBetweenChunks = TimeSpan.FromMilliseconds(30) };

        var response = await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"drop me midway please"}]}"""));
        var events = Sse.Data(await response.Content.ReadAsStringAsync());

        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal("upstream_error", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").Str("code"));
        var record = await OnlyRecordAsync(app, c);
        Assert.Contains("\"outcome\":\"upstream_failed\"", record.Metadata);
        Assert.Contains("\"estimated\":true", record.Metadata);
        Assert.InRange(record.OutputTokens, 5, 12);
        await AssertBalanceAsync(c, 1_000_000 - record.UserPriceMicros!.Value);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_client_that_hangs_up_mid_stream_is_charged_only_for_what_was_produced(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Chunks = 200, DelayBetweenChunks = TimeSpan.FromMilliseconds(20) };

        // No draining: disposing the unfinished response closes the connection, as a client that hangs up does.
        using var client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new("Bearer", c.Key);
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
               {
                   Content = AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a long story please"}]}"""),
               })
        using (var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead))
        await using (var body = await response.Content.ReadAsStreamAsync())
        {
            var buffer = new byte[256];
            var read = 0;
            while (read < 600) read += await body.ReadAsync(buffer);
        }

        var record = await EventuallyAsync(() => app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None));
        Assert.Contains("\"outcome\":\"client_aborted\"", record.Metadata);
        Assert.InRange(record.OutputTokens, 1, 150);
        Assert.Equal(RatedPrice(record.InputTokens, record.OutputTokens), record.UserPriceMicros);
        await AssertBalanceAsync(c, 1_000_000 - record.UserPriceMicros!.Value);
    }

    private static async Task<UsageRecord> EventuallyAsync(Func<Task<IReadOnlyList<UsageRecord>>> list)
    {
        for (var i = 0; i < 100; i++)
        {
            if ((await list()).SingleOrDefault() is { } r) return r;
            await Task.Delay(50);
        }
        throw new Xunit.Sdk.XunitException("no usage record appeared");
    }

    [Fact]
    public async Task A_provider_that_cannot_be_reached_falls_back_before_any_byte()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Usage = CachedUsage };

        ChatCompletion completion = await OpenAi(app, c, "down/model").CompleteChatAsync([new UserChatMessage("fall back")]);

        Assert.Equal("echo: fall back", completion.Content[0].Text);
        Assert.Equal("gpt-4o-mini", Assert.Single(Fake.Requests).Model);
        var record = await OnlyRecordAsync(app, c);
        Assert.Equal(("openai/gpt-4o-mini", "openai", CachedUsagePrice), (record.Model, record.Provider!, record.UserPriceMicros!.Value));
    }

    // claude-sonnet-4-5: 100 uncached × 3 + 1,000 cache read × 0.30 + 200 cache write × 3.75 + 50 output × 15 = 2,100 µ$; × 2.0 = 4,200.
    private static readonly FakeUsage ClaudeUsage = new(Input: 100, Output: 50, CacheRead: 1000, CacheWrite: 200);
    private const long ClaudeUsagePrice = 4_200;

    [Theory, MemberData(nameof(Engines))]
    public async Task The_anthropic_sdk_is_relayed_natively_and_charged_from_anthropic_usage(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { Usage = ClaudeUsage };
        var client = Sdks.Anthropic(app.BaseAddress, c.Key);
        var parameters = new MessageCreateParams
        {
            Model = "anthropic/claude-sonnet-4-5", MaxTokens = 256, Messages = [new UserMessageParam("hello claude")],
        };

        var message = await client.Messages.Create(parameters);
        Assert.True(message.Content[0].TryPickText(out var text));
        Assert.Equal("echo: hello claude", text.Text);
        Assert.Equal(1000, message.Usage.CacheReadInputTokens);

        var streamed = new StringBuilder();
        await foreach (var e in client.Messages.CreateStreaming(parameters))
            if (e.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var t)) streamed.Append(t.Text);
        Assert.Equal("echo: hello claude", streamed.ToString().TrimEnd());

        Assert.All(Fake.Requests, r => Assert.Equal((FakeUpstream.AnthropicPath, GatewayUpstreamFixture.AnthropicKey, "claude-sonnet-4-5"), (r.Path, r.Header("x-api-key")!, r.Model!)));
        await AssertBalanceAsync(c, 1_000_000 - 2 * ClaudeUsagePrice);
        var records = await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None);
        Assert.All(records, r => Assert.Equal((1300L, 1000L, 200L, 50L, ClaudeUsagePrice), (r.InputTokens, r.CacheReadTokens, r.CacheWriteTokens, r.OutputTokens, r.UserPriceMicros!.Value)));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Anthropic_models_through_the_openai_sdk_are_translated_both_ways_with_tool_calls(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = r => r.Json.GetProperty("messages").GetArrayLength() > 1
            ? new FakeReply { Usage = ClaudeUsage, Text = "It is sunny in Paris." }
            : new FakeReply { Usage = ClaudeUsage, ToolCalls = [new FakeToolCall("toolu_1", "get_weather", """{"city":"Paris","unit":"c"}""")] };
        var chat = OpenAi(app, c, "anthropic/claude-sonnet-4-5");
        var tool = ChatTool.CreateFunctionTool("get_weather", "Current weather", BinaryData.FromString(
            """{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string"}},"required":["city"]}"""));
        var options = new ChatCompletionOptions { Tools = { tool }, MaxOutputTokenCount = 300 };
        List<ChatMessage> messages = [new SystemChatMessage("You are a weather bot."), new UserChatMessage("Weather in Paris?")];

        ChatCompletion first = await chat.CompleteChatAsync(messages, options);
        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.Equal(("toolu_1", "get_weather"), (call.Id, call.FunctionName));
        Assert.Equal("Paris", JsonDocument.Parse(call.FunctionArguments.ToString()).RootElement.Str("city"));
        Assert.Equal(1300, first.Usage.InputTokenCount);

        var sent = Fake.Requests[^1].Json;
        Assert.Equal("You are a weather bot.", sent.Str("system"));
        Assert.Equal(300, sent.Long("max_tokens"));
        Assert.Equal("get_weather", sent.GetProperty("tools")[0].Str("name"));

        // The tool result goes back; streamed this time.
        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage("toolu_1", """{"temp":21}"""));
        var text = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync(messages, options))
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
        Assert.Equal("It is sunny in Paris.", text.ToString().TrimEnd());
        var followUp = Fake.Requests[^1].Json.GetProperty("messages");
        Assert.Equal("tool_use", followUp[1].GetProperty("content")[0].Str("type"));
        Assert.Equal("tool_result", followUp[2].GetProperty("content")[0].Str("type"));

        await AssertBalanceAsync(c, 1_000_000 - 2 * ClaudeUsagePrice);
    }
}

/// <summary>Bring your own key: the customer's provider key is stored encrypted, used for their calls, and only the platform fee is charged.</summary>
public sealed class GatewayByokTests(GatewayUpstreamFixture fixture) : IClassFixture<GatewayUpstreamFixture>, IDisposable
{
    public static TheoryData<string> Engines => TestDatabases.Engines;
    private FakeUpstream Fake => fixture.Fake;

    public void Dispose()
    {
        Fake.Script = null;
        Fake.ClearRequests();
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_customer_key_is_stored_encrypted_used_for_their_calls_and_billed_only_the_platform_fee(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        const string ownKey = "sk-customer-own-key-7890";
        Fake.Script = _ => new FakeReply { Usage = new FakeUsage(Input: 1200, Output: 300, CacheRead: 1024, Reasoning: 128) };

        var stored = await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/provider-keys/openai", AdminApi.JsonBody($$"""{"api_key":"{{ownKey}}"}""")), HttpStatusCode.OK);
        Assert.Equal(("openai", "7890"), (stored.Str("provider"), stored.Str("last4")));
        var listed = await c.Client.GetStringAsync("/api/v1/provider-keys");
        Assert.DoesNotContain(ownKey, listed);
        Assert.Contains("7890", listed);
        // Only ciphertext reaches the database.
        var database = app.Get<Tollgate.Infrastructure.Data.Database>();
        await using (var connection = await database.OpenAsync(CancellationToken.None))
        {
            var ciphertext = await Dapper.SqlMapper.QuerySingleAsync<string>(connection, "SELECT ciphertext FROM provider_credentials WHERE account_id = @a", new { a = c.AccountId });
            Assert.DoesNotContain(ownKey, ciphertext);
        }

        var response = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"my own key"}]}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(ownKey, Assert.Single(Fake.Requests).BearerToken);
        // Provider cost 283.2 µ$; 5 % platform fee = 14.16 → 15.
        Assert.Equal("15", response.Headers.GetValues("x-tollgate-charge-micros").Single());
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, response.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        Assert.Equal((UsageBillingStatus.Byok, 15L, 284L), (record!.BillingStatus, record.UserPriceMicros!.Value, record.ProviderCostMicros!.Value));

        // Removed: the operator's key and the full price again.
        Assert.Equal(HttpStatusCode.NoContent, (await c.Client.DeleteAsync("/api/v1/provider-keys/openai")).StatusCode);
        Fake.ClearRequests();
        var again = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"operator key"}]}"""));
        Assert.Equal(GatewayUpstreamFixture.OpenAiKey, Assert.Single(Fake.Requests).BearerToken);
        Assert.Equal("567", again.Headers.GetValues("x-tollgate-charge-micros").Single());
        Assert.Equal(1_000_000 - 15 - 567, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Fact]
    public async Task A_provider_without_an_operator_key_is_callable_with_the_customers_own()
    {
        var app = await fixture.AppAsync("sqlite");
        using var c = await app.CustomerAsync(1_000_000);
        var request = AdminApi.JsonBody("""{"model":"byokonly/model","messages":[{"role":"user","content":"hi"}]}""");
        Assert.Equal("provider_unavailable", (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", request), HttpStatusCode.ServiceUnavailable)).GetProperty("error").Str("code"));

        await c.Client.PutAsync("/api/v1/provider-keys/byokonly", AdminApi.JsonBody("""{"api_key":"sk-mine-1234"}"""));
        var response = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"byokonly/model","messages":[{"role":"user","content":"hi"}]}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("sk-mine-1234", Assert.Single(Fake.Requests).BearerToken);

        Assert.Equal("provider_not_found", (await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/provider-keys/nope", AdminApi.JsonBody("""{"api_key":"x"}""")), HttpStatusCode.NotFound)).Str("code"));
        Assert.Equal(HttpStatusCode.BadRequest, (await c.Client.PutAsync("/api/v1/provider-keys/openai", AdminApi.JsonBody("""{"api_key":""}"""))).StatusCode);
    }
}
