using System.Text.Json;
using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Admin;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Plans;

/// <summary>Plans stored through the admin API: immutable versions, a current one per plan, an archive mark.</summary>
internal sealed class PlanStore(Database db, TimeProvider time)
{
    /// <summary>Definitions are stored as snake_case JSON, dictionary keys (entitlement names) exactly as given.</summary>
    public static readonly JsonSerializerOptions StorageJson = new(TollgateApp.Json) { DictionaryKeyPolicy = null, WriteIndented = false };

    private sealed record PlanRow(string id, long current_version, long? archived_at);
    private sealed record VersionRow(string plan_id, long version, string definition, long created_at);
    public sealed record VersionInfo(long Version, DateTimeOffset CreatedAt);

    public sealed record Loaded(long ChangeVersion, IReadOnlyList<PlanCatalog.StoredPlan> Plans, IReadOnlyDictionary<(string, long), DateTimeOffset> Created);

    public async Task<long> GetChangeVersionAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT version FROM plans_version WHERE id = 1", cancellationToken: ct));
    }

    /// <summary>Every stored plan and version, with the change version read <b>before</b> them (a concurrent change is noticed on the next poll).</summary>
    public async Task<Loaded> LoadAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var version = await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT version FROM plans_version WHERE id = 1", cancellationToken: ct));
        var plans = (await c.QueryAsync<PlanRow>(new CommandDefinition("SELECT id, current_version, archived_at FROM plans", cancellationToken: ct))).ToList();
        var versions = (await c.QueryAsync<VersionRow>(new CommandDefinition(
            "SELECT plan_id, version, definition, created_at FROM plan_versions", cancellationToken: ct))).ToList();
        var created = versions.ToDictionary(v => (v.plan_id, v.version), v => UnixMicros.ToDateTimeOffset(v.created_at));
        var byPlan = versions.GroupBy(v => v.plan_id, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        var stored = plans.Select(p => new PlanCatalog.StoredPlan(p.id, p.current_version, p.archived_at is not null,
            (byPlan.GetValueOrDefault(p.id) ?? []).ToDictionary(v => v.version, v => Plan.From(p.id, Parse(v.definition), v.version)))).ToList();
        return new Loaded(version, stored, created);
    }

    public static PlanOptions Parse(string definition) => JsonSerializer.Deserialize<PlanOptions>(definition, StorageJson) ?? new PlanOptions();

    /// <summary>The stable text of a definition: the same plan always serialises the same way (entitlements sorted).</summary>
    public static string Canonical(PlanOptions spec) => JsonSerializer.Serialize(spec with
    {
        Entitlements = spec.Entitlements is null ? null : new Dictionary<string, long>(spec.Entitlements.OrderBy(e => e.Key, StringComparer.Ordinal), StringComparer.Ordinal),
    }, StorageJson);

    /// <summary>Stores <paramref name="spec"/> as the plan's next version unless it equals the current one; un-archives the plan.</summary>
    public async Task<(long Version, bool Created)> SaveAsync(string id, PlanOptions spec, CancellationToken ct)
    {
        var definition = Canonical(spec);
        return await WriteAsync(async (c, tx, now) =>
        {
            var row = await c.QuerySingleOrDefaultAsync<PlanRow>(new CommandDefinition(
                "SELECT id, current_version, archived_at FROM plans WHERE id = @id", new { id }, tx, cancellationToken: ct));
            if (row is { current_version: > 0 })
            {
                var current = await c.ExecuteScalarAsync<string>(new CommandDefinition(
                    "SELECT definition FROM plan_versions WHERE plan_id = @id AND version = @v", new { id, v = row.current_version }, tx, cancellationToken: ct));
                if (current == definition)
                {
                    if (row.archived_at is null) return (row.current_version, false);
                    await c.ExecuteAsync(new CommandDefinition("UPDATE plans SET archived_at = NULL, updated_at = @now WHERE id = @id", new { id, now }, tx, cancellationToken: ct));
                    await BumpAsync(c, tx, ct);
                    return (row.current_version, false);
                }
            }
            var next = 1 + await c.ExecuteScalarAsync<long>(new CommandDefinition(
                "SELECT coalesce(max(version), 0) FROM plan_versions WHERE plan_id = @id", new { id }, tx, cancellationToken: ct));
            await c.ExecuteAsync(new CommandDefinition(
                "INSERT INTO plan_versions (plan_id, version, definition, created_at) VALUES (@id, @next, @definition, @now)",
                new { id, next, definition, now }, tx, cancellationToken: ct));
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO plans (id, current_version, archived_at, updated_at) VALUES (@id, @next, NULL, @now)
                ON CONFLICT (id) DO UPDATE SET current_version = @next, archived_at = NULL, updated_at = @now
                """, new { id, next, now }, tx, cancellationToken: ct));
            await BumpAsync(c, tx, ct);
            return (next, true);
        }, ct);
    }

    /// <summary>Marks the plan archived (a configured plan gets a row with version 0: the configuration's definition).</summary>
    public Task<bool> ArchiveAsync(string id, CancellationToken ct) => WriteAsync(async (c, tx, now) =>
    {
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO plans (id, current_version, archived_at, updated_at) VALUES (@id, 0, @now, @now)
            ON CONFLICT (id) DO UPDATE SET archived_at = @now, updated_at = @now
            """, new { id, now }, tx, cancellationToken: ct));
        await BumpAsync(c, tx, ct);
        return true;
    }, ct);

    private static Task BumpAsync(System.Data.Common.DbConnection c, System.Data.Common.DbTransaction tx, CancellationToken ct) =>
        c.ExecuteAsync(new CommandDefinition("UPDATE plans_version SET version = version + 1 WHERE id = 1", transaction: tx, cancellationToken: ct));

    private async Task<T> WriteAsync<T>(Func<System.Data.Common.DbConnection, System.Data.Common.DbTransaction, long, Task<T>> work, CancellationToken ct)
    {
        var sqlite = db.Engine == DatabaseEngine.Sqlite;
        if (sqlite) await db.SqliteWriteGate.WaitAsync(ct);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await using var c = await db.OpenAsync(ct);
                    await using var tx = await c.BeginTransactionAsync(ct);
                    // One plan writer at a time (the version row is the lock), so version numbers never collide.
                    await c.ExecuteAsync(new CommandDefinition("UPDATE plans_version SET version = version WHERE id = 1", transaction: tx, cancellationToken: ct));
                    var result = await work(c, tx, time.GetUtcNowMicros());
                    await tx.CommitAsync(ct);
                    return result;
                }
                catch (Exception e) when (attempt < 3 && DbErrors.Classify(e) is DbErrorKind.UniqueViolation or DbErrorKind.Retryable)
                {
                }
            }
        }
        finally
        {
            if (sqlite) db.SqliteWriteGate.Release();
        }
    }
}

