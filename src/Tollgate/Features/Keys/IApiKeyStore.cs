namespace Tollgate.Features.Keys;

public sealed record ApiKeyRecord(string Id, string AccountId, string? Name, string Prefix, string Type, DateTimeOffset CreatedAt, DateTimeOffset? LastUsedAt, DateTimeOffset? RevokedAt)
{
    public KeySettings Settings { get; init; } = KeySettings.None;
    /// <summary>The key this one replaced by rotation, if any.</summary>
    public string? RotatedFrom { get; init; }
    /// <summary>The first key of this key's rotation chain (its own id if never rotated): key spend caps belong to it.</summary>
    public string? LineageId { get; init; }
}

/// <summary>An operator (admin) key as stored: its SHA-256 only.</summary>
public sealed record AdminKeyRecord(string Id, byte[] Hash, DateTimeOffset CreatedAt);

/// <summary>API keys (hashes only) and the operator's admin keys.</summary>
internal interface IApiKeyStore
{
    Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, CancellationToken ct) =>
        CreateAsync(accountId, name, prefix, hash, type, KeySettings.None, null, ct);

    /// <summary>Stores a new key; with <paramref name="replaces"/>, revokes that key of the account in the same transaction (rotation).</summary>
    Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, KeySettings settings, string? replaces, CancellationToken ct);

    /// <summary>The account's keys, newest first, revoked ones included.</summary>
    Task<IReadOnlyList<ApiKeyRecord>> ListAsync(string accountId, CancellationToken ct);

    /// <summary>The account's key with this id (revoked or not), or null.</summary>
    Task<ApiKeyRecord?> GetAsync(string accountId, string keyId, CancellationToken ct);

    /// <summary>The live (not revoked) key with this hash, or null.</summary>
    Task<ApiKeyRecord?> FindByHashAsync(byte[] hash, CancellationToken ct);

    /// <summary>Sets <c>last_used_at</c> (only moves it forward).</summary>
    Task TouchLastUsedAsync(string keyId, DateTimeOffset usedAt, CancellationToken ct);

    /// <summary>Revokes the account's key; false if it has no live key with this id.</summary>
    Task<bool> RevokeAsync(string accountId, string keyId, DateTimeOffset at, CancellationToken ct);

    Task<IReadOnlyList<byte[]>> GetAdminKeyHashesAsync(CancellationToken ct);

    /// <summary>The stored admin keys (hashes only), oldest first.</summary>
    Task<IReadOnlyList<AdminKeyRecord>> ListAdminKeysAsync(CancellationToken ct);

    /// <summary>Stores another admin key.</summary>
    Task<AdminKeyRecord> CreateAdminKeyAsync(byte[] hash, CancellationToken ct);

    /// <summary>
    /// Deletes a stored admin key; false if there is none with this id, or if it is the last one and
    /// <paramref name="keepLast"/> (the operator would be locked out).
    /// </summary>
    Task<(bool Found, bool Deleted)> DeleteAdminKeyAsync(string id, bool keepLast, CancellationToken ct);

    /// <summary>Stores the first admin key; false if one already exists (another process won the race).</summary>
    Task<bool> TryCreateFirstAdminKeyAsync(byte[] hash, CancellationToken ct);
}
