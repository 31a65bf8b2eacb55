using Microsoft.Data.Sqlite;
using Npgsql;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Bench;

/// <summary>
/// The baseline the ledger is compared against: one database transaction per transfer, written the way a careful
/// first version would be. Lock the customer row, check its balance, update it, insert the transfer and its entry,
/// commit. It runs on the ledger's own schema in its own database, with customers inserted already funded.
///
/// It is deliberately generous to itself: it only writes the debit side (one account update and one entry, where
/// the ledger writes two of each), it skips the replay lookup (a duplicate id fails on the primary key instead), and
/// it packs each transaction into two round trips (BEGIN + SELECT … FOR UPDATE, then the writes + COMMIT), the
/// fewest possible when the balance check happens in the application.
/// </summary>
internal static class NaiveSql
{
    public const string Lock =
        "SELECT credits_posted + credit_limit - debits_posted - debits_pending, debits_posted, debits_pending, credits_pending, version " +
        "FROM ledger_accounts WHERE id = @id FOR UPDATE";

    public const string UpdateAccount = "UPDATE ledger_accounts SET debits_posted = @dpo, version = @v WHERE id = @id";

    public const string InsertTransfer = """
        INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds,
            expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after)
        VALUES (@tid, 0, @id, @cr, @amount, NULL, 0, NULL, 0, 'usage', NULL, NULL, NULL, @ts, @bal, 0)
        """;

    public const string InsertEntry = """
        INSERT INTO ledger_entries (account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after,
            debits_pending_after, credits_pending_after, ts)
        VALUES (@id, @v, @tid, @debit, 0, @amount, @bal, @dp, @cp, @ts)
        """;

    public static long NowMicros() => (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks / TimeSpan.TicksPerMicrosecond;
}

/// <summary>One PostgreSQL transaction per transfer over a connection pool of <see cref="BenchOptions.EffectiveNaivePool"/>.</summary>
internal sealed class NaivePostgresTarget : ITransferTarget
{
    private readonly Database _db;
    private readonly NpgsqlDataSource _pool;
    private readonly long[] _customers;
    private const long Revenue = 0; // the naive baseline never credits anyone; the column only needs a value

    private NaivePostgresTarget(Database db, NpgsqlDataSource pool, long[] customers)
    {
        _db = db;
        _pool = pool;
        _customers = customers;
    }

    public static async Task<NaivePostgresTarget> CreateAsync(Database db, BenchOptions o, int customers)
    {
        await BenchDatabases.InsertHistoryAsync(db, o.History);
        var ids = await BenchDatabases.InsertCustomersAsync(db, customers, 1_000_000_000_000_000L / customers);
        await BenchDatabases.AnalyzeAsync(db);
        var b = new NpgsqlConnectionStringBuilder(db.Target.ConnectionString)
        {
            MaxPoolSize = o.EffectiveNaivePool,
            MaxAutoPrepare = 64,
            ApplicationName = "tollgate-bench-naive",
        };
        return new NaivePostgresTarget(db, NpgsqlDataSource.Create(b.ConnectionString), ids);
    }

    public async Task<bool> TransferAsync(string id, int customer)
    {
        var account = _customers[customer];
        await using var connection = await _pool.OpenConnectionAsync();
        var committed = false;
        try
        {
            long available, debitsPosted, debitsPending, creditsPending, version;
            await using (var load = new NpgsqlBatch(connection))
            {
                load.BatchCommands.Add(new NpgsqlBatchCommand("BEGIN"));
                var select = new NpgsqlBatchCommand(NaiveSql.Lock);
                select.Parameters.Add(new NpgsqlParameter<long>("id", account));
                load.BatchCommands.Add(select);
                await using var r = await load.ExecuteReaderAsync();
                if (!await r.ReadAsync()) throw new InvalidOperationException($"Account {account} is missing.");
                (available, debitsPosted, debitsPending, creditsPending, version) =
                    (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), r.GetInt64(4));
            }
            if (available < Workloads.Amount)
            {
                await using var rollback = new NpgsqlCommand("ROLLBACK", connection);
                await rollback.ExecuteNonQueryAsync();
                committed = true;
                return false;
            }
            var newDebitsPosted = checked(debitsPosted + Workloads.Amount);
            var balance = available - Workloads.Amount + debitsPending; // credits_posted − debits_posted (credit limit 0)
            var ts = NaiveSql.NowMicros();
            await using (var write = new NpgsqlBatch(connection))
            {
                var update = new NpgsqlBatchCommand(NaiveSql.UpdateAccount);
                update.Parameters.Add(new NpgsqlParameter<long>("dpo", newDebitsPosted));
                update.Parameters.Add(new NpgsqlParameter<long>("v", version + 1));
                update.Parameters.Add(new NpgsqlParameter<long>("id", account));
                write.BatchCommands.Add(update);
                var transfer = new NpgsqlBatchCommand(NaiveSql.InsertTransfer);
                transfer.Parameters.Add(new NpgsqlParameter<string>("tid", id));
                transfer.Parameters.Add(new NpgsqlParameter<long>("id", account));
                transfer.Parameters.Add(new NpgsqlParameter<long>("cr", Revenue));
                transfer.Parameters.Add(new NpgsqlParameter<long>("amount", Workloads.Amount));
                transfer.Parameters.Add(new NpgsqlParameter<long>("ts", ts));
                transfer.Parameters.Add(new NpgsqlParameter<long>("bal", balance));
                write.BatchCommands.Add(transfer);
                var entry = new NpgsqlBatchCommand(NaiveSql.InsertEntry);
                entry.Parameters.Add(new NpgsqlParameter<long>("id", account));
                entry.Parameters.Add(new NpgsqlParameter<long>("v", version + 1));
                entry.Parameters.Add(new NpgsqlParameter<string>("tid", id));
                entry.Parameters.Add(new NpgsqlParameter<bool>("debit", true));
                entry.Parameters.Add(new NpgsqlParameter<long>("amount", Workloads.Amount));
                entry.Parameters.Add(new NpgsqlParameter<long>("bal", balance));
                entry.Parameters.Add(new NpgsqlParameter<long>("dp", debitsPending));
                entry.Parameters.Add(new NpgsqlParameter<long>("cp", creditsPending));
                entry.Parameters.Add(new NpgsqlParameter<long>("ts", ts));
                write.BatchCommands.Add(entry);
                write.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
                await write.ExecuteNonQueryAsync();
            }
            committed = true;
            return true;
        }
        finally
        {
            if (!committed && connection.State == System.Data.ConnectionState.Open)
            {
                try { await using var rollback = new NpgsqlCommand("ROLLBACK", connection); await rollback.ExecuteNonQueryAsync(); }
                catch (NpgsqlException) { /* broken connection: the pool discards it */ }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _pool.DisposeAsync();
        await _db.DisposeAsync();
    }
}

/// <summary>
/// One SQLite transaction (BEGIN IMMEDIATE … COMMIT, WAL, synchronous=FULL) per transfer. SQLite has one writer, so
/// the clients queue on an async lock in front of one connection with prepared statements: the best case for this
/// design. Leaving the queueing to SQLite's busy handler instead (a pool of connections all calling BEGIN
/// IMMEDIATE with busy_timeout) is far slower, because waiters sleep in growing steps while the lock is free.
/// </summary>
internal sealed class NaiveSqliteTarget : ITransferTarget
{
    private readonly Database _db;
    private readonly SqliteConnection _c;
    private readonly long[] _customers;
    private readonly SemaphoreSlim _writer = new(1, 1);
    private readonly SqliteCommand _begin, _commit, _rollback, _lock, _update, _transfer, _entry;

