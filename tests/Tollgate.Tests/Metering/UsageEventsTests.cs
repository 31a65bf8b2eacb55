using System.Text;
using Tollgate.Features.Metering;
using static Tollgate.Tests.Api.AdminApi;
using static Tollgate.Tests.Metering.MeteringApi;

namespace Tollgate.Tests.Metering;

/// <summary>One app per (engine, unknown-model policy), with a configured model whose prices the tests compute by hand.</summary>
public sealed class UsageEventsFixture : IAsyncLifetime
{
    private readonly Dictionary<string, Task<TestApp>> _apps = new();

    public Task<TestApp> AppAsync(string engine, string policy = MeteringOptions.Reject)
    {
        lock (_apps)
        {
            var key = engine + "/" + policy;
            if (!_apps.TryGetValue(key, out var app))
            {
                _apps[key] = app = TestApp.StartAsync(engine, new Dictionary<string, string?>
                {
                    ["Tollgate:Pricing:CatalogFile"] = Path.Combine(Path.GetTempPath(), $"tollgate-no-catalog-{Guid.NewGuid():N}.json"),
                    ["Tollgate:Pricing:DefaultMarkup"] = "2",
                    ["Tollgate:Pricing:Models:acme/meter-1:InputMtok"] = "3",
                    ["Tollgate:Pricing:Models:acme/meter-1:OutputMtok"] = "15",
                    ["Tollgate:Pricing:Models:acme/meter-1:CacheReadMtok"] = "0.3",
                    ["Tollgate:Pricing:Models:acme/meter-1:CacheWriteMtok"] = "3.75",
                    ["Tollgate:Metering:UnknownModelPolicy"] = policy,
                });
            }
            return app;
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await (await app).DisposeAsync();
    }
}

/// <summary>POST /api/v1/usage/events: rating, charging through the ledger, idempotency, per-event rejection.</summary>
public sealed class UsageEventsTests(UsageEventsFixture fixture) : IClassFixture<UsageEventsFixture>
{
    /// <summary>
    /// By hand: input 10,000 of which 2,000 cache reads and 1,000 cache writes; output 500 (100 reasoning, no reasoning rate).
    /// 7,000 × $3 + 2,000 × $0.30 + 1,000 × $3.75 + 500 × $15 per million = 0.021 + 0.0006 + 0.00375 + 0.0075 = $0.03285;
    /// user price × 2 = $0.0657 = 65,700 micro-USD.
    /// </summary>
    private const string Tokens = """ "input_tokens":10000,"output_tokens":500,"cache_read_tokens":2000,"cache_write_tokens":1000,"reasoning_tokens":100 """;
    private const long Price = 65_700;

    private static string Event(string id, string model = "acme/meter-1", string tokens = Tokens, string extra = "") =>
        $$"""{"id":"{{id}}","model":"{{model}}",{{tokens}}{{extra}}}""";

    private static Task<HttpResponseMessage> PostAsync(Customer c, string body) =>
        c.Client.PostAsync("/api/v1/usage/events", new StringContent(body, Encoding.UTF8, "application/json"));

    private static Task<HttpResponseMessage> BatchAsync(Customer c, params string[] events) => PostAsync(c, $$"""{"events":[{{string.Join(",", events)}}]}""");

    private static JsonElement Item(JsonElement body, int i) => body.GetProperty("data")[i];

