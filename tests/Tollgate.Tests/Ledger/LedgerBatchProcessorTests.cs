using Tollgate.Features.Ledger;

namespace Tollgate.Tests.Ledger;

/// <summary>Processor cases that only a multi-process race can produce, set up directly.</summary>
public sealed class LedgerBatchProcessorTests
{
    [Fact]
    public void Apply_PostOfHoldWhoseAccountsWereNotLocked_ReportsNotFoundAndWritesNothing()
    {
        // Another process committed the hold after this batch looked holds up to lock their accounts, so the hold is
        // visible but its accounts are not in the locked set.
        var hold = new Transfer("hold-1", TransferKind.Pending, 10, 20, 500, null, 0, null, TransferStatus.Pending, "usage",
            null, null, null, 1, 0, 0);
        var command = new LedgerCommand([new TransferRequest { Id = "post-1", Kind = TransferKind.PostPending, PendingId = "hold-1" }], atomic: false);
        var processor = new LedgerBatchProcessor(new Dictionary<long, AccountState>(),
            new Dictionary<string, Transfer>(StringComparer.Ordinal) { ["hold-1"] = hold }, nowMicros: 2);

        var writes = processor.Apply([command]);

        Assert.Equal(TransferResultCode.PendingTransferNotFound, command.Results[0].Code);
        Assert.Empty(writes.NewTransfers);
        Assert.Empty(writes.Entries);
        Assert.Empty(writes.PendingStatusChanges);
    }

    [Fact]
    public void Apply_CounterWouldOverflow_ReportsOverflowAndLeavesCountersUntouched()
    {
        // Single amounts are bounded, so only a long history fills a counter; start from an almost full one.
        var source = new AccountState { Id = 1, Currency = "USD", CreditLimit = 0, Flags = LedgerAccountFlags.None, DebitsPosted = long.MaxValue - 5 };
        var sink = new AccountState { Id = 2, Currency = "USD", CreditLimit = 0, Flags = LedgerAccountFlags.None, CreditsPosted = long.MaxValue - 5 };
        var command = new LedgerCommand([new TransferRequest { Id = "t", DebitAccountId = 1, CreditAccountId = 2, Amount = 6 }], atomic: false);
        var processor = new LedgerBatchProcessor(new Dictionary<long, AccountState> { [1] = source, [2] = sink },
            new Dictionary<string, Transfer>(StringComparer.Ordinal), nowMicros: 1);

        var writes = processor.Apply([command]);

        Assert.Equal(TransferResultCode.Overflow, command.Results[0].Code);
        Assert.Equal(long.MaxValue - 5, source.DebitsPosted);
        Assert.Equal(long.MaxValue - 5, sink.CreditsPosted);
        Assert.Empty(writes.Entries);
    }

    private static (AccountState Customer, AccountState Revenue) Funded(long credits) => (
        new AccountState { Id = 1, Currency = "USD", CreditLimit = 0, Flags = LedgerAccountFlags.DebitsMustNotExceedCredits, CreditsPosted = credits },
        new AccountState { Id = 2, Currency = "USD", CreditLimit = 0, Flags = LedgerAccountFlags.None });

    private static LedgerCommand Hold(string id, long amount) =>
        new([new TransferRequest { Id = id, Kind = TransferKind.Pending, DebitAccountId = 1, CreditAccountId = 2, Amount = amount }], atomic: false);

    private static LedgerCommand Post(string id, string holdId, long amount) =>
        new([new TransferRequest { Id = id, Kind = TransferKind.PostPending, PendingId = holdId, Amount = amount }], atomic: false);

    [Fact]
    public void Apply_HoldSettledInTheSameBatch_IsInsertedPostedWithoutAStatusUpdate()
    {
        var (customer, revenue) = Funded(1_000);
        var older = new Transfer("hold-0", TransferKind.Pending, 1, 2, 100, null, 0, null, TransferStatus.Pending, "usage", null, null, null, 1, 0, 0);
        customer.DebitsPending = 100;
        revenue.CreditsPending = 100;
        var known = new Dictionary<string, Transfer>(StringComparer.Ordinal) { ["hold-0"] = older };
        var hold = Hold("hold-1", 300);
        var batch = new[] { hold, Post("post-1", "hold-1", 200), Post("post-0", "hold-0", 50) };

        var writes = new LedgerBatchProcessor(new() { [1] = customer, [2] = revenue }, known, nowMicros: 2).Apply(batch);

        Assert.All(batch, c => Assert.Equal(TransferResultCode.Ok, c.Results[0].Code));
        // The caller of the hold still gets the hold as it was placed.
        Assert.Equal(TransferStatus.Pending, hold.Results[0].Transfer!.Status);
        Assert.Equal(["hold-1", "post-1", "post-0"], writes.NewTransfers.Select(t => t.Id));
        Assert.Equal(TransferStatus.Posted, writes.NewTransfers[0].Status);
        // Only the hold written by an earlier batch is updated.
        Assert.Equal(new Dictionary<string, TransferStatus> { ["hold-0"] = TransferStatus.Posted }, writes.PendingStatusChanges);
        Assert.Equal(6, writes.Entries.Count);
        Assert.Equal(1_000 - 250, customer.Balance);
        Assert.Equal(0, customer.DebitsPending);
    }

    [Fact]
    public void Merge_HoldOfOneBatchSettledByALaterOne_IsInsertedWithItsFinalStatus()
    {
        var (customer, revenue) = Funded(1_000);
        var accounts = new Dictionary<long, AccountState> { [1] = customer, [2] = revenue };
        var known = new Dictionary<string, Transfer>(StringComparer.Ordinal);
        var first = new LedgerBatchProcessor(accounts, known, nowMicros: 1).Apply([Hold("hold-1", 300), Hold("hold-2", 400)]);
        var second = new LedgerBatchProcessor(accounts, known, nowMicros: 2).Apply([
            new LedgerCommand([new TransferRequest { Id = "void-1", Kind = TransferKind.VoidPending, PendingId = "hold-1" }], atomic: false)]);

        // Each batch alone must update the hold the other one inserted.
        Assert.Equal(TransferStatus.Voided, second.PendingStatusChanges["hold-1"]);

        var merged = LedgerBatchWrites.Merge([first, second]);

        Assert.Equal(["hold-1", "hold-2", "void-1"], merged.NewTransfers.Select(t => t.Id));
        Assert.Equal(TransferStatus.Voided, merged.NewTransfers[0].Status);
        Assert.Equal(TransferStatus.Pending, merged.NewTransfers[1].Status);
        Assert.Empty(merged.PendingStatusChanges);
        Assert.Equal(400, customer.DebitsPending);
    }
}
