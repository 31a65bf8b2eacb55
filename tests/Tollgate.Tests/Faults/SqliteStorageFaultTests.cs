using Microsoft.Data.Sqlite;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Faults;

/// <summary>
/// The embedded SQLite database becomes full (Tollgate:Sqlite:MaxSizeBytes, which is PRAGMA max_page_count — the
/// same SQLITE_FULL a full disk gives) or read-only (Mode=ReadOnly, as a read-only file or mount). Writes get a clear
/// error — 507 storage_full / 503 database_read_only, ProblemDetails or OpenAI error JSON on /v1 — reads keep working,
/// nothing acknowledged is lost, the file passes PRAGMA integrity_check, and once the condition clears the ledger
/// audit is clean and refused requests can be retried with their idempotency keys.
/// </summary>
public sealed class SqliteStorageFaultTests
{
    private const long Seed = 1_000_000;

    private static StringContent Call(string text) =>
        AdminApi.JsonBody($$"""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"{{text}}"}]}""");

    private static Task<HttpResponseMessage> GrantAsync(TestApp app, string accountId, string key) =>
        app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/credits", AdminApi.JsonBody($$"""{"amount_micros":100,"idempotency_key":"{{key}}","reason":"fill"}"""));

    private static async Task<string> IntegrityAsync(string path)
    {
        await using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "PRAGMA integrity_check";
        return (string)(await cmd.ExecuteScalarAsync())!;
    }

    private static async Task<long> PageCountAsync(string path)
    {
        await using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA page_count";
        await using var reader = await cmd.ExecuteReaderAsync();
        await reader.NextResultAsync();
        await reader.ReadAsync();
        return reader.GetInt64(0);
    }

    [Fact]
    public async Task A_full_database_refuses_writes_with_507_keeps_reads_and_loses_nothing()
    {
        var path = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        string accountId, key;
        await using (var setup = await TestApp.StartAsync(TestDatabases.Sqlite, database: path))
        {
            using var c = await setup.CustomerAsync(Seed);
            (accountId, key) = (c.AccountId, c.Key);
        }
        // A few pages of room: enough for some writes, then SQLITE_FULL.
        var cap = (await PageCountAsync(path) + 6) * 4096;

        var grants = new List<(string Key, int Status)>();
        var charged = 0L;
        var fullGrants = 0;
        var fullCalls = 0;
        await using (var app = await TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?> { ["Tollgate:Sqlite:MaxSizeBytes"] = cap.ToString(System.Globalization.CultureInfo.InvariantCulture) }, database: path))
        {
            using var client = new HttpClient { BaseAddress = app.BaseAddress };
            client.DefaultRequestHeaders.Authorization = new("Bearer", key);
            for (var i = 0; i < 3_000 && (fullGrants < 3 || fullCalls < 3); i++)
            {
                var grantKey = $"fill-{i}";
                var grant = await GrantAsync(app, accountId, grantKey);
                var grantBody = await grant.Content.ReadAsStringAsync();
                Assert.True(grant.StatusCode is HttpStatusCode.OK or HttpStatusCode.InsufficientStorage, $"grant {i}: {(int)grant.StatusCode} {grantBody}");
                grants.Add((grantKey, (int)grant.StatusCode));
                if (grant.StatusCode == HttpStatusCode.InsufficientStorage)
                {
                    fullGrants++;
                    Assert.Equal("storage_full", JsonDocument.Parse(grantBody).RootElement.Str("code"));
                    Assert.Equal("application/problem+json", grant.Content.Headers.ContentType!.MediaType);
                }

                var call = await client.PostAsync("/v1/chat/completions", Call($"fill {i}"));
                var callBody = await call.Content.ReadAsStringAsync();
                Assert.True(call.StatusCode is HttpStatusCode.OK or HttpStatusCode.InsufficientStorage, $"call {i}: {(int)call.StatusCode} {callBody}");
                if (call.StatusCode == HttpStatusCode.OK) charged += long.Parse(call.Headers.GetValues("x-tollgate-charge-micros").Single(), System.Globalization.CultureInfo.InvariantCulture);
                else
                {
                    fullCalls++;
                    var error = JsonDocument.Parse(callBody).RootElement.GetProperty("error");
                    Assert.Equal(("storage_full", "server_error"), (error.Str("code"), error.Str("type")));
                }
            }
            Assert.True(fullGrants >= 3 && fullCalls >= 3, $"the database never filled up ({fullGrants} grants, {fullCalls} calls refused)");

            // Reads still work, and the process reports itself ready (the database answers).
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/api/v1/account")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await app.Admin.GetAsync("/admin/v1/ledger/audit")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/ready")).StatusCode);
        }

        Assert.Equal("ok", await IntegrityAsync(path));

        // Room again: everything acknowledged is there, every refused grant applies exactly once when retried.
        await using (var app = await TestApp.StartAsync(TestDatabases.Sqlite, database: path))
        {
            await AdminApi.AssertAuditHealthyAsync(app.Admin);
            foreach (var (grantKey, status) in grants)
            {
                var replay = await MeteringApi.BodyAsync(await GrantAsync(app, accountId, grantKey), HttpStatusCode.OK);
                if (status == 200) Assert.True(replay.GetProperty("replayed").GetBoolean(), $"acknowledged grant {grantKey} was lost");
            }
            var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{accountId}"), HttpStatusCode.OK);
            // A call whose settlement could not be written leaves its hold to expire: held, never charged.
            Assert.Equal(Seed + grants.Count * 100 - charged, account.Long("balance_micros"));
            await AdminApi.AssertAuditHealthyAsync(app.Admin);
        }
        Assert.Equal("ok", await IntegrityAsync(path));
    }

    [Fact]
    public async Task A_read_only_database_refuses_writes_with_503_and_serves_reads()
    {
        var path = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        string accountId, key;
        await using (var setup = await TestApp.StartAsync(TestDatabases.Sqlite, database: path))
        {
            using var c = await setup.CustomerAsync(Seed);
            (accountId, key) = (c.AccountId, c.Key);
        }
        await PageCountAsync(path); // checkpoints the WAL into the file

        var readOnly = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly }.ConnectionString;
        await using (var app = await TestApp.StartAsync(TestDatabases.Sqlite, database: readOnly))
        {
            using var client = new HttpClient { BaseAddress = app.BaseAddress };
            client.DefaultRequestHeaders.Authorization = new("Bearer", key);

            var grant = await GrantAsync(app, accountId, "while-read-only");
            Assert.Equal("database_read_only", (await AdminApi.AssertProblemAsync(grant, HttpStatusCode.ServiceUnavailable, "database_read_only")).Str("code"));
            var call = await client.PostAsync("/v1/chat/completions", Call("read only"));
            Assert.Equal("database_read_only", (await MeteringApi.BodyAsync(call, HttpStatusCode.ServiceUnavailable)).GetProperty("error").Str("code"));
            await AdminApi.AssertProblemAsync(await client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"x"}""")), HttpStatusCode.ServiceUnavailable, "database_read_only");

            var account = await MeteringApi.BodyAsync(await client.GetAsync("/api/v1/account"), HttpStatusCode.OK);
            Assert.Equal(Seed, account.Long("balance_micros"));
            await AdminApi.AssertAuditHealthyAsync(app.Admin);
        }

        Assert.Equal("ok", await IntegrityAsync(path));
        await using (var app = await TestApp.StartAsync(TestDatabases.Sqlite, database: path))
        {
            Assert.False((await MeteringApi.BodyAsync(await GrantAsync(app, accountId, "while-read-only"), HttpStatusCode.OK)).GetProperty("replayed").GetBoolean());
            var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{accountId}"), HttpStatusCode.OK);
            Assert.Equal((Seed + 100, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
            await AdminApi.AssertAuditHealthyAsync(app.Admin);
        }
    }
}
