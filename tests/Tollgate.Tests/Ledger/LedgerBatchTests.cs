using Microsoft.Extensions.Logging.Abstractions;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// The group-commit path on each engine: accounts found through a pending transfer, many concurrent transfers
/// against one prepaid account in shared batches, and replays.
/// </summary>
public sealed class LedgerBatchTests
{
    private sealed class Fixture : IAsyncDisposable
    {
        public required Database Db { get; init; }
        public required LedgerService Ledger { get; init; }
        public required long Customer { get; init; }
        public required long Revenue { get; init; }

        public static async Task<Fixture> CreateAsync(string engine, long funding)
        {
            var db = await TestDatabases.CreateMigratedAsync(engine);
            var ledger = new LedgerService(LedgerRegistration.CreateStore(db, TimeProvider.System), TimeProvider.System,
                new LedgerOptions(), NullLogger<LedgerService>.Instance);
            var customer = await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Customer, Flags: LedgerAccountFlags.DebitsMustNotExceedCredits));
            var revenue = await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Revenue));
            var promotions = await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Promotions));
            var grant = await ledger.TransferAsync(new TransferRequest
            {
                Id = "grant", DebitAccountId = promotions.Id, CreditAccountId = customer.Id, Amount = funding, Code = "grant",
            });
            Assert.Equal(TransferResultCode.Ok, grant.Code);
            return new Fixture { Db = db, Ledger = ledger, Customer = customer.Id, Revenue = revenue.Id };
        }

        public async ValueTask DisposeAsync()
        {
            await Ledger.DisposeAsync();
            await Db.DisposeAsync();
        }
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostNamingOnlyThePendingId_LocksThePendingsAccountsAndSettles(string engine)
    {
        await using var f = await Fixture.CreateAsync(engine, 10_000);
        var hold = await f.Ledger.TransferAsync(new TransferRequest
        {
            Id = "hold", Kind = TransferKind.Pending, DebitAccountId = f.Customer, CreditAccountId = f.Revenue, Amount = 3_000, Code = "usage",
        });
        Assert.Equal(TransferResultCode.Ok, hold.Code);

        // No account ids: the store must find (and lock) the accounts through the stored pending transfer.
        var post = await f.Ledger.TransferAsync(new TransferRequest { Id = "settle", Kind = TransferKind.PostPending, PendingId = "hold", Amount = 2_000, Code = "usage" });

        Assert.Equal(TransferResultCode.Ok, post.Code);
        var customer = await f.Ledger.GetAccountAsync(f.Customer);
        Assert.Equal(8_000, customer!.BalanceMicros);
        Assert.Equal(0, customer.HeldMicros);
        Assert.Equal(TransferStatus.Posted, (await f.Ledger.GetTransferAsync("hold"))!.Status);
        Assert.True((await f.Ledger.AuditAsync()).Healthy);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAtomicAsync_HoldAndItsPostInOneGroup_StoresTheHoldPostedAndSettled(string engine)
    {
        await using var f = await Fixture.CreateAsync(engine, 10_000);

        var results = await f.Ledger.TransferAtomicAsync([
            new TransferRequest { Id = "hold", Kind = TransferKind.Pending, DebitAccountId = f.Customer, CreditAccountId = f.Revenue, Amount = 3_000, Code = "usage" },
            new TransferRequest { Id = "settle", Kind = TransferKind.PostPending, PendingId = "hold", Amount = 1_200, Code = "usage" },
        ]);

        Assert.All(results, r => Assert.Equal(TransferResultCode.Ok, r.Code));
        Assert.Equal(TransferStatus.Posted, (await f.Ledger.GetTransferAsync("hold"))!.Status);
        var customer = await f.Ledger.GetAccountAsync(f.Customer);
        Assert.Equal(8_800, customer!.BalanceMicros);
        Assert.Equal(0, customer.HeldMicros);
        var replay = await f.Ledger.TransferAsync(new TransferRequest { Id = "settle", Kind = TransferKind.PostPending, PendingId = "hold", Amount = 1_200, Code = "usage" });
        Assert.Equal(TransferResultCode.Replayed, replay.Code);
        Assert.True((await f.Ledger.AuditAsync()).Healthy);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_ManyConcurrentDebitsOfOneAccount_PostExactlyWhatTheBalanceCovers(string engine)
    {
        await using var f = await Fixture.CreateAsync(engine, 3_000);

        var results = await Task.WhenAll(Enumerable.Range(0, 500).Select(i => f.Ledger.TransferAsync(new TransferRequest
        {
            Id = $"use.{i}", DebitAccountId = f.Customer, CreditAccountId = f.Revenue, Amount = 10, Code = "usage",
        })));

        Assert.Equal(300, results.Count(r => r.Code == TransferResultCode.Ok));
        Assert.Equal(200, results.Count(r => r.Code == TransferResultCode.InsufficientFunds));
        Assert.Equal(0, (await f.Ledger.GetAccountAsync(f.Customer))!.BalanceMicros);
        Assert.True((await f.Ledger.AuditAsync()).Healthy);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_SameIdInALaterBatch_ReplaysWithoutSecondEffect(string engine)
    {
        await using var f = await Fixture.CreateAsync(engine, 1_000);
        var request = new TransferRequest { Id = "once", DebitAccountId = f.Customer, CreditAccountId = f.Revenue, Amount = 400, Code = "usage" };

        var first = await f.Ledger.TransferAsync(request);
        var again = await f.Ledger.TransferAsync(request);
        var changed = await f.Ledger.TransferAsync(request with { Amount = 500 });

        Assert.Equal(TransferResultCode.Ok, first.Code);
        Assert.Equal(TransferResultCode.Replayed, again.Code);
        Assert.Equal(TransferResultCode.IdempotencyConflict, changed.Code);
        Assert.Equal(600, (await f.Ledger.GetAccountAsync(f.Customer))!.BalanceMicros);
    }
}
