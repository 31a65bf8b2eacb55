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
}
