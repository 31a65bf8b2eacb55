using System.Text.Json;
using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Pricing;

/// <summary>A price override made through the admin API, for model <see cref="ModelId"/> (<c>provider/model</c>).</summary>
public sealed record PriceOverride(string ModelId, ModelPricingOptions Spec, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt);

/// <summary>Every override and the version number they were read at.</summary>
public sealed record PriceOverrideSet(long Version, IReadOnlyList<PriceOverride> Overrides);

/// <summary>Admin-API price overrides (table <c>price_overrides</c>) and their change counter.</summary>
internal interface IPriceOverrideStore
{
    /// <summary>The change counter: moves on every upsert and delete, in the same transaction.</summary>
    Task<long> GetVersionAsync(CancellationToken ct);

    /// <summary>Every override, with the version read <b>before</b> them (so a concurrent change is noticed again later).</summary>
    Task<PriceOverrideSet> ListAsync(CancellationToken ct);

    /// <summary>Inserts or replaces the override of <paramref name="modelId"/>; returns the stored row.</summary>
    Task<PriceOverride> UpsertAsync(string modelId, ModelPricingOptions spec, CancellationToken ct);

    /// <summary>False if there was no override for <paramref name="modelId"/>.</summary>
    Task<bool> DeleteAsync(string modelId, CancellationToken ct);
}

/// <summary>Portable SQL for both engines.</summary>
internal sealed class PriceOverrideStore(Database db, TimeProvider time) : IPriceOverrideStore
{
    // Snake_case like the API; decimals are written as their exact text.
    private static readonly JsonSerializerOptions SpecJson = TollgateApp.ConfigureJson(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    private sealed record Row(string model_id, string spec, long created_at, long updated_at)
    {
        public PriceOverride ToOverride() => new(model_id, ParseSpec(spec), UnixMicros.ToDateTimeOffset(created_at), UnixMicros.ToDateTimeOffset(updated_at));
    }

    internal static string SerializeSpec(ModelPricingOptions spec) => JsonSerializer.Serialize(spec, SpecJson);

    internal static ModelPricingOptions ParseSpec(string spec) =>
        JsonSerializer.Deserialize<ModelPricingOptions>(spec, SpecJson) ?? throw new InvalidOperationException("A price override's spec is JSON null.");

    private const string BumpVersion = "UPDATE price_overrides_version SET version = version + 1 WHERE id = 1";

    public async Task<long> GetVersionAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT version FROM price_overrides_version WHERE id = 1", cancellationToken: ct));
    }

    public async Task<PriceOverrideSet> ListAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var version = await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT version FROM price_overrides_version WHERE id = 1", cancellationToken: ct));
        var rows = await c.QueryAsync<Row>(new CommandDefinition(
            "SELECT model_id, spec, created_at, updated_at FROM price_overrides ORDER BY model_id", cancellationToken: ct));
        return new PriceOverrideSet(version, rows.Select(r => r.ToOverride()).ToList());
    }

    public async Task<PriceOverride> UpsertAsync(string modelId, ModelPricingOptions spec, CancellationToken ct)
    {
        var now = time.GetUtcNowMicros();
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var row = await c.QuerySingleAsync<Row>(new CommandDefinition("""
            INSERT INTO price_overrides (model_id, spec, created_at, updated_at) VALUES (@modelId, @spec, @now, @now)
            ON CONFLICT (model_id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at
            RETURNING model_id, spec, created_at, updated_at
            """, new { modelId, spec = SerializeSpec(spec), now }, tx, cancellationToken: ct));
        await c.ExecuteAsync(new CommandDefinition(BumpVersion, transaction: tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return row.ToOverride();
    }

    public async Task<bool> DeleteAsync(string modelId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var deleted = await c.ExecuteAsync(new CommandDefinition("DELETE FROM price_overrides WHERE model_id = @modelId", new { modelId }, tx, cancellationToken: ct));
        if (deleted > 0) await c.ExecuteAsync(new CommandDefinition(BumpVersion, transaction: tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return deleted > 0;
    }
}
