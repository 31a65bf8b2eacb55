namespace Tollgate.Tests.Infrastructure;

/// <summary>
/// A class fixture with one running app per engine, started on first use with <paramref name="settings"/> and shared
/// by the class's tests (each test makes its own accounts); stopped after them.
/// </summary>
public abstract class SharedEngineApps(IDictionary<string, string?>? settings = null) : IAsyncLifetime
{
    private readonly Dictionary<string, Task<TestApp>> _apps = new();

    public Task<TestApp> AppAsync(string engine)
    {
        lock (_apps)
        {
            if (!_apps.TryGetValue(engine, out var app)) _apps[engine] = app = TestApp.StartAsync(engine, settings);
            return app;
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await (await app).DisposeAsync();
    }
}
