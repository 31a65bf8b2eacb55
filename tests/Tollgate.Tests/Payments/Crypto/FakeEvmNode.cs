using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Payments.Crypto;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>
/// A scripted EVM node for what a real local chain cannot easily do (reorgs, receipts that vanish): Kestrel on 127.0.0.1
/// answering JSON-RPC 2.0 exactly as geth/op-geth do (<c>eth_chainId</c>, <c>eth_blockNumber</c>,
/// <c>eth_getTransactionReceipt</c> with null for unknown hashes, <c>eth_getLogs</c> with address/topic filters,
/// error objects for unknown methods). Quantities are 0x-hex without leading zeros.
/// </summary>
internal sealed class FakeEvmNode : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentDictionary<string, JsonObject> _receipts = new();
    private long _block = 1_000;
    private long _nextLogIndex;

    public long ChainId { get; set; } = 8453;
    public long BlockNumber { get => Interlocked.Read(ref _block); set => Interlocked.Exchange(ref _block, value); }
    public string Url { get; }

    private FakeEvmNode(WebApplication app, string url)
    {
        _app = app;
        Url = url;
    }

    public static async Task<FakeEvmNode> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        FakeEvmNode? node = null;
        app.MapPost("/", async (HttpContext http) =>
        {
            var request = await JsonNode.ParseAsync(http.Request.Body);
            var response = node!.Handle(request!.AsObject());
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(response.ToJsonString());
        });
        await app.StartAsync();
        var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/";
        node = new FakeEvmNode(app, url);
        return node;
    }

    public static string Hex(long v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
    public static string RandomHash() => "0x" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    /// <summary>One ERC-20 Transfer log as the node reports it.</summary>
    public sealed record TransferLog(string Token, string From, string To, long Amount);

    /// <summary>Mines a transaction: its receipt (status 0x1 or 0x0) in <paramref name="block"/> (default: the head), with the given logs.</summary>
    public string Mine(IReadOnlyList<TransferLog> logs, bool succeeded = true, long? block = null, string? txHash = null)
    {
        txHash ??= RandomHash();
        var number = block ?? BlockNumber;
        var blockHash = RandomHash();
        var logArray = new JsonArray();
        foreach (var l in succeeded ? logs : [])
        {
            logArray.Add(new JsonObject
            {
                ["address"] = l.Token.ToLowerInvariant(),
                ["topics"] = new JsonArray(Ethereum.TransferTopic, Ethereum.AddressTopic(l.From), Ethereum.AddressTopic(l.To)),
                ["data"] = "0x" + l.Amount.ToString("x64", CultureInfo.InvariantCulture),
                ["blockNumber"] = Hex(number),
                ["transactionHash"] = txHash,
                ["transactionIndex"] = "0x0",
                ["blockHash"] = blockHash,
                ["logIndex"] = Hex(Interlocked.Increment(ref _nextLogIndex) % 50),
                ["removed"] = false,
            });
        }
        _receipts[txHash] = new JsonObject
        {
            ["transactionHash"] = txHash,
            ["transactionIndex"] = "0x0",
            ["blockHash"] = blockHash,
            ["blockNumber"] = Hex(number),
            ["from"] = logs.Count > 0 ? logs[0].From.ToLowerInvariant() : "0x0000000000000000000000000000000000000001",
            ["to"] = logs.Count > 0 ? logs[0].Token.ToLowerInvariant() : null,
            ["cumulativeGasUsed"] = "0x2a3c1",
            ["gasUsed"] = "0xd1e4",
            ["effectiveGasPrice"] = "0x4c4b40",
            ["contractAddress"] = null,
            ["logs"] = logArray,
            ["logsBloom"] = "0x" + new string('0', 512),
            ["status"] = succeeded ? "0x1" : "0x0",
            ["type"] = "0x2",
            ["l1Fee"] = "0x1234",
        };
        return txHash;
    }

    /// <summary>A reorg drops the transaction: its receipt is gone (null), as if back in the mempool.</summary>
    public void Drop(string txHash) => _receipts.TryRemove(txHash, out _);

    /// <summary>A reorg re-includes the transaction in another block (new block hash and number).</summary>
    public void MoveToBlock(string txHash, long block)
    {
        var receipt = _receipts[txHash];
        var blockHash = RandomHash();
        receipt["blockHash"] = blockHash;
        receipt["blockNumber"] = Hex(block);
        foreach (var log in receipt["logs"]!.AsArray())
        {
            log!["blockHash"] = blockHash;
            log["blockNumber"] = Hex(block);
        }
    }

    private JsonObject Handle(JsonObject request)
    {
        var id = request["id"]?.DeepClone();
        var method = request["method"]?.GetValue<string>();
        var parameters = request["params"]?.AsArray() ?? [];
        JsonNode? result;
        switch (method)
        {
            case "eth_chainId":
                result = Hex(ChainId);
                break;
            case "eth_blockNumber":
                result = Hex(BlockNumber);
                break;
            case "eth_getTransactionReceipt":
                var hash = parameters[0]!.GetValue<string>().ToLowerInvariant();
                result = _receipts.TryGetValue(hash, out var receipt) && Ethereum.ParseQuantity(receipt["blockNumber"]!.GetValue<string>()) <= BlockNumber
                    ? receipt.DeepClone() : null;
                break;
            case "eth_getLogs":
                result = GetLogs(parameters[0]!.AsObject());
                break;
            default:
                return new JsonObject { ["jsonrpc"] = "2.0", ["id"] = id, ["error"] = new JsonObject { ["code"] = -32601, ["message"] = $"the method {method} does not exist/is not available" } };
        }
        return new JsonObject { ["jsonrpc"] = "2.0", ["id"] = id, ["result"] = result };
    }

    private JsonArray GetLogs(JsonObject filter)
    {
        var from = Ethereum.ParseQuantity(filter["fromBlock"]!.GetValue<string>())!.Value;
        var to = Ethereum.ParseQuantity(filter["toBlock"]!.GetValue<string>())!.Value;
        var address = filter["address"]?.GetValue<string>().ToLowerInvariant();
        var topics = filter["topics"]?.AsArray();
        var logs = new JsonArray();
        foreach (var receipt in _receipts.Values)
        foreach (var log in receipt["logs"]!.AsArray())
        {
            var block = Ethereum.ParseQuantity(log!["blockNumber"]!.GetValue<string>())!.Value;
            if (block < from || block > to || block > BlockNumber) continue;
            if (address is not null && log["address"]!.GetValue<string>() != address) continue;
            var logTopics = log["topics"]!.AsArray();
            var match = true;
            for (var i = 0; topics is not null && i < topics.Count; i++)
                if (topics[i] is { } t && (i >= logTopics.Count || logTopics[i]!.GetValue<string>() != t.GetValue<string>().ToLowerInvariant())) match = false;
            if (match) logs.Add(log.DeepClone());
        }
        return logs;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
