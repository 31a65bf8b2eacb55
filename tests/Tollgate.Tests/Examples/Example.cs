using System.Net.Http.Headers;

namespace Tollgate.Tests.Examples;

/// <summary>
/// The examples under <c>examples/&lt;name&gt;/</c>, booted the way their READMEs start them: the real app with THAT
/// <c>tollgate.json</c> as its config file (<c>Tollgate:ConfigFile</c>, what <c>serve --config</c> sets). Tests only add
/// what cannot be in a committed file: a fresh database, and the addresses of the local stand-ins for third parties
/// (fake LLM upstream, local EVM node).
/// </summary>
internal static class Example
{
    /// <summary>The repository's <c>examples/&lt;name&gt;/tollgate.json</c> (found above the test binary, like the screenshots folder).</summary>
    public static string ConfigFile(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var file = Path.Combine(dir.FullName, "examples", name, "tollgate.json");
            if (File.Exists(Path.Combine(dir.FullName, "Tollgate.slnx")) && File.Exists(file)) return file;
        }
        throw new InvalidOperationException($"examples/{name}/tollgate.json not found above {AppContext.BaseDirectory}.");
    }

    public static Task<TestApp> StartAsync(string name, string engine, IDictionary<string, string?> thirdParties)
    {
        var settings = new Dictionary<string, string?>(thirdParties) { ["Tollgate:ConfigFile"] = ConfigFile(name) };
        return TestApp.StartAsync(engine, settings);
    }

    /// <summary>A client of the app that sends <paramref name="bearer"/> (an API key or a session token).</summary>
    public static HttpClient Client(TestApp app, string bearer)
    {
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        return client;
    }

    public static async Task<JsonElement> OkAsync(HttpResponseMessage response, HttpStatusCode expected = HttpStatusCode.OK)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"Expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }
}
