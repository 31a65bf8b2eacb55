using Tollgate.Features.Ledger;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// The PostgreSQL writer that is alone in writing the ledger holds the claim (migration 0027, ledger_claim) and then
/// acknowledges relaxed commands (gateway holds) before their batch reaches the database. Each case checks the
/// acknowledgement against what the database ends up with: early, but never different.
/// </summary>
public sealed class PostgresWriterClaimTests
{
    /// <summary>A relaxed command whose early acknowledgement records its results and whether its transfer was in the database then.</summary>
    private sealed class Watched
    {
        public required LedgerCommand Command { get; init; }
        public TransferResult[]? Acknowledged { get; set; }
        public bool StoredWhenAcknowledged { get; set; }
    }

    private static Watched Relaxed(LedgerHarness h, TransferRequest transfer)
    {
        var watched = new Watched { Command = new LedgerCommand([transfer], atomic: false, LedgerCommit.RelaxedCommit) };
        watched.Command.Acknowledgement = results =>
        {
            watched.Acknowledged = results;
            watched.StoredWhenAcknowledged = h.Ledger.GetTransferAsync(transfer.Id!).GetAwaiter().GetResult() is not null;
        };
        return watched;
    }

    [Fact]
    public async Task A_lone_writer_holds_the_claim_and_acknowledges_a_hold_before_its_batch_is_written_with_the_result_the_database_gets()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var store = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(store, 1_000);
        var now = h.Clock.NowMicros;

        // The first batches read under locks; the claim is granted with them.
        store.Apply(Batch(Posted("c-1", customer, revenue, 100)), now, null);
        Assert.True(store.HoldsClaim);