public enum PlanSaveOutcome { Created, Unchanged, Invalid }

/// <summary>
/// Plans through the admin API: validated like configuration, stored as a new version, and put in force at once in
/// this process and within <c>Tollgate:Plans:ReloadSeconds</c> (default 5) in the others (<see cref="PlanReloader"/>).
/// </summary>
internal sealed partial class PlanDefinitionService(PlanCatalog catalog, PlanStore store, ILogger<PlanDefinitionService> logger)
{
    private readonly SemaphoreSlim _reload = new(1, 1);
    private long _loadedVersion = -1;
    private IReadOnlyDictionary<(string, long), DateTimeOffset> _created = new Dictionary<(string, long), DateTimeOffset>();

    public DateTimeOffset? CreatedAt(string id, long version) => _created.TryGetValue((id, version), out var at) ? at : null;

    public async Task<(PlanSaveOutcome Outcome, long Version, IReadOnlyList<string> Errors)> SaveAsync(string id, PlanOptions spec, CancellationToken ct)
    {
        var errors = PlanValidation.Errors($"plan '{id}'", id, spec);
        if (errors.Count > 0) return (PlanSaveOutcome.Invalid, 0, errors);
        var (version, created) = await store.SaveAsync(id, spec, ct);
        await ReloadAsync(force: true, ct);
        return (created ? PlanSaveOutcome.Created : PlanSaveOutcome.Unchanged, version, []);
    }

