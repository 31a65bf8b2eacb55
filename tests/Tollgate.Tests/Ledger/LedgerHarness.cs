using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Ledger;

/// <summary>A clock that moves only when told to, so hold timeouts and timestamps are exact.</summary>
internal sealed class ManualTimeProvider(DateTimeOffset start) : TimeProvider
{
    private long _utcTicks = start.UtcTicks;

    public override DateTimeOffset GetUtcNow() => new(Interlocked.Read(ref _utcTicks), TimeSpan.Zero);

    public void Advance(TimeSpan by) => Interlocked.Add(ref _utcTicks, by.Ticks);

    /// <summary>Now in Unix microseconds, the ledger's timestamp unit.</summary>
    public long NowMicros => (GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks / TimeSpan.TicksPerMicrosecond;
}

/// <summary>
/// A fresh migrated database of one engine with a <see cref="LedgerService"/> on a manual clock. Disposing stops the
/// services and deletes the database, so the shared PostgreSQL server does not fill up with test databases.
/// </summary>
internal sealed class LedgerHarness : IAsyncDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly List<LedgerService> _services = new();

    private LedgerHarness(string engine, Database database, LedgerOptions? options)
    {
        Engine = engine;
        Database = database;
        Ledger = AddService(options);
    }

    public string Engine { get; }
    public Database Database { get; }
    public ManualTimeProvider Clock { get; } = new(Start);
    public LedgerService Ledger { get; }

    public static async Task<LedgerHarness> StartAsync(string engine, LedgerOptions? options = null) =>
        new(engine, await TestDatabases.CreateMigratedAsync(engine), options);

    /// <summary>
    /// Another service on the same database with its own store and writer loop, like a second process: its batches
    /// contend with the first service's through the database's locks, not through a shared channel.
    /// </summary>
    public LedgerService AddService(LedgerOptions? options = null) => AddService(LedgerRegistration.CreateStore(Database, Clock), options);

    public LedgerService AddService(ILedgerStore store, LedgerOptions? options = null)
    {
        var service = new LedgerService(store, Clock, options ?? new LedgerOptions(), NullLogger<LedgerService>.Instance);
        _services.Add(service);
        return service;
    }

    public async Task<long> CreateAccountAsync(
        LedgerAccountFlags flags = LedgerAccountFlags.None, long creditLimit = 0, string kind = LedgerAccountKinds.Customer, string currency = "USD") =>
        (await Ledger.CreateAccountAsync(new NewLedgerAccount(kind, null, currency, creditLimit, flags))).Id;

    /// <summary>An operator account without limits, the source of grants.</summary>
    public Task<long> CreatePromotionsAsync() => CreateAccountAsync(kind: LedgerAccountKinds.Promotions);

    /// <summary>A prepaid customer: may spend only what was granted (plus <paramref name="creditLimit"/>).</summary>
    public Task<long> CreateCustomerAsync(long creditLimit = 0) =>
        CreateAccountAsync(LedgerAccountFlags.DebitsMustNotExceedCredits, creditLimit);

    public Task<long> CreateRevenueAsync() => CreateAccountAsync(kind: LedgerAccountKinds.Revenue);

    /// <summary>The usual cast: a promotions account that funds a prepaid customer with <paramref name="grant"/>, and a revenue account.</summary>
    public async Task<(long Promotions, long Customer, long Revenue)> FundedCustomerAsync(long grant)
    {
        var promotions = await CreatePromotionsAsync();
        var customer = await CreateCustomerAsync();
        var revenue = await CreateRevenueAsync();
        await GrantAsync(promotions, customer, grant);
        return (promotions, customer, revenue);
    }

    public async Task<LedgerAccount> AccountAsync(long id) =>
        await Ledger.GetAccountAsync(id) ?? throw new InvalidOperationException($"Ledger account {id} does not exist.");

    public async Task<Transfer> GrantAsync(long from, long to, long micros, string? id = null)
    {
        var result = await Ledger.TransferAsync(new TransferRequest
        {
            Id = id ?? "grant-" + Guid.NewGuid().ToString("N"), DebitAccountId = from, CreditAccountId = to, Amount = micros, Code = "grant",
        });
        Assert.Equal(TransferResultCode.Ok, result.Code);
        return result.Transfer!;
    }

