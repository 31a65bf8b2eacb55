using Microsoft.Data.Sqlite;
using Npgsql;

namespace Tollgate.Infrastructure.Data;

public enum DbErrorKind
{
    /// <summary>Not a database error we recognise: a bug or bad data.</summary>
    Other,
    /// <summary>Worth retrying the whole transaction: serialization failure, deadlock, unique race, busy.</summary>
    Retryable,
    /// <summary>The database cannot be reached or is shutting down.</summary>
    Unavailable,
    UniqueViolation,
}

/// <summary>Database errors by name, in one place (house style: never by message text).</summary>
public static class DbErrors
{
    private const int SqliteBusy = 5, SqliteLocked = 6, SqliteConstraint = 19, SqliteFull = 13, SqliteReadOnly = 8, SqliteIoErr = 10;
    private const int SqliteConstraintUnique = 2067, SqliteConstraintPrimaryKey = 1555;

    public static DbErrorKind Classify(Exception e)
    {
        switch (e)
        {
            case PostgresException pg:
                return pg.SqlState switch
                {
                    PostgresErrorCodes.UniqueViolation => DbErrorKind.UniqueViolation,
                    PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected
                        or PostgresErrorCodes.LockNotAvailable => DbErrorKind.Retryable,
                    PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow
                        or PostgresErrorCodes.TooManyConnections => DbErrorKind.Unavailable,
                    // ledger_claim (migration 0027): another ledger writer held the claim through all of this writer's
                    // waits (seconds; only if the database's clock misbehaves). Unavailable, not a bad command.
                    "TL002" => DbErrorKind.Unavailable,
                    _ => DbErrorKind.Other,
                };
            case NpgsqlException npg when npg.IsTransient:
                return DbErrorKind.Unavailable;
            case SqliteException s:
                if (s.SqliteErrorCode == SqliteConstraint && s.SqliteExtendedErrorCode is SqliteConstraintUnique or SqliteConstraintPrimaryKey)
                    return DbErrorKind.UniqueViolation;
                return s.SqliteErrorCode switch
                {
                    SqliteBusy or SqliteLocked => DbErrorKind.Retryable,
                    SqliteFull or SqliteReadOnly or SqliteIoErr => DbErrorKind.Unavailable,
                    _ => DbErrorKind.Other,
                };
            case TimeoutException:
                return DbErrorKind.Unavailable;
            default:
                return e.InnerException is { } inner ? Classify(inner) : DbErrorKind.Other;
        }
    }

    public static bool IsUniqueViolation(Exception e) => Classify(e) == DbErrorKind.UniqueViolation;

    /// <summary>
    /// Why SQLite refused a write for good (until an operator acts): its file or disk is full (SQLITE_FULL), or it is
    /// read-only (SQLITE_READONLY: a read-only file, mount or <c>Mode=ReadOnly</c>). Null for anything else.
    /// </summary>
    public static SqliteStorageProblem? SqliteStorage(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is SqliteException s)
                return s.SqliteErrorCode switch
                {
                    SqliteFull => SqliteStorageProblem.Full,
                    SqliteReadOnly => SqliteStorageProblem.ReadOnly,
                    _ => null,
                };
        return null;
    }
}

public enum SqliteStorageProblem
{
    Full,
    ReadOnly,
}
