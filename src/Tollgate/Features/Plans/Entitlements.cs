using System.Data.Common;
using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Plans;

public enum EntitlementOutcome { Recorded, Replayed, Exceeded, Conflict }

public sealed record EntitlementUse(EntitlementOutcome Outcome, long Used);

/// <summary>
/// Counted entitlements in use per account (projects, deploy slots): changed by idempotent events. Each change is
/// one transaction — take the write lock first (so SQLite never meets a stale snapshot), look for the event id
/// (same content: the stored answer; other content: a conflict), apply the change only if it stays within
/// [0, limit], store the event — so two requests can never both take the last unit, on any engine or process.
/// </summary>
internal sealed class EntitlementStore(Database db, TimeProvider time)
{
    private sealed record Event(string feature, long quantity, long used_after);

    public async Task<long> UsedAsync(string accountId, string feature, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT used FROM entitlement_usage WHERE account_id = @accountId AND feature = @feature", new { accountId, feature }, cancellationToken: ct)) ?? 0;
    }

    public async Task<EntitlementUse> UseAsync(string accountId, string id, string feature, long quantity, long limit, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await TryUseAsync(accountId, id, feature, quantity, limit, ct);
            }
            catch (Exception e) when (attempt < 3 && DbErrors.Classify(e) is DbErrorKind.UniqueViolation or DbErrorKind.Retryable)
            {
                // A concurrent twin stored the same event id first: the next attempt finds it.
            }
        }
    }

    private async Task<EntitlementUse> TryUseAsync(string accountId, string id, string feature, long quantity, long limit, CancellationToken ct)
    {
        var sqlite = db.Engine == DatabaseEngine.Sqlite;
        if (sqlite) await db.SqliteWriteGate.WaitAsync(ct);
        try
        {
            await using var c = await db.OpenAsync(ct);
            await using var tx = await c.BeginTransactionAsync(ct);
            await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO entitlement_usage (account_id, feature, used) VALUES (@accountId, @feature, 0) ON CONFLICT (account_id, feature) DO NOTHING",
                new { accountId, feature }, tx, cancellationToken: ct));
            if (!sqlite)
                await c.ExecuteAsync(new CommandDefinition(
                    "SELECT used FROM entitlement_usage WHERE account_id = @accountId AND feature = @feature FOR UPDATE", new { accountId, feature }, tx, cancellationToken: ct));
            var stored = await c.QuerySingleOrDefaultAsync<Event>(new CommandDefinition(
                "SELECT feature, quantity, used_after FROM entitlement_events WHERE account_id = @accountId AND id = @id", new { accountId, id }, tx, cancellationToken: ct));
            if (stored is not null)
                return stored.feature == feature && stored.quantity == quantity
                    ? new(EntitlementOutcome.Replayed, stored.used_after)
                    : new(EntitlementOutcome.Conflict, 0);
            var changed = await c.ExecuteAsync(new CommandDefinition("""
                UPDATE entitlement_usage SET used = used + @quantity
                WHERE account_id = @accountId AND feature = @feature AND used + @quantity >= 0 AND used + @quantity <= @limit
                """, new { accountId, feature, quantity, limit }, tx, cancellationToken: ct));
            var used = await c.ExecuteScalarAsync<long>(new CommandDefinition(
                "SELECT used FROM entitlement_usage WHERE account_id = @accountId AND feature = @feature", new { accountId, feature }, tx, cancellationToken: ct));
            if (changed == 0) return new(EntitlementOutcome.Exceeded, used);
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO entitlement_events (account_id, id, feature, quantity, used_after, created_at)
                VALUES (@accountId, @id, @feature, @quantity, @used, @now)
                """, new { accountId, id, feature, quantity, used, now = time.GetUtcNowMicros() }, tx, cancellationToken: ct));
            await tx.CommitAsync(ct);
            return new(EntitlementOutcome.Recorded, used);
        }
        finally
        {
            if (sqlite) db.SqliteWriteGate.Release();
        }
    }
}

public sealed record EntitlementView(string Feature, long Limit, long Used, long Remaining);
public sealed record EntitlementsResponse(string Plan, IReadOnlyList<string>? Features, IReadOnlyList<EntitlementView> Entitlements);
public sealed record CheckInput(string? Feature, long? Quantity);
public sealed record CheckResponse(string Feature, bool Allowed, long? Limit, long? Used, long? Remaining);
public sealed record UsageInput(string? Id, long? Quantity);
public sealed record UsageResponse(string Id, string Feature, long Quantity, long Limit, long Used, long Remaining, bool Replayed);

/// <summary>
/// The application's own features, gated by the caller's plan: <c>GET /api/v1/entitlements</c>,
/// <c>POST /api/v1/entitlements/check</c> and <c>POST /api/v1/entitlements/{feature}/usage</c> (idempotent by <c>id</c>;
/// a negative quantity gives units back, e.g. a project deleted). Feature flags (<c>Features</c>) answer allowed or
/// not; counted entitlements (<c>Entitlements</c>) also their limit, use and what remains.
/// </summary>
internal static class EntitlementEndpoints
{
    public const int MaxIdLength = 128;
    public const string AlertSubjectPrefix = "entitlement:";
    public const string AlertPeriod = "all";

    public static void MapEntitlements(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/entitlements").RequireApiKey().WithTags("Entitlements");
        group.MapGet("/", List);
        group.MapPost("/check", Check).ReadOnly();
        group.MapPost("/{feature}/usage", Use);
    }

    /// <summary>The account's limit for a counted entitlement: the plan's plus the add-ons bought; null if the plan has none and no add-on gives any.</summary>
    internal static async Task<long?> LimitAsync(Plan plan, string accountId, string feature, AddOnStore addOns, CancellationToken ct)
    {
        var extra = await addOns.ExtraAsync(accountId, feature, ct);
        return plan.Entitlements.TryGetValue(feature, out var limit) ? limit + extra : extra > 0 ? extra : null;
    }

    private static async Task<Ok<EntitlementsResponse>> List(HttpContext http, PlanCatalog plans, EntitlementStore store, AddOnStore addOns, AddOnCatalog catalog, CancellationToken ct)
    {
        var caller = http.GetCaller();
        var plan = plans.For(caller);
        var views = new List<EntitlementView>();
        var features = plan.Entitlements.Keys.Concat(catalog.All.Select(a => a.Entitlement)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
        foreach (var feature in features)
        {
            if (await LimitAsync(plan, caller.AccountId, feature, addOns, ct) is not { } limit) continue;
            var used = await store.UsedAsync(caller.AccountId, feature, ct);
            views.Add(new EntitlementView(feature, limit, used, Math.Max(0, limit - used)));
        }
        return TypedResults.Ok(new EntitlementsResponse(plan.Id, plan.Features?.Order(StringComparer.Ordinal).ToList(), views));
    }

    private static async Task<Results<Ok<CheckResponse>, ProblemHttpResult>> Check(CheckInput input, HttpContext http, PlanCatalog plans, EntitlementStore store,
        AddOnStore addOns, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(input.Feature)) return Problems.BadRequest("invalid_request", "'feature' is required.", "feature");
        var quantity = input.Quantity ?? 1;
        if (quantity < 1) return Problems.BadRequest("invalid_request", "'quantity' must be at least 1.", "quantity");
        var caller = http.GetCaller();
        var plan = plans.For(caller);
        if (await LimitAsync(plan, caller.AccountId, input.Feature, addOns, ct) is not { } limit)
            // The gateway's rule (Plan.Has): a plan without a Features list has every feature.
            return TypedResults.Ok(new CheckResponse(input.Feature, plan.Has(input.Feature), null, null, null));
        var used = await store.UsedAsync(caller.AccountId, input.Feature, ct);
        return TypedResults.Ok(new CheckResponse(input.Feature, used + quantity <= limit, limit, used, Math.Max(0, limit - used)));
    }

    private static async Task<Results<Ok<UsageResponse>, ProblemHttpResult>> Use(
        string feature, UsageInput input, HttpContext http, PlanCatalog plans, EntitlementStore store, AddOnStore addOns, Alerts.AlertService alerts, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(input.Id) || input.Id.Length > MaxIdLength || input.Id.Any(char.IsControl))
            return Problems.BadRequest("invalid_request", $"'id' is required: your idempotency key for this change (1–{MaxIdLength} characters).", "id");
        var quantity = input.Quantity ?? 1;
        if (quantity == 0 || Math.Abs(quantity) > 1_000_000)
            return Problems.BadRequest("invalid_request", "'quantity' must be a non-zero integer (negative gives units back).", "quantity");
        var caller = http.GetCaller();
        var plan = plans.For(caller);
        if (await LimitAsync(plan, caller.AccountId, feature, addOns, ct) is not { } limit)
            return Problems.Create(StatusCodes.Status403Forbidden, "feature_not_in_plan", $"The plan '{plan.Id}' has no counted entitlement '{feature}'.");
        var result = await store.UseAsync(caller.AccountId, input.Id, feature, quantity, limit, ct);
        // Counted entitlements have no period: their alerts (entitlement:{feature}) fire once, and resolve when the limit is raised.
        if (result.Outcome == EntitlementOutcome.Recorded) alerts.PostUsage(caller.AccountId, AlertSubjectPrefix + feature, AlertPeriod, result.Used, limit);
        return result.Outcome switch
        {
            EntitlementOutcome.Conflict => Problems.Conflict("idempotency_conflict", $"Event id '{input.Id}' was already used with a different feature or quantity; nothing changed."),
            EntitlementOutcome.Exceeded => Problems.Create(StatusCodes.Status403Forbidden, "entitlement_exceeded",
                quantity > 0 ? $"The plan '{plan.Id}' (with add-ons) allows {limit} {feature}; {result.Used} are in use." : $"Only {result.Used} {feature} are in use.",
                new Dictionary<string, object?> { ["limit"] = limit, ["used"] = result.Used }),
            _ => TypedResults.Ok(new UsageResponse(input.Id, feature, quantity, limit, result.Used, Math.Max(0, limit - result.Used),
                result.Outcome == EntitlementOutcome.Replayed)),
        };
    }
}
