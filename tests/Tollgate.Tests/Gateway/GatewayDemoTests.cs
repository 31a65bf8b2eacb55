using System.Net;
using Tollgate.Features.Metering;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Gateway;

/// <summary>
/// The gateway end to end over HTTP with the built-in demo provider (which speaks the real OpenAI and Anthropic wire
/// formats in-process). demo/echo costs $1/M input and $2/M output at the default 2.0 markup, so a call with p prompt
/// and o output tokens is charged exactly 2p + 4o micro-USD.
/// </summary>
public sealed class GatewayDemoTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static long DemoPrice(long prompt, long output) => 2 * prompt + 4 * output;

    private static HttpContent Chat(string text, bool stream = false, bool includeUsage = false, string model = "demo/echo", int? maxTokens = null)
    {
        var options = includeUsage ? ""","stream_options":{"include_usage":true}""" : "";
        var max = maxTokens is { } m ? $""","max_tokens":{m}""" : "";
        return AdminApi.JsonBody($$"""{"model":"{{model}}","stream":{{(stream ? "true" : "false")}}{{options}}{{max}},"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"{{text}}"}]}""");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_non_streaming_call_is_charged_exactly_the_rating_of_its_reported_usage(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("How much does this cost?"));
        var body = await MeteringApi.BodyAsync(response, HttpStatusCode.OK);

        Assert.Equal("echo: How much does this cost?", body.GetProperty("choices")[0].GetProperty("message").Str("content"));
        var usage = body.GetProperty("usage");
        var (prompt, output) = (usage.Long("prompt_tokens"), usage.Long("completion_tokens"));
        Assert.True(prompt > 0 && output > 0);
        var charge = long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single());
        Assert.Equal(DemoPrice(prompt, output), charge);
        Assert.Equal(1_000_000 - charge, long.Parse(response.Headers.GetValues("x-tollgate-balance-micros").Single()));
        var account = await c.AccountAsync();
        Assert.Equal(1_000_000 - charge, account.Long("balance_micros"));
        Assert.Equal(0, account.Long("held_micros"));

        // The same price as the public quote for the same usage: one rating engine.
        var quote = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/pricing/quote",
            AdminApi.JsonBody($$"""{"model":"demo/echo","input_tokens":{{prompt}},"output_tokens":{{output}}}""")), HttpStatusCode.OK);
        Assert.Equal(charge, quote.Long("user_price_micros"));

        var requestId = response.Headers.GetValues("x-tollgate-request-id").Single();
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, requestId, CancellationToken.None);
        Assert.NotNull(record);
        Assert.Equal(UsageBillingStatus.Billed, record.BillingStatus);
        Assert.Equal(("demo/echo", "demo", prompt, output, charge), (record.Model, record.Provider, record.InputTokens, record.OutputTokens, record.UserPriceMicros));
        Assert.Equal(c.KeyId, record.KeyId);
        Assert.Contains("\"estimated\":false", record.Metadata);
        var settle = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/transfers/{record.TransferId}"), HttpStatusCode.OK);
        Assert.Equal(charge, settle.Long("amount_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_stream_hides_the_usage_chunk_the_client_did_not_ask_for_and_is_charged_from_it(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("stream me please", stream: true));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType!.ToString());
        var events = Sse.Data(await response.Content.ReadAsStringAsync());
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.All(chunks, ch => Assert.True(!ch.TryGetProperty("usage", out var u) || u.ValueKind == JsonValueKind.Null));
        Assert.All(chunks, ch => Assert.NotEqual(0, ch.GetProperty("choices").GetArrayLength()));
        var text = string.Concat(chunks.Select(ch => ch.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var t) ? t.GetString() : ""));
        Assert.Equal("echo: stream me please", text);

        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, response.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        Assert.NotNull(record);
        Assert.Equal(DemoPrice(record.InputTokens, record.OutputTokens), record.UserPriceMicros);
        Assert.Contains("\"estimated\":false", record.Metadata);
        Assert.Equal(1_000_000 - record.UserPriceMicros, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_stream_shows_the_usage_chunk_when_the_client_asks(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("with usage", stream: true, includeUsage: true));
        var events = Sse.Data(await response.Content.ReadAsStringAsync());
        var usageChunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement)
            .Where(ch => ch.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object).ToList();
        var usage = Assert.Single(usageChunks).GetProperty("usage");
        Assert.Equal(0, usageChunks[0].GetProperty("choices").GetArrayLength());
        Assert.Equal(1_000_000 - DemoPrice(usage.Long("prompt_tokens"), usage.Long("completion_tokens")), (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_account_lists_its_own_usage_newest_first_page_by_page(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        using var other = await app.CustomerAsync(1_000_000);
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
            ids.Add((await c.Client.PostAsync("/v1/chat/completions", Chat($"call {i}"))).Headers.GetValues("x-tollgate-request-id").Single());
        await other.Client.PostAsync("/v1/chat/completions", Chat("someone else"));

        var first = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/usage?limit=2");
        var second = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/usage?limit=2&cursor=" + Uri.EscapeDataString(first.Str("next_cursor")!));

        var rows = first.GetProperty("data").EnumerateArray().Concat(second.GetProperty("data").EnumerateArray()).ToList();
        Assert.Equal(Enumerable.Reverse(ids), rows.Select(r => r.Str("id")!));
        Assert.True(first.GetProperty("has_more").GetBoolean());
        Assert.False(second.GetProperty("has_more").GetBoolean());
        Assert.All(rows, r => Assert.False(r.TryGetProperty("provider_cost_micros", out _)));
        Assert.All(rows, r => Assert.Equal(("billed", "demo/echo"), (r.Str("billing_status"), r.Str("model"))));
        Assert.Equal(HttpStatusCode.BadRequest, (await c.Client.GetAsync("/api/v1/usage?cursor=nonsense")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_call_the_balance_cannot_cover_gets_402_before_any_upstream_call_and_changes_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(50);

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("too expensive"));
        var error = (await MeteringApi.BodyAsync(response, HttpStatusCode.PaymentRequired)).GetProperty("error");
        Assert.Equal("insufficient_credits", error.Str("code"));
        Assert.Equal("insufficient_quota", error.Str("type"));
        Assert.Equal(50, error.Long("available_micros"));
        Assert.True(error.Long("required_micros") > 50);
        var account = await c.AccountAsync();
        Assert.Equal((50L, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
        var requestId = response.Headers.GetValues("x-tollgate-request-id").Single();
        Assert.Null(await app.Get<IUsageStore>().GetAsync(c.AccountId, requestId, CancellationToken.None));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Two_hundred_concurrent_calls_against_a_balance_that_holds_fifty_never_overdraw(string engine)
    {
        var app = await fixture.AppAsync(engine);
        // Measure one call's hold on a separate account, then fund exactly fifty of them (and half of one more).
        using var probe = await app.CustomerAsync(1_000_000);
        var probeResponse = await probe.Client.PostAsync("/v1/chat/completions", Chat("concurrency", maxTokens: 500));
        Assert.Equal(HttpStatusCode.OK, probeResponse.StatusCode);
        var hold = await MeteringApi.BodyAsync(await app.Admin.GetAsync(
            $"/admin/v1/transfers/gw:{probe.AccountId}:{probeResponse.Headers.GetValues("x-tollgate-request-id").Single()}"), HttpStatusCode.OK);
        var holdMicros = hold.Long("amount_micros");
        var granted = 50 * holdMicros + holdMicros / 2;
        using var c = await app.CustomerAsync(granted);

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => c.Client.PostAsync("/v1/chat/completions", Chat("concurrency", maxTokens: 500))));

        var ok = responses.Where(r => r.StatusCode == HttpStatusCode.OK).ToList();
        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.PaymentRequired, r.StatusCode.ToString()));
        // Each success costs far less than its hold, so holds released by settled calls may admit more than fifty.
        Assert.True(ok.Count >= 50, $"only {ok.Count} calls succeeded");
        var charged = ok.Sum(r => long.Parse(r.Headers.GetValues("x-tollgate-charge-micros").Single()));
        var account = await c.AccountAsync();
        Assert.Equal(granted - charged, account.Long("balance_micros"));
        Assert.True(account.Long("balance_micros") >= 0);
        Assert.Equal(0, account.Long("held_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_revoked_key_is_refused_within_a_second(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat("before"))).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await app.Admin.DeleteAsync($"/admin/v1/accounts/{c.AccountId}/keys/{c.KeyId}")).StatusCode);
        await Task.Delay(TimeSpan.FromMilliseconds(1_100));

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("after"));
        var error = (await MeteringApi.BodyAsync(response, HttpStatusCode.Unauthorized)).GetProperty("error");
        Assert.Equal("invalid_api_key", error.Str("code"));
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.DeleteAsync($"/admin/v1/accounts/{c.AccountId}/keys/{c.KeyId}")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Bad_requests_get_openai_errors_and_change_no_balance(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);

        async Task Expect(HttpContent content, HttpStatusCode status, string code, string? param)
        {
            var error = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", content), status)).GetProperty("error");
            Assert.Equal(code, error.Str("code"));
            Assert.Equal(param, error.Str("param"));
            Assert.False(string.IsNullOrEmpty(error.Str("message")));
            Assert.False(string.IsNullOrEmpty(error.Str("type")));
        }
        await Expect(Chat("x", model: "nobody/nothing"), HttpStatusCode.NotFound, "model_not_found", "model");
        await Expect(AdminApi.JsonBody("{\"model\":\"demo/echo\""), HttpStatusCode.BadRequest, "invalid_json", null);
        await Expect(AdminApi.JsonBody("[]"), HttpStatusCode.BadRequest, "invalid_request", "body");
        await Expect(AdminApi.JsonBody("""{"messages":[]}"""), HttpStatusCode.BadRequest, "invalid_request", "model");
        await Expect(AdminApi.JsonBody("""{"model":"demo/echo"}"""), HttpStatusCode.BadRequest, "invalid_request", "messages");
        await Expect(AdminApi.JsonBody("""{"model":"demo/echo","messages":[],"max_tokens":-1}"""), HttpStatusCode.BadRequest, "invalid_request", "max_tokens");
        await Expect(AdminApi.JsonBody("""{"model":"demo/echo","messages":[],"stream":"yes"}"""), HttpStatusCode.BadRequest, "invalid_request", "stream");
        await Expect(AdminApi.JsonBody("""{"model":"demo/echo","messages":[],"n":0}"""), HttpStatusCode.BadRequest, "invalid_request", "n");

        // Routing misses under /v1 answer in the OpenAI shape too.
        var miss = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/v1/no-such-route"), HttpStatusCode.NotFound)).GetProperty("error");
        Assert.Equal("not_found", miss.Str("code"));
        var wrongMethod = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/v1/chat/completions"), HttpStatusCode.MethodNotAllowed)).GetProperty("error");
        Assert.Equal("method_not_allowed", wrongMethod.Str("code"));

        using var anonymous = new HttpClient { BaseAddress = app.BaseAddress };
        var unauthorized = await anonymous.PostAsync("/v1/chat/completions", Chat("x"));
        Assert.Equal("invalid_api_key", (await MeteringApi.BodyAsync(unauthorized, HttpStatusCode.Unauthorized)).GetProperty("error").Str("code"));

        var account = await c.AccountAsync();
        Assert.Equal((1_000_000L, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Models_lists_the_callable_models_in_openai_shape(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/v1/models")).StatusCode);

        var list = await c.Client.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Equal("list", list.Str("object"));
        var demo = list.GetProperty("data").EnumerateArray().Single(m => m.Str("id") == "demo/echo");
        Assert.Equal(("model", "demo"), (demo.Str("object"), demo.Str("owned_by")));
        // Providers without a key (every real one in the shipped configuration) are not callable.
        Assert.DoesNotContain(list.GetProperty("data").EnumerateArray(), m => m.Str("id")!.StartsWith("openai/", StringComparison.Ordinal));
        Assert.Equal("demo/echo", (await c.Client.GetFromJsonAsync<JsonElement>("/v1/models/demo/echo")).Str("id"));
        Assert.Equal(HttpStatusCode.NotFound, (await c.Client.GetAsync("/v1/models/openai/gpt-4o")).StatusCode);

        var unavailable = await c.Client.PostAsync("/v1/chat/completions", Chat("x", model: "openai/gpt-4o"));
        Assert.Equal("provider_unavailable", (await MeteringApi.BodyAsync(unavailable, HttpStatusCode.ServiceUnavailable)).GetProperty("error").Str("code"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Anthropic_messages_are_relayed_natively_and_charged_from_anthropic_usage(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Add("x-api-key", c.Key);
        client.DefaultRequestHeaders.Add("anthropic-version", "2023-06-01");
        var request = """{"model":"demo/echo","max_tokens":200,"system":"Be brief.","messages":[{"role":"user","content":"Hello from Anthropic"}]}""";

        var response = await client.PostAsync("/v1/messages", AdminApi.JsonBody(request));
        var message = await MeteringApi.BodyAsync(response, HttpStatusCode.OK);
        Assert.Equal("echo: Hello from Anthropic", message.GetProperty("content")[0].Str("text"));
        var usage = message.GetProperty("usage");
        var charge = long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single());
        Assert.Equal(DemoPrice(usage.Long("input_tokens"), usage.Long("output_tokens")), charge);

        var streamed = await client.PostAsync("/v1/messages", AdminApi.JsonBody(request.Replace("\"max_tokens\":200", "\"max_tokens\":200,\"stream\":true")));
        var text = await streamed.Content.ReadAsStringAsync();
        Assert.Contains("event: message_start", text);
        Assert.Contains("event: message_stop", text);
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, streamed.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        Assert.Equal(DemoPrice(record!.InputTokens, record.OutputTokens), record.UserPriceMicros);
        Assert.Equal(1_000_000 - charge - record.UserPriceMicros, (await c.AccountAsync()).Long("balance_micros"));

        var bad = await client.PostAsync("/v1/messages", AdminApi.JsonBody("""{"model":"demo/echo","messages":[]}"""));
        var error = await MeteringApi.BodyAsync(bad, HttpStatusCode.BadRequest);
        Assert.Equal(("error", "invalid_request_error"), (error.Str("type"), error.GetProperty("error").Str("type")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_internal_key_is_priced_and_recorded_but_never_debited(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("internal");
        var key = await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("""{"type":"internal"}""")), HttpStatusCode.Created);
        using var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new("Bearer", key.Str("key"));

        // No credits at all, yet the call goes through: nothing is held or charged.
        var response = await client.PostAsync("/v1/chat/completions", Chat("testing internally"));
        var body = await MeteringApi.BodyAsync(response, HttpStatusCode.OK);
        Assert.Equal("0", response.Headers.GetValues("x-tollgate-charge-micros").Single());
        var record = await app.Get<IUsageStore>().GetAsync(accountId, response.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        Assert.Equal(UsageBillingStatus.Internal, record!.BillingStatus);
        var usage = body.GetProperty("usage");
        Assert.Equal(DemoPrice(usage.Long("prompt_tokens"), usage.Long("completion_tokens")), record.UserPriceMicros);
        Assert.Null(record.TransferId);
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{accountId}"), HttpStatusCode.OK);
        Assert.Equal(0, account.Long("balance_micros"));
    }

    [Fact]
    public async Task ClampMaxTokens_lowers_the_output_bound_to_what_the_balance_affords()
    {
        await using var app = await TestApp.StartAsync("sqlite", new Dictionary<string, string?>
        {
            ["Tollgate:Gateway:ClampMaxTokens"] = "true",
            ["Tollgate:Gateway:MinClampedOutputTokens"] = "10",
        });
        // 2,000 micro-USD: the default 4,096-token bound needs ~16,400 (4 per token) so it is refused without clamping.
        using var c = await app.CustomerAsync(2_000);
        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("clamp me"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, response.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        var clamped = JsonDocument.Parse(record!.Metadata!).RootElement.Long("clamped_max_tokens");
        Assert.InRange(clamped, 10, 499);

        using var poor = await app.CustomerAsync(30);
        Assert.Equal(HttpStatusCode.PaymentRequired, (await poor.Client.PostAsync("/v1/chat/completions", Chat("too poor even to clamp"))).StatusCode);
    }
}

/// <summary>Splits a server-sent-events body into its data payloads.</summary>
internal static class Sse
{
    public static string[] Data(string body) => body.Replace("\r\n", "\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
        .Select(e => string.Join("\n", e.Split('\n').Where(l => l.StartsWith("data:", StringComparison.Ordinal)).Select(l => l[5..].TrimStart())))
        .Where(d => d.Length > 0).ToArray();
}