    public async Task ArchiveAsync(string id, CancellationToken ct)
    {
        await store.ArchiveAsync(id, ct);
        await ReloadAsync(force: true, ct);
    }

    /// <summary>Reloads the stored plans when their change version moved (always when <paramref name="force"/>).</summary>
    public async Task<bool> ReloadAsync(bool force, CancellationToken ct)
    {
        await _reload.WaitAsync(ct);
        try
        {
            if (!force && await store.GetChangeVersionAsync(ct) == Interlocked.Read(ref _loadedVersion)) return false;
            var loaded = await store.LoadAsync(ct);
            // Stored definitions were validated when saved; one made invalid by a later rule is left out, not fatal.
            var usable = new List<PlanCatalog.StoredPlan>();
            foreach (var p in loaded.Plans)
            {
                if (p.Versions.TryGetValue(p.CurrentVersion, out var v) && PlanValidation.Errors($"plan '{p.Id}'", p.Id, ToOptions(v)).Count > 0)
                {
                    LogSkipped(p.Id, p.CurrentVersion);
                    continue;
                }
                usable.Add(p);
            }
            catalog.Swap(usable);
            _created = loaded.Created;
            Interlocked.Exchange(ref _loadedVersion, loaded.ChangeVersion);
            return true;
        }
        finally
        {
            _reload.Release();
        }
    }

    /// <summary>A plan's definition as the admin API shows (and accepts) it.</summary>
    public static PlanOptions ToOptions(Plan p) => new()
    {
        Name = p.Name, Markup = p.Markup, Models = p.Models?.ToArray(), Features = p.Features?.Order(StringComparer.Ordinal).ToArray(),
        MonthlyPriceCents = p.MonthlyPriceCents, YearlyPriceCents = p.YearlyPriceCents, IncludedRequests = p.IncludedRequests,
        IncludedTokens = p.IncludedTokens, OveragePolicy = p.OveragePolicy, TrialDays = p.TrialDays,
        Entitlements = new Dictionary<string, long>(p.Entitlements, StringComparer.Ordinal), IncludedCreditsMicros = p.IncludedCreditsMicros,
        ExpireIncludedCredits = p.ExpireIncludedCredits,
    };

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stored plan {PlanId} version {Version} no longer validates; the configured definition (if any) applies")]
    private partial void LogSkipped(string planId, long version);
}

/// <summary>Polls the plans' change version and reloads the snapshot when another process changed a plan.</summary>
internal sealed partial class PlanReloader(PlanDefinitionService plans, IConfiguration config, ILogger<PlanReloader> logger) : BackgroundService
{
    // The system clock on purpose: a test's manual clock must not stop other processes' changes from arriving.
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Infrastructure.PeriodicWork.RunAsync(TimeSpan.FromSeconds(Math.Clamp(config.GetValue("Tollgate:PlanReloadSeconds", 5), 1, 3600)),
            TimeProvider.System, ct => plans.ReloadAsync(force: false, ct), LogReloadFailed, stoppingToken);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reloading plans failed; the plans in force stay, retrying on the next tick")]
    private partial void LogReloadFailed(Exception e);
}

public sealed record PlanVersionSummary(long Version, DateTimeOffset? CreatedAt);

public sealed record AdminPlanView(string Id, long Version, string Source, bool Archived, PlanOptions Definition, IReadOnlyList<PlanVersionSummary>? Versions);

