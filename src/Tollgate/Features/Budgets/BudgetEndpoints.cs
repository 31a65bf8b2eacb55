using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Accounts;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Budgets;

/// <summary>A subject's caps to set; a window left out or null has no cap.</summary>
public sealed record SpendCapsInput(long? DailyMicros = null, long? MonthlyMicros = null, long? TotalMicros = null);

public sealed record CapView(string Window, long LimitMicros, long SpentMicros, long HeldMicros, long RemainingMicros, DateTimeOffset? ResetsAt)
{
    public static CapView From(CapStatus s) => new(CapNames.Of(s.Cap.Window), s.Cap.LimitMicros, s.SpentMicros, s.HeldMicros, s.RemainingMicros, s.Period.ResetsAt);
}

public sealed record SpendCapsView(string Scope, string SubjectId, IReadOnlyList<CapView> Caps);

/// <summary>An end customer to create or update; <see cref="SpendCaps"/> replaces its caps when given.</summary>
public sealed record CustomerInput(string? Name = null, bool? Blocked = null, JsonElement? Metadata = null, SpendCapsInput? SpendCaps = null);

public sealed record CustomerView(string Id, string? Name, bool Blocked, JsonElement? Metadata, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt, IReadOnlyList<CapView> SpendCaps);

/// <summary>
/// Spend caps and end customers. Self-service under <c>/api/v1</c> (reads for any member, changes for managers):
/// the account's caps (<c>/spend-caps</c>), a key's (<c>/keys/{id}/spend-caps</c>, counted for its rotation lineage),
/// end customers (<c>/customers</c>) and their caps. The operator sets an account's caps under <c>/admin/v1</c>.
/// Everything is scoped by the caller's account: another account's key or customer is simply not found.
/// </summary>
internal static class BudgetEndpoints
{
    public const int MaxPageSize = 200;

