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
}
