using System.Net.Http.Headers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Tollgate.Infrastructure.Data;
using Tollgate.Tests.Metering;
using static Tollgate.Tests.Api.AdminApi;

namespace Tollgate.Tests.Api;

/// <summary>API keys and admin keys: shown once, stored only as SHA-256 hashes, and never interchangeable.</summary>
public sealed class AdminKeysApiTests(AdminApiFixture fixture) : IClassFixture<AdminApiFixture>
{
    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreateKey_ValidAccount_ReturnsKeyOnceAndStoresOnlyItsHash(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();

        var response = await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("""{"name":"production"}"""));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var created = await response.Content.ReadFromJsonAsync<JsonElement>();
        var keyId = created.GetProperty("id").GetString()!;
        var key = created.GetProperty("key").GetString()!;
        Assert.Equal($"/admin/v1/accounts/{id}/keys/{keyId}", response.Headers.Location?.OriginalString);
        Assert.Matches("^tg_live_[0-9A-Za-z]{43}$", key);
        Assert.Equal(key[..14], created.GetProperty("prefix").GetString());
        Assert.Equal(id, created.GetProperty("account_id").GetString());
        Assert.Equal("production", created.GetProperty("name").GetString());
        Assert.Equal("standard", created.GetProperty("type").GetString());

        // Nothing else the API returns about the account carries the key.
        Assert.DoesNotContain(key, await app.Admin.GetStringAsync($"/admin/v1/accounts/{id}"));
        Assert.DoesNotContain(key, await app.Admin.GetStringAsync($"/admin/v1/accounts/{id}/ledger"));
        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);
        await AssertKeyStoredOnlyAsHashAsync(connection, "api_keys", keyId, key);

        // A second key for the same account is a different secret.
        var second = await (await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("{}"))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.NotEqual(key, second.GetProperty("key").GetString());
        Assert.Equal(JsonValueKind.Null, second.GetProperty("name").ValueKind);
        Assert.Equal(2, await ScalarAsync(connection, $"SELECT COUNT(*) FROM api_keys WHERE account_id = '{id}'"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreateKey_InvalidInput_ReturnsProblemAndStoresNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();

        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody($$"""{"name":"{{new string('n', 201)}}"}""")),
            HttpStatusCode.BadRequest, "invalid_request");
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("""{"name":"x","scopes":["all"]}""")),
            HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("{\"name\":\"")),
            HttpStatusCode.BadRequest, "invalid_json");
        await AssertProblemAsync(await app.Anonymous.PostAsync($"/admin/v1/accounts/{id}/keys", JsonBody("{}")),
            HttpStatusCode.Unauthorized, "unauthorized");

        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);
        Assert.Equal(0, await ScalarAsync(connection, $"SELECT COUNT(*) FROM api_keys WHERE account_id = '{id}'"));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task PrepareAsync_NoConfiguredAdminKey_GeneratesKeyOnceThatAuthenticates(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);

        string? generated;
        await using (var first = BuildWithoutAdminKey(database))
            generated = await Tollgate.TollgateApp.PrepareAsync(first);
        await using var second = BuildWithoutAdminKey(database);
        var again = await Tollgate.TollgateApp.PrepareAsync(second);

        Assert.NotNull(generated);
        Assert.Matches("^tg_admin_[0-9A-Za-z]{43}$", generated);
        Assert.Null(again);

        await second.StartAsync();
        try
        {
            var address = new Uri(second.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            using var client = new HttpClient { BaseAddress = address };

            using var withKey = new HttpRequestMessage(HttpMethod.Post, "/admin/v1/accounts") { Content = JsonBody("""{"name":"first customer"}""") };
            withKey.Headers.Authorization = new AuthenticationHeaderValue("Bearer", generated);
            Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(withKey)).StatusCode);

            using var withTestKey = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/ledger/audit");
            withTestKey.Headers.Authorization = new AuthenticationHeaderValue("Bearer", TestApp.AdminKey);
            await AssertProblemAsync(await client.SendAsync(withTestKey), HttpStatusCode.Unauthorized, "unauthorized");
            await AssertProblemAsync(await client.GetAsync("/admin/v1/ledger/audit"), HttpStatusCode.Unauthorized, "unauthorized");

            await using var connection = await second.Services.GetRequiredService<Database>().OpenAsync(CancellationToken.None);
            Assert.Equal(1, await ScalarAsync(connection, "SELECT COUNT(*) FROM admin_keys"));
            await AssertKeyStoredOnlyAsHashAsync(connection, "admin_keys", "admin_initial", generated!);
        }
        finally
        {
            await second.StopAsync();
        }
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task PrepareAsync_ConfiguredAdminKey_GeneratesAndStoresNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);

        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);

        Assert.Equal(0, await ScalarAsync(connection, "SELECT COUNT(*) FROM admin_keys"));
        Assert.Equal(HttpStatusCode.OK, (await app.Admin.GetAsync("/admin/v1/ledger/audit")).StatusCode);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Admin_keys_are_created_shown_once_and_deleted_everywhere_but_never_the_last(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);
        await using var app = BuildWithoutAdminKey(database);
        var initial = (await Tollgate.TollgateApp.PrepareAsync(app))!;
        await using var other = BuildWithoutAdminKey(database); // a second process on the same database
        await Tollgate.TollgateApp.PrepareAsync(other);
        await app.StartAsync();
        await other.StartAsync();
        try
        {
            HttpClient Client(WebApplication a, string key)
            {
                var client = new HttpClient { BaseAddress = new Uri(a.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()) };
                client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
                return client;
            }
            using var first = Client(app, initial);
            using var firstElsewhere = Client(other, initial);

            var listed = await first.GetFromJsonAsync<JsonElement>("/admin/v1/admin-keys");
            var only = Assert.Single(listed.GetProperty("data").EnumerateArray());
            Assert.Equal(("admin_initial", "database"), (only.Str("id"), only.Str("source")));
            await AssertProblemAsync(await first.DeleteAsync("/admin/v1/admin-keys/admin_initial"), HttpStatusCode.Conflict, "last_admin_key");

            var created = await first.PostAsync("/admin/v1/admin-keys", null);
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            var body = await created.Content.ReadFromJsonAsync<JsonElement>();
            var key = body.Str("key")!;
            Assert.Matches("^tg_admin_[0-9A-Za-z]{43}$", key);
            using var second = Client(app, key);
            var both = await second.GetStringAsync("/admin/v1/admin-keys");
            Assert.DoesNotContain(key, both);
            Assert.DoesNotContain(initial, both);
            Assert.Equal(2, JsonDocument.Parse(both).RootElement.GetProperty("data").GetArrayLength());
            await using (var connection = await app.Services.GetRequiredService<Database>().OpenAsync(CancellationToken.None))
                await AssertKeyStoredOnlyAsHashAsync(connection, "admin_keys", body.Str("id")!, key);

            // The first key deleted with the second: refused at once here, and within the refresh interval elsewhere.
            Assert.Equal(HttpStatusCode.OK, (await firstElsewhere.GetAsync("/admin/v1/admin-keys")).StatusCode);
            Assert.Equal(HttpStatusCode.NoContent, (await second.DeleteAsync("/admin/v1/admin-keys/admin_initial")).StatusCode);
            await AssertProblemAsync(await first.GetAsync("/admin/v1/admin-keys"), HttpStatusCode.Unauthorized, "unauthorized");
            await Task.Delay(Tollgate.Features.Admin.AdminKeys.RefreshInterval + TimeSpan.FromMilliseconds(100));
            await AssertProblemAsync(await firstElsewhere.GetAsync("/admin/v1/admin-keys"), HttpStatusCode.Unauthorized, "unauthorized");
            using var secondElsewhere = Client(other, key);
            Assert.Equal(HttpStatusCode.OK, (await secondElsewhere.GetAsync("/admin/v1/admin-keys")).StatusCode);

            // Now the second key is the last one; an unknown id is 404.
            await AssertProblemAsync(await second.DeleteAsync($"/admin/v1/admin-keys/{body.Str("id")}"), HttpStatusCode.Conflict, "last_admin_key");
            await AssertProblemAsync(await second.DeleteAsync("/admin/v1/admin-keys/admkey_nope"), HttpStatusCode.NotFound, "not_found");
        }
        finally
        {
            await other.StopAsync();
            await app.StopAsync();
        }
    }

    /// <summary>The real app on a free loopback port with no admin key configured anywhere (blank overrides any environment value).</summary>
    private static WebApplication BuildWithoutAdminKey(string database) =>
        Tollgate.TollgateApp.Build(["--urls", "http://127.0.0.1:0"], database, b =>
        {
            b.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Tollgate:AdminKey"] = "",
                ["TOLLGATE_ADMIN_KEY"] = "",
            });
            b.Logging.SetMinimumLevel(LogLevel.Warning);
        });
}
