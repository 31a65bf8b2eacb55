using System.Text;
using static Tollgate.Tests.Api.AdminApi;

namespace Tollgate.Tests.Api;

/// <summary>
/// The admin accounts API over real HTTP on both engines: the happy path, and every way a request can be wrong,
/// each answered with the right status and problem code and leaving balance, statement and ledger untouched.
/// </summary>
public sealed class AdminAccountsApiTests(AdminApiFixture fixture) : IClassFixture<AdminApiFixture>
{
    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task AccountLifecycle_HappyPath_CreatesGrantsAdjustsHoldsAndSettles(string engine)
    {
        var app = await fixture.AppAsync(engine);

        var create = await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"  Acme Ltd  ","credit_limit_micros":0}"""));
        Assert.Equal(HttpStatusCode.Created, create.StatusCode);
        var account = await create.Content.ReadFromJsonAsync<JsonElement>();
        var id = account.GetProperty("id").GetString()!;
        Assert.StartsWith("acct_", id);
        Assert.Equal($"/admin/v1/accounts/{id}", create.Headers.Location?.OriginalString);
        Assert.Equal("Acme Ltd", account.GetProperty("name").GetString());
        Assert.Equal(0, account.GetProperty("balance_micros").GetInt64());
        var ledgerId = account.GetProperty("ledger_account_id").GetInt64();

        var grant = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits",
            JsonBody("""{"amount_micros":5000000,"idempotency_key":"welcome-1","reason":"welcome bonus"}"""));
        Assert.Equal(HttpStatusCode.OK, grant.StatusCode);
        var granted = await grant.Content.ReadFromJsonAsync<JsonElement>();
        Assert.False(granted.GetProperty("replayed").GetBoolean());
        Assert.Equal(5_000_000, granted.GetProperty("balance_micros").GetInt64());
        Assert.Equal(5_000_000, granted.GetProperty("available_micros").GetInt64());
        var transfer = granted.GetProperty("transfer");
        Assert.Equal("grant", transfer.GetProperty("code").GetString());
        Assert.Equal("welcome bonus", transfer.GetProperty("description").GetString());
        Assert.Equal(ledgerId, transfer.GetProperty("credit_account_id").GetInt64());
        Assert.Equal("5.000000", transfer.GetProperty("amount").GetString());

        var adjust = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits",
            JsonBody("""{"amount_micros":-1000000,"idempotency_key":"fix-1","reason":"correction"}"""));
        Assert.Equal(HttpStatusCode.OK, adjust.StatusCode);
        var adjusted = await adjust.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(4_000_000, adjusted.GetProperty("balance_micros").GetInt64());
        Assert.Equal("adjustment", adjusted.GetProperty("transfer").GetProperty("code").GetString());
        Assert.Equal(ledgerId, adjusted.GetProperty("transfer").GetProperty("debit_account_id").GetInt64());

        // A revenue account and a hold of 1.5 USD, settled for 1.2 USD: 0.3 USD goes back to available.
        var revenue = await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue"}"""));
        Assert.Equal(HttpStatusCode.Created, revenue.StatusCode);
        var revenueId = (await revenue.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();
        var hold = await PostTransfersAsync(app.Admin, $$"""
            {"transfers":[{"id":"hold-{{id}}","kind":"pending","debit_account_id":{{ledgerId}},"credit_account_id":{{revenueId}},
              "amount_micros":1500000,"timeout_seconds":3600,"code":"usage","metadata":{"model":"gpt"} }]}
            """);
        Assert.Equal("ok", hold[0].GetProperty("result").GetString());
        var held = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}");
        Assert.Equal(1_500_000, held.GetProperty("held_micros").GetInt64());
        Assert.Equal(2_500_000, held.GetProperty("available_micros").GetInt64());
        Assert.Equal(4_000_000, held.GetProperty("balance_micros").GetInt64());

        var post = await PostTransfersAsync(app.Admin, $$"""
            {"transfers":[{"id":"settle-{{id}}","kind":"post_pending","pending_id":"hold-{{id}}","amount_micros":1200000,"code":"usage"}]}
            """);
        Assert.Equal("ok", post[0].GetProperty("result").GetString());
        var settled = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}");
        Assert.Equal(0, settled.GetProperty("held_micros").GetInt64());
        Assert.Equal(2_800_000, settled.GetProperty("balance_micros").GetInt64());
        Assert.Equal(2_800_000, settled.GetProperty("available_micros").GetInt64());
        Assert.Equal("2.800000", settled.GetProperty("balance").GetString());
        var pending = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/transfers/hold-{id}");
        Assert.Equal("posted", pending.GetProperty("status").GetString());
        Assert.Equal("gpt", pending.GetProperty("metadata").GetProperty("model").GetString());
        var revenueAccount = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/ledger/accounts/{revenueId}");
        Assert.Equal(1_200_000, revenueAccount.GetProperty("credits_posted_micros").GetInt64());

        var statement = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}/ledger");
        var lines = statement.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(["settle-" + id, "hold-" + id, $"grant:{id}:fix-1", $"grant:{id}:welcome-1"], lines.Select(l => l.GetProperty("transfer_id").GetString()));
        Assert.Equal([2_800_000L, 4_000_000, 4_000_000, 5_000_000], lines.Select(l => l.GetProperty("balance_after_micros").GetInt64()));
        Assert.Equal([-1_200_000L, 0, -1_000_000, 5_000_000], lines.Select(l => l.GetProperty("amount_micros").GetInt64()));
        Assert.False(statement.GetProperty("has_more").GetBoolean());

        var key = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("""{"name":"prod"}"""));
        Assert.Equal(HttpStatusCode.Created, key.StatusCode);
        await AssertAuditHealthyAsync(app.Admin);
    }

    /// <summary>Bodies for POST /admin/v1/accounts/{id}/credits that must be refused: (body, content type, status, code).</summary>
    private static readonly Dictionary<string, (string Body, string ContentType, HttpStatusCode Status, string Code)> BadGrants = new()
    {
        ["malformed"] = ("""{"amount_micros": 100, "idempotency_key": 'k'}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["truncated"] = ("""{"amount_micros": 100, "idempotency_key": "k""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["not_json"] = ("amount_micros=100&idempotency_key=k", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["array"] = ("""[{"amount_micros":100,"idempotency_key":"k"}]""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["string_amount"] = ("""{"amount_micros":"100","idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["fractional_amount"] = ("""{"amount_micros":100.5,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["amount_beyond_int64"] = ("""{"amount_micros":9223372036854775808,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["number_key"] = ("""{"amount_micros":100,"idempotency_key":42}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["unknown_field"] = ("""{"amount_micros":100,"idempotency_key":"k","amount_usd":1}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["camel_case_field"] = ("""{"amountMicros":100,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_json"),
        ["empty_object"] = ("{}", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["missing_amount"] = ("""{"idempotency_key":"k","reason":"r"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["missing_key"] = ("""{"amount_micros":100}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["null_amount"] = ("""{"amount_micros":null,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["zero_amount"] = ("""{"amount_micros":0,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["min_int64_amount"] = ("""{"amount_micros":-9223372036854775808,"idempotency_key":"k"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["key_with_space"] = ("""{"amount_micros":100,"idempotency_key":"a b"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["key_too_long"] = ($$"""{"amount_micros":100,"idempotency_key":"{{new string('k', 81)}}"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["reason_too_long"] = ($$"""{"amount_micros":100,"idempotency_key":"k","reason":"{{new string('r', 1025)}}"}""", "application/json", HttpStatusCode.BadRequest, "invalid_request"),
        ["text_plain"] = ("""{"amount_micros":100,"idempotency_key":"k"}""", "text/plain", HttpStatusCode.UnsupportedMediaType, "unsupported_media_type"),
    };

    public static TheoryData<string, string> BadGrantCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres })
            foreach (var name in BadGrants.Keys) data.Add(engine, name);
        return data;
    }

    [Theory]
    [MemberData(nameof(BadGrantCases))]
    public async Task Grant_InvalidBody_ReturnsProblemAndChangesNothing(string engine, string caseName)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 1_000_000);
        var before = await SnapshotAsync(app, id);
        var (body, contentType, status, code) = BadGrants[caseName];

        var response = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", new StringContent(body, Encoding.UTF8, contentType));

        await AssertProblemAsync(response, status, code);
        Assert.Equal(before, await SnapshotAsync(app, id));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_MissingOrEmptyBody_Returns400AndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        var before = await SnapshotAsync(app, id);

        var noBody = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", null);
        var emptyJson = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(""));
        var jsonNull = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("null"));

        await AssertProblemAsync(noBody, HttpStatusCode.BadRequest, "bad_request");
        await AssertProblemAsync(emptyJson, HttpStatusCode.BadRequest, "bad_request");
        await AssertProblemAsync(jsonNull, HttpStatusCode.BadRequest, "bad_request");
        Assert.Equal(before, await SnapshotAsync(app, id));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreateAccount_InvalidInput_ReturnsProblemAndCreatesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var before = await AssertAuditHealthyAsync(app.Admin);

        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("{}")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"   "}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody($$"""{"name":"{{new string('n', 201)}}"}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"x","credit_limit_micros":-1}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"x","credit_limit_micros":"5"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"x","owner":"y"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"x" """)), HttpStatusCode.BadRequest, "invalid_json");

        var after = await AssertAuditHealthyAsync(app.Admin);
        Assert.Equal(before.GetProperty("accounts").GetInt64(), after.GetProperty("accounts").GetInt64());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task AdminRoutes_TextWithNulCharacter_Return400OnEveryEngineAndChangeNothing(string engine)
    {
        // PostgreSQL text cannot hold U+0000 (SQLite can): both engines must refuse it the same way, as a client error.
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 1_000_000);
        var ledgerId = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}")).GetProperty("ledger_account_id").GetInt64();
        var revenue = (await (await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue"}"""))).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();
        var before = await SnapshotAsync(app, id);

        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits",
            JsonBody("""{"amount_micros":100,"idempotency_key":"nul","reason":"a\u0000b"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/accounts", JsonBody("""{"name":"a\u0000b"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("""{"name":"a\u0000b"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue","key":"k\u0000"}""")), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"nul-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1,"description":"\u0000"}]}
            """)), HttpStatusCode.BadRequest, "invalid_json");

        Assert.Equal(before, await SnapshotAsync(app, id));
        // Inside metadata the character is kept as the JSON escape, which every engine stores.
        var response = await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"nul-meta-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1,"metadata":{"note":"\u0000"} }]}
            """));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stored = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/transfers/nul-meta-{id}");
        Assert.Equal("\0", stored.GetProperty("metadata").GetProperty("note").GetString());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task UnknownAccount_EveryAccountRoute_Returns404NotFound(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var before = await AssertAuditHealthyAsync(app.Admin);
        const string missing = "acct_doesnotexist000000";

        await AssertProblemAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{missing}"), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{missing}/credits",
            JsonBody("""{"amount_micros":100,"idempotency_key":"k"}""")), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{missing}/ledger"), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{missing}/keys", JsonBody("{}")), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.GetAsync("/admin/v1/transfers/no-such-transfer"), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.GetAsync("/admin/v1/ledger/accounts/987654321"), HttpStatusCode.NotFound, "not_found");
        await AssertProblemAsync(await app.Admin.GetAsync("/admin/v1/no-such-route"), HttpStatusCode.NotFound, "not_found");

        var after = await AssertAuditHealthyAsync(app.Admin);
        Assert.Equal(before.GetProperty("transfers").GetInt64(), after.GetProperty("transfers").GetInt64());
        Assert.Equal(before.GetProperty("accounts").GetInt64(), after.GetProperty("accounts").GetInt64());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task AdminRoutes_MissingOrWrongCredentials_Return401AndChangeNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 2_000_000);
        var keyResponse = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("{}"));
        var accountKey = (await keyResponse.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("key").GetString()!;
        var before = await SnapshotAsync(app, id);
        var grantBody = """{"amount_micros":100,"idempotency_key":"unauthorised"}""";

        var attempts = new List<HttpRequestMessage>
        {
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody),
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody, bearer: "tg_admin_wrong"),
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody, bearer: accountKey),
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody, bearer: TestApp.AdminKey + "x"),
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody, bearer: TestApp.AdminKey[..^1]),
            Request(HttpMethod.Post, "/admin/v1/accounts", """{"name":"sneaky"}""", bearer: accountKey),
            Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/keys", "{}", bearer: accountKey),
            Request(HttpMethod.Get, $"/admin/v1/accounts/{id}", bearer: accountKey),
            Request(HttpMethod.Get, "/admin/v1/ledger/audit"),
            Request(HttpMethod.Post, "/admin/v1/transfers", """{"transfers":[]}""", bearer: accountKey),
        };
        var basic = Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody);
        basic.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:" + TestApp.AdminKey)));
        attempts.Add(basic);
        var raw = Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", grantBody);
        raw.Headers.TryAddWithoutValidation("Authorization", TestApp.AdminKey);
        attempts.Add(raw);

        foreach (var attempt in attempts)
        {
            var response = await app.Anonymous.SendAsync(attempt);
            await AssertProblemAsync(response, HttpStatusCode.Unauthorized, "unauthorized");
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        }
        Assert.Equal(before, await SnapshotAsync(app, id));
        // The admin key itself still works, lower-case scheme included.
        var ok = Request(HttpMethod.Get, $"/admin/v1/accounts/{id}");
        ok.Headers.TryAddWithoutValidation("Authorization", "bearer " + TestApp.AdminKey);
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.SendAsync(ok)).StatusCode);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_BodyOverOneMebibyte_Returns413AndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 1_000_000);
        var before = await SnapshotAsync(app, id);
        var oversize = $$"""{"amount_micros":100,"idempotency_key":"big","reason":"{{new string('r', (int)Tollgate.TollgateApp.DefaultMaxRequestBodyBytes)}}"}""";

        // With a Content-Length Kestrel refuses before reading; chunked, it finds out while reading. The sized request
        // waits for "100 Continue", as large uploads should: Kestrel answers 413 instead, so no body bytes are left
        // unread when it closes the connection (unread bytes would turn the close into a reset that can swallow the 413).
        var sizedRequest = Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", oversize, bearer: TestApp.AdminKey);
        sizedRequest.Headers.ExpectContinue = true;
        var sized = await app.Anonymous.SendAsync(sizedRequest);
        var chunkedContent = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(oversize)));
        chunkedContent.Headers.ContentType = new("application/json");
        var chunkedRequest = Request(HttpMethod.Post, $"/admin/v1/accounts/{id}/credits", bearer: TestApp.AdminKey);
        chunkedRequest.Content = chunkedContent;
        chunkedRequest.Headers.TransferEncodingChunked = true;
        var chunked = await app.Anonymous.SendAsync(chunkedRequest);

        await AssertProblemAsync(sized, HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        await AssertProblemAsync(chunked, HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        Assert.Equal(before, await SnapshotAsync(app, id));
        // Just under the limit is still read (and refused only for its over-long reason).
        var underLimit = $$"""{"amount_micros":100,"idempotency_key":"big","reason":"{{new string('r', 1_000_000)}}"}""";
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(underLimit)), HttpStatusCode.BadRequest, "invalid_request");
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_ReplayedWithSameKey_ReturnsIdenticalResultAndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        const string body = """{"amount_micros":2500000,"idempotency_key":"order-42","reason":"top-up"}""";
        var first = await (await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(body))).Content.ReadFromJsonAsync<JsonElement>();
        await app.GrantAsync(id, 1_000_000);
        var before = await SnapshotAsync(app, id);

        var replay = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(body));

        Assert.Equal(HttpStatusCode.OK, replay.StatusCode);
        var second = await replay.Content.ReadFromJsonAsync<JsonElement>();
        Assert.False(first.GetProperty("replayed").GetBoolean());
        Assert.True(second.GetProperty("replayed").GetBoolean());
        Assert.Equal(first.GetProperty("transfer").GetRawText(), second.GetProperty("transfer").GetRawText());
        // The balance reported is the one right after the original grant, not the current one.
        Assert.Equal(first.GetProperty("balance_micros").GetInt64(), second.GetProperty("balance_micros").GetInt64());
        Assert.Equal(before, await SnapshotAsync(app, id));
        var replayAgain = await (await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(body))).Content.ReadAsStringAsync();
        Assert.Equal(await replay.Content.ReadAsStringAsync(), replayAgain);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_ConcurrentRequestsWithSameKey_GrantExactlyOnce(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        const string body = """{"amount_micros":700000,"idempotency_key":"race","reason":"once"}""";

        var responses = await Task.WhenAll(Enumerable.Range(0, 24).Select(async _ =>
        {
            var r = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody(body));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            return await r.Content.ReadFromJsonAsync<JsonElement>();
        }));

        Assert.Single(responses, r => !r.GetProperty("replayed").GetBoolean());
        Assert.Single(responses.Select(r => r.GetProperty("transfer").GetRawText()).Distinct());
        var account = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}");
        Assert.Equal(700_000, account.GetProperty("balance_micros").GetInt64());
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_SameKeyDifferentContent_Returns409AndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        var ok = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":1000000,"idempotency_key":"k-1","reason":"a"}"""));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var before = await SnapshotAsync(app, id);

        var otherAmount = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":2000000,"idempotency_key":"k-1","reason":"a"}"""));
        var otherReason = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":1000000,"idempotency_key":"k-1","reason":"b"}"""));
        var otherSign = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":-1000000,"idempotency_key":"k-1","reason":"a"}"""));

        await AssertProblemAsync(otherAmount, HttpStatusCode.Conflict, "idempotency_conflict");
        await AssertProblemAsync(otherReason, HttpStatusCode.Conflict, "idempotency_conflict");
        await AssertProblemAsync(otherSign, HttpStatusCode.Conflict, "idempotency_conflict");
        Assert.Equal(before, await SnapshotAsync(app, id));
        // The key is scoped to the account: another account may use it freely.
        var other = await app.CreateAccountAsync();
        Assert.Equal(2_000_000, await app.GrantAsync(other, 2_000_000, "k-1"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_NegativeAdjustmentBeyondAvailable_Returns402AndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 1_000_000);
        var before = await SnapshotAsync(app, id);

        var beyond = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":-1000001,"idempotency_key":"too-much"}"""));

        var problem = await AssertProblemAsync(beyond, HttpStatusCode.PaymentRequired, "insufficient_credits");
        Assert.Equal(1_000_000, problem.GetProperty("available_micros").GetInt64());
        Assert.Equal(before, await SnapshotAsync(app, id));

        // Held funds are not available either: with 0.6 USD held, taking 0.5 USD away must fail too.
        var account = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}");
        var revenue = (await (await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue"}"""))).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();
        var hold = await PostTransfersAsync(app.Admin, $$"""
            {"transfers":[{"id":"hold-402-{{id}}","kind":"pending","debit_account_id":{{account.GetProperty("ledger_account_id").GetInt64()}},
              "credit_account_id":{{revenue}},"amount_micros":600000,"timeout_seconds":3600}]}
            """);
        Assert.Equal("ok", hold[0].GetProperty("result").GetString());
        var withHold = await SnapshotAsync(app, id);
        var heldBack = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":-500000,"idempotency_key":"held"}"""));
        var heldProblem = await AssertProblemAsync(heldBack, HttpStatusCode.PaymentRequired, "insufficient_credits");
        Assert.Equal(400_000, heldProblem.GetProperty("available_micros").GetInt64());
        Assert.Equal(withHold, await SnapshotAsync(app, id));
        // Exactly the available amount may be taken.
        var exact = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/credits", JsonBody("""{"amount_micros":-400000,"idempotency_key":"exact"}"""));
        Assert.Equal(HttpStatusCode.OK, exact.StatusCode);
        Assert.Equal(0, (await exact.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("available_micros").GetInt64());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Ledger_CursorAcrossPages_ReturnsEveryLineOnceNewestFirst(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        var amounts = Enumerable.Range(1, 11).Select(i => i * 1_000L).ToArray();
        foreach (var (amount, i) in amounts.Select((a, i) => (a, i))) await app.GrantAsync(id, amount, $"page-{i}");

        var seen = new List<JsonElement>();
        string? cursor = null;
        var pages = 0;
        do
        {
            var url = $"/admin/v1/accounts/{id}/ledger?limit=4" + (cursor is null ? "" : $"&cursor={cursor}");
            var page = await app.Admin.GetFromJsonAsync<JsonElement>(url);
            var data = page.GetProperty("data").EnumerateArray().ToList();
            var hasMore = page.GetProperty("has_more").GetBoolean();
            cursor = page.GetProperty("next_cursor").GetString();
            Assert.Equal(hasMore, cursor is not null);
            Assert.True(data.Count == 4 || !hasMore, $"page {pages} has {data.Count} lines but has_more");
            seen.AddRange(data);
            pages++;
        } while (cursor is not null && pages < 10);

        Assert.Equal(3, pages);
        Assert.Equal(amounts.Reverse(), seen.Select(l => l.GetProperty("amount_micros").GetInt64()));
        Assert.Equal(Enumerable.Range(0, 11).Reverse().Select(i => $"grant:{id}:page-{i}"), seen.Select(l => l.GetProperty("transfer_id").GetString()));
        var sequences = seen.Select(l => l.GetProperty("sequence").GetInt64()).ToList();
        Assert.Equal(sequences.OrderDescending(), sequences);
        Assert.Equal(sequences.Count, sequences.Distinct().Count());
        var running = 0L;
        foreach (var line in Enumerable.Reverse(seen))
        {
            running += line.GetProperty("amount_micros").GetInt64();
            Assert.Equal(running, line.GetProperty("balance_after_micros").GetInt64());
        }

        var all = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}/ledger?limit=500");
        Assert.Equal(seen.Select(l => l.GetRawText()), all.GetProperty("data").EnumerateArray().Select(l => l.GetRawText()));
        Assert.Equal(JsonValueKind.Null, all.GetProperty("next_cursor").ValueKind);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Ledger_InvalidPaging_Returns400(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();

        foreach (var query in new[] { "limit=0", "limit=501", "limit=-1", "cursor=abc", "cursor=0", "cursor=-5", "cursor=1.5" })
            await AssertProblemAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{id}/ledger?{query}"), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{id}/ledger?limit=ten"), HttpStatusCode.BadRequest, "bad_request");
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Transfers_InvalidRequests_ReturnProblemOrFailureCodeAndChangeNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 1_000_000);
        var ledgerId = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}")).GetProperty("ledger_account_id").GetInt64();
        var revenue = (await (await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue"}"""))).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetInt64();
        var before = await SnapshotAsync(app, id);

        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody("""{"transfers":[]}""")), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"x","kind":"sideways","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1}]}
            """)), HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"has space","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1}]}
            """)), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"~expire:x","kind":"void_pending","pending_id":"x"}]}
            """)), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/transfers", JsonBody($$"""
            {"transfers":[{"id":"meta","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1,"metadata":[1]}]}
            """)), HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync("/admin/v1/ledger/accounts", JsonBody("""{"kind":"revenue","flags":["nope"]}""")), HttpStatusCode.BadRequest, "invalid_request");

        var failures = await PostTransfersAsync(app.Admin, $$"""
            {"transfers":[
              {"id":"over-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":1000001},
              {"id":"zero-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":0},
              {"id":"same-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{ledgerId}},"amount_micros":1},
              {"id":"ghost-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":987654321,"amount_micros":1},
              {"id":"post-{{id}}","kind":"post_pending","pending_id":"no-such-hold"}]}
            """);
        Assert.Equal(["insufficient_funds", "amount_must_be_positive", "accounts_must_be_different", "credit_account_not_found", "pending_transfer_not_found"],
            failures.Select(f => f.GetProperty("result").GetString()));
        Assert.All(failures, f => Assert.Equal(JsonValueKind.Null, f.GetProperty("transfer").ValueKind));

        // Atomic: one bad member fails the group; the good one is not applied.
        var atomic = await PostTransfersAsync(app.Admin, $$"""
            {"atomic":true,"transfers":[
              {"id":"good-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":10},
              {"id":"bad-{{id}}","debit_account_id":{{ledgerId}},"credit_account_id":{{revenue}},"amount_micros":5000000}]}
            """);
        Assert.Equal(["linked_transfer_failed", "insufficient_funds"], atomic.Select(f => f.GetProperty("result").GetString()));
        await AssertProblemAsync(await app.Admin.GetAsync($"/admin/v1/transfers/good-{id}"), HttpStatusCode.NotFound, "not_found");
        Assert.Equal(before, await SnapshotAsync(app, id));
    }

    private static async Task<List<JsonElement>> PostTransfersAsync(HttpClient admin, string json)
    {
        var response = await admin.PostAsync("/admin/v1/transfers", JsonBody(json));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement.EnumerateArray().Select(e => e.Clone()).ToList();
    }
}
