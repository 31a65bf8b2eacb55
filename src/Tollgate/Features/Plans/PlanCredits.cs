using Dapper;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Plans;

/// <summary>
/// A plan's included credits: granted at the start of every period of every account on the plan, as a ledger transfer
/// from <c>system:promotions</c> whose id names the account and the period (<c>plan-credits:{account}:{period start}</c>),
/// so however often and by however many processes it runs, each period is granted exactly once.
/// </summary>
internal sealed partial class PlanCreditsService(Database db, LedgerService ledger, SystemAccounts system, PlanCatalog plans, TimeProvider time,
    ILogger<PlanCreditsService> logger)
{
    public const string Code = "plan_credits";

    private sealed record Row(string id, long ledger_account_id, long created_at, long? plan_anchor);

    public static string GrantId(string accountId, DateTimeOffset periodStart) => $"plan-credits:{accountId}:{UnixMicros.From(periodStart)}";

    /// <summary>Grants every due period grant (idempotent); returns how many were new.</summary>
    public async Task<int> GrantDueAsync(CancellationToken ct, string? accountId = null)
    {
        var granted = 0;
        var now = time.GetUtcNow();
        foreach (var plan in plans.All.Where(p => p.IncludedCreditsMicros is > 0))
        {
            await using var c = await db.OpenAsync(ct);
            var rows = (await c.QueryAsync<Row>(new CommandDefinition(
                accountId is null
                    ? "SELECT id, ledger_account_id, created_at, plan_anchor FROM accounts WHERE plan_id = @plan"
                    : "SELECT id, ledger_account_id, created_at, plan_anchor FROM accounts WHERE plan_id = @plan AND id = @accountId",
                new { plan = plan.Id, accountId }, cancellationToken: ct))).ToList();
            if (rows.Count == 0) continue;
            var promotions = await system.PromotionsAsync(ct);
            var results = await Task.WhenAll(rows.Select(r =>
            {
                var period = PlanPeriod.Monthly(UnixMicros.ToDateTimeOffset(r.plan_anchor ?? r.created_at), now);
                return ledger.TransferAsync(new TransferRequest
                {
                    Id = GrantId(r.id, period.Start), DebitAccountId = promotions, CreditAccountId = r.ledger_account_id,
                    Amount = plan.IncludedCreditsMicros, Code = Code, Description = $"Included credits of plan '{plan.Id}', period from {period.Start:yyyy-MM-dd}",
                }, ct);
            }));
            granted += results.Count(r => r.Code == TransferResultCode.Ok);
            foreach (var failed in results.Where(r => !r.Succeeded)) LogGrantFailed(failed.Code);
        }
        return granted;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A plan credit grant was refused by the ledger: {Code}")]
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
