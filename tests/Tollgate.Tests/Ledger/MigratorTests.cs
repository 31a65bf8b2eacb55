using Microsoft.Extensions.Logging.Abstractions;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Ledger;

public sealed class MigratorTests
{
    private static DatabaseEngine EngineOf(string engine) => engine == TestDatabases.Postgres ? DatabaseEngine.Postgres : DatabaseEngine.Sqlite;

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task MigrateAsync_EmptyDatabase_RecordsVersionsOneToN(string engine)
    {
        var database = new Database(DatabaseTarget.Parse(await TestDatabases.CreateAsync(engine)));
        try
        {
            var migrator = new Migrator(database);
            Assert.Empty(await migrator.AppliedVersionsAsync(CancellationToken.None));
            var n = Migrator.Load(EngineOf(engine)).Count;
            Assert.True(n >= 2, $"expected the ledger and accounts migrations at least, found {n}");

            var applied = await migrator.MigrateAsync(CancellationToken.None);

            Assert.Equal(Enumerable.Range(1, n), applied.Select(m => m.Version));
            Assert.Equal(Enumerable.Range(1, n), await migrator.AppliedVersionsAsync(CancellationToken.None));
            // The schema is usable: the ledger can write to it.
            await using var ledger = new LedgerService(LedgerRegistration.CreateStore(database, TimeProvider.System), TimeProvider.System,
                new LedgerOptions(), NullLogger<LedgerService>.Instance);
            var a = await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Promotions));
            var b = await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Customer));
            Assert.Equal(TransferResultCode.Ok, (await ledger.TransferAsync(LedgerRequests.Posted("t1", a.Id, b.Id, 5))).Code);
            Assert.True((await ledger.AuditAsync()).Healthy);
        }
        finally
        {
            await LedgerHarness.DropAsync(database);
        }
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task MigrateAsync_RunTwice_SecondRunIsNoOp(string engine)
    {
        var database = await TestDatabases.CreateMigratedAsync(engine);
        try
        {
            var migrator = new Migrator(database);
            var before = await migrator.AppliedVersionsAsync(CancellationToken.None);

            var again = await migrator.MigrateAsync(CancellationToken.None);
            var third = await new Migrator(database).MigrateAsync(CancellationToken.None);

            Assert.Empty(again);
            Assert.Empty(third);
            Assert.Equal(before, await migrator.AppliedVersionsAsync(CancellationToken.None));
            Assert.Equal(Enumerable.Range(1, Migrator.Load(EngineOf(engine)).Count), before);
        }
        finally
        {
            await LedgerHarness.DropAsync(database);
        }
    }
}
