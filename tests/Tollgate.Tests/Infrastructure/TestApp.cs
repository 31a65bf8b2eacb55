using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Tollgate.Tests.Infrastructure;

/// <summary>
/// The real Tollgate app on real Kestrel at 127.0.0.1 on a free port, on a fresh database of the given engine.
/// <see cref="Admin"/> sends the admin key; <see cref="Anonymous"/> sends nothing.
/// </summary>
public sealed class TestApp : IAsyncDisposable
{
    public const string AdminKey = "tg_admin_test_0123456789abcdefghijklmnopqrstuvwxyz";

    private TestApp(WebApplication app, string database, Uri baseAddress)
    {
        App = app;
        DatabaseConnection = database;
        BaseAddress = baseAddress;
        Anonymous = new HttpClient { BaseAddress = baseAddress };
        Admin = new HttpClient { BaseAddress = baseAddress };
        Admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
    }

    public WebApplication App { get; }
    public string DatabaseConnection { get; }
    public Uri BaseAddress { get; }
    public HttpClient Admin { get; }
    public HttpClient Anonymous { get; }
    public IServiceProvider Services => App.Services;
    public T Get<T>() where T : notnull => App.Services.GetRequiredService<T>();

    public static readonly JsonSerializerOptions Json = Tollgate.TollgateApp.ConfigureJson(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    /// <param name="services">Replaces services before the app registers its own (e.g. a <c>TimeProvider</c>).</param>
    /// <param name="configure">Runs before the app's own registrations, e.g. to put in a manual <see cref="TimeProvider"/>.</param>
    public static async Task<TestApp> StartAsync(string engine, IDictionary<string, string?>? settings = null, string? database = null,
        Action<IServiceCollection>? services = null, Action<WebApplicationBuilder>? configure = null)
    {
        database ??= await TestDatabases.CreateAsync(engine);
        var app = Tollgate.TollgateApp.Build(["--urls", "http://127.0.0.1:0"], database, b =>
        {
            b.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Tollgate:AdminKey"] = AdminKey,
                ["Tollgate:Ledger:ExpirySweepIntervalMs"] = "100",
                // Every test client is 127.0.0.1: the suite's deliberate wrong credentials must not lock out the next test.
                // Sign-in limiting itself is tested on apps of its own (Api/SignInLimitTests).
                ["Tollgate:SignIn:MaxFailuresPerIp"] = "1000000",
                ["Tollgate:SignIn:MaxFailuresPerEmail"] = "1000000",
            });
            if (settings is not null) b.Configuration.AddInMemoryCollection(settings);
            b.Logging.SetMinimumLevel(LogLevel.Warning);
            services?.Invoke(b.Services);
            configure?.Invoke(b);
        });
        await Tollgate.TollgateApp.PrepareAsync(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestApp(app, database, new Uri(address));
    }

    /// <summary>Creates an account and returns its id.</summary>
    public async Task<string> CreateAccountAsync(string name = "Test account", long creditLimitMicros = 0)
    {
        var response = await Admin.PostAsJsonAsync("/admin/v1/accounts", new { name, credit_limit_micros = creditLimitMicros });
        response.EnsureSuccessStatusCode();
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        return body.GetProperty("id").GetString()!;
    }

    /// <summary>Grants credits to an account and returns the balance after.</summary>
    public async Task<long> GrantAsync(string accountId, long micros, string? key = null)
    {
        var response = await Admin.PostAsJsonAsync($"/admin/v1/accounts/{accountId}/credits",
            new { amount_micros = micros, idempotency_key = key ?? Guid.NewGuid().ToString("N"), reason = "test" });
        response.EnsureSuccessStatusCode();
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        return body.GetProperty("balance_micros").GetInt64();
    }

    public async ValueTask DisposeAsync()
    {
        Admin.Dispose();
        Anonymous.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
