using Npgsql;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Infrastructure;

/// <summary>
/// Fresh, empty databases for tests: a temporary SQLite file, or a new database on the PostgreSQL server that
/// scripts/test.sh starts (connection string in TOLLGATE_TEST_POSTGRES). PostgreSQL tests never skip: without a
/// server they fail with a message saying how to provide one.
/// </summary>
public static class TestDatabases
{
    public const string Sqlite = "sqlite";
    public const string Postgres = "postgres";

    /// <summary>Theory data: every engine the storage suite must pass on.</summary>
    public static TheoryData<string> Engines => new() { Sqlite, Postgres };

    public static string PostgresServer =>
        Environment.GetEnvironmentVariable("TOLLGATE_TEST_POSTGRES") is { Length: > 0 } cs
            ? cs
            : throw new InvalidOperationException(
                "TOLLGATE_TEST_POSTGRES is not set. Run the tests with scripts/test.sh, which installs and starts PostgreSQL, " +
                "or set it to a connection string of a role allowed to CREATE DATABASE.");

    /// <summary>Creates an empty database and returns what <c>--database</c> accepts for it.</summary>
    public static async Task<string> CreateAsync(string engine)
    {
        if (engine == Sqlite)
        {
            var dir = Path.Combine(Path.GetTempPath(), "tollgate-tests");
            Directory.CreateDirectory(dir);
            return Path.Combine(dir, $"t_{Guid.NewGuid():N}.db");
        }
        var name = $"tg_{Guid.NewGuid():N}";
        await using var connection = new NpgsqlConnection(PostgresServer);
        await connection.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
        await cmd.ExecuteNonQueryAsync();
        return new NpgsqlConnectionStringBuilder(PostgresServer) { Database = name, Pooling = true }.ConnectionString;
    }

    /// <summary>A migrated database wrapped in a <see cref="Database"/> handle.</summary>
    public static async Task<Database> CreateMigratedAsync(string engine)
    {
        var db = new Database(DatabaseTarget.Parse(await CreateAsync(engine)));
        await new Migrator(db).MigrateAsync(CancellationToken.None);
        return db;
    }
}