    private NaiveSqliteTarget(Database db, SqliteConnection c, long[] customers)
    {
        _db = db;
        _c = c;
        _customers = customers;
        _begin = Prepare("BEGIN IMMEDIATE");
        _commit = Prepare("COMMIT");
        _rollback = Prepare("ROLLBACK");
        _lock = Prepare(NaiveSql.Lock.Replace(" FOR UPDATE", ""), "@id");
        _update = Prepare(NaiveSql.UpdateAccount, "@dpo", "@v", "@id");
        _transfer = Prepare(NaiveSql.InsertTransfer, "@tid", "@id", "@cr", "@amount", "@ts", "@bal");
        _entry = Prepare(NaiveSql.InsertEntry, "@id", "@v", "@tid", "@debit", "@amount", "@bal", "@dp", "@cp", "@ts");
    }

    public static async Task<NaiveSqliteTarget> CreateAsync(Database db, BenchOptions o, int customers)
    {
        await BenchDatabases.InsertHistoryAsync(db, o.History);
        var ids = await BenchDatabases.InsertCustomersAsync(db, customers, 1_000_000_000_000_000L / customers);
        await BenchDatabases.AnalyzeAsync(db);
        return new NaiveSqliteTarget(db, await db.OpenSqliteAsync(CancellationToken.None), ids);
    }

    private SqliteCommand Prepare(string sql, params string[] parameters)
    {
        var cmd = _c.CreateCommand();
        cmd.CommandText = sql;
        foreach (var p in parameters) cmd.Parameters.Add(new SqliteParameter(p, null));
        cmd.Prepare();
        return cmd;
    }

    public async Task<bool> TransferAsync(string id, int customer)
    {
        var account = _customers[customer];
        await _writer.WaitAsync();
        try
        {
            _begin.ExecuteNonQuery();
            var committed = false;
            try
            {
                long available, debitsPosted, debitsPending, creditsPending, version;
                _lock.Parameters[0].Value = account;
                using (var r = _lock.ExecuteReader())
                {
                    if (!r.Read()) throw new InvalidOperationException($"Account {account} is missing.");
                    (available, debitsPosted, debitsPending, creditsPending, version) =
                        (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), r.GetInt64(4));
                }
                if (available < Workloads.Amount) return false;
                var balance = available - Workloads.Amount + debitsPending;
                var ts = NaiveSql.NowMicros();
                _update.Parameters[0].Value = checked(debitsPosted + Workloads.Amount);
                _update.Parameters[1].Value = version + 1;
                _update.Parameters[2].Value = account;
                _update.ExecuteNonQuery();
                var tp = _transfer.Parameters;
                tp[0].Value = id; tp[1].Value = account; tp[2].Value = 0L; tp[3].Value = Workloads.Amount; tp[4].Value = ts; tp[5].Value = balance;
                _transfer.ExecuteNonQuery();
                var ep = _entry.Parameters;
                ep[0].Value = account; ep[1].Value = version + 1; ep[2].Value = id; ep[3].Value = 1; ep[4].Value = Workloads.Amount;
                ep[5].Value = balance; ep[6].Value = debitsPending; ep[7].Value = creditsPending; ep[8].Value = ts;
                _entry.ExecuteNonQuery();
                _commit.ExecuteNonQuery();
                committed = true;
                return true;
            }
            finally
            {
                if (!committed) _rollback.ExecuteNonQuery();
            }
        }
        finally
        {
            _writer.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var cmd in new[] { _begin, _commit, _rollback, _lock, _update, _transfer, _entry }) await cmd.DisposeAsync();
        await _c.DisposeAsync();
        await _db.DisposeAsync();
    }
}
