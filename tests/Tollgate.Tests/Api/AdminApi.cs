using System.Data.Common;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;

namespace Tollgate.Tests.Api;

/// <summary>
/// One running app per engine, started on first use and shared by the tests of one class (xunit runs a class's
/// tests one after another, so the ledger totals a test compares are not moved by a neighbour).
/// </summary>
public sealed class AdminApiFixture : IAsyncLifetime
{
    private readonly Dictionary<string, Task<TestApp>> _apps = new();

    public Task<TestApp> AppAsync(string engine)
    {
        lock (_apps)
        {
            if (!_apps.TryGetValue(engine, out var app)) _apps[engine] = app = StartAsync(engine);
            return app;
        }
    }

    private static async Task<TestApp> StartAsync(string engine)
    {
        var app = await TestApp.StartAsync(engine);
        // The promotions and adjustments ledger accounts are created on first use, even by a grant that is then
        // refused; create them now so "nothing changed" can compare ledger account counts whatever the test order.
        var warmUp = await app.CreateAccountAsync("warm-up");
        await app.GrantAsync(warmUp, 1);
        await app.GrantAsync(warmUp, -1);
        return app;
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await (await app).DisposeAsync();
    }
}

/// <summary>Everything an admin request could have changed about one account, read back over the API.</summary>
internal sealed record StateSnapshot(string Account, string Ledger, long LedgerAccounts, long Transfers, long Entries);

internal static class AdminApi
{
    /// <summary>The account, its full statement and the ledger-wide counts; fails if the audit finds a violation.</summary>
    public static async Task<StateSnapshot> SnapshotAsync(TestApp app, string accountId)
    {
        var account = await app.Admin.GetStringAsync($"/admin/v1/accounts/{accountId}");
        var ledger = await app.Admin.GetStringAsync($"/admin/v1/accounts/{accountId}/ledger?limit=500");
        var audit = await AssertAuditHealthyAsync(app.Admin);
        return new(account, ledger, audit.GetProperty("accounts").GetInt64(), audit.GetProperty("transfers").GetInt64(), audit.GetProperty("entries").GetInt64());
    }

    public static async Task<JsonElement> AssertAuditHealthyAsync(HttpClient admin)
    {
        var audit = await admin.GetFromJsonAsync<JsonElement>("/admin/v1/ledger/audit");
        Assert.True(audit.GetProperty("violations").GetArrayLength() == 0, "audit violations: " + audit.GetProperty("violations"));
        Assert.True(audit.GetProperty("healthy").GetBoolean());
        return audit;
    }

    /// <summary>Asserts an RFC 9457 problem with the given status and code, and no stack trace; returns its body.</summary>
    public static async Task<JsonElement> AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status} {code}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var body = JsonDocument.Parse(text).RootElement.Clone();
        Assert.Equal(code, body.GetProperty("code").GetString());
        Assert.Equal((int)status, body.GetProperty("status").GetInt32());
        Assert.Equal("urn:tollgate:error:" + code, body.GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(body.GetProperty("detail").GetString()));
        Assert.DoesNotContain(" at Tollgate.", text);
        Assert.DoesNotContain("Exception", text);
        return body;
    }

    public static StringContent JsonBody(string json) => new(json, Encoding.UTF8, "application/json");

    public static HttpRequestMessage Request(HttpMethod method, string path, string? json = null, string? bearer = null)
    {
        var request = new HttpRequestMessage(method, path);
        if (json is not null) request.Content = JsonBody(json);
        if (bearer is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        return request;
    }

    public static async Task<long> ScalarAsync(DbConnection connection, string sql)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    /// <summary>
    /// The row <paramref name="keyId"/> of <paramref name="table"/> holds SHA-256(key) in key_hash and no column holds
    /// the key or its secret part, as text or as bytes.
    /// </summary>
    public static async Task AssertKeyStoredOnlyAsHashAsync(DbConnection connection, string table, string keyId, string fullKey)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = $"SELECT * FROM {table} WHERE id = @id";
        var p = cmd.CreateParameter();
        p.ParameterName = "@id";
        p.Value = keyId;
        cmd.Parameters.Add(p);
        await using var r = await cmd.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync(), $"no {table} row {keyId}");
        var keyBytes = Encoding.UTF8.GetBytes(fullKey);
        var secret = fullKey[(fullKey.LastIndexOf('_') + 1)..];
        var sawHash = false;
        for (var i = 0; i < r.FieldCount; i++)
        {
            if (r.IsDBNull(i)) continue;
            var value = r.GetValue(i);
            if (value is byte[] bytes)
            {
                Assert.False(bytes.AsSpan().IndexOf(keyBytes) >= 0, $"{table}.{r.GetName(i)} contains the key's bytes");
                Assert.False(bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(secret)) >= 0, $"{table}.{r.GetName(i)} contains the secret's bytes");
                if (r.GetName(i) == "key_hash")
                {
                    Assert.Equal(SHA256.HashData(keyBytes), bytes);
                    sawHash = true;
                }
                continue;
            }
            var text = Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)!;
            Assert.DoesNotContain(fullKey, text);
            // A prefix may show the first few characters of the secret; the whole secret is never stored.
            Assert.DoesNotContain(secret, text);
        }
        Assert.True(sawHash, $"{table} has no key_hash value");
        Assert.False(await r.ReadAsync());
    }
}
