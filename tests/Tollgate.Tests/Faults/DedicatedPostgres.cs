using System.Diagnostics;
using Tollgate.Tests.Processes;

namespace Tollgate.Tests.Faults;

/// <summary>
/// A PostgreSQL cluster of one test's own, started with the repository's scripts/pg.sh on a free port and a private
/// directory, so the test may stop and restart it without touching the shared server the rest of the suite uses.
/// Starting it never skips: if PostgreSQL cannot be started the test fails with the script's output (under CI and
/// locally alike, as <see cref="TestDatabases"/> does).
/// </summary>
public sealed class DedicatedPostgres : IAsyncDisposable
{
    private readonly string _script;
    private readonly Dictionary<string, string?> _environment;

    private DedicatedPostgres(string script, int port, string root)
    {
        _script = script;
        Port = port;
        Root = root;
        _environment = new() { ["PGPORT"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture), ["PGROOT"] = root };
    }

    public int Port { get; }
    public string Root { get; }

    /// <summary>The <c>tollgate</c> database pg.sh creates, in the form <c>--database</c> accepts.</summary>
    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username=tollgate;Password=tollgate;Database=tollgate";

    public static async Task<DedicatedPostgres> StartAsync()
    {
        var port = TollgateServer.FreePort();
        var root = Path.Combine(Path.GetTempPath(), $"tollgate-pg-fault-{port}-{Guid.NewGuid():N}"[..40]);
        var pg = new DedicatedPostgres(FindScript(), port, root);
        await pg.RunAsync("start");
        return pg;
    }

    /// <summary>Stops the server (pg_ctl -m fast: open sessions are terminated, as in an operator's restart).</summary>
    public Task StopAsync() => RunAsync("stop");

    /// <summary>Starts the stopped server again on the same port and data directory.</summary>
    public Task StartAgainAsync() => RunAsync("start");

    private async Task RunAsync(string command)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(_script);
        psi.ArgumentList.Add(command);
        foreach (var (k, v) in _environment) psi.Environment[k] = v;
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("could not run bash");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
            throw new InvalidOperationException(
                $"scripts/pg.sh {command} (PGPORT={Port}, PGROOT={Root}) failed with exit code {process.ExitCode}; this test needs its own " +
                $"PostgreSQL cluster (CI={Environment.GetEnvironmentVariable("CI") ?? "unset"}).\n{await stdout}\n{await stderr}");
    }

    /// <summary>scripts/pg.sh of this repository, found upwards from the test binaries.</summary>
    private static string FindScript()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "scripts", "pg.sh");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("scripts/pg.sh not found above " + AppContext.BaseDirectory);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        finally
        {
            try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