    private static void AssertRejected(JsonElement item, string code)
    {
        Assert.True(item.Str("status") == "rejected", item.ToString());
        Assert.Equal(code, item.GetProperty("error").Str("code"));
        Assert.False(string.IsNullOrEmpty(item.GetProperty("error").Str("message")));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_SingleEvent_ChargesExactRatingAndStoresEveryField(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var at = DateTimeOffset.UtcNow.AddMinutes(-3);
        var extra = $$""","timestamp":"{{at:O}}","request_id":"req-42","metadata":{"workspace":"w1","project":"p","agent":"a"}""";

        var body = await BodyAsync(await PostAsync(c, Event("e1", extra: extra)), HttpStatusCode.OK);

        Assert.Equal(1, body.GetProperty("accepted").GetInt32());
        var item = Item(body, 0);
        Assert.Equal("accepted", item.Str("status"));
        Assert.Equal(JsonValueKind.Null, item.GetProperty("error").ValueKind);
        Assert.Equal(Price, item.Long("user_price_micros"));
        Assert.Equal(32_850, item.Long("provider_cost_micros"));
        Assert.Equal("0.03285", item.Str("provider_cost_usd"));
        Assert.Equal("billed", item.Str("billing_status"));
        Assert.Equal($"usage:{c.AccountId}:e1", item.Str("transfer_id"));
        Assert.Equal(1_000_000 - Price, (await c.AccountAsync()).Long("balance_micros"));

        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, "e1", CancellationToken.None);
        Assert.NotNull(record);
        Assert.Equal(c.KeyId, record.KeyId);
        Assert.Equal("acme/meter-1", record.Model);
        Assert.Equal("acme", record.Provider);
        Assert.Equal((10_000L, 500L, 2_000L, 1_000L, 100L),
            (record.InputTokens, record.OutputTokens, record.CacheReadTokens, record.CacheWriteTokens, record.ReasoningTokens));
        Assert.Equal((32_850L, "0.03285", Price), (record.ProviderCostMicros!.Value, record.ProviderCostUsd, record.UserPriceMicros!.Value));
        Assert.Equal(UsageBillingStatus.Billed, record.BillingStatus);
        Assert.Equal("req-42", record.RequestId);
        Assert.Equal("""{"workspace":"w1","project":"p","agent":"a"}""", record.Metadata);
        Assert.Equal($"usage:{c.AccountId}:e1", record.TransferId);
        Assert.Equal(at.ToUnixTimeMilliseconds(), record.OccurredAt.ToUnixTimeMilliseconds());
        Assert.True(record.CreatedAt > record.OccurredAt);
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_BatchWithBadEvents_ChargesGoodOnesAndRejectsEachBadOneWithReason(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var future = DateTimeOffset.UtcNow.AddHours(1);

        var body = await BodyAsync(await BatchAsync(c,
            Event("good-1"),
            Event("unknown", model: "acme/nope"),
            Event("negative", tokens: """ "input_tokens":-1 """),
            Event("absurd", tokens: """ "input_tokens":10000001 """),
            Event("future", extra: $$""","timestamp":"{{future:O}}" """),
            Event("wrong-type", tokens: """ "input_tokens":"12" """),
            Event("fraction", tokens: """ "output_tokens":1.5 """),
            """{"id":"extra-field","model":"acme/meter-1","input_tokens":1,"colour":"red"}""",
            "42",
            """{"model":"acme/meter-1","input_tokens":1}""",
            Event("good-2", tokens: """ "input_tokens":1000,"output_tokens":100 """)), HttpStatusCode.OK);

        Assert.Equal(2, body.GetProperty("accepted").GetInt32());
        Assert.Equal(9, body.GetProperty("rejected").GetInt32());
        Assert.Equal("accepted", Item(body, 0).Str("status"));
        AssertRejected(Item(body, 1), "model_not_found");
        AssertRejected(Item(body, 2), "invalid_tokens");
        AssertRejected(Item(body, 3), "invalid_tokens");
        AssertRejected(Item(body, 4), "timestamp_in_future");
        AssertRejected(Item(body, 5), "invalid_event");
        Assert.Equal("input_tokens", Item(body, 5).GetProperty("error").Str("param"));
        AssertRejected(Item(body, 6), "invalid_event");
        AssertRejected(Item(body, 7), "invalid_event");
        AssertRejected(Item(body, 8), "invalid_event");
        AssertRejected(Item(body, 9), "invalid_event");
        Assert.Equal("id", Item(body, 9).GetProperty("error").Str("param"));
        // good-2: 1,000 × $3 + 100 × $15 per million = $0.0045; × 2 = 9,000 micro-USD.
        Assert.Equal(9_000, Item(body, 10).Long("user_price_micros"));
        Assert.Equal(1_000_000 - Price - 9_000, (await c.AccountAsync()).Long("balance_micros"));
        var store = app.Get<IUsageStore>();
        Assert.Null(await store.GetAsync(c.AccountId, "unknown", CancellationToken.None));
        Assert.Null(await store.GetAsync(c.AccountId, "future", CancellationToken.None));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_DuplicateIdsInOneBatch_RejectsEveryOccurrence(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);

        var body = await BodyAsync(await BatchAsync(c, Event("twin"), Event("single"), Event("twin")), HttpStatusCode.OK);

        AssertRejected(Item(body, 0), "duplicate_id_in_batch");
        Assert.Equal("accepted", Item(body, 1).Str("status"));
        AssertRejected(Item(body, 2), "duplicate_id_in_batch");
        Assert.Equal(1_000_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
        Assert.Null(await app.Get<IUsageStore>().GetAsync(c.AccountId, "twin", CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_Replay_NeverChargesTwiceAndConflictsOnOtherContent(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var first = Item(await BodyAsync(await PostAsync(c, Event("r1")), HttpStatusCode.OK), 0);
        Assert.Equal("accepted", first.Str("status"));

        var replay = await BodyAsync(await BatchAsync(c, Event("r1"), Event("r2")), HttpStatusCode.OK);
        Assert.Equal(1, replay.GetProperty("duplicates").GetInt32());
        Assert.Equal("duplicate", Item(replay, 0).Str("status"));
        Assert.Equal(Price, Item(replay, 0).Long("user_price_micros"));
        Assert.Equal(first.Str("transfer_id"), Item(replay, 0).Str("transfer_id"));
        Assert.Equal("accepted", Item(replay, 1).Str("status"));

        var conflict = await BodyAsync(await PostAsync(c, Event("r1", tokens: """ "input_tokens":5 """)), HttpStatusCode.OK);
        AssertRejected(Item(conflict, 0), "idempotency_conflict");
        Assert.Equal(1_000_000 - 2 * Price, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_ConcurrentReplays_ChargeOnce(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);
        var batch = Enumerable.Range(0, 20).Select(i => Event($"cc-{i}")).ToArray();

        var bodies = await Task.WhenAll(Enumerable.Range(0, 8).Select(async _ => await BodyAsync(await BatchAsync(c, batch), HttpStatusCode.OK)));

        Assert.Equal(20, bodies.Sum(b => b.GetProperty("accepted").GetInt32()));
        Assert.Equal(7 * 20, bodies.Sum(b => b.GetProperty("duplicates").GetInt32()));
        Assert.All(bodies, b => Assert.Equal(0, b.GetProperty("rejected").GetInt32()));
        Assert.Equal(10_000_000 - 20 * Price, (await c.AccountAsync()).Long("balance_micros"));
        var records = await app.Get<IUsageStore>().ListAsync(c.AccountId, null, 100, CancellationToken.None);
        Assert.Equal(20, records.Count);
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_RecordLostAfterCharge_ReplayHealsWithoutCharging(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var at = DateTimeOffset.UtcNow.AddMinutes(-1);
        var extra = $$""","timestamp":"{{at:O}}" """;
        await BodyAsync(await PostAsync(c, Event("heal", extra: extra)), HttpStatusCode.OK);
        // Simulate a crash between the ledger commit and the record insert.
        await using (var conn = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenAsync(CancellationToken.None))
        {
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"DELETE FROM usage_records WHERE account_id = '{c.AccountId}'";
            await cmd.ExecuteNonQueryAsync();
        }

        var item = Item(await BodyAsync(await PostAsync(c, Event("heal", extra: extra)), HttpStatusCode.OK), 0);

        Assert.Equal("duplicate", item.Str("status"));
        Assert.Equal(Price, item.Long("user_price_micros"));
        Assert.Equal(1_000_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
        Assert.NotNull(await app.Get<IUsageStore>().GetAsync(c.AccountId, "heal", CancellationToken.None));
        // With the record gone, other content is still refused, by the ledger's content hash.
        await using (var conn = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenAsync(CancellationToken.None))
        {
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = $"DELETE FROM usage_records WHERE account_id = '{c.AccountId}'";
            await cmd.ExecuteNonQueryAsync();
        }
        AssertRejected(Item(await BodyAsync(await PostAsync(c, Event("heal", extra: extra + ",\"request_id\":\"other\"")), HttpStatusCode.OK), 0),
            "idempotency_conflict");
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_InsufficientCredits_RejectsWithoutChargeOrRecord(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000);

        var body = await BodyAsync(await BatchAsync(c, Event("i1"), Event("i2")), HttpStatusCode.OK);

        // One of the two fits; which one depends on the ledger's order within its group.
        Assert.Equal(1, body.GetProperty("accepted").GetInt32());
        Assert.Equal(1, body.GetProperty("rejected").GetInt32());
        var rejected = body.GetProperty("data").EnumerateArray().Single(i => i.Str("status") == "rejected");
        AssertRejected(rejected, "insufficient_credits");
        Assert.Equal(100_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
        Assert.Null(await app.Get<IUsageStore>().GetAsync(c.AccountId, rejected.Str("id")!, CancellationToken.None));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_UnknownModelAllowAndReview_RecordsNeedsReviewWithoutCharge(string engine)
    {
        var app = await fixture.AppAsync(engine, MeteringOptions.AllowAndReview);
        using var c = await app.CustomerAsync(1_000_000);

        var body = await BodyAsync(await BatchAsync(c, Event("u1", model: "acme/mystery"), Event("k1")), HttpStatusCode.OK);

        var item = Item(body, 0);
        Assert.Equal("accepted", item.Str("status"));
        Assert.Equal("needs_review", item.Str("billing_status"));
        Assert.Equal(JsonValueKind.Null, item.GetProperty("user_price_micros").ValueKind);
        Assert.Equal(JsonValueKind.Null, item.GetProperty("transfer_id").ValueKind);
        Assert.Equal("accepted", Item(body, 1).Str("status"));
        Assert.Equal(1_000_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, "u1", CancellationToken.None);
        Assert.NotNull(record);
        Assert.Equal((UsageBillingStatus.NeedsReview, "acme/mystery"), (record.BillingStatus, record.Model));
        Assert.Null(record.UserPriceMicros);
        Assert.Null(record.ProviderCostUsd);

        Assert.Equal("duplicate", Item(await BodyAsync(await PostAsync(c, Event("u1", model: "acme/mystery")), HttpStatusCode.OK), 0).Str("status"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_ZeroPriceEvent_RecordsBilledWithoutTransfer(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);

        var item = Item(await BodyAsync(await PostAsync(c, Event("z1", tokens: """ "input_tokens":0 """)), HttpStatusCode.OK), 0);

        Assert.Equal("accepted", item.Str("status"));
        Assert.Equal(0, item.Long("user_price_micros"));
        Assert.Equal(JsonValueKind.Null, item.GetProperty("transfer_id").ValueKind);
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, "z1", CancellationToken.None);
        Assert.Equal(UsageBillingStatus.Billed, record!.BillingStatus);
        Assert.Null(record.TransferId);
        Assert.Equal("duplicate", Item(await BodyAsync(await PostAsync(c, Event("z1", tokens: """ "input_tokens":0 """)), HttpStatusCode.OK), 0).Str("status"));
        AssertRejected(Item(await BodyAsync(await PostAsync(c, Event("z2", extra: ""","timestamp":12""")), HttpStatusCode.OK), 0), "invalid_event");
    }

    [Fact]
    public async Task Post_RequestLevelErrors_Answer400AndChangeNothing()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var c = await app.CustomerAsync(1_000_000);

        await AssertProblemAsync(await PostAsync(c, """{"events":[{"id":"x","""), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await PostAsync(c, """{"events":[]}"""), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await PostAsync(c, """{"events":{}}"""), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await PostAsync(c, "[1,2]"), HttpStatusCode.BadRequest, "invalid_request");
        var tooMany = string.Join(",", Enumerable.Range(0, 1001).Select(i => Event($"m{i}")));
        await AssertProblemAsync(await PostAsync(c, $$"""{"events":[{{tooMany}}]}"""), HttpStatusCode.BadRequest, "invalid_request");
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.PostAsync("/api/v1/usage/events",
            new StringContent(Event("a"), Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Fact]
    public async Task Post_FullBatchAboveDefaultBodyLimit_AllChargedInOneRequest()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var c = await app.CustomerAsync(1_000 * Price);
        // ~1.2 KB of metadata each: ~1.4 MB in all, above the app-wide 1 MiB body limit that this route raises.
        var padding = new string('x', 1_200);
        var events = Enumerable.Range(0, 1_000).Select(i => Event($"b{i}", extra: $$""","metadata":{"workspace":"w{{i % 7}}","note":"{{padding}}"}""")).ToArray();

        var body = await BodyAsync(await BatchAsync(c, events), HttpStatusCode.OK);

        Assert.Equal(1_000, body.GetProperty("accepted").GetInt32());
        Assert.Equal(0, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorize_ByEstimate_HoldsRatedPriceOfMaxUsage(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var body = """{"id":"est-1","model":"acme/meter-1","input_tokens":10000,"max_output_tokens":2000}""";

        // 10,000 × $3 + 2,000 × $15 per million = $0.06; × 2 = 120,000 micro-USD.
        var created = await BodyAsync(await c.Client.PostAsync("/api/v1/authorizations", JsonBody(body)), HttpStatusCode.Created);
        Assert.Equal(120_000, created.Long("amount_micros"));
        Assert.Equal(880_000, created.Long("available_micros"));
        var replay = await BodyAsync(await c.Client.PostAsync("/api/v1/authorizations", JsonBody(body)), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());

        await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations",
            JsonBody("""{"id":"est-2","model":"acme/nope","input_tokens":1,"max_output_tokens":1}""")), HttpStatusCode.NotFound, "model_not_found");
        await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations",
            JsonBody("""{"id":"est-3","model":"acme/meter-1","amount_micros":5,"max_output_tokens":1}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations",
            JsonBody("""{"id":"est-4","model":"acme/meter-1","input_tokens":1,"max_output_tokens":10000001}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations",
            JsonBody("""{"id":"est-5","input_tokens":1,"max_output_tokens":1}""")), HttpStatusCode.BadRequest, "invalid_request");
        Assert.Equal(880_000, (await c.AccountAsync()).Long("available_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }
}
