using Tollgate.Infrastructure;
using Npgsql;
using NpgsqlTypes;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Ledger;

/// <summary>
/// PostgreSQL ledger storage. A batch costs two round trips and one commit, made synchronously on the ledger's
/// writer thread (see <see cref="LedgerService"/>), and one round trip under load, when its first step rode along with
/// the previous batch's commit (see <see cref="Apply"/>):
/// 1. BEGIN (on a connection planning index lookups only, see <see cref="Database.OpenPostgresLedgerWriter"/>); lock every involved account (ids sorted,
///    FOR UPDATE, so concurrent batches and processes never deadlock);
///    read the named transfers (after the locks, so their status is current).
/// 2. Insert transfers and entries and update accounts and pending statuses from arrays (unnest); COMMIT.
/// </summary>
internal sealed partial class PostgresLedgerStore(Database db, TimeProvider time) : ILedgerStore, IAsyncDisposable
{
    public async Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount a, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand($"""
            INSERT INTO ledger_accounts (kind, key, currency, credit_limit, flags, created_at)
            VALUES (@kind, @key, @currency, @limit, @flags, @now) RETURNING {LedgerSql.AccountColumns}
            """, connection);
        AddAccountParameters(cmd, a);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        return LedgerSql.ReadAccount(r);
    }

    public async Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount a, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(a.Key);
        await using var connection = await db.OpenPostgresAsync(ct);
        await using (var insert = new NpgsqlCommand("""
            INSERT INTO ledger_accounts (kind, key, currency, credit_limit, flags, created_at)
            VALUES (@kind, @key, @currency, @limit, @flags, @now) ON CONFLICT (key) DO NOTHING
            """, connection))
        {
            AddAccountParameters(insert, a);
            await insert.ExecuteNonQueryAsync(ct);
        }
        await using var select = new NpgsqlCommand($"SELECT {LedgerSql.AccountColumns} FROM ledger_accounts WHERE key = @key", connection);
        select.Parameters.AddWithValue("key", a.Key);
        await using var r = await select.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        return LedgerSql.ReadAccount(r);
    }

    public async Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct)
    {
        // A ledger write outside the writer: it waits while a writer holds the claim (see "Exclusive writer").
        for (var wait = 0; ; wait++)
        {
            try
            {
                await using var connection = await db.OpenPostgresAsync(ct);
                await using var tx = await connection.BeginTransactionAsync(ct);
                await using (var claim = new NpgsqlCommand(ClaimSql, connection, tx))
                {
                    claim.Parameters.AddWithValue("writer", "admin:" + _writerId);
                    claim.Parameters.AddWithValue("exclusive", false);
                    await claim.ExecuteNonQueryAsync(ct);
                }
                await using var cmd = new NpgsqlCommand(
                    "UPDATE ledger_accounts SET credit_limit = GREATEST(@limit, debits_pending + debits_posted - credits_posted) WHERE id = @id", connection, tx);
                cmd.Parameters.AddWithValue("limit", creditLimitMicros);
                cmd.Parameters.AddWithValue("id", id);
                await cmd.ExecuteNonQueryAsync(ct);
                await tx.CommitAsync(ct);
                return;
            }
            catch (PostgresException e) when (e.SqlState == ClaimHeldCode && wait < MaxClaimWaits)
            {
                await Task.Delay(ClaimRetryDelay, ct);
            }
        }
    }

    private void AddAccountParameters(NpgsqlCommand cmd, NewLedgerAccount a)
    {
        cmd.Parameters.AddWithValue("kind", a.Kind);
        cmd.Parameters.AddWithValue("key", (object?)a.Key ?? DBNull.Value);
        cmd.Parameters.AddWithValue("currency", a.Currency);
        cmd.Parameters.AddWithValue("limit", a.CreditLimitMicros);
        cmd.Parameters.AddWithValue("flags", (int)a.Flags);
        cmd.Parameters.AddWithValue("now", time.GetUtcNowMicros());
    }

    public async Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct) =>
        (await GetAccountsAsync([id], ct)).FirstOrDefault();

    public async Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand($"SELECT {LedgerSql.AccountColumns} FROM ledger_accounts WHERE id = ANY(@ids) ORDER BY id", connection);
        cmd.Parameters.AddWithValue("ids", ids.ToArray());
        var list = new List<LedgerAccount>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) list.Add(LedgerSql.ReadAccount(r));
        return list;
    }

    public async Task<Transfer?> GetTransferAsync(string id, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand($"SELECT {LedgerSql.TransferColumns} FROM ledger_transfers WHERE id = @id", connection);
        cmd.Parameters.AddWithValue("id", id);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? LedgerSql.ReadTransfer(r) : null;
    }

    public async Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand(LedgerSql.StatementSql("@", beforeVersion is not null), connection);
        cmd.Parameters.AddWithValue("a", accountId);
        if (beforeVersion is { } v) cmd.Parameters.AddWithValue("v", v);
        cmd.Parameters.AddWithValue("n", limit);
        var lines = new List<StatementLine>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) lines.Add(new(LedgerSql.ReadEntry(r), LedgerSql.ReadTransfer(r, 10)));
        return lines;
    }

    public async Task<IReadOnlyList<string>> GetExpiredPendingAsync(long nowMicros, int limit, CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        await using var cmd = new NpgsqlCommand(
            "SELECT id FROM ledger_transfers WHERE status = 1 AND expires_at <= @now ORDER BY expires_at LIMIT @n", connection);
        cmd.Parameters.AddWithValue("now", nowMicros);
        cmd.Parameters.AddWithValue("n", limit);
        var ids = new List<string>();
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) ids.Add(r.GetString(0));
        return ids;
    }

    public async Task<LedgerAudit> AuditAsync(CancellationToken ct)
    {
        await using var connection = await db.OpenPostgresAsync(ct);
        return await LedgerSql.AuditAsync(connection, ct);
    }

    // = ANY(ARRAY(…)) rather than IN (…): the ids become an index condition, so the rows are fetched by key
    // instead of by scanning the table and filtering (see Database.OpenPostgresLedgerWriter).
    private const string LockAndLoadAccountsSql = $"""
        SELECT {LedgerSql.AccountColumns} FROM ledger_accounts
        WHERE id = ANY(ARRAY(SELECT unnest(@accounts::bigint[])
                             UNION SELECT debit_account_id FROM ledger_transfers WHERE id = ANY(@pending)
                             UNION SELECT credit_account_id FROM ledger_transfers WHERE id = ANY(@pending)))
        ORDER BY id
        FOR UPDATE
        """;

    /// <summary>See <see cref="LedgerCommit.Relaxed"/>: visible at once, durable a moment later (the WAL writer flushes within its delay).</summary>
    private const string RelaxedCommit = "SET LOCAL synchronous_commit = off";

    private const string LoadTransfersSql = $"SELECT {LedgerSql.TransferColumns} FROM ledger_transfers WHERE id = ANY(@ids)";

    private const string InsertTransfersSql = """
        INSERT INTO ledger_transfers (id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds,
            expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after)
        SELECT * FROM unnest(@id::text[], @kind::smallint[], @dr::bigint[], @cr::bigint[], @amount::bigint[], @pending::text[],
            @timeout::integer[], @expires::bigint[], @status::smallint[], @code::text[], @ref::text[], @descr::text[],
            @meta::text[], @ts::bigint[], @drb::bigint[], @crb::bigint[])
        """;

    private const string InsertEntriesSql = """
        INSERT INTO ledger_entries (account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after,
            debits_pending_after, credits_pending_after, ts)
        SELECT * FROM unnest(@account::bigint[], @version::bigint[], @transfer::text[], @debit::boolean[], @pd::bigint[],
            @po::bigint[], @bal::bigint[], @dpa::bigint[], @cpa::bigint[], @ts::bigint[])
        """;

    private const string UpdateAccountsSql = """
        UPDATE ledger_accounts a
        SET debits_pending = u.dp, debits_posted = u.dpo, credits_pending = u.cp, credits_posted = u.cpo, version = u.v
        FROM unnest(@id::bigint[], @dp::bigint[], @dpo::bigint[], @cp::bigint[], @cpo::bigint[], @v::bigint[]) AS u(id, dp, dpo, cp, cpo, v)
        WHERE a.id = u.id
        """;

    private const string UpdatePendingSql = """
        UPDATE ledger_transfers t SET status = u.s
        FROM unnest(@id::text[], @s::smallint[]) AS u(id, s)
        WHERE t.id = u.id
        """;

    /// <summary>A batch whose transaction is open on its connection: accounts locked and read, transfers read.</summary>
    private sealed record Started(IReadOnlyList<LedgerCommand> Batch, NpgsqlConnection Connection,
        Dictionary<long, AccountState> Accounts, Dictionary<string, Transfer> Known, int ClaimHeldMs, long ClaimSentAt);

    public bool BeginsNextBatchEarly => true;

    public bool HasBegun(IReadOnlyList<LedgerCommand> batch) => _started is { } s && ReferenceEquals(s.Batch, batch);

    /// <summary>Set by <see cref="Apply"/> when it started the next batch; only the ledger's writer thread touches it.</summary>
    private Started? _started;

    private readonly LedgerStateCache _cache = new();
    /// <summary>Batches to apply the ordinary way before speculating again, after a failed check (another process writes the same accounts).</summary>
    private int _speculationPause;
    private int _speculationMisses;

    /// <summary>Batches committed in one round trip from cached state (see <see cref="LedgerStateCache"/>).</summary>
    public long SpeculatedBatches { get; private set; }
    /// <summary>Speculative batches whose check failed, then applied the ordinary way.</summary>
    public long SpeculationFailures { get; private set; }

    /// <summary>The claim (see "Exclusive writer") and <c>ledger_expect_state</c> in one statement (migrations 0026–0028).</summary>
    private const string ClaimAndExpectStateSql = "SELECT ledger_claim_and_expect(@writer, @ids, @versions, @limits, @dp, @dpo, @cp, @cpo, @absent, @keep)";

    /// <summary><c>ledger_expect_state</c> alone (migration 0029), for a batch under a claim asked about recently (see <see cref="ClaimRecheckTicks"/>).</summary>
    private const string ExpectStateSql = "SELECT ledger_expect_state(@ids, @versions, @limits, @dp, @dpo, @cp, @cpo, @absent)";

    /// <summary>The SQLSTATE <c>ledger_expect_state</c> raises when the cached state is stale.</summary>
    private const string StaleStateCode = "TL001";

    /// <summary>The SQLSTATE <c>ledger_expect_state</c> raises when a transfer id taken as new exists: a replay the cache did not know (migration 0029).</summary>
    private const string UnknownReplayCode = "TL003";

    public void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next)
    {
        EnsureNothingDeferred();
        var started = _started;
        _started = null;
        if (started is not null && !ReferenceEquals(started.Batch, batch))
        {
            Discard(started.Connection);
            started = null;
        }
        for (var wait = 0; ; wait++)
        {
            try
            {
                if (started is null && TrySpeculate(batch, nowMicros)) return;
                ApplyLocked(batch, nowMicros, next, started);
                return;
            }
            catch (PostgresException e) when (e.SqlState == ClaimHeldCode && wait < MaxClaimWaits)
            {
                // Another writer holds the claim: it lets go at its next batch (it sees this refusal) or within a second.
                (started, next) = (null, null);
                Thread.Sleep(ClaimRetryDelay);
            }
        }
    }

    // ---- Exclusive writer ----
    // A writer that is the only one writing the ledger holds the claim (migration 0027: ledger_claim, called first in
    // every batch of every writer). While it holds it no other writer commits, so its cached state is exact before the
    // database confirms it: a speculative batch's holds (relaxed commands, see LedgerCommand.AcknowledgeEarly) are
    // acknowledged before the round trip, and the gateway forwards the call without waiting for the hold's commit. The
    // claim lasts a second from the database's clock and a batch renews it when less than half is left; this writer
    // trusts it until 300 ms before it lapses, counted from the moment it sent that batch, so it stops acknowledging
    // early before anyone else can write. A writer refused by the claim waits; the holder lets go at its next batch,
    // and is granted it again only after 10 s without another writer.
    // Losing an acknowledged batch (the database fails before it commits) is the case a relaxed commit already allows
    // for: the hold is missing at settlement, which then charges at most what is available.

    private const string ClaimSql = "SELECT ledger_claim(@writer, @exclusive)";
    /// <summary>The SQLSTATE <c>ledger_claim</c> raises while another writer holds the claim.</summary>
    private const string ClaimHeldCode = "TL002";
    private const int ClaimRetryDelay = 10;
    /// <summary>About 5 s of waiting, well beyond the claim's one second.</summary>
    private const int MaxClaimWaits = 500;
    private const int ClaimMarginMs = 300;

    private readonly string _writerId = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid():N}";
    /// <summary>Stopwatch time until which this writer may acknowledge relaxed commands before their batch commits.</summary>
    private long _exclusiveUntil;

    /// <summary>Whether this writer holds the claim now (as far as it may trust it).</summary>
    public bool HoldsClaim => System.Diagnostics.Stopwatch.GetTimestamp() < _exclusiveUntil;

    /// <summary>Commands acknowledged before their batch reached the database.</summary>
    public long EarlyAcknowledged { get; private set; }

    /// <summary>Speculative batches found stale while this writer held the claim: a write that bypassed it (SQL by hand).</summary>
    public long StaleUnderClaim { get; private set; }

    private NpgsqlBatchCommand Claim() => new(ClaimSql)
    {
        Parameters = { new NpgsqlParameter<string>("writer", _writerId), new NpgsqlParameter<bool>("exclusive", true) },
    };

    /// <summary>
    /// After a batch that called the claim at <paramref name="sentAt"/> committed, holding it for <paramref name="heldMs"/>
    /// more (0: not held; negative: kept only to write what is queued): trusted until 300 ms before it lapses, counted
    /// from the send (the database's clock read it later).
    /// </summary>
    private void Claimed(int heldMs, long sentAt)
    {
        if (heldMs == ClaimNotAsked) return;
        _exclusiveUntil = heldMs > ClaimMarginMs && sentAt >= _claimDistrustedUntil
            ? sentAt + (heldMs - ClaimMarginMs) * System.Diagnostics.Stopwatch.Frequency / 1000
            : 0;
    }

    /// <summary>
    /// How often a holder asks for the claim again. Asking in every batch cost about 40 % of the state check's server
    /// time (a row lock and a sequence read: 144 against 82 µs per transaction); the claim lasts a second and is renewed when less than half is left, so asking
    /// every 50 ms keeps it with room to spare. What asking less often costs: another writer waiting for the claim is
    /// noticed up to 50 ms later (it retries every <see cref="ClaimRetryDelay"/> ms).
    /// </summary>
    private static readonly long ClaimRecheckTicks = System.Diagnostics.Stopwatch.Frequency / 20;

    /// <summary>What <see cref="WriteChecked"/> returns for a batch that did not ask for the claim: the trusted time stands.</summary>
    private const int ClaimNotAsked = int.MinValue;

    /// <summary>Stopwatch time of the last batch that asked for the claim and committed.</summary>
    private long _claimAskedAt;

    /// <summary>Stopwatch time before which a granted claim is not trusted (after a stale batch under it).</summary>
    private long _claimDistrustedUntil;

    /// <summary>Hands the batch's holds their results now (see <see cref="LedgerCommand.AcknowledgeEarly"/>).</summary>
    private void AcknowledgeEarly(IReadOnlyList<LedgerCommand> batch)
    {
        foreach (var command in batch)
        {
            if (command.AcknowledgedEarly) continue;
            command.AcknowledgeEarly();
            if (command.AcknowledgedEarly) EarlyAcknowledged++;
        }
    }

    /// <summary>
    /// One round trip from cached state: BEGIN, <c>ledger_expect_state</c> (locks the accounts and checks they are as
    /// cached, and that the new transfer ids are new), the writes, COMMIT. False when the batch is not covered by the
    /// cache or the check failed (nothing was written then, and the results are overwritten by the ordinary path).
    /// </summary>
    private bool TrySpeculate(IReadOnlyList<LedgerCommand> batch, long nowMicros)
    {
        if (_speculationPause > 0)
        {
            _speculationPause--;
            return false;
        }
        if (_cache.TryTake(batch) is not { } snapshot) return false;

        var writes = new LedgerBatchProcessor(snapshot.Accounts, snapshot.Known, nowMicros).Apply(batch);
        var sentAt = System.Diagnostics.Stopwatch.GetTimestamp();
        if (sentAt < _exclusiveUntil) AcknowledgeEarly(batch);
        var connection = db.OpenPostgresLedgerWriter();
        try
        {
            Claimed(WriteChecked(connection, batch, snapshot.Check, writes, keepHeld: false), sentAt);
        }
        catch (PostgresException e) when (e.SqlState == StaleStateCode)
        {
            Discard(connection);
            _cache.Forget(snapshot.Check.AccountIds);
            FoundStale(sentAt, sentAt < _exclusiveUntil);
            return false;
        }
        catch (PostgresException e) when (e.SqlState == UnknownReplayCode)
        {
            // The accounts were as cached; only a transfer was not (it is read with the batch the ordinary way).
            Discard(connection);
            SpeculationFailures++;
            return false;
        }
        catch
        {
            // The outcome is unknown (the commit may or may not have happened): nothing cached is assumed any more.
            Discard(connection);
            _cache.Clear();
            _exclusiveUntil = 0;
            throw;
        }
        connection.Dispose();
        _cache.Remember(snapshot.Accounts, snapshot.Known);
        _speculationMisses = 0;
        SpeculatedBatches++;
        return true;
    }

    /// <summary>A speculative write sent at <paramref name="sentAt"/> found the database not as cached (TL001); nothing of it was written.</summary>
    private void FoundStale(long sentAt, bool underClaim)
    {
        SpeculationFailures++;
        if (underClaim)
        {
            // Stale under the claim: something writes the ledger without taking part in it (SQL by hand, or the
            // database's clock stepped). Stop trusting the claim for a minute.
            StaleUnderClaim++;
            _claimDistrustedUntil = sentAt + 60 * System.Diagnostics.Stopwatch.Frequency;
        }
        _exclusiveUntil = 0;
        // Back off while speculation keeps failing (another process writing the same accounts), up to 256 batches.
        _speculationMisses = Math.Min(_speculationMisses + 1, 8);
        _speculationPause = 1 << _speculationMisses;
    }

    /// <summary>
    /// One round trip: BEGIN, the claim and <c>ledger_expect_state</c>, the writes, COMMIT (as one statement when it can
    /// be, see <see cref="WriteCheckedAsOneStatement"/>). Returns the milliseconds the
    /// claim is still held for (negative: kept through a request of another writer, see <paramref name="keepHeld"/>).
    /// Throws TL001 (<see cref="StaleStateCode"/>) when the accounts are not as <paramref name="check"/> says, TL003
    /// (<see cref="UnknownReplayCode"/>) when a transfer it takes as new exists, and then
    /// nothing was written. <paramref name="keepHeld"/>: a holder keeps the claim even when another writer asks for it
    /// (deferred writes with acknowledged holds queued behind them, migration 0028).
    /// </summary>
    private int WriteChecked(NpgsqlConnection connection, IReadOnlyList<LedgerCommand> batch, LedgerStateCache.StateCheck check,
        LedgerBatchWrites writes, bool keepHeld)
    {
        var now = System.Diagnostics.Stopwatch.GetTimestamp();
        var askClaim = now >= Volatile.Read(ref _exclusiveUntil) || now - Volatile.Read(ref _claimAskedAt) >= ClaimRecheckTicks;
        // Side writes are arbitrary statements of other features, so only a batch can carry them.
        if (LedgerCommand.SideWritesToRun(batch).Count == 0)
        {
            var held = WriteCheckedAsOneStatement(connection, batch, check, writes, keepHeld, askClaim);
            if (askClaim) Volatile.Write(ref _claimAskedAt, now);
            return held;
        }
        using var write = new NpgsqlBatch(connection);
        write.BatchCommands.Add(new NpgsqlBatchCommand("BEGIN"));
        if (LedgerCommand.AllRelaxed(batch)) write.BatchCommands.Add(new NpgsqlBatchCommand(RelaxedCommit));
        var expect = new NpgsqlBatchCommand(askClaim ? ClaimAndExpectStateSql : ExpectStateSql);
        if (askClaim) expect.Parameters.Add(new NpgsqlParameter<string>("writer", _writerId));
        AddCheckParameters(expect.Parameters, check, "");
        if (askClaim) expect.Parameters.Add(new NpgsqlParameter<bool>("keep", keepHeld));
        write.BatchCommands.Add(expect);
        AddWrites(write, batch, writes);
        write.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));
        using var reader = write.ExecuteReader();
        // Standing on the claim's result (statements without rows come before it); the rest is read for its errors.
        var heldMs = askClaim ? (reader.Read() ? reader.GetInt32(0) : 0) : ClaimNotAsked;
        while (reader.NextResult()) { }
        if (askClaim) Volatile.Write(ref _claimAskedAt, now);
        return heldMs;
    }

    /// <summary>
    /// <see cref="WriteChecked"/> as one statement, <c>ledger_write_checked</c> (migration 0032), in an implicit
    /// transaction: Npgsql writes a single statement synchronously on the calling thread, where it writes a batch's later
    /// statements asynchronously (two thread-pool work items per round trip, with their thread wake-ups).
    /// </summary>
    private int WriteCheckedAsOneStatement(NpgsqlConnection connection, IReadOnlyList<LedgerCommand> batch,
        LedgerStateCache.StateCheck check, LedgerBatchWrites writes, bool keepHeld, bool askClaim)
    {
        using var write = new NpgsqlCommand(null, connection);
        var p = write.Parameters;
        p.Add(new NpgsqlParameter<string>("writer", _writerId));
        p.Add(new NpgsqlParameter<bool>("ask", askClaim));
        p.Add(new NpgsqlParameter<bool>("keep", keepHeld));
        p.Add(new NpgsqlParameter<bool>("relaxed", LedgerCommand.AllRelaxed(batch)));
        AddCheckParameters(p, check, "c_");
        AddTransferParameters(p, writes.NewTransfers, "t_");
        AddEntryParameters(p, writes.Entries, "e_");
        AddAccountStateParameters(p, writes.DirtyAccounts, "a_");
        AddPendingParameters(p, writes.PendingStatusChanges, "s_");
        Metering.UsageStore.AddArrayParameters(p, LedgerCommand.RecordsToWrite(batch), "u_");
        write.CommandText = _writeCheckedPositional ??= ToPositional(WriteCheckedSql, p);
        foreach (NpgsqlParameter parameter in p) parameter.ParameterName = "";
        var result = write.ExecuteScalar();
        return !askClaim ? ClaimNotAsked : result is int heldMs ? heldMs : 0;
    }

    /// <summary>
    /// <see cref="WriteCheckedSql"/> with <c>$n</c> placeholders in the order the parameters are added. Named parameters
    /// make Npgsql parse and rewrite the statement's text on every execution (with the name lookups, about a third of
    /// the sender thread's CPU at 1,000 calls/s, perf); unnamed ones are sent as they are.
    /// </summary>
    private static string? _writeCheckedPositional;

    internal static string ToPositional(string namedSql, NpgsqlParameterCollection parameters)
    {
        var position = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < parameters.Count; i++) position.Add(parameters[i].ParameterName, i + 1);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var sql = System.Text.RegularExpressions.Regex.Replace(namedSql, @"@(\w+)", m =>
            position.TryGetValue(m.Groups[1].Value, out var n) && used.Add(m.Groups[1].Value)
                ? "$" + n.ToString(System.Globalization.CultureInfo.InvariantCulture)
                : throw new InvalidOperationException($"Parameter {m.Value} is not added, or named twice."));
        if (used.Count != position.Count) throw new InvalidOperationException("A parameter is added but not in the statement.");
        return sql;
    }

    private const string WriteCheckedSql = """
        SELECT ledger_write_checked(@writer, @ask, @keep, @relaxed,
            @c_ids::bigint[], @c_versions::bigint[], @c_limits::bigint[], @c_dp::bigint[], @c_dpo::bigint[], @c_cp::bigint[],
            @c_cpo::bigint[], @c_absent::text[],
            @t_id::text[], @t_kind::smallint[], @t_dr::bigint[], @t_cr::bigint[], @t_amount::bigint[], @t_pending::text[],
            @t_timeout::integer[], @t_expires::bigint[], @t_status::smallint[], @t_code::text[], @t_ref::text[], @t_descr::text[],
            @t_meta::text[], @t_ts::bigint[], @t_drb::bigint[], @t_crb::bigint[],
            @e_account::bigint[], @e_version::bigint[], @e_transfer::text[], @e_debit::boolean[], @e_pd::bigint[], @e_po::bigint[],
            @e_bal::bigint[], @e_dpa::bigint[], @e_cpa::bigint[], @e_ts::bigint[],
            @a_id::bigint[], @a_dp::bigint[], @a_dpo::bigint[], @a_cp::bigint[], @a_cpo::bigint[], @a_v::bigint[],
            @s_id::text[], @s_s::smallint[],
            @u_id::text[], @u_account_id::text[], @u_key_id::text[], @u_model::text[], @u_provider::text[],
            @u_input_tokens::bigint[], @u_output_tokens::bigint[], @u_cache_read_tokens::bigint[], @u_cache_write_tokens::bigint[],
            @u_reasoning_tokens::bigint[], @u_provider_cost_micros::bigint[], @u_provider_cost_usd::text[],
            @u_user_price_micros::bigint[], @u_billing_status::text[], @u_request_id::text[], @u_metadata::text[],
            @u_transfer_id::text[], @u_created_at::bigint[], @u_occurred_at::bigint[], @u_customer_id::text[])
        """;

    /// <summary>The statements that write an applied batch: transfers, entries, counters, pending statuses, usage records, side writes.</summary>
    /// <returns>Whether side writes were added (their statements might return rows).</returns>
    private static bool AddWrites(NpgsqlBatch write, IReadOnlyList<LedgerCommand> batch, LedgerBatchWrites writes)
    {
        if (writes.NewTransfers.Count > 0) write.BatchCommands.Add(InsertTransfers(writes.NewTransfers));
        if (writes.Entries.Count > 0) write.BatchCommands.Add(InsertEntries(writes.Entries));
        if (writes.DirtyAccounts.Count > 0) write.BatchCommands.Add(UpdateAccounts(writes.DirtyAccounts));
        if (writes.PendingStatusChanges.Count > 0) write.BatchCommands.Add(UpdatePending(writes.PendingStatusChanges));
        if (LedgerCommand.RecordsToWrite(batch) is { Count: > 0 } records) write.BatchCommands.Add(Metering.UsageStore.PostgresInsertCommand(records));
        var sideWrites = LedgerCommand.SideWritesToRun(batch);
        foreach (var side in sideWrites)
        {
            var command = new NpgsqlBatchCommand(side.Sql);
            foreach (var (name, value) in side.Parameters) command.Parameters.Add(new NpgsqlParameter(name, value ?? DBNull.Value));
            write.BatchCommands.Add(command);
        }
        return sideWrites.Count > 0;
    }

    /// <summary>The ordinary path: locks and reads under the lock (already done when <paramref name="started"/>), then writes and commits.</summary>
    private void ApplyLocked(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next, Started? started)
    {
        // Key lookups only and generic plans: see Database.OpenPostgresLedgerWriter.
        var connection = started?.Connection ?? db.OpenPostgresLedgerWriter();
        var clean = false;
        try
        {
            Dictionary<long, AccountState> accounts;
            Dictionary<string, Transfer> known;
            int heldMs;
            long claimSentAt;
            if (started is not null)
            {
                (accounts, known, heldMs, claimSentAt) = (started.Accounts, started.Known, started.ClaimHeldMs, started.ClaimSentAt);
            }
            else
            {
                using var load = new NpgsqlBatch(connection);
                AddBegin(load, batch);
                claimSentAt = System.Diagnostics.Stopwatch.GetTimestamp();
                using var r = load.ExecuteReader();
                (accounts, known, heldMs) = ReadBegun(r);
            }

            var writes = new LedgerBatchProcessor(accounts, known, nowMicros).Apply(batch);
            // Read under the accounts' locks, these results are final unless the transaction fails: holds need not
            // wait for the write round trip.
            AcknowledgeEarly(batch);

            using var write = new NpgsqlBatch(connection);
            var hasSideWrites = AddWrites(write, batch, writes);
            write.BatchCommands.Add(new NpgsqlBatchCommand("COMMIT"));

            // Pipelining: the next batch's BEGIN, locks and reads ride in the same round trip as this commit, so under
            // load a batch costs one round trip instead of two. They run after the COMMIT on the same connection, so
            // they see everything this batch wrote. (Not after side writes, whose statements might return rows; and not
            // for a next batch that can be speculated, which costs one round trip of its own.)
            if (next is not { Count: > 0 } || hasSideWrites || (_speculationPause == 0 && _cache.WouldCover(next, accounts, known)))
            {
                write.ExecuteNonQuery();
                _cache.Remember(accounts, known);
                Claimed(heldMs, claimSentAt);
                clean = true;
                return;
            }
            var firstOfNext = write.BatchCommands.Count;
            AddBegin(write, next);
            var nextSentAt = System.Diagnostics.Stopwatch.GetTimestamp();
            NpgsqlDataReader reader;
            try
            {
                reader = write.ExecuteReader();
            }
            catch (PostgresException e) when (e.BatchCommand is { } failed && write.BatchCommands.IndexOf(failed) >= firstOfNext)
            {
                // This batch committed; only the next one's BEGIN failed (or its claim was refused): it begins afresh.
                _cache.Remember(accounts, known);
                Claimed(heldMs, claimSentAt);
                return;
            }
            // ExecuteReader returned at the next batch's first result set (its row description comes before the rows, or an
            // error), so everything before it, COMMIT included, succeeded: replies arrive in order.
            _cache.Remember(accounts, known);
            Claimed(heldMs, claimSentAt);
            using (reader)
            {
                try
                {
                    var (nextAccounts, nextKnown, nextHeldMs) = ReadBegun(reader);
                    reader.Dispose();
                    _started = new Started(next, connection, nextAccounts, nextKnown, nextHeldMs, nextSentAt);
                    clean = true;
                }
                catch (Exception e) when (e is NpgsqlException or InvalidOperationException)
                {
                    // Committed all the same; the next batch's locks or reads failed (a lock timeout, say), so it begins afresh.
                }
            }
        }
        finally
        {
            if (_started is null || !ReferenceEquals(_started.Connection, connection))
            {
                if (!clean)
                {
                    Discard(connection);
                    _exclusiveUntil = 0;
                }
                else connection.Dispose();
            }
        }
    }

    /// <summary>BEGIN, the claim, then lock the batch's accounts (ids sorted) and read them and the transfers it names.</summary>
    private void AddBegin(NpgsqlBatch npgsqlBatch, IReadOnlyList<LedgerCommand> batch)
    {
        var transferIds = LedgerBatchProcessor.TransferIdsToLoad(batch);
        var pendingIds = batch.SelectMany(c => c.Transfers).Where(t => t.PendingId is not null).Select(t => t.PendingId!).Distinct().ToArray();
        var accountIds = LedgerBatchProcessor.AccountIdsToLoad(batch).ToArray();
        npgsqlBatch.BatchCommands.Add(new NpgsqlBatchCommand("BEGIN"));
        if (LedgerCommand.AllRelaxed(batch)) npgsqlBatch.BatchCommands.Add(new NpgsqlBatchCommand(RelaxedCommit));
        npgsqlBatch.BatchCommands.Add(Claim());
        var lockCmd = new NpgsqlBatchCommand(LockAndLoadAccountsSql);
        lockCmd.Parameters.Add(new NpgsqlParameter<long[]>("accounts", accountIds));
        lockCmd.Parameters.Add(new NpgsqlParameter<string[]>("pending", pendingIds));
        npgsqlBatch.BatchCommands.Add(lockCmd);
        var transfersCmd = new NpgsqlBatchCommand(LoadTransfersSql);
        transfersCmd.Parameters.Add(new NpgsqlParameter<string[]>("ids", transferIds.ToArray()));
        npgsqlBatch.BatchCommands.Add(transfersCmd);
    }

    /// <summary>Reads the three result sets of <see cref="AddBegin"/> (claim, accounts, transfers), the reader standing on the first.</summary>
    private static (Dictionary<long, AccountState>, Dictionary<string, Transfer>, int ClaimHeldMs) ReadBegun(NpgsqlDataReader r)
    {
        var accounts = new Dictionary<long, AccountState>();
        var known = new Dictionary<string, Transfer>(StringComparer.Ordinal);
        var heldMs = r.Read() ? r.GetInt32(0) : 0;
        r.NextResult();
        while (r.Read())
        {
            var a = LedgerSql.ReadAccountState(r);
            accounts[a.Id] = a;
        }
        r.NextResult();
        while (r.Read())
        {
            var t = LedgerSql.ReadTransfer(r);
            known[t.Id] = t;
        }
        return (accounts, known, heldMs);
    }

    /// <summary>Rolls back whatever the connection has open and closes it; a broken connection is just closed.</summary>
    private static void Discard(NpgsqlConnection connection)
    {
        try
        {
            if (connection.State == System.Data.ConnectionState.Open)
            {
                using var rollback = new NpgsqlCommand("ROLLBACK", connection);
                rollback.ExecuteNonQuery();
            }
        }
        catch (Exception)
        {
            // The connection is broken; disposing returns it to the pool, which discards it.
        }
        connection.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        StopSender();
        if (_started is { } started) Discard(started.Connection);
        _started = null;
        return ValueTask.CompletedTask;
    }

    /// <summary>The arguments of <c>ledger_expect_state</c>: the cached state of every account the batch names.</summary>
    private static void AddCheckParameters(NpgsqlParameterCollection c, LedgerStateCache.StateCheck check, string prefix)
    {
        c.Add(new NpgsqlParameter<long[]>(prefix + "ids", check.AccountIds));
        c.Add(new NpgsqlParameter<long[]>(prefix + "versions", check.Versions));
        c.Add(new NpgsqlParameter<long[]>(prefix + "limits", check.CreditLimits));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dp", check.DebitsPending));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dpo", check.DebitsPosted));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cp", check.CreditsPending));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cpo", check.CreditsPosted));
        c.Add(new NpgsqlParameter<string[]>(prefix + "absent", check.AbsentTransferIds));
    }

    private static NpgsqlBatchCommand InsertTransfers(List<Transfer> ts)
    {
        var c = new NpgsqlBatchCommand(InsertTransfersSql);
        AddTransferParameters(c.Parameters, ts, "");
        return c;
    }

    private static void AddTransferParameters(NpgsqlParameterCollection c, List<Transfer> ts, string prefix)
    {
        var n = ts.Count;
        var id = new string[n]; var kind = new short[n]; var dr = new long[n]; var cr = new long[n]; var amount = new long[n];
        var pending = new string?[n]; var timeout = new int[n]; var expires = new long?[n]; var status = new short[n];
        var code = new string[n]; var reference = new string?[n]; var descr = new string?[n]; var meta = new string?[n];
        var tsArr = new long[n]; var drb = new long[n]; var crb = new long[n];
        for (var i = 0; i < n; i++)
        {
            var t = ts[i];
            id[i] = t.Id; kind[i] = (short)t.Kind; dr[i] = t.DebitAccountId; cr[i] = t.CreditAccountId; amount[i] = t.Amount;
            pending[i] = t.PendingId; timeout[i] = t.TimeoutSeconds; expires[i] = t.ExpiresAtMicros; status[i] = (short)t.Status;
            code[i] = t.Code; reference[i] = t.Reference; descr[i] = t.Description; meta[i] = t.Metadata;
            tsArr[i] = t.TimestampMicros; drb[i] = t.DebitBalanceAfter; crb[i] = t.CreditBalanceAfter;
        }
        c.Add(new NpgsqlParameter<string[]>(prefix + "id", id));
        c.Add(new NpgsqlParameter<short[]>(prefix + "kind", kind));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dr", dr));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cr", cr));
        c.Add(new NpgsqlParameter<long[]>(prefix + "amount", amount));
        c.Add(new NpgsqlParameter<string?[]>(prefix + "pending", pending) { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        c.Add(new NpgsqlParameter<int[]>(prefix + "timeout", timeout));
        c.Add(new NpgsqlParameter<long?[]>(prefix + "expires", expires) { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        c.Add(new NpgsqlParameter<short[]>(prefix + "status", status));
        c.Add(new NpgsqlParameter<string[]>(prefix + "code", code));
        c.Add(new NpgsqlParameter<string?[]>(prefix + "ref", reference) { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        c.Add(new NpgsqlParameter<string?[]>(prefix + "descr", descr) { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        c.Add(new NpgsqlParameter<string?[]>(prefix + "meta", meta) { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        c.Add(new NpgsqlParameter<long[]>(prefix + "ts", tsArr));
        c.Add(new NpgsqlParameter<long[]>(prefix + "drb", drb));
        c.Add(new NpgsqlParameter<long[]>(prefix + "crb", crb));
    }

    private static NpgsqlBatchCommand InsertEntries(List<LedgerEntry> es)
    {
        var c = new NpgsqlBatchCommand(InsertEntriesSql);
        AddEntryParameters(c.Parameters, es, "");
        return c;
    }

    private static void AddEntryParameters(NpgsqlParameterCollection c, List<LedgerEntry> es, string prefix)
    {
        var n = es.Count;
        var account = new long[n]; var version = new long[n]; var transfer = new string[n]; var debit = new bool[n];
        var pd = new long[n]; var po = new long[n]; var bal = new long[n]; var dpa = new long[n]; var cpa = new long[n]; var ts = new long[n];
        for (var i = 0; i < n; i++)
        {
            var e = es[i];
            account[i] = e.AccountId; version[i] = e.Version; transfer[i] = e.TransferId; debit[i] = e.IsDebit;
            pd[i] = e.PendingDelta; po[i] = e.PostedDelta; bal[i] = e.BalanceAfter; dpa[i] = e.DebitsPendingAfter;
            cpa[i] = e.CreditsPendingAfter; ts[i] = e.TimestampMicros;
        }
        c.Add(new NpgsqlParameter<long[]>(prefix + "account", account));
        c.Add(new NpgsqlParameter<long[]>(prefix + "version", version));
        c.Add(new NpgsqlParameter<string[]>(prefix + "transfer", transfer));
        c.Add(new NpgsqlParameter<bool[]>(prefix + "debit", debit));
        c.Add(new NpgsqlParameter<long[]>(prefix + "pd", pd));
        c.Add(new NpgsqlParameter<long[]>(prefix + "po", po));
        c.Add(new NpgsqlParameter<long[]>(prefix + "bal", bal));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dpa", dpa));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cpa", cpa));
        c.Add(new NpgsqlParameter<long[]>(prefix + "ts", ts));
    }

    private static NpgsqlBatchCommand UpdateAccounts(List<AccountState> accounts)
    {
        var c = new NpgsqlBatchCommand(UpdateAccountsSql);
        AddAccountStateParameters(c.Parameters, accounts, "");
        return c;
    }

    private static void AddAccountStateParameters(NpgsqlParameterCollection c, List<AccountState> accounts, string prefix)
    {
        var n = accounts.Count;
        var id = new long[n]; var dp = new long[n]; var dpo = new long[n]; var cp = new long[n]; var cpo = new long[n]; var v = new long[n];
        for (var i = 0; i < n; i++)
        {
            var a = accounts[i];
            id[i] = a.Id; dp[i] = a.DebitsPending; dpo[i] = a.DebitsPosted; cp[i] = a.CreditsPending; cpo[i] = a.CreditsPosted; v[i] = a.Version;
        }
        c.Add(new NpgsqlParameter<long[]>(prefix + "id", id));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dp", dp));
        c.Add(new NpgsqlParameter<long[]>(prefix + "dpo", dpo));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cp", cp));
        c.Add(new NpgsqlParameter<long[]>(prefix + "cpo", cpo));
        c.Add(new NpgsqlParameter<long[]>(prefix + "v", v));
    }

    private static NpgsqlBatchCommand UpdatePending(Dictionary<string, TransferStatus> changes)
    {
        var c = new NpgsqlBatchCommand(UpdatePendingSql);
        AddPendingParameters(c.Parameters, changes, "");
        return c;
    }

    private static void AddPendingParameters(NpgsqlParameterCollection c, Dictionary<string, TransferStatus> changes, string prefix)
    {
        c.Add(new NpgsqlParameter<string[]>(prefix + "id", changes.Keys.ToArray()));
        c.Add(new NpgsqlParameter<short[]>(prefix + "s", changes.Values.Select(s => (short)s).ToArray()));
    }
}
