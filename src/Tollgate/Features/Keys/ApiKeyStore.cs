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

    private const string Columns = """
        id, account_id, name, prefix, type, created_at, last_used_at, revoked_at, allowed_models, expires_at,
        requests_per_minute, tokens_per_minute, concurrent_requests, metadata, rotated_from, customer_id, lineage_id
        """;

    private sealed record Row(string id, string account_id, string? name, string prefix, string type, long created_at, long? last_used_at, long? revoked_at,
        string? allowed_models, long? expires_at, long? requests_per_minute, long? tokens_per_minute, long? concurrent_requests, string? metadata,
        string? rotated_from, string? customer_id, string? lineage_id)
    {
        public ApiKeyRecord ToRecord()
        {
            var settings = allowed_models is null && expires_at is null && requests_per_minute is null && tokens_per_minute is null
                           && concurrent_requests is null && metadata is null && customer_id is null
                ? KeySettings.None
                : new KeySettings
                {
                    AllowedModels = KeySettings.ParseModels(allowed_models), ExpiresAt = expires_at is { } e ? FromMicros(e) : null,
                    RequestsPerMinute = (int?)requests_per_minute, TokensPerMinute = tokens_per_minute, ConcurrentRequests = (int?)concurrent_requests,
                    Metadata = metadata, CustomerId = customer_id,
                };
            return new(id, account_id, name, prefix, type, FromMicros(created_at), last_used_at is { } l ? FromMicros(l) : null,
                revoked_at is { } r ? FromMicros(r) : null) { Settings = settings, RotatedFrom = rotated_from, LineageId = lineage_id ?? id };
        }
    }

    internal static DateTimeOffset FromMicros(long micros) => UnixMicros.ToDateTimeOffset(micros);

    public async Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, KeySettings settings,
        string? replaces, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        var now = NowMicros;
        var id = Secrets.RandomId("key_");
        // A rotated key inherits its predecessor's lineage, so caps and what was spent under them carry over.
        var lineage = replaces is null ? id : await c.ExecuteScalarAsync<string?>(new CommandDefinition(
            "SELECT COALESCE(lineage_id, id) FROM api_keys WHERE id = @replaces AND account_id = @accountId", new { replaces, accountId }, tx, cancellationToken: ct)) ?? id;
        var row = new Row(id, accountId, name, prefix, type, now, null, null, KeySettings.ModelsJson(settings.AllowedModels),
            settings.ExpiresAt is { } e ? UnixMicros.From(e) : null, settings.RequestsPerMinute, settings.TokensPerMinute, settings.ConcurrentRequests,
            settings.Metadata, replaces, settings.CustomerId, lineage);
        if (replaces is not null)
        {
            var revoked = await c.ExecuteAsync(new CommandDefinition(
                "UPDATE api_keys SET revoked_at = @now WHERE id = @replaces AND account_id = @accountId AND revoked_at IS NULL",
                new { now, replaces, accountId }, tx, cancellationToken: ct));
            if (revoked != 1) throw new InvalidOperationException($"No live key {replaces} of {accountId} to rotate.");
        }
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO api_keys (id, account_id, name, prefix, key_hash, type, created_at, allowed_models, expires_at, requests_per_minute,
                tokens_per_minute, concurrent_requests, metadata, rotated_from, customer_id, lineage_id)
            VALUES (@id, @account_id, @name, @prefix, @hash, @type, @created_at, @allowed_models, @expires_at, @requests_per_minute,
                @tokens_per_minute, @concurrent_requests, @metadata, @rotated_from, @customer_id, @lineage_id)
            """, new
        {
            row.id, row.account_id, row.name, row.prefix, hash, row.type, row.created_at, row.allowed_models, row.expires_at, row.requests_per_minute,
            row.tokens_per_minute, row.concurrent_requests, row.metadata, row.rotated_from, row.customer_id, row.lineage_id,
        }, tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return row.ToRecord();
    }

    public async Task<ApiKeyRecord?> FindByHashAsync(byte[] hash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM api_keys WHERE key_hash = @hash AND revoked_at IS NULL", new { hash }, cancellationToken: ct));
        return row?.ToRecord();
    }

    public async Task<IReadOnlyList<ApiKeyRecord>> ListAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM api_keys WHERE account_id = @accountId ORDER BY created_at DESC, id DESC", new { accountId }, cancellationToken: ct));
        return rows.Select(r => r.ToRecord()).ToList();
    }

    public async Task<ApiKeyRecord?> GetAsync(string accountId, string keyId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM api_keys WHERE account_id = @accountId AND id = @keyId", new { accountId, keyId }, cancellationToken: ct));
        return row?.ToRecord();
    }

    /// <remarks>
    /// On SQLite this takes the process's write gate like the ledger does (<see cref="Database.WriteAsync"/>).
    /// Without it, the once-a-minute touch met the ledger's back-to-back batches in SQLite's busy handler, which sleeps
    /// (up to 100 ms a time) instead of waking when the lock is free: at 1,000 calls/s it waited about a second, and
    /// every call of that key waited with it (the touch is part of the key's single-flight load). Measured in the
    /// gateway benchmark: one stall of 1.05–1.1 s a minute, found with dotnet-trace (docs/BENCHMARKS.md, "Session 10").
    /// </remarks>
    public async Task TouchLastUsedAsync(string keyId, DateTimeOffset usedAt, CancellationToken ct)
    {
        var at = UnixMicros.From(usedAt);
        await db.WriteAsync(c => c.ExecuteAsync(new CommandDefinition(
            "UPDATE api_keys SET last_used_at = @at WHERE id = @keyId AND (last_used_at IS NULL OR last_used_at < @at)",
            new { keyId, at }, cancellationToken: ct)), ct);
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

    public async Task<IReadOnlyList<AdminKeyRecord>> ListAdminKeysAsync(CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<(string id, byte[] key_hash, long created_at)>(new CommandDefinition(
            "SELECT id, key_hash, created_at FROM admin_keys ORDER BY created_at, id", cancellationToken: ct));
        return rows.Select(r => new AdminKeyRecord(r.id, r.key_hash, FromMicros(r.created_at))).ToList();
    }

    public async Task<AdminKeyRecord> CreateAdminKeyAsync(byte[] hash, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var record = new AdminKeyRecord(Secrets.RandomId("admkey_"), hash, FromMicros(NowMicros));
        await c.ExecuteAsync(new CommandDefinition("INSERT INTO admin_keys (id, key_hash, created_at) VALUES (@id, @hash, @now)",
            new { id = record.Id, hash, now = UnixMicros.From(record.CreatedAt) }, cancellationToken: ct));
        return record;
    }

    public async Task<(bool Found, bool Deleted)> DeleteAdminKeyAsync(string id, bool keepLast, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // One statement, so two concurrent deletions cannot both pass the "another key remains" test.
        var deleted = await c.ExecuteAsync(new CommandDefinition(keepLast
            ? "DELETE FROM admin_keys WHERE id = @id AND EXISTS (SELECT 1 FROM admin_keys other WHERE other.id <> @id)"
            : "DELETE FROM admin_keys WHERE id = @id", new { id }, cancellationToken: ct));
        if (deleted == 1) return (true, true);
        var exists = await c.ExecuteScalarAsync<long>(new CommandDefinition("SELECT count(*) FROM admin_keys WHERE id = @id", new { id }, cancellationToken: ct));
        return (exists > 0, false);
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
