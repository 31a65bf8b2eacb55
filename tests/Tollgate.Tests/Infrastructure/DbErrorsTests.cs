using Npgsql;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Infrastructure;

/// <summary>How database errors steer the ledger writer: retry the batch, report unavailable, or split it.</summary>
public sealed class DbErrorsTests
{
    [Theory]
    [InlineData("40001", DbErrorKind.Retryable)]     // serialization failure
    [InlineData("40P01", DbErrorKind.Retryable)]     // deadlock
    [InlineData("23505", DbErrorKind.UniqueViolation)]
    [InlineData("57P01", DbErrorKind.Unavailable)]   // admin shutdown
    [InlineData("TL002", DbErrorKind.Unavailable)]   // ledger_claim: another writer held the claim through every wait
    [InlineData("TL001", DbErrorKind.Other)]         // a stale speculative batch is handled inside the store, never here
    [InlineData("23514", DbErrorKind.Other)]         // a check constraint: a bad command, so its batch is split
    public void Postgres_errors_are_classified_by_their_sqlstate(string sqlState, DbErrorKind expected) =>
        Assert.Equal(expected, DbErrors.Classify(new PostgresException("test", "ERROR", "ERROR", sqlState)));

    [Fact]
    public void A_wrapped_error_is_classified_by_its_cause() =>
        Assert.Equal(DbErrorKind.Unavailable,
            DbErrors.Classify(new InvalidOperationException("outer", new PostgresException("test", "ERROR", "ERROR", "TL002"))));
}
