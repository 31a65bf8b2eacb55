using Tollgate.Features.Gateway;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Gateway;

/// <summary>
/// The gateway's ledger moves on both engines: a usage record commits in the same transaction as its charge (or not at
/// all), and a hold the database lost (relaxed commit, then a crash) still ends in a charge that never overdraws.
/// </summary>
public sealed class GatewayBillingTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static UsageRecord Record(Customer c, string id, long charged, string? transferId) => new(id, c.AccountId, c.KeyId, "demo/echo", "demo",
        10, 5, 0, 0, 0, 30, "0.00003", charged, UsageBillingStatus.Billed, id, null, transferId, DateTimeOffset.UtcNow, DateTimeOffset.UtcNow);

    private static async Task<Caller> CallerAsync(TestApp app, Customer c)
    {
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{c.AccountId}"), System.Net.HttpStatusCode.OK);
        return new Caller(c.KeyId, c.AccountId, account.Long("ledger_account_id"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_record_attached_to_a_transfer_exists_exactly_when_the_transfer_succeeded(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100);
        var caller = await CallerAsync(app, c);
        var ledger = app.Get<LedgerService>();
        var revenue = await app.Get<SystemAccounts>().RevenueAsync(CancellationToken.None);
        var store = app.Get<IUsageStore>();
        TransferRequest Charge(string id, long amount) => new() { Id = id, DebitAccountId = caller.LedgerAccountId, CreditAccountId = revenue, Amount = amount, Code = "usage" };

        var ok = await ledger.TransferAsync(Charge($"t:{c.AccountId}:ok", 60), new LedgerCommit { Records = [Record(c, "ok", 60, "x")] });
        var refused = await ledger.TransferAsync(Charge($"t:{c.AccountId}:refused", 60), new LedgerCommit { Records = [Record(c, "refused", 60, "y")] });
        var replay = await ledger.TransferAsync(Charge($"t:{c.AccountId}:ok", 60), new LedgerCommit { Records = [Record(c, "ok", 60, "x")] });

        Assert.Equal((TransferResultCode.Ok, TransferResultCode.InsufficientFunds, TransferResultCode.Replayed), (ok.Code, refused.Code, replay.Code));
        Assert.NotNull(await store.GetAsync(c.AccountId, "ok", CancellationToken.None));
        Assert.Null(await store.GetAsync(c.AccountId, "refused", CancellationToken.None));
        Assert.Single(await store.ListAsync(c.AccountId, null, 10, CancellationToken.None));
        Assert.Equal(40, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_relaxed_hold_then_a_durable_settlement_behave_like_any_other(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000);
        var caller = await CallerAsync(app, c);
        var billing = app.Get<GatewayBilling>();

        var hold = (await billing.HoldAsync(caller, "req-relaxed", 700, 60, "{}", [], CancellationToken.None)).Hold;
        Assert.NotNull(hold);
        var second = await billing.HoldAsync(caller, "req-second", 700, 60, "{}", [], CancellationToken.None);
        Assert.Null(second.Hold);
        Assert.Equal(300, second.AvailableMicros);
        var settlement = await billing.SettleAsync(hold, [], 250, "{}", (charged, transfer) => Record(c, "req-relaxed", charged, transfer));

        Assert.Equal((250L, 0L, 750L), (settlement.ChargedMicros, settlement.UnchargedMicros, settlement.BalanceAfterMicros));
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, "req-relaxed", CancellationToken.None);
        Assert.Equal((250L, hold.Id + ":settle"), (record!.UserPriceMicros!.Value, record.TransferId!));
        var account = await c.AccountAsync();
        Assert.Equal((750L, 0L), (account.Long("balance_micros"), account.Long("held_micros")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_hold_the_database_lost_is_settled_as_a_plain_charge_limited_to_the_balance(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(500);
        var caller = await CallerAsync(app, c);
        var revenue = await app.Get<SystemAccounts>().RevenueAsync(CancellationToken.None);
        // A hold as the gateway saw it acknowledged, but never stored (a relaxed commit lost in a crash).
        var lost = new Transfer(GatewayBilling.HoldId(caller, "req-lost"), TransferKind.Pending, caller.LedgerAccountId, revenue, 400, null, 60,
            null, TransferStatus.Pending, GatewayBilling.HoldCode, "req-lost", null, null, 0, 500, 0);

        var settlement = await app.Get<GatewayBilling>().SettleAsync(lost, [], 900, "{}", (charged, transfer) => Record(c, "req-lost", charged, transfer));

        Assert.Equal((500L, 400L, 0L), (settlement.ChargedMicros, settlement.UnchargedMicros, settlement.BalanceAfterMicros));
        Assert.Equal(500, (await app.Get<IUsageStore>().GetAsync(c.AccountId, "req-lost", CancellationToken.None))!.UserPriceMicros);
        Assert.Equal(0, (await c.AccountAsync()).Long("balance_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
