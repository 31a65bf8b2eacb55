namespace Tollgate.Features.Keys;

public sealed record ApiKeyRecord(string Id, string AccountId, string? Name, string Prefix, string Type, DateTimeOffset CreatedAt, DateTimeOffset? LastUsedAt, DateTimeOffset? RevokedAt);

/// <summary>API keys (hashes only) and the operator's admin keys.</summary>
internal interface IApiKeyStore
{
    Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, CancellationToken ct);

    /// <summary>The live (not revoked) key with this hash, or null.</summary>
    Task<ApiKeyRecord?> FindByHashAsync(byte[] hash, CancellationToken ct);

    /// <summary>Sets <c>last_used_at</c> (only moves it forward).</summary>
    Task TouchLastUsedAsync(string keyId, DateTimeOffset usedAt, CancellationToken ct);

    /// <summary>Revokes the account's key; false if it has no live key with this id.</summary>
    Task<bool> RevokeAsync(string accountId, string keyId, DateTimeOffset at, CancellationToken ct);

    Task<IReadOnlyList<byte[]>> GetAdminKeyHashesAsync(CancellationToken ct);

    /// <summary>Stores the first admin key; false if one already exists (another process won the race).</summary>
    Task<bool> TryCreateFirstAdminKeyAsync(byte[] hash, CancellationToken ct);
}
