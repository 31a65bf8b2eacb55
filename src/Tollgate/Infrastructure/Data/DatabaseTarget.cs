using Microsoft.Data.Sqlite;
using Npgsql;

namespace Tollgate.Infrastructure.Data;

public enum DatabaseEngine { Sqlite, Postgres }

/// <summary>Which database Tollgate talks to, parsed from <c>--database</c> / <c>TOLLGATE_DATABASE</c>.</summary>
public sealed record DatabaseTarget(DatabaseEngine Engine, string ConnectionString)
{
    public const string DefaultSqlitePath = "./data/tollgate.db";

    /// <summary>
    /// Accepts a <c>postgres://</c> or <c>postgresql://</c> URL, an Npgsql key-value connection string
    /// (recognised by a Host/Server key), a SQLite <c>Data Source=…</c> string, or a plain file path for SQLite.
    /// Null or empty means SQLite at <see cref="DefaultSqlitePath"/>.
    /// </summary>
    public static DatabaseTarget Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) value = DefaultSqlitePath;
        value = value.Trim();
        if (value.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase) || value.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase))
            return new(DatabaseEngine.Postgres, FromPostgresUrl(value));
        if (LooksLikeKeyValue(value, "host") || LooksLikeKeyValue(value, "server"))
            return new(DatabaseEngine.Postgres, new NpgsqlConnectionStringBuilder(value).ConnectionString);
        if (LooksLikeKeyValue(value, "data source") || LooksLikeKeyValue(value, "datasource") || LooksLikeKeyValue(value, "filename"))
            return new(DatabaseEngine.Sqlite, new SqliteConnectionStringBuilder(value).ConnectionString);
        return new(DatabaseEngine.Sqlite, new SqliteConnectionStringBuilder { DataSource = value }.ConnectionString);
    }

    /// <summary>A description safe to print: never the password.</summary>
    public string Describe() => Engine switch
    {
        DatabaseEngine.Postgres => new NpgsqlConnectionStringBuilder(ConnectionString) is var b
            ? $"postgresql://{b.Username}@{b.Host}:{b.Port}/{b.Database}" : "postgresql",
        _ => $"sqlite:{new SqliteConnectionStringBuilder(ConnectionString).DataSource}",
    };

    private static bool LooksLikeKeyValue(string value, string key) =>
        value.Contains('=') && value.Split(';').Any(p => p.Split('=')[0].Trim().Equals(key, StringComparison.OrdinalIgnoreCase));

    private static string FromPostgresUrl(string url)
    {
        var uri = new Uri(url);
        var b = new NpgsqlConnectionStringBuilder
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port <= 0 ? 5432 : uri.Port,
            Database = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/')) is { Length: > 0 } db ? db : null,
        };
        if (!string.IsNullOrEmpty(uri.UserInfo))
        {
            var parts = uri.UserInfo.Split(':', 2);
            b.Username = Uri.UnescapeDataString(parts[0]);
            if (parts.Length == 2) b.Password = Uri.UnescapeDataString(parts[1]);
        }
        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            var key = Uri.UnescapeDataString(kv[0]);
            var val = kv.Length == 2 ? Uri.UnescapeDataString(kv[1]) : "";
            // libpq's sslmode spelling maps onto Npgsql's option of the same name.
            b[key.Equals("sslmode", StringComparison.OrdinalIgnoreCase) ? "SSL Mode" : key] = val;
        }
        return b.ConnectionString;
    }
}
