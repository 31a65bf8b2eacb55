using Microsoft.Playwright;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// Headless Chromium for the dashboard's browser tests: the system's Chromium (<c>TOLLGATE_TEST_CHROMIUM</c>, else
/// <c>/usr/bin/chromium</c>; scripts/chromium.sh installs it) driven by Playwright's bundled node driver. Without a
/// Chromium the tests fail with that message; they never skip.
/// </summary>
public sealed class Browser : IAsyncDisposable
{
    private Browser(IPlaywright playwright, IBrowser chromium)
    {
        Playwright = playwright;
        Chromium = chromium;
    }

    public IPlaywright Playwright { get; }
    public IBrowser Chromium { get; }

    public static string ChromiumPath
    {
        get
        {
            var path = Environment.GetEnvironmentVariable("TOLLGATE_TEST_CHROMIUM") is { Length: > 0 } p ? p : "/usr/bin/chromium";
            return File.Exists(path) ? path : throw new InvalidOperationException(
                $"No Chromium at '{path}'. Install it (scripts/chromium.sh prints its path) or set TOLLGATE_TEST_CHROMIUM; the browser tests do not skip.");
        }
    }

    public static async Task<Browser> LaunchAsync()
    {
        var path = ChromiumPath;
        var playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        var chromium = await playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = path, Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        });
        return new Browser(playwright, chromium);
    }

    /// <summary>A fresh context (its own cookies) at a phone-friendly desktop width, with the app as base URL.</summary>
    public Task<IBrowserContext> ContextAsync(Uri baseUrl, int width = 1100, int height = 900) =>
        Chromium.NewContextAsync(new() { BaseURL = baseUrl.ToString().TrimEnd('/'), ViewportSize = new() { Width = width, Height = height } });

    /// <summary>artifacts/screenshots/ under the repository root (gitignored); docs/screenshots holds the committed copies.</summary>
    public static string ScreenshotPath(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Tollgate.slnx"))) dir = dir.Parent;
        var root = Path.Combine(dir?.FullName ?? Path.GetTempPath(), "artifacts", "screenshots");
        Directory.CreateDirectory(root);
        return Path.Combine(root, name + ".png");
    }

    public async ValueTask DisposeAsync()
    {
        await Chromium.DisposeAsync();
        Playwright.Dispose();
    }
}