    /// <summary>PostgreSQL only: a ledger store of its own on this database, as another writer (or process) would have.</summary>
    internal PostgresLedgerStore NewPostgresStore() => (PostgresLedgerStore)LedgerRegistration.CreateStore(Database, Clock);

    /// <summary>PostgreSQL only: runs <paramref name="sql"/> on a connection of its own, outside the ledger (a write by hand); rows affected.</summary>
    public async Task<int> ExecuteByHandAsync(string sql)
    {
        await using var connection = await OpenByHandAsync();
        await using var command = new Npgsql.NpgsqlCommand(sql, connection);
        return await command.ExecuteNonQueryAsync();
    }

    /// <summary>PostgreSQL only: the single value <paramref name="sql"/> returns, on a connection of its own (in its own transaction).</summary>
    public async Task<T> QueryByHandAsync<T>(string sql)
    {
        await using var connection = await OpenByHandAsync();
        await using var command = new Npgsql.NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private async Task<Npgsql.NpgsqlConnection> OpenByHandAsync()
    {
        var connection = new Npgsql.NpgsqlConnection(Database.Target.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        return connection;
    }

    /// <summary>
    /// PostgreSQL only: a customer funded with <paramref name="grant"/> by <paramref name="store"/> itself, and a revenue
    /// account, so that store is the only writer so far (the writer claim is granted only after 10 s without another
    /// writer, and the harness's own writer would be one).
    /// </summary>
    public async Task<(long Customer, long Revenue)> FundedByAsync(PostgresLedgerStore store, long grant)
    {
        var promotions = await CreatePromotionsAsync();
        var customer = await CreateCustomerAsync();
        var revenue = await CreateRevenueAsync();
        var fund = new LedgerCommand([new TransferRequest
        {
            Id = "grant-" + customer, DebitAccountId = promotions, CreditAccountId = customer, Amount = grant, Code = "grant",
        }], atomic: false);
        store.Apply([fund], Clock.NowMicros, null);
        Assert.Equal(TransferResultCode.Ok, fund.Results[0].Code);
        return (customer, revenue);
    }

    /// <summary>Every ledger invariant holds (counters = entries, balances sum to zero, no overdraft, holds = pending).</summary>
    public async Task AssertAuditHealthyAsync()
    {
        var audit = await Ledger.AuditAsync();
        Assert.True(audit.Healthy, $"{Engine}: ledger audit failed: {string.Join("; ", audit.Violations)}");
        Assert.Empty(audit.Violations);
        Assert.Equal(audit.SumDebitsPosted, audit.SumCreditsPosted);
        Assert.Equal(audit.SumDebitsPending, audit.SumCreditsPending);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var service in _services) await service.DisposeAsync();
        await DropAsync(Database);
    }

    /// <summary>Disposes a test database and deletes it from the server or disk.</summary>
    public static async Task DropAsync(Database database)
    {
        var target = database.Target;
        await database.DisposeAsync();
        if (target.Engine == DatabaseEngine.Postgres)
        {
            var name = new NpgsqlConnectionStringBuilder(target.ConnectionString).Database!;
            await using var connection = new NpgsqlConnection(TestDatabases.PostgresServer);
            await connection.OpenAsync();
            // Not WITH (FORCE): that must be allowed to terminate every session, and an autovacuum worker on the fresh
            // database belongs to the superuser. A plain DROP stops autovacuum itself; only our own sessions could block it.
            await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{name}\"", connection);
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await drop.ExecuteNonQueryAsync();
                    break;
                }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ObjectInUse && attempt < 10)
                {
                    await Task.Delay(200);
                }
            }
        }
        else
        {
            var path = new SqliteConnectionStringBuilder(target.ConnectionString).DataSource;
            foreach (var file in new[] { path, path + "-wal", path + "-shm" })
            {
                try { File.Delete(file); }
                catch (IOException) { /* still open somewhere: the temp folder is disposable anyway */ }
            }
        }
    }
}
