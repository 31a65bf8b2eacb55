using System.Collections.Concurrent;
using System.Xml.Linq;
using Dapper;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.DataProtection.Repositories;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Byok;

/// <summary>A stored customer provider key, as it may be shown: never the key, only its last four characters.</summary>
public sealed record ProviderCredentialView(string Provider, string Last4, DateTimeOffset CreatedAt);

/// <summary>Configuration section <c>Tollgate:Byok</c>.</summary>
public sealed record ByokOptions
{
    public const string Section = "Tollgate:Byok";

    /// <summary>
    /// The platform fee on a bring-your-own-key call, in percent of what the call would cost at the provider's price
    /// (the customer pays the provider directly). Plans may set their own once plans exist.
    /// </summary>
    public decimal FeePercent { get; init; } = 5m;
}

/// <summary>
/// Customers' own provider keys: encrypted with ASP.NET Core Data Protection (purpose <c>tollgate.byok.v1</c>) before
/// they are stored, decrypted only to call the provider, cached in memory for <see cref="CacheTtl"/> (so a change or
/// removal takes effect on every process within that time).
/// </summary>
internal sealed class ProviderCredentialService(Database db, IDataProtectionProvider protection, TimeProvider time)
{
    public static readonly TimeSpan CacheTtl = TimeSpan.FromSeconds(1);
    public const int MaxKeyLength = 1_000;
    private const int MaxCacheEntries = 100_000;
    private readonly IDataProtector _protector = protection.CreateProtector("tollgate.byok.v1");
    private readonly SingleFlightCache<(string Account, string Provider), string?> _cache = new(CacheTtl, MaxCacheEntries);
    private readonly SingleFlightCache<string, IReadOnlySet<string>> _providers = new(CacheTtl, MaxCacheEntries);
    private static readonly IReadOnlySet<string> None = new HashSet<string>();

    private sealed record Row(string provider, string ciphertext, string last4, long created_at);

    public async Task<ProviderCredentialView> SetAsync(string accountId, string provider, string apiKey, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        var last4 = apiKey.Length <= 4 ? apiKey : apiKey[^4..];
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO provider_credentials (account_id, provider, ciphertext, last4, created_at) VALUES (@accountId, @provider, @ciphertext, @last4, @at)
            ON CONFLICT (account_id, provider) DO UPDATE SET ciphertext = excluded.ciphertext, last4 = excluded.last4, created_at = excluded.created_at
            """, new { accountId, provider, ciphertext = _protector.Protect(apiKey), last4, at = UnixMicros.From(now) }, cancellationToken: ct));
        _cache.Remove((accountId, provider));
        _providers.Remove(accountId);
        return new ProviderCredentialView(provider, last4, now);
    }

    public async Task<IReadOnlyList<ProviderCredentialView>> ListAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition(
            "SELECT provider, ciphertext, last4, created_at FROM provider_credentials WHERE account_id = @accountId ORDER BY provider",
            new { accountId }, cancellationToken: ct));
        return rows.Select(r => new ProviderCredentialView(r.provider, r.last4, UnixMicros.ToDateTimeOffset(r.created_at))).ToList();
    }

    public async Task<bool> DeleteAsync(string accountId, string provider, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var deleted = await c.ExecuteAsync(new CommandDefinition(
            "DELETE FROM provider_credentials WHERE account_id = @accountId AND provider = @provider", new { accountId, provider }, cancellationToken: ct));
        _cache.Remove((accountId, provider));
        _providers.Remove(accountId);
        return deleted == 1;
    }

    /// <summary>The providers the account has its own keys for (cached like the keys: one lookup per account per second on the gateway's path).</summary>
    public ValueTask<IReadOnlySet<string>> ProvidersAsync(string accountId, CancellationToken ct) =>
        _providers.GetAsync(accountId, time.GetUtcNow(), db, static async (accountId, db) =>
        {
            await using var c = await db.OpenAsync(CancellationToken.None);
            var names = (await c.QueryAsync<string>(new CommandDefinition(
                "SELECT provider FROM provider_credentials WHERE account_id = @accountId", new { accountId }))).ToHashSet(StringComparer.Ordinal);
            return names.Count == 0 ? None : names;
        }, ct);

    /// <summary>The account's own key for the provider (decrypted), or null.</summary>
    public ValueTask<string?> FindAsync(string accountId, string provider, CancellationToken ct) =>
        _cache.GetAsync((accountId, provider), time.GetUtcNow(), (Db: db, Protector: _protector), static async (k, s) =>
        {
            await using var c = await s.Db.OpenAsync(CancellationToken.None);
            var ciphertext = await c.QuerySingleOrDefaultAsync<string>(new CommandDefinition(
                "SELECT ciphertext FROM provider_credentials WHERE account_id = @accountId AND provider = @provider",
                new { accountId = k.Account, provider = k.Provider }));
            return ciphertext is null ? null : s.Protector.Unprotect(ciphertext);
        }, ct);
}

/// <summary>
/// Data Protection's key ring in the Tollgate database, so every process shares it and it survives restarts with the
/// data it protects. The keys are stored as Data Protection writes them (not encrypted again: whoever can read the
/// database can read the ring; put the database's own encryption at rest in place for that threat).
/// </summary>
internal sealed class DatabaseXmlRepository(Database db, TimeProvider time) : IXmlRepository
{
    public IReadOnlyCollection<XElement> GetAllElements()
    {
        using var c = db.OpenAsync(CancellationToken.None).GetAwaiter().GetResult();
        return c.Query<string>("SELECT xml FROM data_protection_keys ORDER BY created_at, name").Select(x => XElement.Parse(x)).ToList();
    }

    public void StoreElement(XElement element, string friendlyName)
    {
        using var c = db.OpenAsync(CancellationToken.None).GetAwaiter().GetResult();
        c.Execute("INSERT INTO data_protection_keys (name, xml, created_at) VALUES (@name, @xml, @at) ON CONFLICT (name) DO NOTHING",
            new { name = friendlyName, xml = element.ToString(SaveOptions.DisableFormatting), at = time.GetUtcNowMicros() });
    }

    public static void Register(IServiceCollection services)
    {
        services.AddDataProtection().SetApplicationName("tollgate");
        services.AddOptions<KeyManagementOptions>().Configure<Database, TimeProvider>((o, db, time) => o.XmlRepository = new DatabaseXmlRepository(db, time));
        services.AddOptions<ByokOptions>().BindConfiguration(ByokOptions.Section)
            .Validate(o => o.FeePercent is >= 0 and <= 100, "Tollgate:Byok:FeePercent must be 0–100.").ValidateOnStart();
        services.AddSingleton<ProviderCredentialService>();
    }
}
