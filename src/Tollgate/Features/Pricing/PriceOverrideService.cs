using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Pricing;

public enum PriceOverrideOutcome { Saved, Deleted, NotFound, Invalid }

public sealed record PriceOverrideResult(PriceOverrideOutcome Outcome, PriceOverride? Override = null, IReadOnlyList<string>? Errors = null);

/// <summary>
/// Keeps <see cref="PricingCatalog"/> in step with the admin-API overrides in the database:
/// <list type="number">
/// <item>A change is validated first: the same checks as configuration (<see cref="PricingOptionsValidator.ValidateModel"/>),
/// then a full snapshot is built with it (list price ≥ provider cost in every period and tier; a new model needs input
/// and output rates). Any error → <see cref="PriceOverrideOutcome.Invalid"/>, nothing stored.</item>
/// <item>Stored with the version bump in one transaction, then every override is re-read and a new snapshot swapped in,
/// so this process prices with it from the response on.</item>
/// <item>Other processes notice the version move within <see cref="PricingOptions.OverridesReloadSeconds"/>
/// (<see cref="PriceOverrideReloader"/>) and rebuild the same way.</item>
/// </list>
/// An override stored earlier that no longer fits (e.g. a newer imported catalog raised the provider price above its
/// list price) is skipped with a warning when snapshots are built, rather than failing start-up or blocking other
/// overrides; the catalog or configured price applies to that model until it is fixed.
/// </summary>
internal sealed partial class PriceOverrideService(PricingCatalog catalog, IPriceOverrideStore store, ILogger<PriceOverrideService> logger)
{
    public const int MaxModelIdLength = 200;

    private readonly SemaphoreSlim _reload = new(1, 1);
    private long _loadedVersion = -1;

    /// <summary>The version of the overrides the snapshot in force was built from (-1 before the first load).</summary>
    public long LoadedVersion => Interlocked.Read(ref _loadedVersion);

    /// <summary>How an override is named in messages.</summary>
    public static string Label(string modelId) => $"Price override {modelId}";

    /// <summary>Checks an override on its own (no database): id shape and the configuration rules.</summary>
    public static List<string> ValidateSpec(string modelId, ModelPricingOptions spec)
    {
        var errors = new List<string>();
        if (modelId.Length > MaxModelIdLength || modelId.Any(char.IsControl))
            errors.Add($"{Label(modelId)}: model ids are at most {MaxModelIdLength} printable characters.");
        PricingOptionsValidator.ValidateModel(errors, Label(modelId), modelId, spec);
        return errors;
    }

    public async Task<PriceOverrideResult> UpsertAsync(string modelId, ModelPricingOptions spec, CancellationToken ct)
    {
        var errors = ValidateSpec(modelId, spec);
        if (errors.Count > 0) return new(PriceOverrideOutcome.Invalid, Errors: errors);
        var current = await store.ListAsync(ct);
        var overrides = current.Overrides.ToDictionary(o => o.ModelId, o => o.Spec, StringComparer.Ordinal);
        overrides[modelId] = spec;
        try
        {
            // Only this override's errors can appear: the others were in force already (or are skipped below).
            catalog.Build(Usable(overrides, only: modelId));
        }
        catch (OptionsValidationException e)
        {
            return new(PriceOverrideOutcome.Invalid, Errors: e.Failures.ToList());
        }
        var saved = await store.UpsertAsync(modelId, spec, ct);
        await ReloadAsync(force: true, ct);
        return new(PriceOverrideOutcome.Saved, saved);
    }

    public async Task<PriceOverrideResult> DeleteAsync(string modelId, CancellationToken ct)
    {
        if (!await store.DeleteAsync(modelId, ct)) return new(PriceOverrideOutcome.NotFound);
        await ReloadAsync(force: true, ct);
        return new(PriceOverrideOutcome.Deleted);
    }

    /// <summary>
    /// Rebuilds the snapshot from the database when the override version moved since the last load (always when
    /// <paramref name="force"/>). Returns true if a new snapshot was swapped in.
    /// </summary>
    public async Task<bool> ReloadAsync(bool force, CancellationToken ct)
    {
        await _reload.WaitAsync(ct);
        try
        {
            if (!force && await store.GetVersionAsync(ct) == LoadedVersion) return false;
            var set = await store.ListAsync(ct);
            var overrides = set.Overrides.ToDictionary(o => o.ModelId, o => o.Spec, StringComparer.Ordinal);
            catalog.Swap(catalog.Build(Usable(overrides, only: null)));
            Interlocked.Exchange(ref _loadedVersion, set.Version);
            LogLoaded(logger, overrides.Count, set.Version);
            return true;
        }
        finally
        {
            _reload.Release();
        }
    }

    /// <summary>
    /// The overrides that build: all of them when they do; otherwise each is tried alone and the failing ones are left
    /// out with a warning. <paramref name="only"/> (when set) is never left out: its errors are the caller's answer.
    /// </summary>
    private Dictionary<string, ModelPricingOptions> Usable(Dictionary<string, ModelPricingOptions> overrides, string? only)
    {
        try
        {
            catalog.Build(overrides);
            return overrides;
        }
        catch (OptionsValidationException)
        {
            var usable = new Dictionary<string, ModelPricingOptions>(StringComparer.Ordinal);
            foreach (var (id, spec) in overrides)
            {
                if (id == only) { usable[id] = spec; continue; }
                var errors = ValidateSpec(id, spec);
                if (errors.Count == 0)
                {
                    try { catalog.Build(new Dictionary<string, ModelPricingOptions> { [id] = spec }); }
                    catch (OptionsValidationException e) { errors.AddRange(e.Failures); }
                }
                if (errors.Count == 0) usable[id] = spec;
                else LogSkipped(logger, id, string.Join(" ", errors));
            }
            return usable;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded {Count} price override(s) at version {Version}")]
    private static partial void LogLoaded(ILogger logger, int count, long version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Price override {ModelId} is not applied: {Errors}")]
    private static partial void LogSkipped(ILogger logger, string modelId, string errors);
}

/// <summary>Polls the override version so every process picks up admin price changes made by any of them.</summary>
internal sealed partial class PriceOverrideReloader(PriceOverrideService overrides, IOptions<PricingOptions> options, TimeProvider time,
    ILogger<PriceOverrideReloader> logger) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Infrastructure.PeriodicWork.RunAsync(TimeSpan.FromSeconds(options.Value.OverridesReloadSeconds), time,
            ct => overrides.ReloadAsync(force: false, ct), LogReloadFailed, stoppingToken);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reloading price overrides failed; the prices in force stay, retrying on the next tick")]
    private partial void LogReloadFailed(Exception e);
}
