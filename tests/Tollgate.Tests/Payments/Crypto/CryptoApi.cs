using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Tollgate.Tests.Api;
using Tollgate.Tests.Infrastructure;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>HTTP helpers for the crypto payment tests: the SIWE wallet-link flow and confirm calls, as a client would make them.</summary>
internal static class CryptoApi
{
    public static async Task<JsonElement> NonceAsync(this Customer c, string? address = null)
    {
        var response = await c.Client.PostAsync("/api/v1/wallets/nonce", AdminApi.JsonBody(address is null ? "{}" : $$"""{"address":"{{address}}"}"""));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    public static Task<HttpResponseMessage> LinkAsync(this Customer c, string message, string signature) =>
        c.Client.PostAsJsonAsync("/api/v1/wallets", new { message, signature });

    /// <summary>Nonce → the message Tollgate proposes → personal_sign → POST /api/v1/wallets; asserts 201.</summary>
    public static async Task LinkWalletAsync(this Customer c, TestWallet wallet)
    {
        var nonce = await c.NonceAsync(wallet.ChecksumAddress);
        var message = nonce.GetProperty("message").GetString()!;
        var response = await c.LinkAsync(message, wallet.PersonalSign(message));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    public static Task<HttpResponseMessage> ConfirmAsync(this Customer c, string txHash) =>
        c.Client.PostAsJsonAsync("/api/v1/payments/crypto/confirm", new { tx_hash = txHash });

    public static async Task<string> ProblemCodeAsync(this HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString()!;

    public static async Task<long> BalanceAsync(this Customer c) => (await c.AccountAsync()).GetProperty("balance_micros").GetInt64();

    /// <summary>Polls until <paramref name="condition"/> holds (the background job runs every second in these tests).</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what, int seconds = 20)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < deadline)
        {
            if (await condition()) return;
            await Task.Delay(200);
        }
        Assert.Fail($"Timed out after {seconds} s waiting for: {what}");
    }

    public static async Task<JsonElement> PaymentsAsync(this Customer c) => await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/payments/crypto");
}
