using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// The PostgreSQL writer applies a batch that names only accounts and holds it committed before to that cached state,
/// and commits it in one round trip with a check that the state is unchanged (LedgerStateCache, ledger_expect_state).
/// Each case makes the cache stale the way another gateway process or an admin would, and checks that the result is
/// the one the ordinary (read under lock) path gives: the cache may cost a round trip, never a wrong answer.
/// </summary>
public sealed class PostgresSpeculationTests
{
    [Fact]
    public async Task A_batch_on_accounts_the_writer_committed_before_is_applied_from_its_cache_exactly()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var store = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        store.Apply(Batch(Hold("s-hold", customer, revenue, 600)), now, null);
        Assert.Equal(0, store.SpeculatedBatches);

        // Post the hold, spend the rest, and try one micro-dollar more: all from the cached state.
        var second = Batch(Post("s-post", "s-hold", 500), Posted("s-rest", customer, revenue, 500), Posted("s-over", customer, revenue, 1));
        store.Apply(second, now, null);
        Assert.Equal(1, store.SpeculatedBatches);
        Assert.Equal([TransferResultCode.Ok, TransferResultCode.Ok, TransferResultCode.InsufficientFunds], second.Select(c => c.Results[0].Code));
        // A replay from the cache returns the first result.
        var replay = Batch(Posted("s-rest", customer, revenue, 500));
        store.Apply(replay, now, null);
        Assert.Equal(2, store.SpeculatedBatches);
        Assert.Equal(TransferResultCode.Replayed, replay[0].Results[0].Code);

        var account = await h.AccountAsync(customer);
        Assert.Equal((0L, 1_000L, 1_000L), (account.DebitsPending, account.DebitsPosted, account.CreditsPosted));
        Assert.Equal(TransferStatus.Posted, (await h.Ledger.GetTransferAsync("s-hold"))!.Status);
        Assert.Equal(0, store.SpeculationFailures);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task Another_process_spending_the_balance_makes_the_check_fail_and_the_batch_is_refused_from_fresh_state()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var mine = h.NewPostgresStore();
        await using var other = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        mine.Apply(Batch(Posted("o-1", customer, revenue, 100)), now, null);
        // The other process spends everything left; this writer's cache still says 900 are available.
        var drain = Batch(Posted("o-2", customer, revenue, 900));
        other.Apply(drain, now, null);
        Assert.Equal(TransferResultCode.Ok, drain[0].Results[0].Code);

        var late = Batch(Posted("o-3", customer, revenue, 500));
        mine.Apply(late, now, null);
        Assert.Equal(1, mine.SpeculationFailures);
        Assert.Equal(TransferResultCode.InsufficientFunds, late[0].Results[0].Code);
        Assert.Null(await h.Ledger.GetTransferAsync("o-3"));
        var account = await h.AccountAsync(customer);
        Assert.Equal((1_000L, 1_000L), (account.DebitsPosted, account.CreditsPosted));
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_replay_of_a_transfer_another_process_made_is_a_replay_not_a_refusal_from_the_cached_balance()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var mine = h.NewPostgresStore();
        await using var other = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        // The other process charges 600 first; this writer then caches the account (400 left) without knowing that transfer.
        other.Apply(Batch(Posted("r-600", customer, revenue, 600)), now, null);
        mine.Apply(Batch(Posted("r-1", customer, revenue, 1)), now, null);

        // Replayed here, the 600 would not fit the cached 399; the check sees the id exists and the ordinary path replays it.
        var replay = Batch(Posted("r-600", customer, revenue, 600));
        mine.Apply(replay, now, null);
        Assert.Equal(TransferResultCode.Replayed, replay[0].Results[0].Code);
        Assert.Equal(1, mine.SpeculationFailures);
        // A replay with other content is still a conflict, never a second charge.
        var conflict = Batch(Posted("r-600", customer, revenue, 300));
        mine.Apply(conflict, now, null);
        Assert.Equal(TransferResultCode.IdempotencyConflict, conflict[0].Results[0].Code);
        Assert.Equal(601L, (await h.AccountAsync(customer)).DebitsPosted);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_credit_limit_changed_outside_the_writer_is_seen()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(100);
        await using var store = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        store.Apply(Batch(Posted("c-1", customer, revenue, 100)), now, null);
        // An admin extends credit (no ledger transfer, so no new version): the cached limit of 0 would refuse this.
        await h.Ledger.SetCreditLimitAsync(customer, 250);
        var onCredit = Batch(Posted("c-2", customer, revenue, 250));
        store.Apply(onCredit, now, null);
        Assert.Equal(TransferResultCode.Ok, onCredit[0].Results[0].Code);
        Assert.Equal(1, store.SpeculationFailures);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_cached_account_that_differs_in_any_counter_is_refused_even_at_the_same_version()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var store = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        store.Apply(Batch(Posted("x-1", customer, revenue, 100)), now, null);
        // A history the cache cannot know, at the same version: only 100 of the 900 it remembers are left.
        Assert.Equal(1, await h.ExecuteByHandAsync($"UPDATE ledger_accounts SET credits_posted = credits_posted - 800 WHERE id = {customer}"));
        var charge = Batch(Posted("x-2", customer, revenue, 500));
        store.Apply(charge, now, null);
        Assert.Equal(1, store.SpeculationFailures);
        Assert.Equal(TransferResultCode.InsufficientFunds, charge[0].Results[0].Code);
    }

    [Fact]
    public async Task A_hold_the_writer_made_and_another_process_voided_cannot_be_posted_from_the_cache()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        await using var mine = h.NewPostgresStore();
        await using var other = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        mine.Apply(Batch(Hold("v-hold", customer, revenue, 700)), now, null);
        var voided = Batch(Void("v-void", "v-hold"));
        other.Apply(voided, now, null);
        Assert.Equal(TransferResultCode.Ok, voided[0].Results[0].Code);

        var post = Batch(Post("v-post", "v-hold", 700));
        mine.Apply(post, now, null);
        Assert.Equal(TransferResultCode.PendingTransferAlreadyVoided, post[0].Results[0].Code);
        Assert.Equal(1, mine.SpeculationFailures);
        var account = await h.AccountAsync(customer);
        Assert.Equal((0L, 0L), (account.DebitsPending, account.DebitsPosted));
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task Two_writers_racing_on_one_account_never_overdraw_it()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(10_000);
        await using var a = h.NewPostgresStore();
        await using var b = h.NewPostgresStore();
        var now = h.Clock.NowMicros;

        // Each writer charges 100 at a time, 80 times: 160 charges for a balance that affords 100, both writers' caches
        // going stale at every turn of the other.
        var ok = 0;
        async Task Run(PostgresLedgerStore store, string prefix)
        {
            await Task.Yield();
            for (var i = 0; i < 80; i++)
            {
                var batch = Batch(Posted($"{prefix}-{i}", customer, revenue, 100));
                store.Apply(batch, now, null);
                if (batch[0].Results[0].Code == TransferResultCode.Ok) Interlocked.Increment(ref ok);
                else Assert.Equal(TransferResultCode.InsufficientFunds, batch[0].Results[0].Code);
            }
        }
        await Task.WhenAll(Task.Run(() => Run(a, "a")), Task.Run(() => Run(b, "b")));

        Assert.Equal(100, ok);
        var account = await h.AccountAsync(customer);
        Assert.Equal((10_000L, 10_000L), (account.DebitsPosted, account.CreditsPosted));
        await h.AssertAuditHealthyAsync();
    }
}
