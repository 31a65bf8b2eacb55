using Tollgate.Infrastructure;
using System.Data.Common;

namespace Tollgate.Features.Ledger;

/// <summary>SQL and row mapping shared by both engines (the column lists are identical).</summary>
internal static class LedgerSql
{
    public const string AccountColumns =
        "id, kind, key, currency, credit_limit, flags, debits_pending, debits_posted, credits_pending, credits_posted, version, created_at";

    public const string TransferColumns =
        "id, kind, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds, expires_at, status, code, reference, description, metadata, ts, debit_balance_after, credit_balance_after";

    public const string EntryColumns =
        "account_id, version, transfer_id, is_debit, pending_delta, posted_delta, balance_after, debits_pending_after, credits_pending_after, ts";

    public static LedgerAccount ReadAccount(DbDataReader r) => new(
        r.GetInt64(0), r.GetString(1), r.IsDBNull(2) ? null : r.GetString(2), r.GetString(3), r.GetInt64(4),
        (LedgerAccountFlags)r.GetInt32(5), r.GetInt64(6), r.GetInt64(7), r.GetInt64(8), r.GetInt64(9), r.GetInt64(10),
        UnixMicros.ToDateTimeOffset(r.GetInt64(11)));

    public static AccountState ReadAccountState(DbDataReader r) => new()
    {
        Id = r.GetInt64(0),
        Currency = r.GetString(3),
        CreditLimit = r.GetInt64(4),
        Flags = (LedgerAccountFlags)r.GetInt32(5),
        DebitsPending = r.GetInt64(6),
        DebitsPosted = r.GetInt64(7),
        CreditsPending = r.GetInt64(8),
        CreditsPosted = r.GetInt64(9),
        Version = r.GetInt64(10),
    };

    public static Transfer ReadTransfer(DbDataReader r, int o = 0) => new(
        r.GetString(o), (TransferKind)r.GetInt16(o + 1), r.GetInt64(o + 2), r.GetInt64(o + 3), r.GetInt64(o + 4),
        r.IsDBNull(o + 5) ? null : r.GetString(o + 5), r.GetInt32(o + 6), r.IsDBNull(o + 7) ? null : r.GetInt64(o + 7),
        (TransferStatus)r.GetInt16(o + 8), r.GetString(o + 9), r.IsDBNull(o + 10) ? null : r.GetString(o + 10),
        r.IsDBNull(o + 11) ? null : r.GetString(o + 11), r.IsDBNull(o + 12) ? null : r.GetString(o + 12),
        r.GetInt64(o + 13), r.GetInt64(o + 14), r.GetInt64(o + 15));

    public static LedgerEntry ReadEntry(DbDataReader r, int o = 0) => new(
        r.GetInt64(o), r.GetInt64(o + 1), r.GetString(o + 2), r.GetBoolean(o + 3), r.GetInt64(o + 4), r.GetInt64(o + 5),
        r.GetInt64(o + 6), r.GetInt64(o + 7), r.GetInt64(o + 8), r.GetInt64(o + 9));

    public static string StatementSql(string param, bool hasCursor) =>
        $"""
        SELECT e.account_id, e.version, e.transfer_id, e.is_debit, e.pending_delta, e.posted_delta, e.balance_after,
               e.debits_pending_after, e.credits_pending_after, e.ts,
               t.id, t.kind, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.timeout_seconds, t.expires_at,
               t.status, t.code, t.reference, t.description, t.metadata, t.ts, t.debit_balance_after, t.credit_balance_after
        FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
        WHERE e.account_id = {param}a {(hasCursor ? $"AND e.version < {param}v" : "")}
        ORDER BY e.version DESC
        LIMIT {param}n
        """;

    /// <summary>Invariant queries; each returns rows only when something is wrong.</summary>
    public const string CounterMismatchSql = """
        SELECT a.id FROM ledger_accounts a
        LEFT JOIN (
            SELECT account_id,
                   SUM(CASE WHEN is_debit THEN pending_delta ELSE 0 END) AS dp,
                   SUM(CASE WHEN is_debit THEN posted_delta ELSE 0 END) AS dpo,
                   SUM(CASE WHEN is_debit THEN 0 ELSE pending_delta END) AS cp,
                   SUM(CASE WHEN is_debit THEN 0 ELSE posted_delta END) AS cpo,
                   COUNT(*) AS n, MAX(version) AS v
            FROM ledger_entries GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.debits_pending <> COALESCE(e.dp, 0) OR a.debits_posted <> COALESCE(e.dpo, 0)
           OR a.credits_pending <> COALESCE(e.cp, 0) OR a.credits_posted <> COALESCE(e.cpo, 0)
           OR a.version <> COALESCE(e.n, 0) OR a.version <> COALESCE(e.v, 0)
        LIMIT 20
        """;

    public const string OverdrawnSql = """
        SELECT id FROM ledger_accounts
        WHERE (flags & 1) <> 0 AND debits_pending + debits_posted > credits_posted + credit_limit
        LIMIT 20
        """;

    public const string HeldMismatchSql = """
        SELECT a.id FROM ledger_accounts a
        LEFT JOIN (SELECT debit_account_id AS id, SUM(amount) AS held FROM ledger_transfers WHERE status = 1 GROUP BY debit_account_id) h ON h.id = a.id
        WHERE a.debits_pending <> COALESCE(h.held, 0)
        LIMIT 20
        """;

    public const string TotalsSql = """
        SELECT (SELECT COUNT(*) FROM ledger_accounts), (SELECT COUNT(*) FROM ledger_transfers), (SELECT COUNT(*) FROM ledger_entries),
               COALESCE(SUM(debits_posted), 0), COALESCE(SUM(credits_posted), 0), COALESCE(SUM(debits_pending), 0), COALESCE(SUM(credits_pending), 0)
        FROM ledger_accounts
        """;

    public static async Task<LedgerAudit> AuditAsync(DbConnection connection, CancellationToken ct)
    {
        var violations = new List<string>();
        async Task Collect(string sql, string what)
        {
            await using var cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            await using var r = await cmd.ExecuteReaderAsync(ct);
            while (await r.ReadAsync(ct)) violations.Add($"account {r.GetInt64(0)}: {what}");
        }
        // One snapshot for every query, so a concurrent writer cannot make a healthy ledger look broken.
        await using var tx = await connection.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, ct);
        await Collect(CounterMismatchSql, "counters differ from the sum of its entries");
        await Collect(OverdrawnSql, "debits exceed credits plus credit limit");
        await Collect(HeldMismatchSql, "debits_pending differs from its open holds");
        await using var totals = connection.CreateCommand();
        totals.CommandText = TotalsSql;
        await using var r = await totals.ExecuteReaderAsync(ct);
        await r.ReadAsync(ct);
        var audit = new LedgerAudit(Convert.ToInt64(r.GetValue(0)), Convert.ToInt64(r.GetValue(1)), Convert.ToInt64(r.GetValue(2)),
            Convert.ToInt64(r.GetValue(3)), Convert.ToInt64(r.GetValue(4)), Convert.ToInt64(r.GetValue(5)), Convert.ToInt64(r.GetValue(6)), violations);
        await r.DisposeAsync();
        await tx.CommitAsync(ct);
        if (audit.SumDebitsPosted != audit.SumCreditsPosted)
            violations.Add($"sum of balances is {audit.SumCreditsPosted - audit.SumDebitsPosted}, not zero");
        if (audit.SumDebitsPending != audit.SumCreditsPending)
            violations.Add($"pending debits {audit.SumDebitsPending} differ from pending credits {audit.SumCreditsPending}");
        return audit;
    }
}
