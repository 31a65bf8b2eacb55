using Npgsql;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// The PostgreSQL store begins the next batch (BEGIN, locks, reads) in the same round trip as a batch's COMMIT. These
/// drive the store directly, so each case is exact: what the begun batch sees, what happens when the writer hands
/// over a different batch, and a begun batch whose locks cannot be had.
/// </summary>
public sealed class PostgresPipeliningTests
{
    private static LedgerCommand Command(params TransferRequest[] transfers) => new(transfers, atomic: transfers.Length > 1);

    private static (long Now, PostgresLedgerStore Store) NewStore(LedgerHarness h, Database? db = null) =>
        (h.Clock.NowMicros, (PostgresLedgerStore)LedgerRegistration.CreateStore(db ?? h.Database, h.Clock));

    [Fact]
    public async Task A_begun_batch_sees_what_the_batch_before_it_committed()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        var (now, store) = NewStore(h);
        await using var _ = store;

        // Batch 1 creates a hold; batch 2, begun with batch 1's commit, posts it and spends the rest of the balance.
        var first = new List<LedgerCommand> { Command(Hold("p-hold", customer, revenue, 600)) };
        var second = new List<LedgerCommand> { Command(Post("p-post", "p-hold", 500)), Command(Posted("p-rest", customer, revenue, 500)), Command(Posted("p-over", customer, revenue, 1)) };
        store.Apply(first, now, second);
        Assert.Equal(TransferResultCode.Ok, first[0].Results[0].Code);
        store.Apply(second, now, null);
        Assert.Equal([TransferResultCode.Ok, TransferResultCode.Ok, TransferResultCode.InsufficientFunds], second.Select(c => c.Results[0].Code));

        var account = await h.AccountAsync(customer);
        Assert.Equal((0L, 1_000L, 1_000L), (account.DebitsPending, account.DebitsPosted, account.CreditsPosted));
        Assert.Equal(TransferStatus.Posted, (await h.Ledger.GetTransferAsync("p-hold"))!.Status);
        Assert.True((await h.Ledger.AuditAsync()).Healthy);
    }

    [Fact]
    public async Task A_begun_batch_that_is_not_the_next_one_applied_is_dropped_with_its_locks()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        var (now, store) = NewStore(h);
        await using var _ = store;

        var first = new List<LedgerCommand> { Command(Posted("d-1", customer, revenue, 100)) };
        var begun = new List<LedgerCommand> { Command(Posted("d-2", customer, revenue, 100)) };
        store.Apply(first, now, begun);
        // Another process can still take the begun batch's account: the store let its locks go when handed another batch.
        var other = new List<LedgerCommand> { Command(Posted("d-3", customer, revenue, 100)) };
        store.Apply(other, now, null);
        var apply = Task.Run(() => LedgerRegistration.CreateStore(h.Database, h.Clock).Apply([Command(Posted("d-4", customer, revenue, 100))], now, null));
        Assert.Same(apply, await Task.WhenAny(apply, Task.Delay(TimeSpan.FromSeconds(10))));
        await apply;
        // The dropped batch was never applied; applying it now works as a fresh batch.
        Assert.Null(await h.Ledger.GetTransferAsync("d-2"));
        store.Apply(begun, now, null);
        Assert.Equal(TransferResultCode.Ok, begun[0].Results[0].Code);
        Assert.Equal(400L, (await h.AccountAsync(customer)).DebitsPosted);
        Assert.True((await h.Ledger.AuditAsync()).Healthy);
    }

    [Fact]
    public async Task A_begun_batch_that_cannot_get_its_locks_leaves_the_committed_batch_committed()
    {
        await using var h = await LedgerHarness.StartAsync(TestDatabases.Postgres);
        var (_, customer, revenue) = await h.FundedCustomerAsync(1_000);
        var promotions = await h.CreatePromotionsAsync();
        var busy = await h.CreateCustomerAsync();
        await h.GrantAsync(promotions, busy, 1_000);
        // A store whose lock waits give up after 200 ms, and another session holding the busy account's row.
        var impatient = new Database(h.Database.Target with { ConnectionString = h.Database.Target.ConnectionString + ";Options=-c lock_timeout=200" });
        await using var __ = impatient;
        var (now, store) = NewStore(h, impatient);
        await using var _ = store;
        await using var holder = new NpgsqlConnection(h.Database.Target.ConnectionString + ";Pooling=false");
        await holder.OpenAsync();
        await using var tx = await holder.BeginTransactionAsync();
        await using (var lockRow = new NpgsqlCommand($"SELECT id FROM ledger_accounts WHERE id = {busy} FOR UPDATE", holder, tx))
            await lockRow.ExecuteScalarAsync();

        var first = new List<LedgerCommand> { Command(Posted("l-1", customer, revenue, 100)) };
        var blocked = new List<LedgerCommand> { Command(Posted("l-2", busy, revenue, 100)) };
        store.Apply(first, now, blocked);
        Assert.Equal(TransferResultCode.Ok, first[0].Results[0].Code);
        Assert.NotNull(await h.Ledger.GetTransferAsync("l-1"));

        await tx.RollbackAsync();
        store.Apply(blocked, now, null);
        Assert.Equal(TransferResultCode.Ok, blocked[0].Results[0].Code);
        Assert.Equal((100L, 100L), ((await h.AccountAsync(customer)).DebitsPosted, (await h.AccountAsync(busy)).DebitsPosted));
        Assert.True((await h.Ledger.AuditAsync()).Healthy);
    }
}
