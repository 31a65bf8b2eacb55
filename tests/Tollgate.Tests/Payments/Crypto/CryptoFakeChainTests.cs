using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Tollgate.Features.Payments.Crypto;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Infrastructure;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>A scripted JSON-RPC node and one app per engine pointed at it (Base chain id, Base USDC, 3 confirmations).</summary>
public sealed class FakeChainFixture : IAsyncLifetime
{
    public const string Treasury = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    public const string OtherToken = "0xd9aAEc86B65D86f6A7B5B1b0c42FFA531710b6CA"; // USDbC: a look-alike that must not count
    private readonly Dictionary<string, TestApp> _apps = new();
    private readonly SemaphoreSlim _gate = new(1, 1);
    internal FakeEvmNode Node { get; private set; } = null!;

    public async Task InitializeAsync() => Node = await FakeEvmNode.StartAsync();

    internal async Task<TestApp> AppAsync(string engine)
    {
        await _gate.WaitAsync();
        try
        {
            if (_apps.TryGetValue(engine, out var app)) return app;
            return _apps[engine] = await TestApp.StartAsync(engine, new Dictionary<string, string?>
            {
                ["Tollgate:Crypto:Enabled"] = "true",
                ["Tollgate:Crypto:RpcUrl"] = Node.Url,
                ["Tollgate:Crypto:TreasuryAddress"] = Treasury,
                ["Tollgate:Crypto:Confirmations"] = "3",
                ["Tollgate:Crypto:ScanIntervalSeconds"] = "1",
                ["Tollgate:Crypto:ScanStartBlock"] = "0",
                ["Tollgate:Crypto:ConfirmPerMinute"] = "10",
                ["Tollgate:Crypto:SiweDomain"] = "tollgate.example.com",
                ["Tollgate:Crypto:SiweUri"] = "https://tollgate.example.com/wallets",
                ["Tollgate:Alerts:CacheTtl"] = "00:00:00",
            });
        }
        finally
        {
            _gate.Release();
        }
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
        await Node.DisposeAsync();
    }
}

