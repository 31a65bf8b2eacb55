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
}
