using static Tollgate.Tests.Api.AdminApi;
using static Tollgate.Tests.Metering.MeteringApi;

namespace Tollgate.Tests.Metering;

/// <summary>Authorizations (holds) over the account API: hold, capture, void, expiry, idempotency, isolation.</summary>
public sealed class AuthorizationApiTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Capture_LessThanHeld_ChargesAmountAndReleasesRest(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);

        var created = await BodyAsync(await c.AuthorizeAsync("req-1", 4_000_000, metadataJson: """{"model":"gpt-x"}"""), HttpStatusCode.Created);
        Assert.Equal("req-1", created.Str("id"));
        Assert.Equal("pending", created.Str("status"));
        Assert.Equal(4_000_000, created.Long("amount_micros"));
        Assert.Equal(6_000_000, created.Long("available_micros"));
        Assert.Equal("gpt-x", created.GetProperty("metadata").GetProperty("model").GetString());
        var expiresIn = created.GetProperty("expires_at").GetDateTimeOffset() - created.GetProperty("created_at").GetDateTimeOffset();
        Assert.Equal(TimeSpan.FromSeconds(600), expiresIn);

        var captured = await BodyAsync(await c.CaptureAsync("req-1", 1_250_000), HttpStatusCode.OK);
        Assert.Equal("captured", captured.Str("status"));
        Assert.Equal(1_250_000, captured.Long("captured_micros"));
        Assert.Equal(2_750_000, captured.Long("released_micros"));
        Assert.False(captured.GetProperty("flagged").GetBoolean());
        Assert.Equal(8_750_000, captured.Long("available_micros"));

        var account = await c.AccountAsync();
        Assert.Equal(8_750_000, account.Long("balance_micros"));
        Assert.Equal(0, account.Long("held_micros"));
        var get = await BodyAsync(await c.Client.GetAsync("/api/v1/authorizations/req-1"), HttpStatusCode.OK);
        Assert.Equal("captured", get.Str("status"));
        Assert.Equal(1_250_000, get.Long("captured_micros"));

        // Replaying the capture changes nothing; another amount is a conflict; a void is refused.
        var replay = await BodyAsync(await c.CaptureAsync("req-1", 1_250_000), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());
        Assert.Equal(1_250_000, replay.Long("captured_micros"));
        await AssertProblemAsync(await c.CaptureAsync("req-1", 1_000_000), HttpStatusCode.Conflict, "idempotency_conflict");
        await AssertProblemAsync(await c.VoidAsync("req-1"), HttpStatusCode.Conflict, "authorization_captured");
        Assert.Equal(8_750_000, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Capture_AboveHeld_ChargesExcessUpToAvailableAndFlags(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);
        await BodyAsync(await c.AuthorizeAsync("small", 2_000_000), HttpStatusCode.Created);

        // Excess the balance can pay: charged in full.
        var paid = await BodyAsync(await c.CaptureAsync("small", 3_000_000), HttpStatusCode.OK);
        Assert.True(paid.GetProperty("flagged").GetBoolean());
        Assert.Equal(1_000_000, paid.Long("excess_micros"));
        Assert.Equal(1_000_000, paid.Long("excess_charged_micros"));
        Assert.Equal(3_000_000, paid.Long("captured_micros"));
        Assert.Equal(7_000_000, (await c.AccountAsync()).Long("balance_micros"));

        // Excess beyond what is available: only the available part is charged; never below zero.
        await BodyAsync(await c.AuthorizeAsync("big", 5_000_000), HttpStatusCode.Created);
        await BodyAsync(await c.AuthorizeAsync("other", 1_000_000), HttpStatusCode.Created); // stays held
        var partial = await BodyAsync(await c.CaptureAsync("big", 9_000_000), HttpStatusCode.OK);
        Assert.True(partial.GetProperty("flagged").GetBoolean());
        Assert.Equal(4_000_000, partial.Long("excess_micros"));
        Assert.Equal(1_000_000, partial.Long("excess_charged_micros"));
        Assert.Equal(6_000_000, partial.Long("captured_micros"));
        Assert.Equal(0, partial.Long("available_micros"));
        var account = await c.AccountAsync();
        Assert.Equal(1_000_000, account.Long("balance_micros"));
        Assert.Equal(1_000_000, account.Long("held_micros"));
        Assert.Equal(0, account.Long("available_micros"));

        // The replay reports the stored result even though the balance has changed since.
        var replay = await BodyAsync(await c.CaptureAsync("big", 9_000_000), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());
        Assert.Equal(1_000_000, replay.Long("excess_charged_micros"));
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Void_Pending_ReleasesEverything(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(3_000_000);
        await BodyAsync(await c.AuthorizeAsync("v1", 3_000_000), HttpStatusCode.Created);
        Assert.Equal(0, (await c.AccountAsync()).Long("available_micros"));

        var voided = await BodyAsync(await c.VoidAsync("v1"), HttpStatusCode.OK);
        Assert.Equal("voided", voided.Str("status"));
        Assert.Equal(3_000_000, voided.Long("released_micros"));
        Assert.Equal(3_000_000, voided.Long("available_micros"));
        Assert.True((await BodyAsync(await c.VoidAsync("v1"), HttpStatusCode.OK)).GetProperty("replayed").GetBoolean());
        await AssertProblemAsync(await c.CaptureAsync("v1", 1), HttpStatusCode.Conflict, "authorization_voided");
        Assert.Equal("voided", (await BodyAsync(await c.Client.GetAsync("/api/v1/authorizations/v1"), HttpStatusCode.OK)).Str("status"));
        var account = await c.AccountAsync();
        Assert.Equal(3_000_000, account.Long("balance_micros"));
        Assert.Equal(0, account.Long("held_micros"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorization_TtlPassed_ExpiresAndRefusesCaptureAndVoid(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await BodyAsync(await c.AuthorizeAsync("short", 600_000, ttlSeconds: 1), HttpStatusCode.Created);
        await BodyAsync(await c.AuthorizeAsync("short-void", 100_000, ttlSeconds: 1), HttpStatusCode.Created);

        // The sweeper runs every 100 ms in tests; wait until it has released the holds.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        JsonElement get;
        while (true)
        {
            get = await BodyAsync(await c.Client.GetAsync("/api/v1/authorizations/short"), HttpStatusCode.OK);
            if ((await c.AccountAsync()).Long("held_micros") == 0 || DateTime.UtcNow > deadline) break;
            await Task.Delay(100);
        }
        Assert.Equal("expired", get.Str("status"));
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("available_micros"));
        await AssertProblemAsync(await c.CaptureAsync("short", 600_000), HttpStatusCode.Conflict, "authorization_expired");
        await AssertProblemAsync(await c.VoidAsync("short-void"), HttpStatusCode.Conflict, "authorization_expired");
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorize_SameIdTwice_ReplaysOrConflicts(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(5_000_000);

        await BodyAsync(await c.AuthorizeAsync("idem", 1_000_000, metadataJson: """{"a":1}"""), HttpStatusCode.Created);
        var replay = await BodyAsync(await c.AuthorizeAsync("idem", 1_000_000, metadataJson: """{"a":1}"""), HttpStatusCode.OK);
        Assert.True(replay.GetProperty("replayed").GetBoolean());
        Assert.Equal("pending", replay.Str("status"));
        // ttl 600 is the default, so stating it is the same request.
        await BodyAsync(await c.AuthorizeAsync("idem", 1_000_000, ttlSeconds: 600, metadataJson: """{"a":1}"""), HttpStatusCode.OK);

        await AssertProblemAsync(await c.AuthorizeAsync("idem", 2_000_000, metadataJson: """{"a":1}"""), HttpStatusCode.Conflict, "idempotency_conflict");
        await AssertProblemAsync(await c.AuthorizeAsync("idem", 1_000_000, ttlSeconds: 60, metadataJson: """{"a":1}"""), HttpStatusCode.Conflict, "idempotency_conflict");
        await AssertProblemAsync(await c.AuthorizeAsync("idem", 1_000_000, metadataJson: """{"a":2}"""), HttpStatusCode.Conflict, "idempotency_conflict");
        // Whitespace in the metadata is not content.
        await BodyAsync(await c.AuthorizeAsync("idem", 1_000_000, metadataJson: """{ "a" : 1 }"""), HttpStatusCode.OK);
        var account = await c.AccountAsync();
        Assert.Equal(1_000_000, account.Long("held_micros"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorize_MoreThanAvailable_Returns402WithAvailable(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await BodyAsync(await c.AuthorizeAsync("first", 700_000), HttpStatusCode.Created);

        var problem = await AssertProblemAsync(await c.AuthorizeAsync("second", 300_001), HttpStatusCode.PaymentRequired, "insufficient_credits");
        Assert.Equal(300_000, problem.Long("available_micros"));
        await BodyAsync(await c.Client.GetAsync("/api/v1/authorizations/second"), HttpStatusCode.NotFound);
        // The refused id is not burnt: once funds are there, the same id succeeds.
        await app.GrantAsync(c.AccountId, 1);
        await BodyAsync(await c.AuthorizeAsync("second", 300_001), HttpStatusCode.Created);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorize_InvalidInput_Returns400(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        foreach (var body in new[]
        {
            """{"amount_micros":1}""",
            """{"id":"","amount_micros":1}""",
            """{"id":"has/slash","amount_micros":1}""",
            $$"""{"id":"{{new string('x', 81)}}","amount_micros":1}""",
            """{"id":"a"}""",
            """{"id":"a","amount_micros":0}""",
            """{"id":"a","amount_micros":1000000000000001}""",
            """{"id":"a","amount_micros":1,"ttl_seconds":0}""",
            """{"id":"a","amount_micros":1,"ttl_seconds":86401}""",
            """{"id":"a","amount_micros":1,"metadata":[1]}""",
        })
            await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations", JsonBody(body)), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await c.Client.PostAsync("/api/v1/authorizations", JsonBody("""{"id":"a","amount_micros":1,"extra":1}""")),
            HttpStatusCode.BadRequest, "invalid_json");
        await BodyAsync(await c.AuthorizeAsync("ok", 1, ttlSeconds: 86_400), HttpStatusCode.Created);
        await AssertProblemAsync(await c.CaptureAsync("ok", -1), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await c.CaptureAsync("missing", 1), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await c.VoidAsync("missing"), HttpStatusCode.NotFound, "not_found");
        Assert.Equal(1_000_000, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorization_OtherAccount_IsInvisibleAndUntouchable(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var alice = await app.CustomerAsync(2_000_000);
        using var bob = await app.CustomerAsync(2_000_000);
        await BodyAsync(await alice.AuthorizeAsync("shared-id", 1_000_000), HttpStatusCode.Created);

        await AssertProblemAsync(await bob.Client.GetAsync("/api/v1/authorizations/shared-id"), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await bob.CaptureAsync("shared-id", 1_000_000), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await bob.VoidAsync("shared-id"), HttpStatusCode.NotFound, "not_found");
        // The same client id in another account is a separate authorization, not a replay or conflict.
        await BodyAsync(await bob.AuthorizeAsync("shared-id", 500_000), HttpStatusCode.Created);

        Assert.Equal(1_000_000, (await alice.AccountAsync()).Long("held_micros"));
        Assert.Equal(500_000, (await bob.AccountAsync()).Long("held_micros"));
        Assert.Equal(alice.AccountId, (await alice.AccountAsync()).Str("id"));
        Assert.Equal(bob.AccountId, (await bob.AccountAsync()).Str("id"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Authorize_64ConcurrentAgainstBalanceForTen_ExactlyTenSucceed(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10 * 1_000_000);

        var responses = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => c.AuthorizeAsync($"race-{i}", 1_000_000)));

        Assert.Equal(10, responses.Count(r => r.StatusCode == HttpStatusCode.Created));
        Assert.Equal(54, responses.Count(r => r.StatusCode == HttpStatusCode.PaymentRequired));
        var account = await c.AccountAsync();
        Assert.Equal(10_000_000, account.Long("balance_micros"));
        Assert.Equal(10_000_000, account.Long("held_micros"));
        Assert.Equal(0, account.Long("available_micros"));

        // Capturing every winner for double its hold cannot overdraw: the excess finds nothing available.
        var winners = responses.Select((r, i) => (r, i)).Where(x => x.r.StatusCode == HttpStatusCode.Created).Select(x => $"race-{x.i}").ToList();
        var captures = await Task.WhenAll(winners.Select(id => c.CaptureAsync(id, 2_000_000)));
        Assert.All(captures, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        account = await c.AccountAsync();
        Assert.Equal(0, account.Long("balance_micros"));
        Assert.Equal(0, account.Long("held_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Capture_SameAboveHoldCaptureConcurrently_ChargesExcessOnce(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);
        await BodyAsync(await c.AuthorizeAsync("dup-capture", 1_000_000), HttpStatusCode.Created);

        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => c.CaptureAsync("dup-capture", 3_000_000)));

        var bodies = new List<JsonElement>();
        foreach (var r in responses) bodies.Add(await BodyAsync(r, HttpStatusCode.OK));
        Assert.All(bodies, b => Assert.Equal(2_000_000, b.Long("excess_charged_micros")));
        Assert.Single(bodies, b => !b.GetProperty("replayed").GetBoolean());
        Assert.Equal(7_000_000, (await c.AccountAsync()).Long("balance_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CaptureAndVoid_Concurrently_ExactlyOneWins(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);
        var ids = Enumerable.Range(0, 10).Select(i => $"cv-{i}").ToList();
        foreach (var id in ids) await BodyAsync(await c.AuthorizeAsync(id, 1_000_000), HttpStatusCode.Created);

        var results = await Task.WhenAll(ids.Select(async id =>
        {
            var capture = c.CaptureAsync(id, 600_000);
            var @void = c.VoidAsync(id);
            return (Capture: await capture, Void: await @void);
        }));

        long captured = 0;
        foreach (var (capture, @void) in results)
        {
            Assert.True((capture.StatusCode == HttpStatusCode.OK) ^ (@void.StatusCode == HttpStatusCode.OK),
                $"capture {(int)capture.StatusCode}, void {(int)@void.StatusCode}");
            if (capture.StatusCode == HttpStatusCode.OK) captured += 600_000;
            else await AssertProblemAsync(capture, HttpStatusCode.Conflict, "authorization_voided");
            if (@void.StatusCode != HttpStatusCode.OK) await AssertProblemAsync(@void, HttpStatusCode.Conflict, "authorization_captured");
        }
        var account = await c.AccountAsync();
        Assert.Equal(10_000_000 - captured, account.Long("balance_micros"));
        Assert.Equal(0, account.Long("held_micros"));
        await AssertAuditHealthyAsync(app.Admin);
    }
}
