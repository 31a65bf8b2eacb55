using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>An ERC-20 Transfer log as read from a receipt or <c>eth_getLogs</c>; addresses lower case.</summary>
public sealed record EvmLog(string Address, IReadOnlyList<string> Topics, string Data, long LogIndex, long BlockNumber, string BlockHash, string TransactionHash, bool Removed);

/// <summary>The fields of <c>eth_getTransactionReceipt</c> Tollgate uses (OP-Stack L1-fee fields and the rest are ignored).</summary>
public sealed record EvmReceipt(string TransactionHash, long BlockNumber, string BlockHash, bool Succeeded, IReadOnlyList<EvmLog> Logs);

/// <summary>The node could not be reached, answered with a JSON-RPC error, or answered something that is not JSON-RPC.</summary>
public sealed class EvmRpcException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Plain JSON-RPC 2.0 over HTTP POST (<c>{"jsonrpc":"2.0","id":n,"method":…,"params":[…]}</c>) to the configured node,
/// through the named HttpClient <see cref="HttpClientName"/>.
/// </summary>
public sealed class EvmRpcClient(IHttpClientFactory httpClients, Microsoft.Extensions.Options.IOptions<CryptoOptions> options)
{
    public const string HttpClientName = "tollgate-evm-rpc";
    private long _id;

    public async Task<long> ChainIdAsync(CancellationToken ct) => QuantityResult("eth_chainId", await CallAsync("eth_chainId", [], ct));

    public async Task<long> BlockNumberAsync(CancellationToken ct) => QuantityResult("eth_blockNumber", await CallAsync("eth_blockNumber", [], ct));

    private static long QuantityResult(string method, JsonNode? result) =>
        (result is JsonValue v && v.TryGetValue<string>(out var s) ? Ethereum.ParseQuantity(s) : null)
        ?? throw new EvmRpcException($"{method} returned no 0x quantity.");

    /// <summary>The receipt, or null while the transaction is unknown or not yet mined.</summary>
    public async Task<EvmReceipt?> GetReceiptAsync(string txHash, CancellationToken ct)
    {
        var result = await CallAsync("eth_getTransactionReceipt", [JsonValue.Create(txHash)], ct);
        if (result is null) return null;
        try
        {
            var logs = result["logs"]?.AsArray().Select(l => ParseLog(l ?? throw new FormatException("A null log."))).ToList() ?? [];
            return new EvmReceipt(Str(result, "transactionHash").ToLowerInvariant(), Quantity(result, "blockNumber"), Str(result, "blockHash").ToLowerInvariant(),
                Str(result, "status") == "0x1", logs);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new EvmRpcException("eth_getTransactionReceipt returned a malformed receipt.", e);
        }
    }

    /// <summary>Transfer logs of <paramref name="contract"/> to <paramref name="recipient"/> in [from, to].</summary>
    public async Task<IReadOnlyList<EvmLog>> GetTransferLogsAsync(string contract, string recipient, long fromBlock, long toBlock, CancellationToken ct)
    {
        var filter = new JsonObject
        {
            ["fromBlock"] = Ethereum.FormatQuantity(fromBlock),
            ["toBlock"] = Ethereum.FormatQuantity(toBlock),
            ["address"] = contract.ToLowerInvariant(),
            ["topics"] = new JsonArray(Ethereum.TransferTopic, null, Ethereum.AddressTopic(recipient)),
        };
        var result = await CallAsync("eth_getLogs", [filter], ct);
        try
        {
            return result?.AsArray().Select(l => ParseLog(l ?? throw new FormatException("A null log."))).ToList() ?? throw new EvmRpcException("eth_getLogs returned null.");
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new EvmRpcException("eth_getLogs returned a malformed log.", e);
        }
    }

    private static EvmLog ParseLog(JsonNode l) => new(
        Str(l, "address").ToLowerInvariant(),
        (l["topics"] as JsonArray ?? throw new FormatException("Missing 'topics'.")).Select(t => (t ?? throw new FormatException("A null topic.")).GetValue<string>().ToLowerInvariant()).ToList(),
        Str(l, "data").ToLowerInvariant(),
        Quantity(l, "logIndex"),
        Quantity(l, "blockNumber"),
        Str(l, "blockHash").ToLowerInvariant(),
        Str(l, "transactionHash").ToLowerInvariant(),
        l["removed"]?.GetValue<bool>() ?? false);

    private static string Str(JsonNode node, string name) => node[name]?.GetValue<string>() ?? throw new FormatException($"Missing '{name}'.");

    private static long Quantity(JsonNode node, string name) => Ethereum.ParseQuantity(Str(node, name)) ?? throw new FormatException($"'{name}' is not a quantity.");

    private async Task<JsonNode?> CallAsync(string method, JsonNode?[] parameters, CancellationToken ct)
    {
        var id = Interlocked.Increment(ref _id);
        var request = new JsonObject { ["jsonrpc"] = "2.0", ["id"] = id, ["method"] = method, ["params"] = new JsonArray(parameters) };
        var client = httpClients.CreateClient(HttpClientName);
        client.Timeout = TimeSpan.FromSeconds(options.Value.RpcTimeoutSeconds);
        JsonNode? response;
        try
        {
            using var http = await client.PostAsJsonAsync(options.Value.RpcUrl, request, ct);
            if (!http.IsSuccessStatusCode) throw new EvmRpcException($"{method}: the node answered HTTP {(int)http.StatusCode}.");
            response = await http.Content.ReadFromJsonAsync<JsonNode>(ct);
        }
        catch (Exception e) when (e is HttpRequestException or JsonException or TaskCanceledException && !ct.IsCancellationRequested)
        {
            throw new EvmRpcException($"{method}: the node could not be reached or answered something that is not JSON.", e);
        }
        if (response is not JsonObject obj) throw new EvmRpcException($"{method}: the answer is not a JSON-RPC object.");
        if (obj["error"] is JsonObject error)
            throw new EvmRpcException($"{method}: JSON-RPC error {error["code"]?.ToJsonString()}: {error["message"]?.GetValue<string>()}");
        if (!obj.ContainsKey("result")) throw new EvmRpcException($"{method}: the answer has neither result nor error.");
        return obj["result"];
    }
}
