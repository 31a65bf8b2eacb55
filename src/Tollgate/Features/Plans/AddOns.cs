using System.Text.Json;
using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Plans;

/// <summary>An add-on as configured under <c>Tollgate:AddOns:&lt;id&gt;</c>: extra units of a counted entitlement for a price.</summary>
public sealed record AddOnOptions
{
    public string? Name { get; init; }
    /// <summary>Price of one add-on, in cents, paid once from the account's credits.</summary>
    public long PriceCents { get; init; }
    /// <summary>The counted entitlement it raises (e.g. <c>deploy_slots</c>).</summary>
    public string Entitlement { get; init; } = "";
    /// <summary>Units of the entitlement one add-on gives.</summary>
    public long Units { get; init; } = 1;
    /// <summary>Plans whose accounts may buy it; absent = every plan.</summary>
    public string[]? Plans { get; init; }
}

public sealed record AddOn(string Id, string Name, long PriceCents, string Entitlement, long Units, IReadOnlyList<string>? Plans)
{
    public long PriceMicros => checked(PriceCents * 10_000);
    public bool AvailableOn(string planId) => Plans is null || Plans.Contains(planId);
}

public sealed record AddOnView(string Id, string Name, long PriceCents, long PriceMicros, string Entitlement, long Units, bool Available, long Owned);
public sealed record AddOnPurchaseInput(string? Id, long? Quantity);
public sealed record AddOnPurchaseResponse(string Id, string AddOn, long Quantity, string Entitlement, long UnitsAdded, long AmountMicros, string? TransferId,
    long Limit, bool Replayed);

internal sealed class AddOnCatalog
{
    private readonly Dictionary<string, AddOn> _addOns;

    public AddOnCatalog(IOptions<Dictionary<string, AddOnOptions>> options) =>
        _addOns = options.Value.ToDictionary(a => a.Key, a => new AddOn(a.Key, a.Value.Name ?? a.Key, a.Value.PriceCents, a.Value.Entitlement, a.Value.Units, a.Value.Plans),
            StringComparer.Ordinal);

    public IReadOnlyList<AddOn> All => _addOns.Values.OrderBy(a => a.Id, StringComparer.Ordinal).ToList();
    public AddOn? Find(string id) => _addOns.GetValueOrDefault(id);

    public static void Register(IServiceCollection services)
    {
        Infrastructure.Configuration.NamedOptions.Add<AddOnOptions>(services, "Tollgate:AddOns", Validate);
        services.AddSingleton<AddOnCatalog>();
        services.AddSingleton<AddOnStore>();
    }

    private static bool Validate(Dictionary<string, AddOnOptions> addOns)
    {
        var errors = new List<string>();
        foreach (var (id, a) in addOns)
        {
            var at = $"Tollgate:AddOns:{id}";
            if (id.Length is 0 or > 64 || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')) errors.Add($"{at}: ids are 1–64 letters, digits, '-', '_' or '.'.");
            if (a.PriceCents is < 0 or > 100_000_000) errors.Add($"{at}:PriceCents must be 0–100,000,000.");
            if (string.IsNullOrWhiteSpace(a.Entitlement)) errors.Add($"{at}:Entitlement must name the counted entitlement it raises.");
            if (a.Units is < 1 or > 1_000_000) errors.Add($"{at}:Units must be 1–1,000,000.");
        }
        if (errors.Count > 0) throw new OptionsValidationException("Tollgate:AddOns", typeof(AddOnOptions), errors);
        return true;
    }
}

/// <summary>Add-on purchases (portable SQL); what they add to each entitlement is their sum.</summary>
internal sealed class AddOnStore(Database db, TimeProvider time)
{
    private sealed record Row(string addon_id, long quantity, string feature, long units, long amount_micros, string? transfer_id);

    public async Task<long> ExtraAsync(string accountId, string feature, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT SUM(units) FROM addon_purchases WHERE account_id = @accountId AND feature = @feature", new { accountId, feature }, cancellationToken: ct)) ?? 0;
    }

    public async Task<IReadOnlyDictionary<string, long>> OwnedAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<(string, long)>(new CommandDefinition(
            "SELECT addon_id, SUM(quantity) FROM addon_purchases WHERE account_id = @accountId GROUP BY addon_id", new { accountId }, cancellationToken: ct));
        return rows.ToDictionary(r => r.Item1, r => r.Item2, StringComparer.Ordinal);
    }

