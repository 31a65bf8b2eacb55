using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Accounts;

/// <summary>A billing account: the unit that holds credits, backed by one customer ledger account.</summary>
public sealed record Account(string Id, string Name, long LedgerAccountId, DateTimeOffset CreatedAt)
{
    /// <summary>The plan the account is on (a <c>Tollgate:Plans</c> id).</summary>
    public string PlanId { get; init; } = Plans.PlanCatalog.DefaultPlanId;

    /// <summary>When the account's plan began (its periods count from here); the account's creation until a plan is set.</summary>
    public DateTimeOffset PlanAnchor { get; init; }

    /// <summary>The plan version a subscription holds the account to (null: the plan's current definition).</summary>
    public long? PlanVersion { get; init; }

    /// <summary>Length of the plan's periods in months (1 or 12).</summary>
    public int PlanPeriodMonths { get; init; } = 1;
}

internal interface IAccountStore
{
    Task<Account> CreateAsync(string name, long ledgerAccountId, CancellationToken ct);
    Task<Account?> GetAsync(string id, CancellationToken ct);
    Task<long> CountAsync(CancellationToken ct);

    /// <summary>Puts the account on a plan; false if there is no such account.</summary>
    Task<bool> SetPlanAsync(string id, string planId, CancellationToken ct);
}

/// <summary>Portable SQL for both engines.</summary>
internal sealed class AccountStore(Database db, TimeProvider time) : IAccountStore
{
    private sealed record Row(string id, string name, long ledger_account_id, long created_at, string plan_id, long? plan_anchor,
        long? plan_version = null, long plan_period_months = 1)
    {
        public Account ToAccount() => new(id, name, ledger_account_id, UnixMicros.ToDateTimeOffset(created_at))
        {
            PlanId = plan_id, PlanAnchor = UnixMicros.ToDateTimeOffset(plan_anchor ?? created_at),
            PlanVersion = plan_version, PlanPeriodMonths = (int)plan_period_months,
        };
    }

    public async Task<Account> CreateAsync(string name, long ledgerAccountId, CancellationToken ct)
    {
        var row = new Row(Secrets.RandomId("acct_"), name, ledgerAccountId,
            time.GetUtcNowMicros(), Plans.PlanCatalog.DefaultPlanId, null);
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO accounts (id, name, ledger_account_id, created_at) VALUES (@id, @name, @ledger_account_id, @created_at)",
            row, cancellationToken: ct));
        return row.ToAccount();
    }

    public async Task<Account?> GetAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            "SELECT id, name, ledger_account_id, created_at, plan_id, plan_anchor, plan_version, plan_period_months FROM accounts WHERE id = @id", new { id }, cancellationToken: ct));
        return row?.ToAccount();
    }

    public async Task<long> CountAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT count(*) FROM accounts", cancellationToken: ct));
    }

    public async Task<bool> SetPlanAsync(string id, string planId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // A new plan starts a new period now (anniversary billing from the change).
        return await c.ExecuteAsync(new CommandDefinition("UPDATE accounts SET plan_id = @planId, plan_anchor = @now, plan_version = NULL, plan_period_months = 1 WHERE id = @id",
            new { id, planId, now = time.GetUtcNowMicros() }, cancellationToken: ct)) == 1;
    }
}
