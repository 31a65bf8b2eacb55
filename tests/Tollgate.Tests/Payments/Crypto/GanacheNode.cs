using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>
/// A real local EVM node: ganache (pinned in tests/evm/package.json, installed by <c>npm ci</c> in scripts/test.sh) on
/// 127.0.0.1 and a free port, with its deterministic accounts (mnemonic "myth like bonus scare …"), each unlocked, one block
/// per transaction. Never skipped: if node or ganache is missing the fixture throws with what to run.
/// </summary>
public sealed class GanacheNode : IAsyncLifetime
{
    /// <summary>ganache --wallet.deterministic account 0 (public test key; never use it on a real chain).</summary>
    public const string Account0Key = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";
    public const string Account0 = "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1";
    public const string Account1 = "0xffcf8fdee72ac11b5c542428b35eef5769c409f0";
    public const string Account2 = "0x22d491bde2303f2f43325b2108d26f1eaba1e32b";
    public const string Account3Key = "646f1ce2fdad0e6deeeb5c7e8e5543bdde65e86029e2fd9fc169899c440a7913";
    public const string Account3 = "0xe11ba2b4d45eaed5996cd0823791e0c93114882d";
    public const long ChainId = 1337;

    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };
    private readonly StringBuilder _output = new();
    private Process? _process;
    private int _id;

    public string Url { get; private set; } = "";

    public async Task InitializeAsync()
    {
        var evmDir = FindEvmDirectory();
        var cli = Path.Combine(evmDir, "node_modules", "ganache", "dist", "node", "cli.js");
        if (!File.Exists(cli))
            throw new InvalidOperationException($"ganache is not installed: {cli} is missing. Run scripts/test.sh, or `npm ci` in {evmDir}.");
        var port = FreePort();
        Url = $"http://127.0.0.1:{port}/";
        var start = new ProcessStartInfo("node")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = evmDir,
        };
        foreach (var a in new[] { cli, "--server.host", "127.0.0.1", "--server.port", port.ToString(CultureInfo.InvariantCulture), "--wallet.deterministic",
                     "--chain.chainId", ChainId.ToString(CultureInfo.InvariantCulture), "--logging.quiet", "--miner.instamine", "eager" })
            start.ArgumentList.Add(a);
        try
        {
            _process = Process.Start(start) ?? throw new InvalidOperationException("node did not start.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("`node` is not on PATH; the EVM tests need Node.js 20+ to run ganache.", e);
        }
        _process.OutputDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { lock (_output) _output.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                if (await CallAsync("eth_chainId") is { } id && id.GetValue<string>() == "0x" + ChainId.ToString("x", CultureInfo.InvariantCulture)) return;
            }
            catch (HttpRequestException) { }
            if (_process.HasExited || DateTime.UtcNow > deadline)
            {
                string output;
                lock (_output) output = _output.ToString();
                throw new InvalidOperationException($"ganache did not answer on {Url} (exited: {_process.HasExited}). Output:\n{output}");
            }
            await Task.Delay(250);
        }
    }

    private static string FindEvmDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "evm");
            if (File.Exists(Path.Combine(candidate, "package.json"))) return candidate;
        }
        throw new InvalidOperationException("tests/evm/package.json not found above " + AppContext.BaseDirectory);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async Task<JsonNode?> CallAsync(string method, params JsonNode?[] parameters)
    {
        var request = new JsonObject { ["jsonrpc"] = "2.0", ["id"] = Interlocked.Increment(ref _id), ["method"] = method, ["params"] = new JsonArray(parameters) };
        using var response = await _http.PostAsJsonAsync(Url, request);
        var body = (await response.Content.ReadFromJsonAsync<JsonNode>())!.AsObject();
        if (body["error"] is { } error) throw new InvalidOperationException($"{method}: {error.ToJsonString()}");
        return body["result"];
    }

    public async Task<long> BlockNumberAsync() => Convert.ToInt64(((string)(await CallAsync("eth_blockNumber"))!)[2..], 16);

    public async Task MineAsync(int blocks)
    {
        for (var i = 0; i < blocks; i++) await CallAsync("evm_mine");
    }

    /// <summary>Sends a transaction from an unlocked account and returns its hash (mined at once).</summary>
    public async Task<string> SendAsync(string from, string? to, string data, long gas = 3_000_000) =>
        (string)(await CallAsync("eth_sendTransaction", new JsonObject { ["from"] = from, ["to"] = to, ["data"] = data, ["gas"] = "0x" + gas.ToString("x") }))!;

    public async Task<JsonObject> ReceiptAsync(string txHash) => (await CallAsync("eth_getTransactionReceipt", txHash))!.AsObject();

    /// <summary>Deploys TestUsdc with <paramref name="supply"/> base units minted to <paramref name="deployer"/>; returns its address.</summary>
    public async Task<string> DeployTokenAsync(string deployer, long supply)
    {
        var tx = await SendAsync(deployer, null, TestUsdcBytecode.Hex + Word(supply));
        var receipt = await ReceiptAsync(tx);
        Assert.Equal("0x1", (string?)receipt["status"]);
        return ((string)receipt["contractAddress"]!).ToLowerInvariant();
    }

    /// <summary>ERC-20 transfer(to, amount): selector a9059cbb.</summary>
    public Task<string> TransferAsync(string token, string from, string to, long amount) =>
        SendAsync(from, token, "0xa9059cbb" + Address(to) + Word(amount), gas: 100_000);

    private static string Word(long v) => v.ToString("x64", CultureInfo.InvariantCulture);
    private static string Address(string a) => new string('0', 24) + a[2..].ToLowerInvariant();

    public Task DisposeAsync()
    {
        if (_process is { HasExited: false }) _process.Kill(entireProcessTree: true);
        _process?.Dispose();
        _http.Dispose();
        return Task.CompletedTask;
    }
}
