using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Tollgate.Features.Payments.Crypto;
using Tollgate.Tests.Infrastructure;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>
/// End to end on a real EVM (ganache): deploy a 6-decimal ERC-20 as "USDC", link wallets by SIWE through Tollgate, send real
/// transfers and confirm them through the API, with blocks mined to reach the confirmations.
/// </summary>
public sealed class CryptoGanacheTests(GanacheNode node) : IClassFixture<GanacheNode>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    [Theory, MemberData(nameof(Engines))]
    public async Task RealChain_TransfersFromLinkedWallet_AreCreditedOnceConfirmed(string engine)
    {
        var usdc = await node.DeployTokenAsync(GanacheNode.Account0, 1_000_000_000_000);
        var lookalike = await node.DeployTokenAsync(GanacheNode.Account0, 1_000_000_000_000);
        // A fresh treasury per run, so the two engines' apps (same chain) do not see each other's transfers.
        var treasury = TestWallet.Random().Address;
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:Enabled"] = "true",
            ["Tollgate:Crypto:RpcUrl"] = node.Url,
            ["Tollgate:Crypto:ChainId"] = GanacheNode.ChainId.ToString(),
            ["Tollgate:Crypto:UsdcContract"] = usdc,
            ["Tollgate:Crypto:TreasuryAddress"] = treasury,
            ["Tollgate:Crypto:Confirmations"] = "3",
            ["Tollgate:Crypto:ScanIntervalSeconds"] = "1",
        });
        var customer = await app.CustomerAsync(0);
        await customer.LinkWalletAsync(new TestWallet(GanacheNode.Account0Key));

        // 12.5 USDC: mined in its own block, so 1 confirmation → pending; two more blocks → credited.
        var tx = await node.TransferAsync(usdc, GanacheNode.Account0, treasury, 12_500_000);
        var pending = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Accepted, pending.StatusCode);
        Assert.Equal(1, (await pending.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("confirmations").GetInt64());
        await node.MineAsync(2);
        var credited = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.OK, credited.StatusCode);
        var payment = Assert.Single((await credited.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("payments").EnumerateArray());
        Assert.Equal(12_500_000, payment.GetProperty("credit_micros").GetInt64());
        Assert.Equal(GanacheNode.Account0, payment.GetProperty("from_address").GetString());
        Assert.Equal(12_500_000, await customer.BalanceAsync());
        // Replays: the same account gets the same result; another account is refused; the balance moves once.
        Assert.Equal(HttpStatusCode.OK, (await customer.ConfirmAsync(tx)).StatusCode);
        var stranger = await app.CustomerAsync(0);
        Assert.Equal(HttpStatusCode.Conflict, (await stranger.ConfirmAsync(tx)).StatusCode);
        Assert.Equal(12_500_000, await customer.BalanceAsync());

        // The look-alike token with the same Transfer event does not count.
        var fake = await node.TransferAsync(lookalike, GanacheNode.Account0, treasury, 5_000_000);
        await node.MineAsync(3);
        var wrongToken = await customer.ConfirmAsync(fake);
        Assert.Equal(HttpStatusCode.BadRequest, wrongToken.StatusCode);
        Assert.Equal("not_usdc_transfer", await wrongToken.ProblemCodeAsync());

        // Real USDC, but to someone else.
        var elsewhere = await node.TransferAsync(usdc, GanacheNode.Account0, GanacheNode.Account2, 5_000_000);
        await node.MineAsync(3);
        var wrongRecipient = await customer.ConfirmAsync(elsewhere);
        Assert.Equal(HttpStatusCode.BadRequest, wrongRecipient.StatusCode);
        Assert.Equal("wrong_recipient", await wrongRecipient.ProblemCodeAsync());

        // A transfer beyond the sender's balance reverts on chain (status 0x0).
        var reverted = await node.TransferAsync(usdc, GanacheNode.Account3, treasury, 1_000_000);
        Assert.Equal("0x0", (string?)(await node.ReceiptAsync(reverted))["status"]);
        await node.MineAsync(3);
        var failed = await customer.ConfirmAsync(reverted);
        Assert.Equal(HttpStatusCode.BadRequest, failed.StatusCode);
        Assert.Equal("transaction_failed", await failed.ProblemCodeAsync());

        // From a wallet nobody linked: refused on confirm, then listed as unmatched by the eth_getLogs watcher.
        await node.TransferAsync(usdc, GanacheNode.Account0, GanacheNode.Account3, 9_000_000);
        var unlinked = await node.TransferAsync(usdc, GanacheNode.Account3, treasury, 9_000_000);
        await node.MineAsync(3);
        var notLinked = await customer.ConfirmAsync(unlinked);
        Assert.Equal(HttpStatusCode.BadRequest, notLinked.StatusCode);
        Assert.Equal("wallet_not_linked", await notLinked.ProblemCodeAsync());
        await CryptoApi.EventuallyAsync(async () =>
            (await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/payments/crypto/unmatched")).GetProperty("data").EnumerateArray()
                .Any(p => p.GetProperty("tx_hash").GetString() == unlinked && p.GetProperty("from_address").GetString() == GanacheNode.Account3),
            "the watcher lists the unlinked transfer");

        // Linking that wallet later lets its owner claim the transfer the watcher could not attribute.
        var second = await app.CustomerAsync(0);
        await second.LinkWalletAsync(new TestWallet(GanacheNode.Account3Key));
        var claimed = await second.ConfirmAsync(unlinked);
        Assert.Equal(HttpStatusCode.OK, claimed.StatusCode);
        Assert.Equal(9_000_000, await second.BalanceAsync());

        // The watcher alone credits a new transfer from a linked wallet once it has its confirmations.
        await node.TransferAsync(usdc, GanacheNode.Account0, treasury, 1_000_000);
        await node.MineAsync(3);
        await CryptoApi.EventuallyAsync(async () => await customer.BalanceAsync() == 13_500_000, "the watcher credits the second transfer");
        Assert.Equal(12_500_000 + 1_000_000, await customer.BalanceAsync());
    }
}
