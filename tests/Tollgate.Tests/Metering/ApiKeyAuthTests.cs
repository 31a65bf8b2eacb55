using Tollgate.Features.Keys;
using System.Net.Http.Headers;
using Tollgate.Infrastructure.Data;
using static Tollgate.Tests.Api.AdminApi;
using static Tollgate.Tests.Metering.MeteringApi;

namespace Tollgate.Tests.Metering;

/// <summary>API-key authentication of the <c>/api/v1</c> routes.</summary>
public sealed class ApiKeyAuthTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    /// <summary>
    /// Starts <paramref name="write"/> while the SQLite write gate is taken (by the ledger's writer, say) and asserts
    /// it waits for the gate rather than for SQLite's lock; returns it completed once the gate is given back.
    /// </summary>
    private static async Task<T> WaitsForTheWriteGateAsync<T>(Database db, Func<T> write) where T : Task
    {
        await db.SqliteWriteGate.WaitAsync();
        T started;
        try
        {
            started = write();
            await Task.Delay(200);
            Assert.False(started.IsCompleted);
        }
        finally
        {
            db.SqliteWriteGate.Release();
        }
        await started.WaitAsync(TimeSpan.FromSeconds(10));
        return started;
    }

    [Fact]
    public async Task On_sqlite_touching_a_keys_last_use_waits_for_the_write_gate_instead_of_meeting_the_ledger_in_the_busy_handler()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var customer = await app.CustomerAsync(1_000);
        var db = app.Get<Database>();
        var later = DateTimeOffset.UtcNow.AddDays(1);

        await WaitsForTheWriteGateAsync(db, () => app.Get<IApiKeyStore>().TouchLastUsedAsync(customer.KeyId, later, CancellationToken.None));
        await using var connection = await db.OpenAsync(CancellationToken.None);
        Assert.Equal(1, await ScalarAsync(connection,
            $"SELECT COUNT(*) FROM api_keys WHERE id = '{customer.KeyId}' AND last_used_at = {Tollgate.Infrastructure.UnixMicros.From(later)}"));
    }

    [Fact]
    public async Task On_sqlite_a_gateway_calls_quota_write_waits_for_the_write_gate_too()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        using var customer = await app.CustomerAsync(1_000);
        var db = app.Get<Database>();
        var quotas = app.Get<Tollgate.Features.Plans.QuotaStore>();
        var period = DateTimeOffset.UnixEpoch.AddDays(20_000);

        var consume = await WaitsForTheWriteGateAsync(db,
            () => quotas.TryConsumeCountedAsync(customer.AccountId, Tollgate.Features.Plans.QuotaStore.Requests, period, 10, CancellationToken.None));
        Assert.Equal(1, await consume);
        Assert.Equal(3, await quotas.AddAsync(customer.AccountId, Tollgate.Features.Plans.QuotaStore.Requests, period, 2, CancellationToken.None));
        await quotas.ReleaseAsync(customer.AccountId, Tollgate.Features.Plans.QuotaStore.Requests, period);
        Assert.Equal(2, await quotas.UsedAsync(customer.AccountId, Tollgate.Features.Plans.QuotaStore.Requests, period, CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Account_ValidKey_ReturnsCallersAccountWithBalances(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var customer = await app.CustomerAsync(5_000_000);
        await BodyAsync(await customer.AuthorizeAsync("hold-1", 1_500_000), HttpStatusCode.Created);

        var account = await customer.AccountAsync();

        Assert.Equal(customer.AccountId, account.Str("id"));
        Assert.Equal(5_000_000, account.Long("balance_micros"));
        Assert.Equal(3_500_000, account.Long("available_micros"));
        Assert.Equal(1_500_000, account.Long("held_micros"));
        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);
        Assert.True(await ScalarAsync(connection, $"SELECT COUNT(*) FROM api_keys WHERE id = '{customer.KeyId}' AND last_used_at IS NOT NULL") == 1,
            "last_used_at is set on first use");
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Account_MissingOrWrongKey_Returns401InvalidApiKey(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var customer = await app.CustomerAsync(0);

        await AssertProblemAsync(await app.Anonymous.GetAsync("/api/v1/account"), HttpStatusCode.Unauthorized, "invalid_api_key");
        await AssertProblemAsync(await app.Anonymous.PostAsync("/api/v1/authorizations", JsonBody("""{"id":"x","amount_micros":1}""")),
            HttpStatusCode.Unauthorized, "invalid_api_key");
        var wrong = customer.Key[..^4] + (customer.Key.EndsWith("AAAA") ? "BBBB" : "AAAA");
        foreach (var bearer in new[] { wrong, "tg_live_nope", TestApp.AdminKey, customer.Key.ToUpperInvariant() })
        {
            var response = await app.Anonymous.SendAsync(Request(HttpMethod.Get, "/api/v1/account", bearer: bearer));
            await AssertProblemAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.ToString());
        }
        // Basic instead of Bearer is no key at all.
        var basic = new HttpRequestMessage(HttpMethod.Get, "/api/v1/account");
        basic.Headers.Authorization = new AuthenticationHeaderValue("Basic", customer.Key);
        await AssertProblemAsync(await app.Anonymous.SendAsync(basic), HttpStatusCode.Unauthorized, "invalid_api_key");
        // And an API key opens no admin route.
        await AssertProblemAsync(await customer.Client.GetAsync($"/admin/v1/accounts/{customer.AccountId}"), HttpStatusCode.Unauthorized, "unauthorized");
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Account_KeyRevoked_RejectedWithinAboutOneSecond(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var customer = await app.CustomerAsync(0);
        using var other = await app.CustomerAsync(0);
        Assert.Equal(HttpStatusCode.OK, (await customer.Client.GetAsync("/api/v1/account")).StatusCode); // now cached

        await using (var connection = await app.Get<Database>().OpenAsync(CancellationToken.None))
        {
            await using var cmd = connection.CreateCommand();
            cmd.CommandText = $"UPDATE api_keys SET revoked_at = 1 WHERE id = '{customer.KeyId}'";
            Assert.Equal(1, await cmd.ExecuteNonQueryAsync());
        }
        // The cached answer was filled before the revocation, so it expires less than CacheTtl after it: a request
        // started after that must be refused, however slowly the machine answers it.
        await Task.Delay(ApiKeyAuthenticator.CacheTtl + TimeSpan.FromMilliseconds(50));
        var response = await customer.Client.GetAsync("/api/v1/account");
        await AssertProblemAsync(response, HttpStatusCode.Unauthorized, "invalid_api_key");
        // Other keys are unaffected.
        Assert.Equal(HttpStatusCode.OK, (await other.Client.GetAsync("/api/v1/account")).StatusCode);
    }
}