/// <summary>
/// <c>/admin/v1/plans</c>: list, read, create or update (a new version; an identical definition changes nothing),
/// read a version, archive (DELETE: no new subscriptions; accounts on it keep it).
/// </summary>
internal static class AdminPlanEndpoints
{
    public static void MapAdminPlans(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1/plans").RequireAdminKey().WithTags("Admin: plans");
        group.MapGet("/", List);
        group.MapGet("/{id}", Get);
        group.MapGet("/{id}/versions/{version:long}", GetVersion);
        group.MapPut("/{id}", Put);
        group.MapDelete("/{id}", Archive);
    }

    private static AdminPlanView View(Plan p, PlanCatalog catalog, PlanDefinitionService service, bool withVersions)
    {
        List<PlanVersionSummary>? versions = null;
        if (withVersions)
        {
            versions = [];
            if (catalog.IsConfigured(p.Id)) versions.Add(new PlanVersionSummary(0, null));
            if (catalog.Stored(p.Id) is { } stored)
                versions.AddRange(stored.Versions.Keys.Order().Select(v => new PlanVersionSummary(v, service.CreatedAt(p.Id, v))));
        }
        return new AdminPlanView(p.Id, p.Version, p.Version == 0 ? "configuration" : "database", p.Archived, PlanDefinitionService.ToOptions(p), versions);
    }

    private static Ok<List<AdminPlanView>> List(PlanCatalog catalog, PlanDefinitionService service) =>
        TypedResults.Ok(catalog.All.OrderBy(p => p.Id, StringComparer.Ordinal).Select(p => View(p, catalog, service, false)).ToList());

    private static Results<Ok<AdminPlanView>, ProblemHttpResult> Get(string id, PlanCatalog catalog, PlanDefinitionService service) =>
        catalog.Exists(id) ? TypedResults.Ok(View(catalog.Get(id), catalog, service, true)) : Problems.NotFound("plan", id);

    private static Results<Ok<AdminPlanView>, ProblemHttpResult> GetVersion(string id, long version, PlanCatalog catalog, PlanDefinitionService service)
    {
        var plan = version == 0 ? catalog.Configured(id)
            : catalog.Stored(id)?.Versions.GetValueOrDefault(version);
        return plan is null ? Problems.Create(StatusCodes.Status404NotFound, "not_found", $"Plan '{id}' has no version {version}.")
            : TypedResults.Ok(View(plan with { Archived = catalog.Get(id).Archived && catalog.Exists(id) }, catalog, service, false));
    }

    private static async Task<Results<Ok<AdminPlanView>, Created<AdminPlanView>, ProblemHttpResult>> Put(
        string id, PlanOptions input, PlanCatalog catalog, PlanDefinitionService service, CancellationToken ct)
    {
        var (outcome, version, errors) = await service.SaveAsync(id, input, ct);
        if (outcome == PlanSaveOutcome.Invalid)
            return Problems.Create(StatusCodes.Status400BadRequest, "invalid_plan", string.Join(" ", errors), new Dictionary<string, object?> { ["errors"] = errors });
        var view = View(catalog.Get(id, version), catalog, service, true);
        return outcome == PlanSaveOutcome.Created && version == 1 && !catalog.IsConfigured(id)
            ? TypedResults.Created($"/admin/v1/plans/{id}", view)
            : TypedResults.Ok(view);
    }

    private static async Task<Results<Ok<AdminPlanView>, ProblemHttpResult>> Archive(string id, PlanCatalog catalog, PlanDefinitionService service, CancellationToken ct)
    {
        if (!catalog.Exists(id)) return Problems.NotFound("plan", id);
        if (id == PlanCatalog.DefaultPlanId)
            return Problems.BadRequest("invalid_request", "The plan 'default' cannot be archived: accounts without a subscription are on it.");
        await service.ArchiveAsync(id, ct);
        return TypedResults.Ok(View(catalog.Get(id), catalog, service, true));
    }
}
