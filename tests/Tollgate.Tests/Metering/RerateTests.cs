using System.Net.Http.Headers;
using System.Text;
using Dapper;
using Tollgate.Features.Metering;
using Tollgate.Infrastructure.Data;
using static Tollgate.Tests.Api.AdminApi;
using static Tollgate.Tests.Metering.MeteringApi;

namespace Tollgate.Tests.Metering;

/// <summary>One app per engine under <c>allow_and_review</c>; tests isolate themselves by account and model names.</summary>
public sealed class RerateFixture() : SharedEngineApps(new Dictionary<string, string?>
{
    ["Tollgate:Pricing:CatalogFile"] = Path.Combine(Path.GetTempPath(), $"tollgate-no-catalog-{Guid.NewGuid():N}.json"),
    ["Tollgate:Pricing:DefaultMarkup"] = "2",
    ["Tollgate:Pricing:Models:acme/meter-1:InputMtok"] = "3",
    ["Tollgate:Pricing:Models:acme/meter-1:OutputMtok"] = "15",
    ["Tollgate:Metering:UnknownModelPolicy"] = MeteringOptions.AllowAndReview,
});

/// <summary>The needs-review queue, re-rating it through the ledger, internal keys, and ambiguous bare model names.</summary>
public sealed class RerateTests(RerateFixture fixture) : IClassFixture<RerateFixture>
{
    /// <summary>
    /// By hand at $3 / $15 per million: 10,000 × 3 + 2,000 × 15 = $0.06 provider cost (60,000 micro-USD); × 2 = 120,000.
    /// </summary>
    private const string Tokens = """ "input_tokens":10000,"output_tokens":2000 """;
    private const long Price = 120_000;
    private const string Rates = """{"input_mtok":3,"output_mtok":15}""";

    private static string Event(string id, string model) => $$"""{"id":"{{id}}","model":"{{model}}",{{Tokens}}}""";

    private static async Task<JsonElement> PostAsync(Customer c, params string[] events) =>
        await BodyAsync(await c.Client.PostAsync("/api/v1/usage/events",
            new StringContent($$"""{"events":[{{string.Join(",", events)}}]}""", Encoding.UTF8, "application/json")), HttpStatusCode.OK);

    private static async Task<JsonElement> RerateAsync(TestApp app, string accountId, string? model = null) =>
        await BodyAsync(await app.Admin.PostAsync("/admin/v1/usage/rerate",
            JsonBody(JsonSerializer.Serialize(new { account_id = accountId, model }))), HttpStatusCode.OK);

    private static async Task PutPriceAsync(TestApp app, string model, string json = Rates) =>
        await BodyAsync(await app.Admin.PutAsync($"/admin/v1/pricing/models/{model}", JsonBody(json)), HttpStatusCode.OK);