/// <summary>Confirm, background re-checks, reorgs and the watcher against a scripted node speaking the real JSON-RPC wire format.</summary>
public sealed class CryptoFakeChainTests(FakeChainFixture fixture) : IClassFixture<FakeChainFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;
    private FakeEvmNode Node => fixture.Node;
    private const string Usdc = CryptoOptions.BaseUsdc;
    private const string Treasury = FakeChainFixture.Treasury;

    private async Task<(TestApp App, Customer Customer, TestWallet Wallet)> LinkedCustomerAsync(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);
        return (app, customer, wallet);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_ConfirmedTransferFromLinkedWallet_CreditsOnceAndReplaysTheSameResult(string engine)
    {
        var (app, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 12_500_000)], block: Node.BlockNumber - 5);

        var first = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var body = await first.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("credited", body.GetProperty("status").GetString());
        var payment = Assert.Single(body.GetProperty("payments").EnumerateArray());
        Assert.Equal(12_500_000, payment.GetProperty("amount_units").GetInt64());
        Assert.Equal(12_500_000, payment.GetProperty("credit_micros").GetInt64());
        Assert.Equal(wallet.Address, payment.GetProperty("from_address").GetString());
        Assert.Equal(12_500_000, await customer.BalanceAsync());

        var replay = await customer.ConfirmAsync(tx.ToUpperInvariant().Replace("0X", "0x"));
        Assert.Equal(HttpStatusCode.OK, replay.StatusCode);
        var replayed = Assert.Single((await replay.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("payments").EnumerateArray());
        Assert.Equal(payment.GetProperty("transfer_id").GetString(), replayed.GetProperty("transfer_id").GetString());
        Assert.Equal(12_500_000, await customer.BalanceAsync());

        var stranger = await app.CustomerAsync(0);
        var conflict = await stranger.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Conflict, conflict.StatusCode);
        Assert.Equal("tx_already_claimed", await conflict.ProblemCodeAsync());
        Assert.Equal(0, await stranger.BalanceAsync());

        var listed = Assert.Single((await customer.PaymentsAsync()).GetProperty("data").EnumerateArray());
        Assert.Equal(tx, listed.GetProperty("tx_hash").GetString());
        // The ledger transfer is the credit: code topup, from the USDC clearing account.
        var transfer = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/transfers/{payment.GetProperty("transfer_id").GetString()}");
        Assert.Equal("topup", transfer.GetProperty("code").GetString());
        Assert.Equal(12_500_000, transfer.GetProperty("amount_micros").GetInt64());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Reconciliation_lists_money_without_credit_and_credits_the_chain_no_longer_shows(string engine)
    {
        var (app, customer, wallet) = await LinkedCustomerAsync(engine);
        // A block no other test uses, so the report covers only these transfers.
        var block = engine == TestDatabases.Sqlite ? 100 : 101;
        var fine = Node.Mine([new(Usdc, wallet.Address, Treasury, 5_000_000)], block: block);
        var lost = Node.Mine([new(Usdc, wallet.Address, Treasury, 2_000_000)], block: block);
        var unclaimed = Node.Mine([new(Usdc, TestWallet.Random().Address, Treasury, 3_000_000)], block: block);
        Assert.Equal(HttpStatusCode.OK, (await customer.ConfirmAsync(fine)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await customer.ConfirmAsync(lost)).StatusCode);
        Assert.Equal(7_000_000, await customer.BalanceAsync());
        Node.Drop(lost);

        var report = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/payments/crypto/reconciliation?from_block={block}&to_block={block}");
        var found = report.GetProperty("mismatches").EnumerateArray().ToDictionary(m => m.GetProperty("reference").GetString()!.Split('#')[0], m => m.GetProperty("kind").GetString());
        var references = report.GetProperty("mismatches").EnumerateArray().Select(m => m.GetProperty("reference").GetString()!).ToDictionary(r => r.Split('#')[0]);
        Assert.Equal(2, found.Count);
        Assert.Equal("money_without_credit", found[unclaimed]);
        Assert.Equal("credit_without_money", found[lost]);
        // It reports and changes nothing.
        Assert.Equal(7_000_000, await customer.BalanceAsync());

        // The operator resolves both with idempotent adjustments against the USDC clearing account: the unlinked sender
        // proved the transfer was this customer's; the reorged-out credit is taken back.
        Task<HttpResponseMessage> Resolve(string reference, long micros) => app.Admin.PostAsync("/admin/v1/payments/reconciliation/resolutions", Api.AdminApi.JsonBody(
            $$"""{"source":"usdc","reference":"{{reference}}","account_id":"{{customer.AccountId}}","amount_micros":{{micros}},"reason":"operator decision"}"""));
        Assert.Equal(HttpStatusCode.Created, (await Resolve(references[unclaimed], 3_000_000)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Resolve(references[lost], -2_000_000)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Resolve(references[unclaimed], 3_000_000)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Resolve(references[lost], -1_000_000)).StatusCode);
        Assert.Equal(8_000_000, await customer.BalanceAsync());
        report = await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/payments/crypto/reconciliation?from_block={block}&to_block={block}");
        var resolved = report.GetProperty("mismatches").EnumerateArray().ToDictionary(m => m.GetProperty("reference").GetString()!.Split('#')[0],
            m => (m.GetProperty("resolved_by").GetString(), m.GetProperty("resolved_micros").GetInt64()));
        Assert.Equal(("reconcile:usdc:" + references[unclaimed].Replace('#', ':'), 3_000_000L), resolved[unclaimed]);
        Assert.Equal(("reconcile:usdc:" + references[lost].Replace('#', ':'), -2_000_000L), resolved[lost]);
        Assert.True(report.GetProperty("clean").GetBoolean());
        await Api.AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_CreditsAtTheConfiguredRateRoundedDown_AndRefusesTransfersBelowTheMinimum(string engine)
    {
        // A 5 % bonus (21 micro-USD per 20 token units) and a 1 USDC minimum, on an app of its own.
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:Enabled"] = "true",
            ["Tollgate:Crypto:RpcUrl"] = Node.Url,
            ["Tollgate:Crypto:TreasuryAddress"] = Treasury,
            ["Tollgate:Crypto:Confirmations"] = "3",
            ["Tollgate:Crypto:WatcherEnabled"] = "false",
            ["Tollgate:Crypto:RateMicros"] = "21",
            ["Tollgate:Crypto:RateUnits"] = "20",
            ["Tollgate:Crypto:MinimumUnits"] = "1000000",
        });
        var customer = await app.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);

        // 12.345679 USDC (6 decimals) × 21 / 20 = 12,962,962.95 micro-USD → 12,962,962.
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 12_345_679)], block: Node.BlockNumber - 5);
        var credited = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.OK, credited.StatusCode);
        var payment = Assert.Single((await credited.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("payments").EnumerateArray());
        Assert.Equal((12_345_679L, 12_962_962L), (payment.GetProperty("amount_units").GetInt64(), payment.GetProperty("credit_micros").GetInt64()));
        Assert.Equal(12_962_962, await customer.BalanceAsync());

        var small = Node.Mine([new(Usdc, wallet.Address, Treasury, 999_999)], block: Node.BlockNumber - 5);
        var refused = await customer.ConfirmAsync(small);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Equal("below_minimum", await refused.ProblemCodeAsync());
        Assert.Equal(12_962_962, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_TopUpAboveTheLowBalanceLine_ResolvesTheAlertAtOnce(string engine)
    {
        var (app, customer, wallet) = await LinkedCustomerAsync(engine);
        await customer.SetAlertSettingsAsync("""{"balance_low_micros":1000000}""");
        await app.GrantAsync(customer.AccountId, 1);
        await customer.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low" && x.Str("status") == "active"));

        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 2_000_000)], block: Node.BlockNumber - 5);
        Assert.Equal(HttpStatusCode.OK, (await customer.ConfirmAsync(tx)).StatusCode);
        var alerts = await customer.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low" && x.Str("status") == "resolved"));
        Assert.Single(alerts, a => a.Str("subject") == "balance:low");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_TransferOfAnotherToken_IsRejected(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(FakeChainFixture.OtherToken, wallet.Address, Treasury, 5_000_000)], block: Node.BlockNumber - 5);
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("not_usdc_transfer", await response.ProblemCodeAsync());
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_UsdcToAnotherAddress_IsRejected(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, TestWallet.Random().Address, 5_000_000)], block: Node.BlockNumber - 5);
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("wrong_recipient", await response.ProblemCodeAsync());
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_RevertedTransaction_IsRejected(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 5_000_000)], succeeded: false, block: Node.BlockNumber - 5);
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("transaction_failed", await response.ProblemCodeAsync());
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_MalformedHash_Is400(string engine)
    {
        var (_, customer, _) = await LinkedCustomerAsync(engine);
        foreach (var bad in new[] { "0x1234", "abab" + new string('a', 62), "0x" + new string('g', 64) })
        {
            var response = await customer.ConfirmAsync(bad);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("invalid_tx_hash", await response.ProblemCodeAsync());
        }
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_FromUnlinkedWallet_IsRejectedAndTheWatcherListsItUnmatched(string engine)
    {
        var (app, customer, _) = await LinkedCustomerAsync(engine);
        var unlinked = TestWallet.Random();
        // Mined at the head (the watcher's cursor has already passed older blocks, as on a real chain), then confirmed.
        var tx = Node.Mine([new(Usdc, unlinked.Address, Treasury, 7_000_000)]);
        Node.BlockNumber += 3;
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("wallet_not_linked", await response.ProblemCodeAsync());
        Assert.Equal(0, await customer.BalanceAsync());

        await CryptoApi.EventuallyAsync(async () =>
        {
            var unmatched = await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/payments/crypto/unmatched");
            return unmatched.GetProperty("data").EnumerateArray().Any(p => p.GetProperty("tx_hash").GetString() == tx
                && p.GetProperty("reason").GetString() == "wallet_not_linked" && p.GetProperty("amount_units").GetInt64() == 7_000_000);
        }, "the watcher lists the transfer from an unlinked wallet");
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Watcher_TransferFromLinkedWallet_IsCreditedWithoutConfirmCall(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        Node.Mine([new(Usdc, wallet.Address, Treasury, 3_000_000)]);
        Node.BlockNumber += 3;
        await CryptoApi.EventuallyAsync(async () => await customer.BalanceAsync() == 3_000_000, "the watcher credits the linked wallet's transfer");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_TooFewConfirmations_PendingThenCreditedByTheBackgroundJob(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 2_000_000)]);

        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("pending", body.GetProperty("status").GetString());
        Assert.Equal(1, body.GetProperty("confirmations").GetInt64());
        Assert.Equal(3, body.GetProperty("required_confirmations").GetInt32());
        Assert.Equal(0, await customer.BalanceAsync());

        Node.BlockNumber += 2;
        await CryptoApi.EventuallyAsync(async () =>
            (await customer.PaymentsAsync()).GetProperty("claims").EnumerateArray().Any(c => c.GetProperty("tx_hash").GetString() == tx
                && c.GetProperty("status").GetString() == "credited"), "the background job credits the confirmed transfer");
        Assert.Equal(2_000_000, await customer.BalanceAsync());
        var again = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(2_000_000, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_UnknownHashThenMined_PendingThenCredited(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = FakeEvmNode.RandomHash();
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(0, (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("confirmations").GetInt64());

        Node.Mine([new(Usdc, wallet.Address, Treasury, 1_500_000)], txHash: tx);
        Node.BlockNumber += 3;
        await CryptoApi.EventuallyAsync(async () => await customer.BalanceAsync() == 1_500_000, "the pending hash is credited once mined and confirmed");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_ReceiptMovesToAnotherBlock_IsMarkedReorgedAndNeverCredited(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 4_000_000)]);
        Assert.Equal(HttpStatusCode.Accepted, (await customer.ConfirmAsync(tx)).StatusCode);

        Node.MoveToBlock(tx, Node.BlockNumber + 1);
        Node.BlockNumber += 10;
        await CryptoApi.EventuallyAsync(async () =>
            (await customer.PaymentsAsync()).GetProperty("claims").EnumerateArray().Any(c => c.GetProperty("tx_hash").GetString() == tx
                && c.GetProperty("status").GetString() == "failed" && c.GetProperty("reason").GetString() == "reorged"), "the reorged claim is marked failed");
        var response = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("reorged", await response.ProblemCodeAsync());
        // Give the watcher a few more ticks over the re-included log: it must not credit it either.
        await Task.Delay(2_500);
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_ReceiptDisappears_IsMarkedReorgedAndNeverCredited(string engine)
    {
        var (_, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 4_000_000)]);
        Assert.Equal(HttpStatusCode.Accepted, (await customer.ConfirmAsync(tx)).StatusCode);

        Node.Drop(tx);
        Node.BlockNumber += 5;
        await CryptoApi.EventuallyAsync(async () =>
            (await customer.PaymentsAsync()).GetProperty("claims").EnumerateArray().Any(c => c.GetProperty("tx_hash").GetString() == tx
                && c.GetProperty("status").GetString() == "failed" && c.GetProperty("reason").GetString() == "reorged"), "the vanished receipt is marked failed");
        Assert.Equal(0, await customer.BalanceAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_PendingHashClaimedByAnotherAccount_Is409(string engine)
    {
        var (app, customer, wallet) = await LinkedCustomerAsync(engine);
        var tx = Node.Mine([new(Usdc, wallet.Address, Treasury, 1_000_000)]);
        Assert.Equal(HttpStatusCode.Accepted, (await customer.ConfirmAsync(tx)).StatusCode);
        var stranger = await app.CustomerAsync(0);
        var response = await stranger.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("tx_already_claimed", await response.ProblemCodeAsync());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_StrangerSubmitsTheHashBeforeItIsMined_DoesNotBlockTheOwner(string engine)
    {
        var (app, owner, wallet) = await LinkedCustomerAsync(engine);
        var stranger = await app.CustomerAsync(0);
        var tx = FakeEvmNode.RandomHash();
        // Seen in the mempool by someone else, submitted before it is mined: an unproven claim.
        Assert.Equal(HttpStatusCode.Accepted, (await stranger.ConfirmAsync(tx)).StatusCode);

        Node.Mine([new(Usdc, wallet.Address, Treasury, 6_000_000)], txHash: tx);
        var pending = await owner.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Accepted, pending.StatusCode);
        // Now the owner's proven claim holds the hash.
        var blocked = await stranger.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.Conflict, blocked.StatusCode);

        Node.BlockNumber += 3;
        await CryptoApi.EventuallyAsync(async () => await owner.BalanceAsync() == 6_000_000, "the owner is credited");
        Assert.Equal(HttpStatusCode.OK, (await owner.ConfirmAsync(tx)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await stranger.ConfirmAsync(tx)).StatusCode);
        Assert.Equal(0, await stranger.BalanceAsync());
        Assert.Contains((await owner.PaymentsAsync()).GetProperty("claims").EnumerateArray(),
            c => c.GetProperty("tx_hash").GetString() == tx && c.GetProperty("status").GetString() == "credited");
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_TooManyCalls_Is429WithRetryAfter(string engine)
    {
        var (_, customer, _) = await LinkedCustomerAsync(engine);
        var tx = FakeEvmNode.RandomHash();
        for (var i = 0; i < 10; i++) Assert.Equal(HttpStatusCode.Accepted, (await customer.ConfirmAsync(tx)).StatusCode);
        var limited = await customer.ConfirmAsync(tx);
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("rate_limited", await limited.ProblemCodeAsync());
        Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task TwoProcesses_OnOneDatabase_CreditEachTransferExactlyOnce(string engine)
    {
        // Two apps on one database, each with its own background job and watcher, plus confirm calls to both.
        var settings = new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:Enabled"] = "true",
            ["Tollgate:Crypto:RpcUrl"] = Node.Url,
            ["Tollgate:Crypto:TreasuryAddress"] = TestWallet.Random().Address,
            ["Tollgate:Crypto:Confirmations"] = "2",
            ["Tollgate:Crypto:ScanIntervalSeconds"] = "1",
            ["Tollgate:Crypto:ScanBlockRange"] = "3",
        };
        var treasury = settings["Tollgate:Crypto:TreasuryAddress"]!;
        await using var first = await TestApp.StartAsync(engine, settings);
        await using var second = await TestApp.StartAsync(engine, settings, database: first.DatabaseConnection);
        var customer = await first.CustomerAsync(0);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);
        using var viaSecond = new HttpClient { BaseAddress = second.BaseAddress };
        viaSecond.DefaultRequestHeaders.Authorization = customer.Client.DefaultRequestHeaders.Authorization;
        var customerOnSecond = customer with { Client = viaSecond };

        var hashes = new List<string>();
        for (var i = 1; i <= 6; i++)
        {
            hashes.Add(Node.Mine([new(Usdc, wallet.Address, treasury, i * 1_000_000)]));
            Node.BlockNumber += 1;
        }
        Node.BlockNumber += 2;
        var responses = await Task.WhenAll(hashes.SelectMany(h => new[] { customer.ConfirmAsync(h), customerOnSecond.ConfirmAsync(h) }));
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        const long expected = 21_000_000; // 1 + 2 + … + 6 USDC
        await CryptoApi.EventuallyAsync(async () => await customer.BalanceAsync() == expected, "all six transfers credited");
        await Task.Delay(2_500); // more ticks of both watchers over the same blocks
        Assert.Equal(expected, await customer.BalanceAsync());
        Assert.Equal(6, (await customer.PaymentsAsync()).GetProperty("data").GetArrayLength());
        var audit = await first.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/ledger/audit");
        Assert.Equal(0, audit.GetProperty("violations").GetArrayLength());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Confirm_NodeOnAnotherChain_Is503(string engine)
    {
        // A separate app whose configured chain differs from the node's: nothing is credited from the wrong chain.
        var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Crypto:Enabled"] = "true",
            ["Tollgate:Crypto:RpcUrl"] = Node.Url,
            ["Tollgate:Crypto:ChainId"] = "84532",
            ["Tollgate:Crypto:TreasuryAddress"] = Treasury,
            ["Tollgate:Crypto:WatcherEnabled"] = "false",
        });
        await using var _ = app;
        var customer = await app.CustomerAsync(0);
        var response = await customer.ConfirmAsync(FakeEvmNode.RandomHash());
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("rpc_unavailable", await response.ProblemCodeAsync());
    }
}
