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
    public async Task A_caller_applies_its_own_command_while_the_writer_sleeps_and_a_hold_is_answered_before_the_call_returns()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        var store = StoreOf(h.Ledger);
        Assert.True(store.HoldsClaim);

        // One caller, one command at a time: nothing is queued when it submits, so it applies the command itself. A
        // command handed to the writer thread cannot be answered before TransferAsync returns (the thread must wake).
        const int rounds = 20;
        var answeredAtOnce = 0;
        for (var r = 0; r < rounds; r++)
        {
            var deferredBefore = store.DeferredBatches;
            var pending = h.Ledger.TransferAsync(Hold($"own-h-{r}", customer, revenue, 100), LedgerCommit.RelaxedCommit);
            if (pending.IsCompletedSuccessfully && store.DeferredBatches == deferredBefore + 1) answeredAtOnce++;
            Assert.Equal(TransferResultCode.Ok, (await pending.WaitAsync(Patience)).Code);
            // A settlement is applied the same way but answered only once written: readable as soon as it is.
            var settle = await h.Ledger.TransferAsync(Post($"own-s-{r}", $"own-h-{r}", 60)).WaitAsync(Patience);
            Assert.Equal(TransferResultCode.Ok, settle.Code);
            Assert.Equal(settle.Transfer!.DebitBalanceAfter, (await h.Ledger.GetTransferAsync($"own-s-{r}"))!.DebitBalanceAfter);
        }
        // Most, not all: the writer thread may still be on its way to sleep after waking for something else.
        Assert.True(answeredAtOnce >= rounds / 2, $"{answeredAtOnce} of {rounds} holds answered before the call returned");
        var account = await h.AccountAsync(customer);
        Assert.Equal(1_000_000 - rounds * 60L, account.BalanceMicros);
        Assert.Equal(0L, account.DebitsPending);
        Assert.Equal(0, store.SpeculationFailures);
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_deferred_write_that_finds_the_database_changed_is_applied_again_and_a_durable_command_gets_the_database_result()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
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

    [Theory]
    [InlineData(true, "off")]
    [InlineData(false, "on")]
    public async Task The_one_statement_write_commits_without_waiting_for_the_disk_only_when_every_command_is_relaxed(bool relaxed, string synchronousCommit)
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        // ledger_write_checked (migration 0032) stands for BEGIN; SET LOCAL synchronous_commit = off; …; COMMIT in one
        // implicit transaction: the setting must hold for that transaction's commit, and only for it.
        string Empty(string type) => $"'{{}}'::{type}[]";
        var arguments = string.Join(", ", new[] { "'probe'", "false", "false", relaxed ? "true" : "false" }
            .Concat(Enumerable.Repeat(Empty("bigint"), 7)).Append(Empty("text"))
            .Concat(new[] { "text", "smallint", "bigint", "bigint", "bigint", "text", "integer", "bigint", "smallint", "text", "text", "text", "text", "bigint", "bigint", "bigint" }.Select(Empty))
            .Concat(new[] { "bigint", "bigint", "text", "boolean", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint" }.Select(Empty))
            .Concat(Enumerable.Repeat(Empty("bigint"), 6)).Append(Empty("text")).Append(Empty("smallint"))
            .Concat(new[] { "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "bigint", "text", "text", "text", "text", "bigint", "bigint", "text" }.Select(Empty)));

        await using var connection = new Npgsql.NpgsqlConnection(h.Database.Target.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        async Task<string> SettingAsync(string sql)
        {
            await using var command = new Npgsql.NpgsqlCommand(sql, connection);
            return (string)(await command.ExecuteScalarAsync())!;
        }
        // The test cluster runs with synchronous_commit off; the session starts from the durable setting.
        await SettingAsync("SELECT set_config('synchronous_commit', 'on', false)");

        var inTransaction = await SettingAsync(
            $"SELECT current_setting('synchronous_commit') FROM (SELECT ledger_write_checked({arguments})) AS written");

        Assert.Equal(synchronousCommit, inTransaction);
        Assert.Equal("on", await SettingAsync("SELECT current_setting('synchronous_commit')"));
    }

    [Fact]
    public void The_one_statement_write_is_sent_with_positional_placeholders_in_the_order_its_parameters_are_added()
    {
        var parameters = new Npgsql.NpgsqlCommand().Parameters;
        parameters.Add(new Npgsql.NpgsqlParameter<long>("c_dpo", 1));
        parameters.Add(new Npgsql.NpgsqlParameter<long>("c_dp", 2));
        parameters.Add(new Npgsql.NpgsqlParameter<long>("u_id", 3));

        // A name that begins another (c_dp, c_dpo) must not be taken for it.
        Assert.Equal("SELECT f($2::bigint[], $1, $3)", PostgresLedgerStore.ToPositional("SELECT f(@c_dp::bigint[], @c_dpo, @u_id)", parameters));
        Assert.Throws<InvalidOperationException>(() => PostgresLedgerStore.ToPositional("SELECT f(@c_dp, @c_dpo, @u_id, @missing)", parameters));
        Assert.Throws<InvalidOperationException>(() => PostgresLedgerStore.ToPositional("SELECT f(@c_dp, @c_dpo)", parameters));
        Assert.Throws<InvalidOperationException>(() => PostgresLedgerStore.ToPositional("SELECT f(@c_dp, @c_dpo, @u_id, @u_id)", parameters));
    }

    [Fact]
    public async Task The_claim_function_keeps_a_contended_claim_for_a_holder_that_asks_says_so_and_lets_go_at_its_next_plain_call()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        Assert.True(await h.QueryByHandAsync<int>("SELECT ledger_claim('a', true)") > 0);
        var refused = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => h.QueryByHandAsync<int>("SELECT ledger_claim('b', true)"));
        Assert.Equal("TL002", refused.SqlState);

        // Still holding acknowledged work: kept through b's request, and told so (negative).
        Assert.True(await h.QueryByHandAsync<int>("SELECT ledger_claim('a', true, true)") < 0);
        Assert.Equal("a", await h.QueryByHandAsync<string>("SELECT holder FROM ledger_writer_claim"));
        Assert.Equal("TL002", (await Assert.ThrowsAsync<Npgsql.PostgresException>(() => h.QueryByHandAsync<int>("SELECT ledger_claim('b', true)"))).SqlState);

        // The next plain call lets go; b then writes (without the claim: a wrote within the last 10 s).
        Assert.Equal(0, await h.QueryByHandAsync<int>("SELECT ledger_claim('a', true)"));
        Assert.Equal(0, await h.QueryByHandAsync<int>("SELECT ledger_claim('b', true)"));
        Assert.True(await h.QueryByHandAsync<bool>("SELECT holder IS NULL FROM ledger_writer_claim"));
    }

    [Fact]
    public async Task A_writer_asked_for_the_claim_while_it_defers_keeps_it_until_its_deferred_holds_are_written_then_lets_go()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        await using var first = h.NewPostgresStore();
        await using var second = h.NewPostgresStore();
        var (customer, revenue) = await h.FundedByAsync(first, 1_000);
        var now = h.Clock.NowMicros;
        first.Apply(Batch(Posted("k-1", customer, revenue, 100)), now, null);
        Assert.True(first.HoldsClaim);

        // The second writer asks for the claim and waits for it.
        var waiting = Task.Run(() => second.Apply(Batch(Posted("k-2", customer, revenue, 100)), now, null));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (await h.QueryByHandAsync<long>("SELECT coalesce(pg_sequence_last_value('ledger_claim_refusals'), 0)") == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the second writer was never refused");
            await Task.Delay(5);
        }

        var hold = new LedgerCommand([Hold("k-hold", customer, revenue, 300)], atomic: false, LedgerCommit.RelaxedCommit);
        TransferResult[]? acknowledged = null;
        hold.Acknowledgement = results => acknowledged ??= results;
        Assert.True(first.TryDefer([hold], now));
        Assert.Equal(TransferResultCode.Ok, acknowledged![0].Code);
        Assert.Empty(first.DrainDeferred());

        // Written, and the claim kept through the request: the second writer has not written yet.
        Assert.NotNull(await h.Ledger.GetTransferAsync("k-hold"));
        Assert.True(await h.QueryByHandAsync<bool>("SELECT holder IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_transfers WHERE id = 'k-2') FROM ledger_writer_claim"));
        // But the first writer stops taking on more, and lets go at its next ordinary batch.
        Assert.False(first.HoldsClaim);
        Assert.False(first.TryDefer(Batch(Posted("k-3", customer, revenue, 100)), now));
        first.Apply(Batch(Posted("k-3", customer, revenue, 100)), now, null);
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotNull(await h.Ledger.GetTransferAsync("k-2"));
        await h.AssertAuditHealthyAsync();
    }

    [Fact]
    public async Task A_deferred_transfer_whose_id_the_cache_did_not_know_is_answered_as_the_replay_it_is()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        var now = h.Clock.NowMicros;
        // Written by another writer, so the service's cache never sees these ids.
        await using (var other = h.NewPostgresStore())
            other.Apply([.. Batch(Posted("u-grant", promotions, customer, 1_000, "grant")),
                         .. Batch(Posted("u-ok", customer, revenue, 100)), .. Batch(Posted("u-big", customer, revenue, 500))], now, null);
        // Forget that writer, so the service is granted the claim at once (by hand: it would take 10 s).
        await h.ExecuteByHandAsync("UPDATE ledger_writer_claim SET holder = NULL, held_until = NULL, last_writer = NULL, last_write_at = NULL, contended_at = NULL");
        var store = StoreOf(h.Ledger);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("u-warm-1", customer, revenue, 1))).Code);
        Assert.True(store.HoldsClaim);

        // Taken as new: the state check finds the id (not a sign of another writer), and it is applied again as a replay.
        var deferred = store.DeferredBatches;
        var ok = await h.Ledger.TransferAsync(Posted("u-ok", customer, revenue, 100)).WaitAsync(Patience);
        Assert.Equal(TransferResultCode.Replayed, ok.Code);
        Assert.True(store.DeferredBatches > deferred);

        // Taken as new and refused from the cache (399 left): the caller hears the original outcome, not a refusal.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("u-warm-2", customer, revenue, 1))).Code);
        Assert.True(store.HoldsClaim);
        deferred = store.DeferredBatches;
        var big = await h.Ledger.TransferAsync(Posted("u-big", customer, revenue, 500)).WaitAsync(Patience);
        Assert.Equal(TransferResultCode.Replayed, big.Code);
        Assert.True(store.DeferredBatches > deferred);

        Assert.Equal(0, store.StaleUnderClaim);
        Assert.Equal(398L, (await h.AccountAsync(customer)).BalanceMicros);
        await h.AssertAuditHealthyAsync();
    }
}