    /// <summary>A customer whose API key is of <paramref name="type"/>.</summary>
    private static async Task<Customer> CustomerAsync(TestApp app, long micros, string type)
    {
        var accountId = await app.CreateAccountAsync("rerate");
        if (micros > 0) await app.GrantAsync(accountId, micros);
        var key = await BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", JsonBody($$"""{"type":"{{type}}"}""")), HttpStatusCode.Created);
        Assert.Equal(type, key.Str("type"));
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key.Str("key"));
        return new Customer(accountId, key.Str("id")!, key.Str("key")!, client);
    }

    private static async Task<UsageRecord> RecordAsync(TestApp app, string accountId, string id) =>
        await app.Get<IUsageStore>().GetAsync(accountId, id, CancellationToken.None) ?? throw new InvalidOperationException($"no record {id}");

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Rerate_AfterPriceAdded_DebitsEachRecordOnceAndMarksItBilled(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var model = $"acme/later-{Guid.NewGuid():N}";
        var posted = await PostAsync(c, Event("r1", model), Event("r2", model));
        Assert.Equal("needs_review", posted.GetProperty("data")[0].Str("billing_status"));

        var queue = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage/needs-review?account_id={c.AccountId}&model={model}");
        Assert.Equal(new[] { "r1", "r2" }, queue.GetProperty("data").EnumerateArray().Select(i => i.Str("id")!).Order().ToArray());
        var unknown = await RerateAsync(app, c.AccountId);
        Assert.Equal(2, unknown.GetProperty("still_unknown").GetInt32());
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("balance_micros"));

        await PutPriceAsync(app, model);
        var report = await RerateAsync(app, c.AccountId);

        Assert.Equal((2, 2, 2 * Price), (report.GetProperty("examined").GetInt32(), report.GetProperty("billed").GetInt32(), report.Long("billed_micros")));
        var first = report.GetProperty("results").EnumerateArray().Single(r => r.Str("id") == "r1");
        Assert.Equal(("billed", model, Price, "0.06", $"rerate:{c.AccountId}:r1"),
            (first.Str("outcome"), first.Str("rated_model"), first.Long("user_price_micros"), first.Str("provider_cost_usd"), first.Str("transfer_id")));
        Assert.Equal(1_000_000 - 2 * Price, (await c.AccountAsync()).Long("balance_micros"));
        var record = await RecordAsync(app, c.AccountId, "r1");
        Assert.Equal((UsageBillingStatus.Billed, model, "acme", 60_000L, Price, $"rerate:{c.AccountId}:r1"),
            (record.BillingStatus, record.Model, record.Provider, record.ProviderCostMicros!.Value, record.UserPriceMicros!.Value, record.TransferId));
        var statement = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{c.AccountId}/ledger");
        Assert.Equal(2, statement.GetProperty("data").EnumerateArray().Count(l => l.Str("code") == RerateService.RerateCode));

        // Nothing left to do, and a client retry of the event is a duplicate of the billed record.
        Assert.Equal(0, (await RerateAsync(app, c.AccountId)).GetProperty("examined").GetInt32());
        var retry = await PostAsync(c, Event("r1", model));
        Assert.Equal(("duplicate", "billed"), (retry.GetProperty("data")[0].Str("status"), retry.GetProperty("data")[0].Str("billing_status")));
        Assert.Equal(1_000_000 - 2 * Price, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Rerate_InsufficientCredits_StaysNeedsReviewUntilTopUp(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(50_000);
        var model = $"acme/poor-{Guid.NewGuid():N}";
        await PostAsync(c, Event("p1", model));
        await PutPriceAsync(app, model);

        var refused = await RerateAsync(app, c.AccountId);

        Assert.Equal(1, refused.GetProperty("insufficient_credits").GetInt32());
        Assert.Equal("insufficient_credits", refused.GetProperty("results")[0].Str("outcome"));
        Assert.Equal(UsageBillingStatus.NeedsReview, (await RecordAsync(app, c.AccountId, "p1")).BillingStatus);
        Assert.Equal(50_000, (await c.AccountAsync()).Long("balance_micros"));

        await app.GrantAsync(c.AccountId, 100_000);
        var charged = await RerateAsync(app, c.AccountId);
        Assert.Equal(1, charged.GetProperty("billed").GetInt32());
        Assert.Equal(150_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Rerate_CrashAfterTransferBeforeRecord_HealsWithoutSecondCharge(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var model = $"acme/crash-{Guid.NewGuid():N}";
        await PostAsync(c, Event("c1", model), Event("c2", model));
        await PutPriceAsync(app, model);
        Assert.Equal(2, (await RerateAsync(app, c.AccountId)).GetProperty("billed").GetInt32());
        // c1 at the same price: the ledger replays the posted transfer. c2 after a price change: the ledger refuses the
        // new amount under the same id, and the record takes what the posted transfer charged.
        await SimulateCrashAsync(app, c.AccountId, "c1", model);
        Assert.Equal(1, (await RerateAsync(app, c.AccountId)).GetProperty("billed").GetInt32());
        await SimulateCrashAsync(app, c.AccountId, "c2", model);
        await PutPriceAsync(app, model, """{"input_mtok":6,"output_mtok":30}""");
        Assert.Equal(1, (await RerateAsync(app, c.AccountId)).GetProperty("billed").GetInt32());

        Assert.Equal(1_000_000 - 2 * Price, (await c.AccountAsync()).Long("balance_micros"));
        foreach (var id in new[] { "c1", "c2" })
        {
            var record = await RecordAsync(app, c.AccountId, id);
            // The record says what the ledger charged (the earlier price), not what the new price would have been.
            Assert.Equal((UsageBillingStatus.Billed, Price, "0.06", $"rerate:{c.AccountId}:{id}"),
                (record.BillingStatus, record.UserPriceMicros!.Value, record.ProviderCostUsd, record.TransferId));
        }
        await AssertAuditHealthyAsync(app.Admin);
    }

    /// <summary>The state a crash between the ledger transfer and the record update leaves behind: charged, still waiting.</summary>
    private static async Task SimulateCrashAsync(TestApp app, string accountId, string id, string model)
    {
        await using var db = await app.Get<Database>().OpenAsync(CancellationToken.None);
        var reset = await db.ExecuteAsync("""
            UPDATE usage_records SET billing_status = 'needs_review', transfer_id = NULL, user_price_micros = NULL,
                provider_cost_micros = NULL, provider_cost_usd = NULL, provider = NULL, model = @model
            WHERE account_id = @accountId AND id = @id
            """, new { accountId, id, model });
        Assert.Equal(1, reset);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task InternalKey_UsagePricedAndRecordedInternal_NeverDebited(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await CustomerAsync(app, 0, "internal");
        var model = $"acme/internal-{Guid.NewGuid():N}";

        var body = await PostAsync(c, Event("i1", "acme/meter-1"), Event("i2", model));

        var priced = body.GetProperty("data")[0];
        Assert.Equal(("accepted", "internal", Price), (priced.Str("status"), priced.Str("billing_status"), priced.Long("user_price_micros")));
        Assert.Equal(JsonValueKind.Null, priced.GetProperty("transfer_id").ValueKind);
        var record = await RecordAsync(app, c.AccountId, "i1");
        Assert.Equal((UsageBillingStatus.Internal, 60_000L, Price), (record.BillingStatus, record.ProviderCostMicros!.Value, record.UserPriceMicros!.Value));
        Assert.Null(record.TransferId);
        Assert.Equal("needs_review", body.GetProperty("data")[1].Str("billing_status"));

        var queue = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage/needs-review?account_id={c.AccountId}");
        Assert.Equal("internal", queue.GetProperty("data")[0].Str("key_type"));
        await PutPriceAsync(app, model);
        var report = await RerateAsync(app, c.AccountId);
        Assert.Equal((1, 0L), (report.GetProperty("internal").GetInt32(), report.Long("billed_micros")));
        var rerated = await RecordAsync(app, c.AccountId, "i2");
        Assert.Equal((UsageBillingStatus.Internal, Price), (rerated.BillingStatus, rerated.UserPriceMicros!.Value));
        Assert.Null(rerated.TransferId);
        Assert.Equal(0, (await c.AccountAsync()).Long("balance_micros"));
        var statement = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{c.AccountId}/ledger");
        Assert.Empty(statement.GetProperty("data").EnumerateArray());
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreateKey_UnknownType_400AndNoKey(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("key types");

        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", JsonBody("""{"type":"admin"}""")),
            HttpStatusCode.BadRequest, "invalid_request");

        await using var db = await app.Get<Database>().OpenAsync(CancellationToken.None);
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM api_keys WHERE account_id = @accountId", new { accountId }));
        var standard = await BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", JsonBody("{}")), HttpStatusCode.Created);
        Assert.Equal("standard", standard.Str("type"));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Post_AmbiguousBareModelName_RejectedModelAmbiguousEvenUnderAllowAndReview(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        // Anthropic, Amazon Bedrock and Google Vertex all list this model, so the bare name names no single price.
        var candidates = await BodyAsync(await app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote",
            new { model = "claude-3-5-sonnet-20241022", input_tokens = 1 }), HttpStatusCode.BadRequest);
        Assert.True(candidates.GetProperty("candidates").GetArrayLength() >= 2);

        var body = await PostAsync(c, Event("amb-1", "claude-3-5-sonnet-20241022"), Event("ok-1", "acme/meter-1"));

        var rejected = body.GetProperty("data")[0];
        Assert.Equal("rejected", rejected.Str("status"));
        Assert.Equal(("model_ambiguous", "model"), (rejected.GetProperty("error").Str("code"), rejected.GetProperty("error").Str("param")));
        Assert.Contains("anthropic/", rejected.GetProperty("error").Str("message"));
        Assert.Equal("accepted", body.GetProperty("data")[1].Str("status"));
        Assert.Null(await app.Get<IUsageStore>().GetAsync(c.AccountId, "amb-1", CancellationToken.None));
        Assert.Equal(1_000_000 - Price, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task NeedsReview_Pages_OldestFirstWithCursor(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        var model = $"acme/paged-{Guid.NewGuid():N}";
        var t0 = DateTimeOffset.UtcNow.AddHours(-1);
        string At(int minutes) => $$""","timestamp":"{{t0.AddMinutes(minutes):O}}" """;
        await PostAsync(c, $$"""{"id":"q3","model":"{{model}}",{{Tokens}}{{At(3)}}}""", $$"""{"id":"q1","model":"{{model}}",{{Tokens}}{{At(1)}}}""",
            $$"""{"id":"q2","model":"{{model}}",{{Tokens}}{{At(2)}}}""");

        var first = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage/needs-review?account_id={c.AccountId}&limit=2");
        var cursor = first.Str("next_cursor");
        var second = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/usage/needs-review?account_id={c.AccountId}&limit=2&cursor={cursor}");

        Assert.Equal(new[] { "q1", "q2" }, first.GetProperty("data").EnumerateArray().Select(i => i.Str("id")!).ToArray());
        Assert.True(first.GetProperty("has_more").GetBoolean());
        Assert.Equal(new[] { "q3" }, second.GetProperty("data").EnumerateArray().Select(i => i.Str("id")!).ToArray());
        Assert.False(second.GetProperty("has_more").GetBoolean());
        await AssertProblemAsync(await app.Admin.GetAsync("/admin/v1/usage/needs-review?cursor=%21%21"), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/usage/rerate", JsonBody("""{"limit":0}""")), HttpStatusCode.BadRequest, "invalid_request");
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.PostAsync("/admin/v1/usage/rerate", JsonBody("{}"))).StatusCode);
    }
}
