using Tollgate.Infrastructure;
using System.Text;
using Microsoft.Data.Sqlite;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Ledger;

/// <summary>
/// SQLite ledger storage. SQLite has one writer at a time, so a batch runs under BEGIN IMMEDIATE (the write lock,
/// which also serialises other processes on the same file) on one long-lived connection with prepared statements.
/// </summary>
internal sealed class SqliteLedgerStore(Database db, TimeProvider time) : ILedgerStore, IAsyncDisposable
{
    private Writer? _writer;

    public async Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount a, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = $"""
            INSERT INTO ledger_accounts (kind, key, currency, credit_limit, flags, created_at)
            VALUES (@kind, @key, @currency, @limit, @flags, @now) RETURNING {LedgerSql.AccountColumns}
            """;
        AddAccountParameters(cmd, a);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        return LedgerSql.ReadAccount(r);
    }

    public async Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount a, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(a.Key);
        await using var connection = await db.OpenSqliteAsync(ct);
        await using (var insert = connection.CreateCommand())
        {
            insert.CommandText = """
                INSERT INTO ledger_accounts (kind, key, currency, credit_limit, flags, created_at)
                VALUES (@kind, @key, @currency, @limit, @flags, @now) ON CONFLICT (key) DO NOTHING
                """;
            AddAccountParameters(insert, a);
            await insert.ExecuteNonQueryAsync(ct);
        }
        await using var select = connection.CreateCommand();
        select.CommandText = $"SELECT {LedgerSql.AccountColumns} FROM ledger_accounts WHERE key = @key";
        select.Parameters.AddWithValue("@key", a.Key);
        await using var r = await select.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        return LedgerSql.ReadAccount(r);
    }

    public async Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "UPDATE ledger_accounts SET credit_limit = MAX(@limit, debits_pending + debits_posted - credits_posted) WHERE id = @id";
        cmd.Parameters.AddWithValue("@limit", creditLimitMicros);
        cmd.Parameters.AddWithValue("@id", id);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    private void AddAccountParameters(SqliteCommand cmd, NewLedgerAccount a)
    {
        cmd.Parameters.AddWithValue("@kind", a.Kind);
        cmd.Parameters.AddWithValue("@key", (object?)a.Key ?? DBNull.Value);
        cmd.Parameters.AddWithValue("@currency", a.Currency);
        cmd.Parameters.AddWithValue("@limit", a.CreditLimitMicros);
        cmd.Parameters.AddWithValue("@flags", (int)a.Flags);
        cmd.Parameters.AddWithValue("@now", time.GetUtcNowMicros());
    }

    public async Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct) =>
        (await GetAccountsAsync([id], ct)).FirstOrDefault();

    public async Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = $"SELECT {LedgerSql.AccountColumns} FROM ledger_accounts WHERE id IN (SELECT value FROM json_each(@ids)) ORDER BY id";
        cmd.Parameters.AddWithValue("@ids", JsonArray(ids));
        var list = new List<LedgerAccount>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) list.Add(LedgerSql.ReadAccount(r));
        return list;
    }

    public async Task<Transfer?> GetTransferAsync(string id, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = $"SELECT {LedgerSql.TransferColumns} FROM ledger_transfers WHERE id = @id";
        cmd.Parameters.AddWithValue("@id", id);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? LedgerSql.ReadTransfer(r) : null;
    }

    public async Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = LedgerSql.StatementSql("@", beforeVersion is not null);
        cmd.Parameters.AddWithValue("@a", accountId);
        if (beforeVersion is { } v) cmd.Parameters.AddWithValue("@v", v);
        cmd.Parameters.AddWithValue("@n", limit);
        var lines = new List<StatementLine>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) lines.Add(new(LedgerSql.ReadEntry(r), LedgerSql.ReadTransfer(r, 10)));
        return lines;
    }

    public async Task<IReadOnlyList<string>> GetExpiredPendingAsync(long nowMicros, int limit, CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT id FROM ledger_transfers WHERE status = 1 AND expires_at <= @now ORDER BY expires_at LIMIT @n";
        cmd.Parameters.AddWithValue("@now", nowMicros);
        cmd.Parameters.AddWithValue("@n", limit);
        var ids = new List<string>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) ids.Add(r.GetString(0));
        return ids;
    }

    public async Task<LedgerAudit> AuditAsync(CancellationToken ct)
    {
        await using var connection = await db.OpenSqliteAsync(ct);
        return await LedgerSql.AuditAsync(connection, ct);
    }

    /// <summary>SQLite has no round trip to save, so <paramref name="next"/> is not begun early.</summary>
    public bool BeginsNextBatchEarly => false;


    public void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next)
    {
        // The process-wide write gate (not a lock of our own): usage-record inserts take it too, see Database.
        db.SqliteWriteGate.Wait();
        try
        {
            _writer ??= Writer.Open(db);
            try
            {
                _writer.Apply(batch, nowMicros);
            }
            catch
            {
                // After any failure the connection may hold a half-open transaction or be broken: start afresh.
                _writer.Dispose();
                _writer = null;
                throw;
            }
        }
        finally
        {
            db.SqliteWriteGate.Release();
        }
    }

    public ValueTask DisposeAsync()
    {
        _writer?.Dispose();
        return ValueTask.CompletedTask;
    }

    private static string JsonArray<T>(IEnumerable<T> values)
    {
        var sb = new StringBuilder("[");
        foreach (var v in values)
        {
            if (sb.Length > 1) sb.Append(',');
            if (v is string s) sb.Append(System.Text.Json.JsonSerializer.Serialize(s));
            else sb.Append(v);
        }
        return sb.Append(']').ToString();
    }

    /// <summary>The write connection with its prepared statements. SQLite calls are synchronous anyway.</summary>
    private sealed class Writer : IDisposable
    {
        private readonly SqliteConnection _c;
        private readonly SqliteCommand _begin, _commit, _rollback, _loadAccounts, _loadTransfers, _insertTransfer, _insertEntry, _updateAccount, _updatePending,
            _insertUsage, _synchronousFull, _synchronousNormal;
        private bool _relaxed;

        private Writer(SqliteConnection c)
        {
            _c = c;
            _begin = Prepare("BEGIN IMMEDIATE");
            _commit = Prepare("COMMIT");
            _rollback = Prepare("ROLLBACK");
            _loadAccounts = Prepare($"""
                SELECT {LedgerSql.AccountColumns} FROM ledger_accounts
                WHERE id IN (SELECT value FROM json_each(@accounts)
                             UNION SELECT debit_account_id FROM ledger_transfers WHERE id IN (SELECT value FROM json_each(@pending))
                             UNION SELECT credit_account_id FROM ledger_transfers WHERE id IN (SELECT value FROM json_each(@pending)))
                """, "@accounts", "@pending");
            _loadTransfers = Prepare($"SELECT {LedgerSql.TransferColumns} FROM ledger_transfers WHERE id IN (SELECT value FROM json_each(@ids))", "@ids");
            _insertTransfer = Prepare("""
                INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds,
                    expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after)
                VALUES (@id, @kind, @dr, @cr, @amount, @pending, @timeout, @expires, @status, @code, @ref, @descr, @meta, @ts, @drb, @crb)
                """, "@id", "@kind", "@dr", "@cr", "@amount", "@pending", "@timeout", "@expires", "@status", "@code", "@ref", "@descr", "@meta", "@ts", "@drb", "@crb");
            _insertEntry = Prepare("""
                INSERT INTO ledger_entries (account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after,
                    debits_pending_after, credits_pending_after, ts)
                VALUES (@account, @version, @transfer, @debit, @pd, @po, @bal, @dpa, @cpa, @ts)
                """, "@account", "@version", "@transfer", "@debit", "@pd", "@po", "@bal", "@dpa", "@cpa", "@ts");
            _updateAccount = Prepare("""
                UPDATE ledger_accounts SET debits_pending = @dp, debits_posted = @dpo, credits_pending = @cp, credits_posted = @cpo, version = @v
                WHERE id = @id
                """, "@dp", "@dpo", "@cp", "@cpo", "@v", "@id");
            _updatePending = Prepare("UPDATE ledger_transfers SET status = @s WHERE id = @id", "@s", "@id");
            _insertUsage = Metering.UsageStore.PrepareSqliteInsert(c);
            _synchronousFull = Prepare("PRAGMA synchronous = FULL");
            _synchronousNormal = Prepare("PRAGMA synchronous = NORMAL");
        }

        /// <summary>
        /// Page cache of the write connection, in KiB (SQLite's default is 2 MiB). A batch touches a leaf page of
        /// the transfers index per distinct id prefix and one of the entries index per account; once that set
        /// outgrows the cache, pages are re-read and dirty ones spilled to the WAL mid-transaction. One connection,
        /// so the memory is bounded.
        /// </summary>
        private const int CacheKiB = 64 * 1024;

        public static Writer Open(Database db)
        {
            var c = db.OpenSqlite();
            using (var cmd = c.CreateCommand())
            {
                cmd.CommandText = $"PRAGMA cache_size = -{CacheKiB}";
                cmd.ExecuteNonQuery();
            }
            return new(c);
        }

        private SqliteCommand Prepare(string sql, params string[] parameters)
        {
            var cmd = _c.CreateCommand();
            cmd.CommandText = sql;
            foreach (var p in parameters) cmd.Parameters.Add(new SqliteParameter(p, null));
            cmd.Prepare();
            return cmd;
        }

        public void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros)
        {
            var transferIds = LedgerBatchProcessor.TransferIdsToLoad(batch);
            var pendingIds = batch.SelectMany(c => c.Transfers).Where(t => t.PendingId is not null).Select(t => t.PendingId!).Distinct();
            var accountIds = LedgerBatchProcessor.AccountIdsToLoad(batch);

            // WAL with synchronous = NORMAL commits without an fsync (durable at the next checkpoint): see LedgerCommit.Relaxed.
            var relaxed = LedgerCommand.AllRelaxed(batch);
            if (relaxed != _relaxed)
            {
                (relaxed ? _synchronousNormal : _synchronousFull).ExecuteNonQuery();
                _relaxed = relaxed;
            }
            _begin.ExecuteNonQuery();
            var committed = false;
            try
            {
                var accounts = new Dictionary<long, AccountState>();
                _loadAccounts.Parameters[0].Value = JsonArray(accountIds);
                _loadAccounts.Parameters[1].Value = JsonArray(pendingIds);
                using (var r = _loadAccounts.ExecuteReader())
                    while (r.Read())
                    {
                        var a = LedgerSql.ReadAccountState(r);
                        accounts[a.Id] = a;
                    }
                var known = new Dictionary<string, Transfer>(StringComparer.Ordinal);
                _loadTransfers.Parameters[0].Value = JsonArray(transferIds);
                using (var r = _loadTransfers.ExecuteReader())
                    while (r.Read())
                    {
                        var t = LedgerSql.ReadTransfer(r);
                        known[t.Id] = t;
                    }

                var writes = new LedgerBatchProcessor(accounts, known, nowMicros).Apply(batch);

                var tp = _insertTransfer.Parameters;
                foreach (var t in writes.NewTransfers)
                {
                    tp[0].Value = t.Id; tp[1].Value = (int)t.Kind; tp[2].Value = t.DebitAccountId; tp[3].Value = t.CreditAccountId;
                    tp[4].Value = t.Amount; tp[5].Value = (object?)t.PendingId ?? DBNull.Value; tp[6].Value = t.TimeoutSeconds;
                    tp[7].Value = (object?)t.ExpiresAtMicros ?? DBNull.Value; tp[8].Value = (int)t.Status; tp[9].Value = t.Code;
                    tp[10].Value = (object?)t.Reference ?? DBNull.Value; tp[11].Value = (object?)t.Description ?? DBNull.Value;
                    tp[12].Value = (object?)t.Metadata ?? DBNull.Value; tp[13].Value = t.TimestampMicros;
                    tp[14].Value = t.DebitBalanceAfter; tp[15].Value = t.CreditBalanceAfter;
                    _insertTransfer.ExecuteNonQuery();
                }
                var ep = _insertEntry.Parameters;
                foreach (var e in writes.Entries)
                {
                    ep[0].Value = e.AccountId; ep[1].Value = e.Version; ep[2].Value = e.TransferId; ep[3].Value = e.IsDebit ? 1 : 0;
                    ep[4].Value = e.PendingDelta; ep[5].Value = e.PostedDelta; ep[6].Value = e.BalanceAfter;
                    ep[7].Value = e.DebitsPendingAfter; ep[8].Value = e.CreditsPendingAfter; ep[9].Value = e.TimestampMicros;
                    _insertEntry.ExecuteNonQuery();
                }
                var ap = _updateAccount.Parameters;
                foreach (var a in writes.DirtyAccounts)
                {
                    ap[0].Value = a.DebitsPending; ap[1].Value = a.DebitsPosted; ap[2].Value = a.CreditsPending;
                    ap[3].Value = a.CreditsPosted; ap[4].Value = a.Version; ap[5].Value = a.Id;
                    _updateAccount.ExecuteNonQuery();
                }
                var pp = _updatePending.Parameters;
                foreach (var (id, status) in writes.PendingStatusChanges)
                {
                    pp[0].Value = (int)status; pp[1].Value = id;
                    _updatePending.ExecuteNonQuery();
                }
                foreach (var record in LedgerCommand.RecordsToWrite(batch)) Metering.UsageStore.InsertSqlite(_insertUsage, record);
                foreach (var side in LedgerCommand.SideWritesToRun(batch))
                {
                    using var command = _c.CreateCommand();
                    command.CommandText = side.Sql;
                    foreach (var (name, value) in side.Parameters) command.Parameters.AddWithValue("@" + name, value ?? DBNull.Value);
                    command.ExecuteNonQuery();
                }
                _commit.ExecuteNonQuery();
                committed = true;
            }
            finally
            {
                if (!committed)
                {
                    try { _rollback.ExecuteNonQuery(); }
                    catch (SqliteException) { /* no transaction left to roll back */ }
                }
            }
        }

        public void Dispose()
        {
            foreach (var cmd in new[] { _begin, _commit, _rollback, _loadAccounts, _loadTransfers, _insertTransfer, _insertEntry, _updateAccount, _updatePending,
                         _insertUsage, _synchronousFull, _synchronousNormal })
                cmd.Dispose();
            _c.Dispose();
        }
    }
}
