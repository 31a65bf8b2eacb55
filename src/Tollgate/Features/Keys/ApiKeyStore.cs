using System.Data.Common;
using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Keys;

/// <summary>
/// One implementation serves both engines: the SQL is portable (parameters, bytea/blob both map to byte[]), and the
/// only engine difference, serialising the first admin key, is a unique singleton id.
/// </summary>
internal sealed class ApiKeyStore(Database db, TimeProvider time) : IApiKeyStore
{
    private long NowMicros => time.GetUtcNowMicros();

    private sealed record Row(string id, string account_id, string? name, string prefix, string type, long created_at, long? last_used_at, long? revoked_at)
    {
        public ApiKeyRecord ToRecord() => new(id, account_id, name, prefix, type, FromMicros(created_at),
            last_used_at is { } l ? FromMicros(l) : null, revoked_at is { } r ? FromMicros(r) : null);
    }

    internal static DateTimeOffset FromMicros(long micros) => UnixMicros.ToDateTimeOffset(micros);

    public async Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = new Row(Secrets.RandomId("key_"), accountId, name, prefix, type, NowMicros, null, null);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO api_keys (id, account_id, name, prefix, key_hash, type, created_at)
            VALUES (@id, @account_id, @name, @prefix, @hash, @type, @created_at)
            """, new { row.id, row.account_id, row.name, row.prefix, hash, row.type, row.created_at }, cancellationToken: ct));
        return row.ToRecord();
    }

    public async Task<ApiKeyRecord?> FindByHashAsync(byte[] hash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition("""
            SELECT id, account_id, name, prefix, type, created_at, last_used_at, revoked_at
            FROM api_keys WHERE key_hash = @hash AND revoked_at IS NULL
            """, new { hash }, cancellationToken: ct));
        return row?.ToRecord();
    }

    public async Task TouchLastUsedAsync(string keyId, DateTimeOffset usedAt, CancellationToken ct)
    {
        var at = UnixMicros.From(usedAt);
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition(
            "UPDATE api_keys SET last_used_at = @at WHERE id = @keyId AND (last_used_at IS NULL OR last_used_at < @at)",
            new { keyId, at }, cancellationToken: ct));
    }

    public async Task<bool> RevokeAsync(string accountId, string keyId, DateTimeOffset at, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteAsync(new CommandDefinition(
            "UPDATE api_keys SET revoked_at = @at WHERE id = @keyId AND account_id = @accountId AND revoked_at IS NULL",
            new { keyId, accountId, at = UnixMicros.From(at) }, cancellationToken: ct)) == 1;
    }

    public async Task<IReadOnlyList<byte[]>> GetAdminKeyHashesAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<byte[]>(new CommandDefinition("SELECT key_hash FROM admin_keys", cancellationToken: ct))).ToList();
    }

    public async Task<bool> TryCreateFirstAdminKeyAsync(byte[] hash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // The fixed id makes the first key a singleton: a second process's insert hits the primary key and does nothing.
        var inserted = await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO admin_keys (id, key_hash, created_at) VALUES ('admin_initial', @hash, @now) ON CONFLICT (id) DO NOTHING",
            new { hash, now = NowMicros }, cancellationToken: ct));
        return inserted == 1;
    }
}
