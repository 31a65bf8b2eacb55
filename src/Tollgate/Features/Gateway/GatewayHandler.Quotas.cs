using Tollgate.Features.Keys;
using Tollgate.Features.Plans;

namespace Tollgate.Features.Gateway;

internal sealed partial class GatewayHandler
{
    /// <summary>
    /// The plan's period quotas at the start of a call. Tokens: refused once the period's included tokens are used up
    /// (they are added at settlement, so a call in flight may take the count past the limit). Requests: one unit taken
    /// by a conditional upsert. With the <c>bill</c> overage policy nothing is refused: requests beyond the included
    /// ones are still counted and the calls are charged from credits as usual. Returns the period the call counts in
    /// (null: the plan has no quotas) or the 429 to answer.
    /// </summary>
    private async Task<(PlanPeriod? Period, GatewayError? Error)> TakeQuotasAsync(HttpContext http, Caller caller, Plan plan, DateTimeOffset now)
    {
        if (plan.IncludedRequests is null && plan.IncludedTokens is null) return (null, null);
        var period = PlanPeriod.Of(caller, now);
        if (plan.IncludedTokens is { } tokens && !plan.BillsOverage
            && await quotas.UsedAsync(caller.AccountId, QuotaStore.Tokens, period.Start, CancellationToken.None) >= tokens)
            return (null, QuotaExceeded(http, plan, period, now, $"includes {tokens} tokens per period", tokens, QuotaStore.Tokens));
        if (plan.IncludedRequests is { } included)
        {
            var used = await quotas.TryConsumeCountedAsync(caller.AccountId, QuotaStore.Requests, period.Start, included, CancellationToken.None);
            if (used is null)
            {
                if (!plan.BillsOverage)
                    return (null, QuotaExceeded(http, plan, period, now, $"includes {included} requests per period", included, QuotaStore.Requests));
                used = await quotas.AddAsync(caller.AccountId, QuotaStore.Requests, period.Start, 1, CancellationToken.None);
            }
            // Off the response's path: queued for the alerts engine, which writes only when a threshold is crossed.
            var (subject, periodKey) = QuotaStore.AlertSubject(QuotaStore.Requests, period.Start);
            alerts.PostUsage(caller.AccountId, subject, periodKey, used.Value, included);
        }
        return (period, null);
    }

    /// <summary>After the call: a call that delivered nothing gives its request back; one that did adds its tokens.</summary>
    private async Task SettleQuotasAsync(Caller caller, Plan plan, PlanPeriod period, bool delivered, long usedTokens)
    {
        if (!delivered)
        {
            if (plan.IncludedRequests is not null) await quotas.ReleaseAsync(caller.AccountId, QuotaStore.Requests, period.Start);
            return;
        }
        if (plan.IncludedTokens is { } tokens)
        {
            var used = await quotas.AddAsync(caller.AccountId, QuotaStore.Tokens, period.Start, usedTokens, CancellationToken.None);
            var (subject, periodKey) = QuotaStore.AlertSubject(QuotaStore.Tokens, period.Start);
            alerts.PostUsage(caller.AccountId, subject, periodKey, used, tokens);
        }
    }

    private static GatewayError QuotaExceeded(HttpContext http, Plan plan, PlanPeriod period, DateTimeOffset now, string what, long limit, string kind)
    {
        http.Response.Headers.RetryAfter = ((long)Math.Ceiling((period.End - now).TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new GatewayError(429, "quota_exceeded", $"The plan '{plan.Id}' {what} and they are used up; the quota resets at {period.End:O}.",
            Extra: new Dictionary<string, object?> { ["limit"] = limit, ["kind"] = kind, ["resets_at"] = period.End });
    }
}