    /// <summary>The stored purchase with this id, if any.</summary>
    public async Task<(string AddOn, long Quantity, long Units, long Amount, string? TransferId)?> GetAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            "SELECT addon_id, quantity, feature, units, amount_micros, transfer_id FROM addon_purchases WHERE account_id = @accountId AND id = @id",
            new { accountId, id }, cancellationToken: ct));
        return row is null ? null : (row.addon_id, row.quantity, row.units, row.amount_micros, row.transfer_id);
    }

    public async Task InsertAsync(string accountId, string id, AddOn addOn, long quantity, long amount, string? transferId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO addon_purchases (account_id, id, addon_id, quantity, feature, units, amount_micros, transfer_id, created_at)
            VALUES (@accountId, @id, @addOn, @quantity, @feature, @units, @amount, @transferId, @now)
            ON CONFLICT (account_id, id) DO NOTHING
            """, new { accountId, id, addOn = addOn.Id, quantity, feature = addOn.Entitlement, units = addOn.Units * quantity, amount, transferId, now = time.GetUtcNowMicros() },
            cancellationToken: ct));
    }
}

/// <summary>
/// <c>GET /api/v1/addons</c> (the catalog, what the caller's plan may buy and what it owns) and
/// <c>POST /api/v1/addons/{id}/purchase</c> (<c>{"id": idempotency key, "quantity": n}</c>): paid once from credits by a
/// ledger transfer <c>addon:{account}:{id}</c>, then the entitlement's limit is the plan's plus every add-on bought.
/// The ledger transfer comes first and its id is the idempotency key, so a retry after a crash charges nothing again
/// and records the purchase then.
/// </summary>
internal static class AddOnEndpoints
{
    public const string Code = "addon";

    public static void MapAddOns(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/addons").RequireApiKey().ManagersOnly().WithTags("Plans");
        group.MapGet("/", async (HttpContext http, AddOnCatalog catalog, AddOnStore store, PlanCatalog plans, CancellationToken ct) =>
        {
            var caller = http.GetCaller();
            var plan = plans.For(caller);
            var owned = await store.OwnedAsync(caller.AccountId, ct);
            return TypedResults.Ok(new Dictionary<string, object>
            {
                ["data"] = catalog.All.Select(a => new AddOnView(a.Id, a.Name, a.PriceCents, a.PriceMicros, a.Entitlement, a.Units, a.AvailableOn(plan.Id),
                    owned.GetValueOrDefault(a.Id))).ToList(),
            });
        });
        group.MapPost("/{addOnId}/purchase", PurchaseAsync);
    }

    private static async Task<Results<Ok<AddOnPurchaseResponse>, ProblemHttpResult>> PurchaseAsync(string addOnId, AddOnPurchaseInput? input, HttpContext http,
        AddOnCatalog catalog, AddOnStore store, PlanCatalog plans, LedgerService ledger, SystemAccounts system, EntitlementStore entitlements,
        Alerts.AlertService alerts, CancellationToken ct)
    {
        if (catalog.Find(addOnId) is not { } addOn) return Problems.NotFound("add-on", addOnId);
        if (input?.Id is not { Length: > 0 and <= 80 } id || !LedgerService.IsValidId(id))
            return Problems.BadRequest("invalid_request", "'id' is required: your idempotency key for this purchase (1–80 letters, digits and _-.:@+).", "id");
        var quantity = input.Quantity ?? 1;
        if (quantity is < 1 or > 1_000) return Problems.BadRequest("invalid_request", "'quantity' must be 1–1,000.", "quantity");
        var caller = http.GetCaller();
        var plan = plans.For(caller);
        if (!addOn.AvailableOn(plan.Id))
            return Problems.Create(StatusCodes.Status403Forbidden, "feature_not_in_plan", $"The add-on '{addOn.Id}' is not sold on the plan '{plan.Id}'.");

        if (await store.GetAsync(caller.AccountId, id, ct) is { } stored)
            return stored.AddOn == addOn.Id && stored.Quantity == quantity
                ? TypedResults.Ok(await ResponseAsync(caller, id, addOn, quantity, stored.Amount, stored.TransferId, plan, store, replayed: true, ct))
                : Problems.Conflict("idempotency_conflict", $"Purchase id '{id}' was already used for another add-on or quantity; nothing was charged.");

        var amount = checked(addOn.PriceMicros * quantity);
        string? transferId = null;
        if (amount > 0)
        {
            transferId = $"addon:{caller.AccountId}:{id}";
            var result = await ledger.TransferAsync(new TransferRequest
            {
                Id = transferId, DebitAccountId = caller.LedgerAccountId, CreditAccountId = await system.RevenueAsync(ct), Amount = amount, Code = Code,
                Reference = addOn.Id, Metadata = JsonSerializer.Serialize(new Dictionary<string, object> { ["addon"] = addOn.Id, ["quantity"] = quantity }),
            }, ct);
            if (result.Code == TransferResultCode.InsufficientFunds)
                return Problems.Create(StatusCodes.Status402PaymentRequired, "insufficient_credits",
                    $"The add-on costs {Tollgate.Infrastructure.Money.Money.FormatMicros(amount)} USD and the available balance does not cover it; nothing was bought.",
                    new Dictionary<string, object?> { ["required_micros"] = amount });
            if (result.Code == TransferResultCode.IdempotencyConflict)
                return Problems.Conflict("idempotency_conflict", $"Purchase id '{id}' was already used for another add-on or quantity; nothing was charged.");
            if (!result.Succeeded) throw new InvalidOperationException($"The ledger refused add-on purchase {transferId}: {result.Code}.");
        }
        await store.InsertAsync(caller.AccountId, id, addOn, quantity, amount, transferId, CancellationToken.None);
        var response = await ResponseAsync(caller, id, addOn, quantity, amount, transferId, plan, store, replayed: false, ct);
        // A raised limit resolves the entitlement's alerts that its use is now below.
        alerts.PostUsage(caller.AccountId, EntitlementEndpoints.AlertSubjectPrefix + addOn.Entitlement, EntitlementEndpoints.AlertPeriod,
            await entitlements.UsedAsync(caller.AccountId, addOn.Entitlement, ct), response.Limit);
        return TypedResults.Ok(response);
    }

    private static async Task<AddOnPurchaseResponse> ResponseAsync(Caller caller, string id, AddOn addOn, long quantity, long amount, string? transferId, Plan plan,
        AddOnStore store, bool replayed, CancellationToken ct) =>
        new(id, addOn.Id, quantity, addOn.Entitlement, addOn.Units * quantity, amount, transferId,
            plan.Entitlements.GetValueOrDefault(addOn.Entitlement) + await store.ExtraAsync(caller.AccountId, addOn.Entitlement, ct), replayed);
}
