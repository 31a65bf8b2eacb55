using System.Net;
namespace Tollgate.Tests.Api;

public sealed class HealthTests
{
    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Health_OnEachEngine_ReportsEngineAndReachableDatabase(string engine)
    {
        await using var app = await TestApp.StartAsync(engine);
        var body = await app.Anonymous.GetFromJsonAsync<JsonElement>("/health");
        Assert.Equal("ok", body.GetProperty("status").GetString());
        Assert.Equal(engine == TestDatabases.Postgres ? "postgresql" : "sqlite", body.GetProperty("database").GetString());
        Assert.True(body.GetProperty("database_reachable").GetBoolean());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Live_and_ready_answer_and_ready_reports_the_schema_version(string engine)
    {
        await using var app = await TestApp.StartAsync(engine);
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/live")).StatusCode);
        var ready = await app.Anonymous.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        var body = await ready.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("ready", body.GetProperty("status").GetString());
        var expected = Tollgate.Infrastructure.Data.Migrator.Load(engine == TestDatabases.Postgres
            ? Tollgate.Infrastructure.Data.DatabaseEngine.Postgres : Tollgate.Infrastructure.Data.DatabaseEngine.Sqlite)[^1].Version;
        Assert.Equal(expected, body.GetProperty("schema_version").GetInt32());

        // A schema behind the build (a migration not applied yet) is not ready.
        await using (var c = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenAsync(CancellationToken.None))
            await Dapper.SqlMapper.ExecuteAsync(c, "DELETE FROM schema_migrations WHERE version = @v", new { v = expected });
        var behind = await app.Anonymous.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, behind.StatusCode);
        Assert.Equal("migrations_pending", (await behind.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("status").GetString());
    }
}