        // From the cache, under the claim: acknowledged before the round trip, so the hold was not in the database yet.
        var hold = Relaxed(h, Hold("c-hold", customer, revenue, 600));
        var durable = new LedgerCommand([Posted("c-2", customer, revenue, 50)], atomic: false);
        var durableAcknowledged = false;
        durable.Acknowledgement = _ => durableAcknowledged = true;
        store.Apply([hold.Command, durable], now, null);
        Assert.Equal(1, store.SpeculatedBatches);
        Assert.NotNull(hold.Acknowledged);
        Assert.False(hold.StoredWhenAcknowledged);
        Assert.Equal(TransferResultCode.Ok, hold.Acknowledged![0].Code);
        Assert.Equal(hold.Command.Results[0], hold.Acknowledged[0]);
        // A durable command waits for its commit.
        Assert.False(durableAcknowledged);
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("c-hold"))!.Status);

        // A hold beyond what is left is refused early just the same.
        var over = Relaxed(h, Hold("c-over", customer, revenue, 251));
        store.Apply([over.Command], now, null);
        Assert.Equal(TransferResultCode.InsufficientFunds, over.Acknowledged![0].Code);
        Assert.Equal(TransferResultCode.InsufficientFunds, over.Command.Results[0].Code);
        Assert.Equal(2, store.EarlyAcknowledged);

        var account = await h.AccountAsync(customer);
        Assert.Equal((600L, 150L), (account.DebitsPending, account.DebitsPosted));
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_second_writer_waits_until_the_claim_lapses_so_the_first_never_acknowledges_from_a_state_it_changed()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var first = h.NewPostgresStore();
        await using var second = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(first, 1_000);
        var now = h.Clock.NowMicros;

        first.Apply(Batch(Posted("w-1", customer, revenue, 100)), now, null);
        Assert.True(first.HoldsClaim);

        // The second writer spends everything left; it may write only once the first writer's claim has lapsed.
        var drain = new LedgerCommand([Posted("w-2", customer, revenue, 900)], atomic: false);
        second.Apply([drain], now, null);
        Assert.Equal(TransferResultCode.Ok, drain.Results[0].Code);
        Assert.False(first.HoldsClaim);

        // The first writer's cache still says 900 are available: it must not acknowledge this hold from it.
        var hold = Relaxed(h, Hold("w-hold", customer, revenue, 500));
        first.Apply([hold.Command], now, null);
        Assert.Equal(TransferResultCode.InsufficientFunds, hold.Command.Results[0].Code);
        if (hold.Acknowledged is { } acknowledged) Assert.Equal(TransferResultCode.InsufficientFunds, acknowledged[0].Code);
        Assert.Equal(0, first.StaleUnderClaim);

        // Two writers now: neither is granted the claim, and both keep writing exactly.
        var more = new LedgerCommand([Posted("w-3", customer, revenue, 1)], atomic: false);
        second.Apply([more], now, null);
        first.Apply(Batch(Posted("w-4", customer, revenue, 1)), now, null);
        Assert.Equal(TransferResultCode.InsufficientFunds, more.Results[0].Code);
        Assert.False(first.HoldsClaim);
        Assert.False(second.HoldsClaim);
        var account = await h.AccountAsync(customer);
        Assert.Equal((0L, 1_000L), (account.DebitsPending, account.DebitsPosted));
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task Two_writers_taking_turns_without_a_refusal_are_not_granted_the_claim_until_one_has_been_alone_for_10_seconds()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var first = h.NewPostgresStore();
        await using var second = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(first, 1_000);
        var now = h.Clock.NowMicros;
        first.Apply(Batch(Posted("t-1", customer, revenue, 1)), now, null);
        Assert.True(await ClaimHeldAsync(h));

        // The claim lapses before the second writer starts, so it is never refused: nothing marks the ledger contended.
        await Task.Delay(1_200);
        second.Apply(Batch(Posted("t-2", customer, revenue, 1)), now, null);
        Assert.False(await ClaimHeldAsync(h));
        // The first writer then writes twice in a row. It was the last writer, but the second wrote a moment ago:
        // granting it now would refuse and stall the second at its next batch (migration 0030).
        first.Apply(Batch(Posted("t-3", customer, revenue, 1)), now, null);
        first.Apply(Batch(Posted("t-4", customer, revenue, 1)), now, null);
        Assert.False(first.HoldsClaim);
        Assert.False(await ClaimHeldAsync(h));
        Assert.True(await h.QueryByHandAsync<bool>("SELECT contended_at IS NULL FROM ledger_writer_claim"));

        // Once the other writer's last write is more than 10 s back (moved there by hand), the one left is granted it.
        // (Asked of the database: the writer's own trust in it also depends on how fast the batch came back.)
        Assert.Equal(1, await h.ExecuteByHandAsync("UPDATE ledger_writer_claim SET other_write_at = other_write_at - interval '11 seconds'"));
        first.Apply(Batch(Posted("t-5", customer, revenue, 1)), now, null);
        Assert.True(await ClaimHeldAsync(h));
        var account = await h.AccountAsync(customer);
        Assert.Equal((0L, 5L), (account.DebitsPending, account.DebitsPosted));
        await h.AssertAuditHealthyAsync();
    }

    /// <summary>Whether the database names a holder (a lapsed one is cleared by the next writer's batch).</summary>
    private static Task<bool> ClaimHeldAsync(LedgerHarness h) =>
        h.QueryByHandAsync<bool>("SELECT holder IS NOT NULL FROM ledger_writer_claim");

    [Fact]
    public async Task Without_the_claim_a_batch_from_the_cache_is_acknowledged_only_after_its_commit()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var first = h.NewPostgresStore();
        await using var second = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        first.Apply(Batch(Posted("n-1", customer, revenue, 100)), now, null);
        // Another writer takes part: the claim lapses and is not granted again while both write.
        second.Apply(Batch(Posted("n-2", customer, revenue, 100)), now, null);
        first.Apply(Batch(Posted("n-3", customer, revenue, 100)), now, null);
        Assert.False(first.HoldsClaim);
        // Its cache was stale at n-3, so it pauses speculating for two batches (read under locks).
        for (var i = 0; i < 2; i++) first.Apply(Batch(Posted($"n-pause-{i}", customer, revenue, 1)), now, null);

        // Covered by the cache (the first writer committed n-3 last), so applied speculatively; but not acknowledged early.
        var speculated = first.SpeculatedBatches;
        var hold = Relaxed(h, Hold("n-hold", customer, revenue, 100));
        first.Apply([hold.Command], now, null);
        Assert.Equal(speculated + 1, first.SpeculatedBatches);
        Assert.Null(hold.Acknowledged);
        Assert.Equal(TransferResultCode.Ok, hold.Command.Results[0].Code);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_credit_limit_set_while_a_writer_holds_the_claim_waits_for_it_and_the_writer_then_sees_the_limit()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var store = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(store, 100);
        var now = h.Clock.NowMicros;

        store.Apply(Batch(Posted("l-1", customer, revenue, 100)), now, null);
        Assert.True(store.HoldsClaim);
        await h.Ledger.SetCreditLimitAsync(customer, 300);
        Assert.False(store.HoldsClaim);

        var hold = Relaxed(h, Hold("l-hold", customer, revenue, 300));
        store.Apply([hold.Command], now, null);
        Assert.Equal(TransferResultCode.Ok, hold.Command.Results[0].Code);
        if (hold.Acknowledged is { } acknowledged) Assert.Equal(TransferResultCode.Ok, acknowledged[0].Code);
        Assert.Equal(300L, (await h.AccountAsync(customer)).DebitsPending);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_write_that_bypasses_the_claim_is_caught_by_the_check_and_counted_and_nothing_wrong_is_written()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var store = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(store, 1_000);
        var now = h.Clock.NowMicros;
        store.Apply(Batch(Posted("b-1", customer, revenue, 100)), now, null);
        Assert.True(store.HoldsClaim);

        // SQL by hand, outside the claim: only 100 of the 900 the writer remembers are left.
        Assert.Equal(1, await h.ExecuteByHandAsync($"UPDATE ledger_accounts SET credits_posted = credits_posted - 800 WHERE id = {customer}"));

        // Acknowledged from the stale cache (the claim said nobody else writes), but the check refuses the batch and the
        // hold is applied from fresh state: refused, and not written. Its settlement would find no hold and charge at
        // most what is available (GatewayBilling), so the balance is never overdrawn.
        var hold = Relaxed(h, Hold("b-hold", customer, revenue, 500));
        store.Apply([hold.Command], now, null);
        Assert.Equal(TransferResultCode.Ok, hold.Acknowledged![0].Code);
        Assert.Equal(TransferResultCode.InsufficientFunds, hold.Command.Results[0].Code);
        Assert.Null(await h.Ledger.GetTransferAsync("b-hold"));
        Assert.Equal(1, store.StaleUnderClaim);
        Assert.False(store.HoldsClaim);
        Assert.Equal(0L, (await h.AccountAsync(customer)).DebitsPending);
    }
}
