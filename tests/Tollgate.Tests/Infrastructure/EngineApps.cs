namespace Tollgate.Tests.Infrastructure;

/// <summary>
/// A test class with one app per engine, each started with <paramref name="settings"/> before the class's tests and
/// stopped after them (for settings that differ from the shared fixtures').
/// </summary>
public abstract class EngineApps(IDictionary<string, string?> settings) : IAsyncLifetime
{
    private readonly Dictionary<string, TestApp> _apps = new();

    public static TheoryData<string> Engines => TestDatabases.Engines;

    protected TestApp App(string engine) => _apps[engine];

    public async Task InitializeAsync()
    {
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres }) _apps[engine] = await TestApp.StartAsync(engine, settings);
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
    }
}