    public static void MapBudgets(this IEndpointRouteBuilder routes)
    {
        var api = routes.MapGroup("/api/v1").RequireApiKey().ManagersOnly().WithTags("Budgets");
        api.MapGet("/spend-caps", (HttpContext http, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            View(http.GetCaller().AccountId, CapScope.Account, http.GetCaller().AccountId, budgets, time, ct));
        api.MapPut("/spend-caps", (SpendCapsInput? input, HttpContext http, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            Set(http.GetCaller().AccountId, CapScope.Account, http.GetCaller().AccountId, input, budgets, time, ct));

        api.MapGet("/keys/{keyId}/spend-caps", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string keyId, HttpContext http, IApiKeyStore keys,
            BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            await keys.GetAsync(http.GetCaller().AccountId, keyId, ct) is { } key
                ? await View(key.AccountId, CapScope.Key, key.LineageId ?? key.Id, budgets, time, ct)
                : Problems.NotFound("key", keyId));
        api.MapPut("/keys/{keyId}/spend-caps", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string keyId, SpendCapsInput? input, HttpContext http,
            IApiKeyStore keys, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            await keys.GetAsync(http.GetCaller().AccountId, keyId, ct) is { } key
                ? await Set(key.AccountId, CapScope.Key, key.LineageId ?? key.Id, input, budgets, time, ct)
                : Problems.NotFound("key", keyId));

        api.MapGet("/customers", ListCustomers);
        api.MapGet("/customers/{customerId}", GetCustomer);
        api.MapPut("/customers/{customerId}", PutCustomer);
        api.MapGet("/customers/{customerId}/spend-caps", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string customerId, HttpContext http,
            EndCustomerStore customers, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            await customers.GetAsync(http.GetCaller().AccountId, customerId, ct) is not null
                ? await View(http.GetCaller().AccountId, CapScope.Customer, customerId, budgets, time, ct)
                : Problems.NotFound("customer", customerId));
        api.MapPut("/customers/{customerId}/spend-caps", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string customerId, SpendCapsInput? input,
            HttpContext http, EndCustomerStore customers, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
        {
            var accountId = http.GetCaller().AccountId;
            if (!EndCustomerIds.IsValid(customerId)) return Problems.BadRequest("invalid_request", $"A customer id {EndCustomerIds.Rule}.", "customer_id");
            await customers.EnsureAsync(accountId, customerId, ct);
            return await Set(accountId, CapScope.Customer, customerId, input, budgets, time, ct);
        });

        var admin = routes.MapGroup("/admin/v1/accounts/{id}/spend-caps").RequireAdminKey().WithTags("Admin: accounts");
        admin.MapGet("/", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string id, AccountService accounts, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
            await accounts.GetAsync(id, ct) is null ? Problems.NotFound("account", id) : await View(id, CapScope.Account, id, budgets, time, ct));
        admin.MapPut("/", async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> (string id, SpendCapsInput? input, AccountService accounts, BudgetService budgets,
            TimeProvider time, CancellationToken ct) =>
            await accounts.GetAsync(id, ct) is null ? Problems.NotFound("account", id) : await Set(id, CapScope.Account, id, input, budgets, time, ct));
    }

    private static async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> View(string accountId, CapScope scope, string subjectId, BudgetService budgets,
        TimeProvider time, CancellationToken ct) =>
        TypedResults.Ok(new SpendCapsView(CapNames.Of(scope), subjectId, await CapViews(accountId, scope, subjectId, budgets, time, ct)));

    private static async Task<IReadOnlyList<CapView>> CapViews(string accountId, CapScope scope, string subjectId, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
        (await budgets.StatusAsync(accountId, scope, subjectId, time.GetUtcNow(), ct)).Select(CapView.From).ToList();

    private static async Task<Results<Ok<SpendCapsView>, ProblemHttpResult>> Set(string accountId, CapScope scope, string subjectId, SpendCapsInput? input,
        BudgetService budgets, TimeProvider time, CancellationToken ct)
    {
        if (Validate(input) is { } problem) return problem;
        await budgets.SetAsync(accountId, scope, subjectId, Limits(input!), ct);
        return await View(accountId, scope, subjectId, budgets, time, ct);
    }

    private static ProblemHttpResult? Validate(SpendCapsInput? input)
    {
        if (input is null) return Problems.BadRequest("invalid_request", "A JSON body with 'daily_micros', 'monthly_micros' and/or 'total_micros' is required (null or absent = no cap).");
        foreach (var (field, value) in new[] { ("daily_micros", input.DailyMicros), ("monthly_micros", input.MonthlyMicros), ("total_micros", input.TotalMicros) })
            if (value is < 0 or > Ledger.LedgerService.MaxAmountMicros)
                return Problems.BadRequest("invalid_request", $"'{field}' must be 0–{Ledger.LedgerService.MaxAmountMicros} micro-USD (0 blocks all spending; null removes the cap).", field);
        return null;
    }

    private static Dictionary<CapWindow, long?> Limits(SpendCapsInput input) => new()
    {
        [CapWindow.Day] = input.DailyMicros, [CapWindow.Month] = input.MonthlyMicros, [CapWindow.Total] = input.TotalMicros,
    };

    private static async Task<Ok<Dictionary<string, object?>>> ListCustomers(HttpContext http, EndCustomerStore customers, BudgetService budgets, TimeProvider time,
        string? after, int? limit, CancellationToken ct)
    {
        var accountId = http.GetCaller().AccountId;
        var size = Math.Clamp(limit ?? 50, 1, MaxPageSize);
        var page = await customers.ListAsync(accountId, after, size + 1, ct);
        var views = new List<CustomerView>();
        foreach (var c in page.Take(size)) views.Add(await ToView(c, budgets, time, ct));
        return TypedResults.Ok(new Dictionary<string, object?>
        {
            ["data"] = views, ["has_more"] = page.Count > size, ["next_cursor"] = page.Count > size ? page[size - 1].Id : null,
        });
    }

    private static async Task<Results<Ok<CustomerView>, ProblemHttpResult>> GetCustomer(string customerId, HttpContext http, EndCustomerStore customers,
        BudgetService budgets, TimeProvider time, CancellationToken ct) =>
        await customers.GetAsync(http.GetCaller().AccountId, customerId, ct) is { } c
            ? TypedResults.Ok(await ToView(c, budgets, time, ct))
            : Problems.NotFound("customer", customerId);

    private static async Task<Results<Ok<CustomerView>, ProblemHttpResult>> PutCustomer(string customerId, CustomerInput? input, HttpContext http,
        EndCustomerStore customers, BudgetService budgets, TimeProvider time, CancellationToken ct)
    {
        var accountId = http.GetCaller().AccountId;
        if (!EndCustomerIds.IsValid(customerId)) return Problems.BadRequest("invalid_request", $"A customer id {EndCustomerIds.Rule}.", "customer_id");
        if (input?.Name?.Length > AccountService.MaxNameLength)
            return Problems.BadRequest("invalid_request", $"'name' is longer than {AccountService.MaxNameLength} characters.", "name");
        if (input?.Metadata is { } m && m.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
            return Problems.BadRequest("invalid_request", "'metadata' must be a JSON object.", "metadata");
        if (input?.Metadata is { ValueKind: JsonValueKind.Object } meta && System.Text.Encoding.UTF8.GetByteCount(meta.GetRawText()) > KeySettings.MaxMetadataBytes)
            return Problems.BadRequest("invalid_request", $"'metadata' is larger than {KeySettings.MaxMetadataBytes} bytes.", "metadata");
        if (input?.SpendCaps is { } caps && Validate(caps) is { } problem) return problem;
        var customer = await customers.UpsertAsync(accountId, customerId, input?.Name, input?.Blocked ?? false,
            input?.Metadata is { ValueKind: JsonValueKind.Object } md ? md.GetRawText() : null, ct);
        if (input?.SpendCaps is { } newCaps) await budgets.SetAsync(accountId, CapScope.Customer, customerId, Limits(newCaps), ct);
        else budgets.Invalidate(accountId);
        return TypedResults.Ok(await ToView(customer, budgets, time, ct));
    }

    private static async Task<CustomerView> ToView(EndCustomer c, BudgetService budgets, TimeProvider time, CancellationToken ct) =>
        new(c.Id, c.Name, c.Blocked, c.Metadata is { } m ? JsonDocument.Parse(m).RootElement.Clone() : null, c.CreatedAt, c.UpdatedAt,
            await CapViews(c.AccountId, CapScope.Customer, c.Id, budgets, time, ct));
}
