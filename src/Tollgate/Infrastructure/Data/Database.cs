using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Tollgate.Infrastructure.Data;

/// <summary>
/// The process-wide database handle: an <see cref="NpgsqlDataSource"/> for PostgreSQL, or a pooled SQLite
/// file in WAL mode with synchronous=FULL (an acknowledged commit survives power loss).
/// </summary>
public sealed class Database : IAsyncDisposable
{
    private static int _sqliteInitialised;
    private readonly NpgsqlDataSource? _postgres;
    private readonly NpgsqlDataSource? _postgresLedgerWriter;
    private readonly string? _sqlite;
    private readonly string _sqlitePragmas;

    /// <param name="sqliteMaxSizeBytes">
    /// SQLite only, 0 = unlimited: the most the database file may grow to (<c>PRAGMA max_page_count</c> on every
    /// connection). Writes beyond it fail with SQLITE_FULL, answered 507, as on a full disk — a cap an operator sets to
    /// keep the embedded database from filling a small volume.
    /// </param>
    public Database(DatabaseTarget target, long sqliteMaxSizeBytes = 0)
    {
        Target = target;
        // WAL lets readers run beside the single writer; FULL fsyncs the WAL on every commit.
        _sqlitePragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;"
            + (sqliteMaxSizeBytes > 0 ? $" PRAGMA max_page_count={Math.Max(1, sqliteMaxSizeBytes / SqlitePageSize)};" : "");
        if (target.Engine == DatabaseEngine.Postgres)
        {
            var b = new NpgsqlConnectionStringBuilder(target.ConnectionString);
            // Automatic preparation saves a parse/plan on every hot-path statement.
            if (b.MaxAutoPrepare == 0) b.MaxAutoPrepare = 64;
            if (string.IsNullOrEmpty(b.ApplicationName)) b.ApplicationName = "tollgate";
            _postgres = NpgsqlDataSource.Create(b.ConnectionString);
            _postgresLedgerWriter = NpgsqlDataSource.Create(LedgerWriterConnectionString(b));
        }
        else
        {
            if (Interlocked.Exchange(ref _sqliteInitialised, 1) == 0) SQLitePCL.Batteries_V2.Init();
            var b = new SqliteConnectionStringBuilder(target.ConnectionString) { Pooling = true };
            var dir = Path.GetDirectoryName(Path.GetFullPath(b.DataSource));
            if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
            _sqlite = b.ConnectionString;
        }
    }

    /// <summary>
    /// SQLite only: taken around this process's write transactions on the hot path (the ledger's group commit and the
    /// usage-record inserts). SQLite has one write lock per file; two writers of one process that collide otherwise
    /// meet in SQLite's busy handler, which <b>sleeps</b> (1, 2, 5 … 100 ms) instead of waking when the lock is free,
    /// so requests queue behind sleeps. Waiting here wakes the next writer the moment the previous one commits.
    /// Other processes on the same file still meet in the busy handler (busy_timeout), as before.
    /// </summary>
    /// <summary>SQLite's default page size, which Tollgate never changes.</summary>
    private const long SqlitePageSize = 4096;

    public SemaphoreSlim SqliteWriteGate { get; } = new(1, 1);

    /// <summary>
    /// A short write outside the ledger (one statement, its own transaction), under <see cref="SqliteWriteGate"/> on
    /// SQLite so that it queues behind the ledger's batches instead of meeting them in SQLite's sleeping busy handler;
    /// as is on PostgreSQL.
    /// </summary>
    public async Task<T> WriteAsync<T>(Func<System.Data.Common.DbConnection, Task<T>> write, CancellationToken ct)
    {
        var sqlite = Engine == DatabaseEngine.Sqlite;
        if (sqlite) await SqliteWriteGate.WaitAsync(ct);
        try
        {
            await using var connection = await OpenAsync(ct);
            return await write(connection);
        }
        finally
        {
            if (sqlite) SqliteWriteGate.Release();
        }
    }

    public DatabaseTarget Target { get; }
    public DatabaseEngine Engine => Target.Engine;

    public NpgsqlDataSource Postgres => _postgres ?? throw new InvalidOperationException("Not a PostgreSQL database.");

    public async Task<NpgsqlConnection> OpenPostgresAsync(CancellationToken ct) => await Postgres.OpenConnectionAsync(ct);

    /// <summary>
    /// PostgreSQL only: a connection for the ledger's batch transactions, from a pool of their own whose sessions are
    /// set up for them (see <see cref="LedgerWriterConnectionString"/>). Use it for nothing else.
    /// </summary>
    public NpgsqlConnection OpenPostgresLedgerWriter() =>
        (_postgresLedgerWriter ?? throw new InvalidOperationException("Not a PostgreSQL database.")).OpenConnection();

    /// <summary>
    /// The ledger writer's sessions, set once at connection start-up instead of per transaction:
    /// <list type="bullet">
    /// <item><c>enable_seqscan = off</c>: every ledger batch statement reads or updates a bounded set of rows by primary
    /// key, so an index lookup is the right plan at any table size; a plan cached while a table was nearly empty would
    /// otherwise be a sequential scan (measured on a new database: about tenfold slower batches until the first ANALYZE).</item>
    /// <item><c>plan_cache_mode = force_generic_plan</c>: the batch statements take arrays, whose custom plans estimate
    /// their true length and so always look cheaper than the generic plan; PostgreSQL then re-planned the account
    /// update and the transfer lookup on every batch (about 150 µs of server CPU per batch, pg_stat_statements).
    /// With sequential scans off the generic plans are the same key lookups.</item>
    /// <item>No reset on close: these connections carry no session state besides the two settings above (the batch
    /// uses only <c>SET LOCAL</c>), so the seven reset statements Npgsql otherwise sends on every reuse are waste.</item>
    /// </list>
    /// </summary>
    private static string LedgerWriterConnectionString(NpgsqlConnectionStringBuilder main)
    {
        var b = new NpgsqlConnectionStringBuilder(main.ConnectionString) { NoResetOnClose = true };
        b.Options = $"{b.Options} -c enable_seqscan=off -c plan_cache_mode=force_generic_plan".Trim();
        b.ApplicationName = main.ApplicationName + "-ledger";
        return b.ConnectionString;
    }

    /// <summary>Opens a SQLite connection with the per-connection pragmas Tollgate relies on.</summary>
    public async Task<SqliteConnection> OpenSqliteAsync(CancellationToken ct)
    {
        var connection = new SqliteConnection(_sqlite ?? throw new InvalidOperationException("Not a SQLite database."));
        await connection.OpenAsync(ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = _sqlitePragmas;
        await cmd.ExecuteNonQueryAsync(ct);
        return connection;
    }

    /// <summary>Synchronous <see cref="OpenSqliteAsync"/>, for the ledger's writer thread (SQLite opens synchronously anyway).</summary>
    public SqliteConnection OpenSqlite()
    {
        var connection = new SqliteConnection(_sqlite ?? throw new InvalidOperationException("Not a SQLite database."));
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = _sqlitePragmas;
        cmd.ExecuteNonQuery();
        return connection;
    }

    public async Task<DbConnection> OpenAsync(CancellationToken ct) =>
        Engine == DatabaseEngine.Postgres ? await OpenPostgresAsync(ct) : await OpenSqliteAsync(ct);

    public async ValueTask DisposeAsync()
    {
        if (_postgres is not null) await _postgres.DisposeAsync();
        if (_postgresLedgerWriter is not null) await _postgresLedgerWriter.DisposeAsync();
        if (_sqlite is not null) SqliteConnection.ClearAllPools();
    }
}
