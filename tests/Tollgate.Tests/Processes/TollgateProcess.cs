using System.Diagnostics;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Tollgate.Tests.Processes;

/// <summary>What a finished <c>tollgate</c> command printed, and its exit code.</summary>
public sealed record CliResult(int ExitCode, string StdOut, string StdErr)
{
    /// <summary>Stdout parsed as one JSON document; fails the test with both streams when it is not.</summary>
    public JsonElement Json()
    {
        try
        {
            using var doc = JsonDocument.Parse(StdOut);
            return doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"stdout is not one JSON document ({e.Message}).\n{this}", e);
        }
    }

    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{StdOut}\n--- stderr ---\n{StdErr}";
}

/// <summary>
/// Runs the built <c>tollgate.dll</c> (copied next to the test assembly by the project reference) as a child
/// process through the same <c>dotnet</c> host that runs the tests.
/// </summary>
public static class TollgateExecutable
{
    public static string DllPath
    {
        get
        {
            var path = Path.Combine(AppContext.BaseDirectory, "tollgate.dll");
            return File.Exists(path) ? path : throw new FileNotFoundException("tollgate.dll is not next to the test assembly.", path);
        }
    }

    /// <summary>The dotnet host: DOTNET_HOST_PATH is set by the SDK for test runs; "dotnet" on PATH otherwise.</summary>
    public static string DotnetHost =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>A start info for <c>dotnet tollgate.dll args…</c> in a scratch working directory, with inherited Tollgate settings removed.</summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> args, IDictionary<string, string?>? environment = null)
    {
        var workDir = Path.Combine(Path.GetTempPath(), "tollgate-tests", "cwd");
        Directory.CreateDirectory(workDir);
        var psi = new ProcessStartInfo(DotnetHost)
        {
            WorkingDirectory = workDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(DllPath);
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Whatever the test runner's environment says must not leak into the child's choice of database, key or port.
        foreach (var name in new[] { "TOLLGATE_DATABASE", "TOLLGATE_ADMIN_KEY", "ASPNETCORE_URLS", "DOTNET_URLS", "ASPNETCORE_HTTP_PORTS", "ASPNETCORE_HTTPS_PORTS" })
            psi.Environment.Remove(name);
        psi.Environment["DOTNET_NOLOGO"] = "1";
        if (environment is not null)
            foreach (var (k, v) in environment)
            {
                if (v is null) psi.Environment.Remove(k);
                else psi.Environment[k] = v;
            }
        return psi;
    }

    /// <summary>Runs a command to completion (killing it after <paramref name="timeout"/>, default 60 s).</summary>
    public static async Task<CliResult> RunAsync(IEnumerable<string> args, IDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
    {
        using var process = new Process { StartInfo = StartInfo(args, environment) };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"tollgate {string.Join(' ', args)} did not finish in time.\n{stdout}\n{stderr}");
        }
        // The parameterless wait drains the redirected streams to their end.
        process.WaitForExit();
        lock (stdout) lock (stderr) return new CliResult(process.ExitCode, stdout.ToString(), stderr.ToString());
    }
}

/// <summary>
/// A <c>tollgate serve</c> child process on 127.0.0.1 with a fixed admin key (TOLLGATE_ADMIN_KEY). Ready once
/// GET /health answers 200. <see cref="Kill"/> is a hard crash (SIGKILL of the whole tree); disposing kills too.
/// </summary>
public sealed class TollgateServer : IAsyncDisposable
{
    public const string AdminKey = "tg_admin_process_test_0123456789abcdefghijklmnopqrstuv";

    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private TollgateServer(Process process, Uri baseAddress)
    {
        _process = process;
        BaseAddress = baseAddress;
        // One handler per server, sized for the concurrent clients the tests run.
        var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 256, PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        Admin = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(60) };
        Admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
    }

    public Uri BaseAddress { get; }
    public HttpClient Admin { get; }
    public int ProcessId => _process.Id;
    public bool HasExited => _process.HasExited;

    /// <summary>The last part of the child's stdout and stderr, for failure messages.</summary>
    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Starts <c>serve</c> on a free loopback port and waits (≤ 60 s) until /health answers 200.</summary>
    public static async Task<TollgateServer> StartAsync(string database, IDictionary<string, string?>? environment = null)
    {
        Exception? last = null;
        // A free port found by binding :0 can be taken by someone else before the child binds it; try again then.
        for (var attempt = 0; attempt < 3; attempt++)
        {
            var port = FreePort();
            var env = new Dictionary<string, string?>
            {
                ["TOLLGATE_ADMIN_KEY"] = AdminKey,
                ["Logging__LogLevel__Default"] = "Warning",
            };
            if (environment is not null) foreach (var (k, v) in environment) env[k] = v;
            var process = new Process { StartInfo = TollgateExecutable.StartInfo(["serve", "--database", database, "--urls", $"http://127.0.0.1:{port}"], env) };
            var server = new TollgateServer(process, new Uri($"http://127.0.0.1:{port}"));
            process.OutputDataReceived += (_, e) => server.Append(e.Data);
            process.ErrorDataReceived += (_, e) => server.Append(e.Data);
            process.Start();
            process.StandardInput.Close();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            try
            {
                await server.WaitUntilHealthyAsync(TimeSpan.FromSeconds(60));
                return server;
            }
            catch (Exception e)
            {
                last = e;
                await server.DisposeAsync();
            }
        }
        throw new InvalidOperationException("tollgate serve did not become healthy.", last);
    }

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output)
        {
            if (_output.Length > 64_000) _output.Remove(0, _output.Length - 32_000);
            _output.AppendLine(line);
        }
    }

    private async Task WaitUntilHealthyAsync(TimeSpan timeout)
    {
        using var probe = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"tollgate serve exited with code {_process.ExitCode} before it was healthy.\n{Output}");
            try
            {
                using var response = await probe.GetAsync("/health");
                if (response.StatusCode == HttpStatusCode.OK) return;
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException)
            {
                // Listening but busy starting up.
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"tollgate serve was not healthy within {timeout}.\n{Output}");
            await Task.Delay(100);
        }
    }

    /// <summary>Crashes the server: SIGKILL of the process tree, no shutdown hooks, then waits for it to be gone.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(30_000);
    }

    /// <summary>Asks the server to stop (SIGTERM, as systemd and container runtimes do) and waits for it to exit; returns the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        if (Kill(_process.Id, 15) != 0) throw new InvalidOperationException($"kill -TERM {_process.Id} failed: errno {Marshal.GetLastPInvokeError()}");
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        _process.WaitForExit();
        return _process.ExitCode;
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public ValueTask DisposeAsync()
    {
        Admin.Dispose();
        try
        {
            Kill();
        }
        catch (InvalidOperationException)
        {
            // Never started or already reaped.
        }
        _process.Dispose();
        return ValueTask.CompletedTask;
    }
}
