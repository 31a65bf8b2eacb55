using Tollgate.Features.Metering;
using Tollgate.Tests.Api;
using Tollgate.Tests.Gateway;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Faults;

/// <summary>
/// Providers that misbehave in ways GatewayUpstreamTests does not cover: a 200 whose body is garbage or empty, SSE
/// frames that are not JSON, a stream that stalls past the call's time limit. The caller always gets a clean error in
/// its own dialect, is charged only for output it received, and no hold is left behind.
/// </summary>
public sealed class UpstreamFaultTests(GatewayUpstreamFixture fixture) : IClassFixture<GatewayUpstreamFixture>, IDisposable
{
    public static TheoryData<string> Engines => TestDatabases.Engines;
    private FakeUpstream Fake => fixture.Fake;

    public void Dispose()
    {
        Fake.Script = null;
        Fake.ClearRequests();
    }

    private static StringContent Chat(string model, bool stream, string text = "hello there") =>
        AdminApi.JsonBody($$"""{"model":"{{model}}","stream":{{(stream ? "true" : "false")}},"max_tokens":50,"messages":[{"role":"user","content":"{{text}}"}]}""");

    /// <summary>One OpenAI stream chunk carrying <paramref name="text"/>, as the real API frames it.</summary>
    private static string Chunk(string text) =>
        $$"""data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"{{text}}"},"finish_reason":null}]}""" + "\n\n";

    /// <summary>Nothing charged, nothing held, no hold left pending, the audit clean.</summary>
    private static async Task AssertUntouchedAsync(TestApp app, Customer c, string? requestId)
    {
        var account = await c.AccountAsync();
        Assert.Equal((1_000_000L, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
        if (requestId is not null)
        {
            var hold = await app.Admin.GetAsync($"/admin/v1/transfers/gw:{c.AccountId}:{requestId}");
            if (hold.StatusCode == HttpStatusCode.OK) Assert.Equal("voided", (await MeteringApi.BodyAsync(hold, HttpStatusCode.OK)).Str("status"));
        }
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    private static string RequestId(HttpResponseMessage r) => r.Headers.GetValues("x-tollgate-request-id").Single();

    [Theory, MemberData(nameof(Engines))]
    public async Task A_200_with_garbage_or_an_empty_body_is_a_502_and_charges_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        foreach (var garbage in new[] { """{"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,""", "<html><body>502 Bad Gateway</body></html>", "", "[1,2,3]", "null" })
        {
            using var c = await app.CustomerAsync(1_000_000);
            Fake.Script = _ => new FakeReply { RawBody = garbage };

            var response = await c.Client.PostAsync("/v1/chat/completions", Chat("openai/gpt-4o-mini", stream: false));

            var error = (await MeteringApi.BodyAsync(response, HttpStatusCode.BadGateway)).GetProperty("error");
            Assert.Equal("upstream_error", error.Str("code"));
            await AssertUntouchedAsync(app, c, RequestId(response));
            Assert.Empty(await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None));
        }
    }

    [Fact]
    public async Task Garbage_from_an_anthropic_provider_is_an_anthropic_shaped_502()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { RawBody = "not json at all" };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/messages")
        {
            Content = AdminApi.JsonBody("""{"model":"anthropic/claude-sonnet-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"""),
        };
        request.Headers.Add("x-api-key", c.Key);
        request.Headers.Add("anthropic-version", "2023-06-01");

        var response = await app.Anonymous.SendAsync(request);

        var body = await MeteringApi.BodyAsync(response, HttpStatusCode.BadGateway);
        Assert.Equal("error", body.Str("type"));
        Assert.Equal("api_error", body.GetProperty("error").Str("type"));
        await AssertUntouchedAsync(app, c, RequestId(response));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Malformed_sse_ends_the_clients_stream_with_an_error_and_charges_only_what_was_delivered(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        // Two good chunks, then a frame whose data is not JSON.
        Fake.Script = _ => new FakeReply { RawBody = Chunk("one ") + Chunk("two ") + "data: {\"id\":\"chatcmpl-f\",\"choices\":[{\"delta\":{\"content\n\n" + Chunk("three ") };

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("openai/gpt-4o-mini", stream: true));
        var events = Sse.Data(await response.Content.ReadAsStringAsync());

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains(events, e => e.Contains("\"one \"", StringComparison.Ordinal));
        Assert.DoesNotContain(events, e => e.Contains("three", StringComparison.Ordinal));
        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal("upstream_error", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").Str("code"));
        var record = Assert.Single(await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None));
        Assert.Contains("\"outcome\":\"upstream_failed\"", record.Metadata);
        Assert.InRange(record.OutputTokens, 2, 3);
        var account = await c.AccountAsync();
        Assert.Equal((1_000_000 - record.UserPriceMicros!.Value, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Fact]
    public async Task An_empty_or_endless_nonsense_stream_is_an_error_event_and_charges_nothing()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        foreach (var raw in new[] { "", ": just a comment\n\nevent: ping\n\n", "this is not server-sent events at all" })
        {
            using var c = await app.CustomerAsync(1_000_000);
            Fake.Script = _ => new FakeReply { RawBody = raw };

            var response = await c.Client.PostAsync("/v1/chat/completions", Chat("openai/gpt-4o-mini", stream: true));
            var text = await response.Content.ReadAsStringAsync();
            var events = Sse.Data(text);

            Assert.True(events.Length >= 2, $"upstream {raw}: {(int)response.StatusCode} {text}");
            Assert.Equal("[DONE]", events[^1]);
            Assert.Equal("upstream_error", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").Str("code"));
            await AssertUntouchedAsync(app, c, RequestId(response));
        }
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_hanging_provider_times_out_its_hold_is_voided_and_nothing_is_charged(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Fake.Script = _ => new FakeReply { DelayBeforeHeaders = TimeSpan.FromSeconds(30) };

        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("slow/model", stream: true));

        Assert.Equal("upstream_timeout", (await MeteringApi.BodyAsync(response, HttpStatusCode.GatewayTimeout)).GetProperty("error").Str("code"));
        var hold = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/transfers/gw:{c.AccountId}:{RequestId(response)}"), HttpStatusCode.OK);
        Assert.Equal("voided", hold.Str("status"));
        await AssertUntouchedAsync(app, c, RequestId(response));
    }

    [Fact]
    public async Task A_stream_that_stalls_midway_is_cut_at_the_call_time_limit_and_charged_for_what_was_delivered()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var c = await app.CustomerAsync(1_000_000);
        // The first two chunks at once, then silence far beyond the provider's two-second limit.
        Fake.Script = _ => new FakeReply { Chunks = 3, DelayBetweenChunks = TimeSpan.FromSeconds(30) };

        var started = System.Diagnostics.Stopwatch.StartNew();
        var response = await c.Client.PostAsync("/v1/chat/completions", Chat("stall/model", stream: true));
        var text = await response.Content.ReadAsStringAsync();
        var events = Sse.Data(text);

        Assert.True(events.Length >= 2, text);
        Assert.InRange(started.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(15));
        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal("upstream_timeout", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").Str("code"));
        var records = await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 10, CancellationToken.None);
        Assert.True(records.Count == 1, $"{records.Count} usage records; the client got: {text}");
        var record = records[0];
        // The chunk sent before the stall reached the client (it arrived in the same packet as the role chunk) and is paid for.
        Assert.Contains(events, e => e.Contains("\"echo: \"", StringComparison.Ordinal));
        Assert.InRange(record.OutputTokens, 1, 3);
        var account = await c.AccountAsync();
        Assert.Equal((1_000_000 - record.UserPriceMicros!.Value, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
    }
}
