using Tollgate.Infrastructure;
using System.Data.Common;
using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Tollgate.Infrastructure.Data;

public sealed record Migration(int Version, string Name, string Sql);

/// <summary>
/// Applies the embedded, versioned SQL migrations of the current engine in order, each in its own transaction,
/// recording them in <c>schema_migrations</c>. Safe to run from several processes at once: PostgreSQL takes an
/// advisory lock, SQLite a write lock (BEGIN IMMEDIATE).
/// </summary>
public sealed partial class Migrator(Database db)
{
    private const long AdvisoryLockKey = 0x546f6c6c67617465; // "Tollgate"

    public static IReadOnlyList<Migration> Load(DatabaseEngine engine)
    {
        var folder = engine == DatabaseEngine.Postgres ? "Postgres" : "Sqlite";
        var asm = Assembly.GetExecutingAssembly();
        var list = new List<Migration>();
        foreach (var name in asm.GetManifestResourceNames())
        {
            var m = ResourceName().Match(name);
            if (!m.Success || m.Groups["engine"].Value != folder) continue;
            using var stream = asm.GetManifestResourceStream(name)!;
            using var reader = new StreamReader(stream);
            list.Add(new Migration(int.Parse(m.Groups["version"].Value), m.Groups["name"].Value, reader.ReadToEnd()));
        }
        list.Sort((a, b) => a.Version.CompareTo(b.Version));
        for (var i = 0; i < list.Count; i++)
            if (list[i].Version != i + 1) throw new InvalidOperationException($"Migration versions must be 1..n without gaps; found {list[i].Version} at position {i + 1}.");
        return list;
    }

    /// <summary>Applies pending migrations; returns the ones applied now.</summary>
    public async Task<IReadOnlyList<Migration>> MigrateAsync(CancellationToken ct)
    {
        var migrations = Load(db.Engine);
        var applied = new List<Migration>();
        await using var connection = await db.OpenAsync(ct);
        if (db.Engine == DatabaseEngine.Postgres)
        {
            await ExecAsync(connection, null, "SELECT pg_advisory_lock(" + AdvisoryLockKey + ")", ct);
            try
            {
                await ExecAsync(connection, null, CreateTable, ct);
                await ApplyAsync(connection, migrations, applied, ct);
            }
            finally
            {
                await ExecAsync(connection, null, "SELECT pg_advisory_unlock(" + AdvisoryLockKey + ")", CancellationToken.None);
            }
        }
        else
        {
            await ExecAsync(connection, null, CreateTable, ct);
            await ApplyAsync(connection, migrations, applied, ct);
        }
        return applied;
    }

    /// <summary>Versions recorded as applied (for readiness checks and tests).</summary>
    public async Task<IReadOnlyList<int>> AppliedVersionsAsync(CancellationToken ct)
    {
        await using var connection = await db.OpenAsync(ct);
        await ExecAsync(connection, null, CreateTable, ct);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT version FROM schema_migrations ORDER BY version";
        var versions = new List<int>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) versions.Add(Convert.ToInt32(reader.GetValue(0)));
        return versions;
    }

    private const string CreateTable =
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)";

    private async Task ApplyAsync(DbConnection connection, IReadOnlyList<Migration> migrations, List<Migration> applied, CancellationToken ct)
    {
        foreach (var migration in migrations)
        {
            // SQLite: BEGIN IMMEDIATE takes the write lock before the check, so two processes cannot both apply.
            await using var tx = connection is SqliteConnection sqlite
                ? sqlite.BeginTransaction(deferred: false)
                : await connection.BeginTransactionAsync(ct);
            await using (var check = connection.CreateCommand())
            {
                check.Transaction = tx;
                check.CommandText = "SELECT COUNT(*) FROM schema_migrations WHERE version = " + migration.Version;
                if (Convert.ToInt64(await check.ExecuteScalarAsync(ct)) > 0) { await tx.RollbackAsync(ct); continue; }
            }
            await ExecAsync(connection, tx, migration.Sql, ct);
            await using (var record = connection.CreateCommand())
            {
                record.Transaction = tx;
                record.CommandText = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, @t)";
                AddParameter(record, "@v", migration.Version);
                AddParameter(record, "@n", migration.Name);
                AddParameter(record, "@t", UnixMicros.From(DateTimeOffset.UtcNow));
                await record.ExecuteNonQueryAsync(ct);
            }
            await tx.CommitAsync(ct);
            applied.Add(migration);
        }
    }

    private static void AddParameter(DbCommand command, string name, object value)
    {
        var p = command.CreateParameter();
        p.ParameterName = name;
        p.Value = value;
        command.Parameters.Add(p);
    }

    private static async Task ExecAsync(DbConnection connection, DbTransaction? tx, string sql, CancellationToken ct)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        await cmd.ExecuteNonQueryAsync(ct);
    }

    [GeneratedRegex(@"^migrations/(?<engine>Sqlite|Postgres)/(?<version>\d{4})_(?<name>[a-z0-9_]+)\.sql$")]
    private static partial Regex ResourceName();
}
