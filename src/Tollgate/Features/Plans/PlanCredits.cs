using Dapper;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Plans;

/// <summary>
/// A plan's included credits: granted at the start of every period of every account on the plan, as a ledger transfer
/// from <c>system:promotions</c> whose id names the account and the period (<c>plan-credits:{account}:{period start}</c>),
/// so however often and by however many processes it runs, each period is granted exactly once. For a plan with
/// <c>ExpireIncludedCredits</c>, the previous period's grant not spent by its end is taken back
/// (<c>plan-credits-expiry:{account}:{period start}</c>, once per period): the grant minus the account's billed usage in
/// that period, never more than the balance nor the available amount.
/// </summary>
internal sealed partial class PlanCreditsService(Database db, LedgerService ledger, SystemAccounts system, PlanCatalog plans, TimeProvider time,
    ILogger<PlanCreditsService> logger)
{
    public const string Code = "plan_credits";
    public const string ExpiryCode = "plan_credits_expired";

    private sealed record Row(string id, long ledger_account_id, long created_at, long? plan_anchor, string plan_id, long? plan_version, long plan_period_months);

    public static string GrantId(string accountId, DateTimeOffset periodStart) => $"plan-credits:{accountId}:{UnixMicros.From(periodStart)}";
    public static string ExpiryId(string accountId, DateTimeOffset periodStart) => $"plan-credits-expiry:{accountId}:{UnixMicros.From(periodStart)}";

    /// <summary>Grants every due period grant and takes back expired ones (idempotent); returns how many grants were new.</summary>
    public async Task<int> GrantDueAsync(CancellationToken ct, string? accountId = null)
    {
        var granted = 0;
        var now = time.GetUtcNow();
        // Every plan id with included credits in any version an account may hold.
        var planIds = plans.AllVersions.Where(p => p.IncludedCreditsMicros is > 0).Select(p => p.Id).Distinct(StringComparer.Ordinal).ToList();
        foreach (var planId in planIds)
        {
            List<Row> rows;
            await using (var c = await db.OpenAsync(ct))
                rows = (await c.QueryAsync<Row>(new CommandDefinition(
                    "SELECT id, ledger_account_id, created_at, plan_anchor, plan_id, plan_version, plan_period_months FROM accounts WHERE plan_id = @planId"
                    + (accountId is null ? "" : " AND id = @accountId"),
                    new { planId, accountId }, cancellationToken: ct))).ToList();
            if (rows.Count == 0) continue;
            var promotions = await system.PromotionsAsync(ct);
            foreach (var r in rows)
            {
                var plan = plans.Get(r.plan_id, r.plan_version);
                if (plan.IncludedCreditsMicros is not > 0) continue;
                var anchor = UnixMicros.ToDateTimeOffset(r.plan_anchor ?? r.created_at);
                var period = PlanPeriod.Every(anchor, (int)r.plan_period_months, now);
                if (plan.ExpireIncludedCredits && period.Start > anchor)
                    await ExpireAsync(r, PlanPeriod.Every(anchor, (int)r.plan_period_months, period.Start.AddTicks(-1)), promotions, ct);
                var result = await ledger.TransferAsync(new TransferRequest
                {
                    Id = GrantId(r.id, period.Start), DebitAccountId = promotions, CreditAccountId = r.ledger_account_id,
                    Amount = plan.IncludedCreditsMicros, Code = Code, Description = $"Included credits of plan '{plan.Id}', period from {period.Start:yyyy-MM-dd}",
                }, ct);
                if (result.Code == TransferResultCode.Ok) granted++;
                // A conflict is this period's grant made under another plan (the account changed plan mid-period): done.
                else if (!result.Succeeded && result.Code != TransferResultCode.IdempotencyConflict) LogGrantFailed(result.Code);
            }
        }
        return granted;
    }

    private async Task ExpireAsync(Row r, PlanPeriod ended, long promotions, CancellationToken ct)
    {
        var id = ExpiryId(r.id, ended.Start);
        if (await ledger.GetTransferAsync(id, ct) is not null) return;
        if (await ledger.GetTransferAsync(GrantId(r.id, ended.Start), ct) is not { } grant) return;
        long spent;
        await using (var c = await db.OpenAsync(ct))
            spent = await c.ExecuteScalarAsync<long?>(new CommandDefinition("""
                SELECT sum(user_price_micros) FROM usage_records
                WHERE account_id = @account AND billing_status = 'billed' AND occurred_at >= @start AND occurred_at < @end
                """, new { account = r.id, start = UnixMicros.From(ended.Start), end = UnixMicros.From(ended.End) }, cancellationToken: ct)) ?? 0;
        var account = await ledger.GetAccountAsync(r.ledger_account_id, ct);
        if (account is null) return;
        var amount = Math.Min(Math.Max(0, grant.Amount - spent), Math.Min(account.BalanceMicros, account.AvailableMicros));
        if (amount <= 0) return;
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = id, DebitAccountId = r.ledger_account_id, CreditAccountId = promotions, Amount = amount, Code = ExpiryCode,
            Description = $"Unspent included credits of the period from {ended.Start:yyyy-MM-dd} expired",
        }, ct);
        // A conflict: another process expired this period first (with the balance it saw).
        if (!result.Succeeded && result.Code != TransferResultCode.IdempotencyConflict) LogGrantFailed(result.Code);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A plan credit grant or expiry was refused by the ledger: {Code}")]
    private partial void LogGrantFailed(TransferResultCode code);
}

/// <summary>Runs <see cref="PlanCreditsService.GrantDueAsync"/> at start and every <c>Tollgate:PlanCredits:SweepSeconds</c> (default 60).</summary>
internal sealed partial class PlanCreditsSweeper(PlanCreditsService credits, Microsoft.Extensions.Configuration.IConfiguration config, TimeProvider time,
    ILogger<PlanCreditsSweeper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var every = TimeSpan.FromSeconds(Math.Clamp(config.GetValue("Tollgate:PlanCredits:SweepSeconds", 60), 1, 86_400));
        using var timer = new PeriodicTimer(every, time);
        do
        {
            try
            {
                var granted = await credits.GrantDueAsync(stoppingToken);
                if (granted > 0) LogGranted(granted);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogFailed(e);
            }
        } while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Granted the included credits of {Count} plan period(s)")]
    private partial void LogGranted(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Granting plan credits failed; retrying on the next tick")]
    private partial void LogFailed(Exception e);
}
