using Tollgate.Features.Ledger;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// Under the writer claim the PostgreSQL writer applies batches to its cached state and leaves their writes to a
/// sender thread, which writes what queued meanwhile as one transaction (PostgresLedgerStore, "Deferred writes"). These
/// drive the real ledger service and check that callers hear exactly what the database ends up with, that durable
/// commands are acknowledged only once written, and that a deferred write that fails is applied again from fresh state.
/// </summary>
public sealed class PostgresDeferredWriteTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private static PostgresLedgerStore StoreOf(LedgerService ledger) => (PostgresLedgerStore)ledger.Store;

    [Fact]
    public async Task Concurrent_holds_and_settlements_are_written_in_merged_transactions_and_each_caller_hears_what_the_database_has()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        var store = StoreOf(h.Ledger);
        Assert.True(store.HoldsClaim);

        // Twenty callers, each placing a hold and settling it fifteen times: many small batches, one after another.
        const int callers = 20, rounds = 15, calls = callers * rounds;
        var perCaller = await Task.WhenAll(Enumerable.Range(0, callers).Select(async c =>
        {
            var mine = new List<(Transfer Acknowledged, Transfer? Stored)>();
            for (var r = 0; r < rounds; r++)
            {
                var id = $"{c}-{r}";
                var hold = await h.Ledger.TransferAsync(Hold($"h-{id}", customer, revenue, 100), LedgerCommit.RelaxedCommit).WaitAsync(Patience);
                Assert.Equal(TransferResultCode.Ok, hold.Code);
                var settle = await h.Ledger.TransferAsync(Post($"s-{id}", $"h-{id}", 60)).WaitAsync(Patience);
                Assert.Equal(TransferResultCode.Ok, settle.Code);
                // Durable: acknowledged only once committed, so it is there for anyone who reads now.
                mine.Add((settle.Transfer!, await h.Ledger.GetTransferAsync($"s-{id}")));
            }
            return mine;
        }));
        var settlements = perCaller.SelectMany(x => x).ToList();

        foreach (var (acknowledged, stored) in settlements)
        {
            Assert.Equal(acknowledged.Amount, stored!.Amount);
            Assert.Equal(acknowledged.DebitBalanceAfter, stored.DebitBalanceAfter);
            Assert.Equal(acknowledged.CreditBalanceAfter, stored.CreditBalanceAfter);
        }
        // Every balance after is distinct: the settlements were applied one after another, never from the same state.
        Assert.Equal(calls, settlements.Select(s => s.Stored!.DebitBalanceAfter).Distinct().Count());
        var account = await h.AccountAsync(customer);
        Assert.Equal(1_000_000 - calls * 60L, account.BalanceMicros);
        Assert.Equal(0L, account.DebitsPending);
        Assert.True(store.DeferredBatches > calls / 4, $"deferred {store.DeferredBatches} batches");
        Assert.True(store.DeferredWrites < store.DeferredBatches, $"{store.DeferredWrites} transactions for {store.DeferredBatches} batches");
        // Each merged transaction's check found the database exactly as the first of its batches did.
        Assert.Equal(0, store.SpeculationFailures);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_deferred_write_that_finds_the_database_changed_is_applied_again_and_a_durable_command_gets_the_database_result()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync(creditLimit: 1_000);
        var revenue = await h.CreateRevenueAsync();
        var store = StoreOf(h.Ledger);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("d-1", customer, revenue, 100))).Code);
        Assert.True(store.HoldsClaim);
        var deferredBefore = store.DeferredBatches;

        // SQL by hand, outside the claim: the customer may now use 150, of which 100 are used; the writer still remembers 1,000.
        Assert.Equal(1, await h.ExecuteByHandAsync($"UPDATE ledger_accounts SET credit_limit = 150 WHERE id = {customer}"));

        // Applied to the cache (within 1,000), then refused by the check; applied again under locks: over the limit.
        var over = await h.Ledger.TransferAsync(Posted("d-2", customer, revenue, 300)).WaitAsync(Patience);
        Assert.Equal(TransferResultCode.InsufficientFunds, over.Code);
        Assert.True(store.DeferredBatches > deferredBefore);
        Assert.Equal(1, store.StaleUnderClaim);
        Assert.Null(await h.Ledger.GetTransferAsync("d-2"));

        // The writer goes on from fresh state.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("d-3", customer, revenue, 50)).WaitAsync(Patience)).Code);
        Assert.Equal(-150L, (await h.AccountAsync(customer)).BalanceMicros);
        _ = promotions;
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task Disposing_the_ledger_writes_every_deferred_batch_before_it_stops()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(100_000);
        var store = StoreOf(h.Ledger);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("x-warm", customer, revenue, 1))).Code);
        Assert.True(store.HoldsClaim);

        var transfers = Enumerable.Range(0, 200).Select(i => h.Ledger.TransferAsync(Posted($"x-{i}", customer, revenue, 10))).ToList();
        await h.Ledger.DisposeAsync();
        Assert.True(store.DeferredBatches > 0);
        foreach (var t in transfers) Assert.Equal(TransferResultCode.Ok, (await t.WaitAsync(Patience)).Code);

        await using var reader = h.NewPostgresStore();
        Assert.Equal(100_000 - 2_001L, (await reader.GetAccountAsync(customer, CancellationToken.None))!.BalanceMicros);
    }

    [Fact]
    public async Task With_deferred_writes_turned_off_every_batch_waits_for_its_own_write()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres, new LedgerOptions { DeferWrites = false });
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        for (var i = 0; i < 5; i++)
            Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted($"o-{i}", customer, revenue, 10))).Code);
        var store = StoreOf(h.Ledger);
        Assert.True(store.HoldsClaim);
        Assert.Equal(0, store.DeferredBatches);
        Assert.Equal(950L, (await h.AccountAsync(customer)).BalanceMicros);
    }
}
