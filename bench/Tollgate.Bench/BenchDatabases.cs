using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Bench;

/// <summary>A fresh, migrated database per run (a PostgreSQL database tgbench_NAME, or a SQLite file NAME.db).</summary>
internal static class BenchDatabases
{
    public static async Task<Database> CreateAsync(BenchOptions o, Engine engine, string name)
    {
        await DropAsync(o, engine, name);
        string target;
        if (engine == Engine.Postgres)
        {
            await using (var admin = new NpgsqlConnection(o.Postgres))
            {
                await admin.OpenAsync();
                // CREATE DATABASE also forces a checkpoint, so every run starts without a backlog of dirty pages.
                await Exec(admin, $"CREATE DATABASE tgbench_{name}");
            }
            target = new NpgsqlConnectionStringBuilder(o.Postgres) { Database = $"tgbench_{name}" }.ConnectionString;
        }
        else
        {
            Directory.CreateDirectory(o.SqliteDir);
            target = Path.Combine(o.SqliteDir, name + ".db");
        }
        var db = new Database(DatabaseTarget.Parse(target));
        await new Migrator(db).MigrateAsync(CancellationToken.None);
        return db;
    }

    public static async Task DropAsync(BenchOptions o, Engine engine, string name)
    {
        if (engine == Engine.Postgres)
        {
            NpgsqlConnection.ClearAllPools();
            await using var admin = new NpgsqlConnection(o.Postgres);
            await admin.OpenAsync();
            // Not WITH (FORCE): that needs rights over autovacuum workers, which a plain DROP cancels by itself.
            for (var attempt = 1; ; attempt++)
            {
                try { await Exec(admin, $"DROP DATABASE IF EXISTS tgbench_{name}"); return; }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ObjectInUse && attempt < 50) { await Task.Delay(200); }
            }
        }
        else
        {
            SqliteConnection.ClearAllPools();
            foreach (var suffix in new[] { "", "-wal", "-shm" })
                File.Delete(Path.Combine(o.SqliteDir, name + ".db" + suffix));
        }
    }

    /// <summary>
    /// Inserts <paramref name="count"/> prepaid customer accounts (DebitsMustNotExceedCredits) in one statement and
    /// returns their ids. Set-up only; the ledger runs fund them through ledger transfers.
    /// </summary>
    public static async Task<long[]> InsertCustomersAsync(Database db, int count, long creditsPosted)
    {
        await using var connection = await db.OpenAsync(CancellationToken.None);
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000;
        var flags = (int)LedgerAccountFlags.DebitsMustNotExceedCredits;
        var series = db.Engine == DatabaseEngine.Postgres
            ? $"generate_series(1, {count})"
            : $"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}) SELECT i FROM s)";
        await Exec(connection, $"""
            INSERT INTO ledger_accounts (kind, currency, credit_limit, flags, credits_posted, version, created_at)
            SELECT 'customer', 'USD', 0, {flags}, {creditsPosted}, 0, {now} FROM {series}
            """);
        var ids = new List<long>(count);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT id FROM ledger_accounts WHERE kind = 'customer' ORDER BY id";
        await using var r = await cmd.ExecuteReaderAsync();
        while (await r.ReadAsync()) ids.Add(r.GetInt64(0));
        return ids.ToArray();
    }

    /// <summary>
    /// Fills the ledger with <paramref name="transfers"/> posted transfers among 1,000 history accounts, with their
    /// entries (versions and balances after) and counters, so the audit still holds. A ledger in service has history:
    /// its indexes are deeper than an empty one's, and the planner has statistics. Ends with ANALYZE.
    /// </summary>
    public static async Task InsertHistoryAsync(Database db, int transfers)
    {
        const int accounts = 1_000;
        await using var connection = await db.OpenAsync(CancellationToken.None);
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000 - 86_400_000_000L;
        string Series(int n) => db.Engine == DatabaseEngine.Postgres
            ? $"generate_series(1, {n}) AS s(k)"
            : $"(WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {n}) SELECT k FROM s) AS s";
        await Exec(connection, "BEGIN");
        await Exec(connection, $"""
            INSERT INTO ledger_accounts (kind, currency, credit_limit, flags, created_at)
            SELECT 'history', 'USD', 0, 0, {now} FROM {Series(accounts)}
            """);
        if (transfers > 0)
        {
            long b;
            await using (var cmd = connection.CreateCommand())
            {
                cmd.CommandText = "SELECT MIN(id) FROM ledger_accounts WHERE kind = 'history'";
                b = Convert.ToInt64(await cmd.ExecuteScalarAsync());
            }
            await Exec(connection, $"""
                INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds,
                    expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after)
                SELECT 'history.' || k, 0, {b} + k % {accounts}, {b} + (k + 1) % {accounts}, 1000, NULL, 0, NULL, 0, 'history',
                       NULL, NULL, NULL, {now} + k, 0, 0
                FROM {Series(transfers)}
                """);
            // Two entries per transfer; per account, versions 1..n in transfer order and the running balance.
            await Exec(connection, $"""
                INSERT INTO ledger_entries (account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after,
                    debits_pending_after, credits_pending_after, ts)
                SELECT account_id, ROW_NUMBER() OVER w, 'history.' || k, is_debit, 0, 1000,
                       SUM(CASE WHEN is_debit THEN -1000 ELSE 1000 END) OVER w, 0, 0, {now} + k
                FROM (SELECT k, {b} + k % {accounts} AS account_id, TRUE AS is_debit FROM {Series(transfers)}
                      UNION ALL SELECT k, {b} + (k + 1) % {accounts}, FALSE FROM {Series(transfers)}) e
                WINDOW w AS (PARTITION BY account_id ORDER BY k ROWS UNBOUNDED PRECEDING)
                ORDER BY account_id, k
                """);
            await Exec(connection, """
                UPDATE ledger_accounts SET debits_posted = x.d, credits_posted = x.c, version = x.n
                FROM (SELECT account_id, SUM(CASE WHEN is_debit THEN posted_delta ELSE 0 END) AS d,
                             SUM(CASE WHEN is_debit THEN 0 ELSE posted_delta END) AS c, COUNT(*) AS n
                      FROM ledger_entries GROUP BY account_id) x
                WHERE ledger_accounts.id = x.account_id
                """);
        }
        await Exec(connection, "COMMIT");
    }

    /// <summary>
    /// Fresh planner statistics. Run once set-up is done, so that no cached plan keeps assuming the tiny tables it
    /// was made for (ANALYZE invalidates them).
    /// </summary>
    public static async Task AnalyzeAsync(Database db)
    {
        await using var connection = await db.OpenAsync(CancellationToken.None);
        await Exec(connection, "ANALYZE");
    }

    public static async Task<long> ScalarAsync(Database db, string sql)
    {
        await using var connection = await db.OpenAsync(CancellationToken.None);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private static async Task Exec(DbConnection connection, string sql)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        cmd.CommandTimeout = 600;
        await cmd.ExecuteNonQueryAsync();
    }
}
