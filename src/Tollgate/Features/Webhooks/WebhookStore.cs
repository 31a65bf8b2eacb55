using System.Data.Common;
using System.Text.Json;
using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Webhooks;

/// <summary>An endpoint as stored (the secret only as ciphertext, never shown).</summary>
public sealed record WebhookEndpoint(
    string Id, string AccountId, string Url, string? Description, IReadOnlyList<string> Events, bool Enabled, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt)
{
    /// <summary>Until when the secret replaced by the last rotation still signs deliveries (null: it does not).</summary>
    public DateTimeOffset? PreviousSecretExpiresAt { get; init; }
}

/// <summary>One event of the outbox as listed: its type, when, and its payload's <c>data</c>.</summary>
public sealed record WebhookEvent(string Id, string AccountId, string Type, DateTimeOffset CreatedAt, string Payload);

public sealed record WebhookAttempt(string Id, string Kind, DateTimeOffset AttemptedAt, int? StatusCode, string? Error, long DurationMs, DateTimeOffset? NextAttemptAt);

public sealed record WebhookDelivery(
    string Id, string EventId, string EventType, string EndpointId, string AccountId, string Status, int Attempts, DateTimeOffset? NextAttemptAt,
    int? LastStatusCode, string? LastError, DateTimeOffset CreatedAt, DateTimeOffset UpdatedAt, IReadOnlyList<WebhookAttempt> AttemptLog);

/// <summary>A delivery claimed by this process until <see cref="LeaseUntil"/> (Unix µs).</summary>
internal sealed record ClaimedDelivery(string Id, int Attempts, long LeaseUntil);

/// <summary>
/// What one attempt sends: the stored body, the endpoint's URL and encrypted secret, and the previous secret while a
/// rotation's overlap lasts (it signs too until <see cref="PreviousSecretExpiresAt"/>).
/// </summary>
internal sealed record DeliveryTarget(string DeliveryId, string AccountId, string EventId, string EventType, string Payload, string Url,
    string SecretCiphertext, bool EndpointUsable, string Status, int Attempts)
{
    public string? PreviousSecretCiphertext { get; init; }
    public DateTimeOffset? PreviousSecretExpiresAt { get; init; }
}

/// <summary>
/// The outbox and its deliveries. <see cref="AppendAsync"/> writes an event and one pending delivery per matching
/// endpoint inside the caller's transaction. The dispatcher claims due deliveries by setting a lease
/// (<c>FOR UPDATE SKIP LOCKED</c> on PostgreSQL, so processes never wait on each other; SQLite has one writer), sends,
/// and records the attempt; a lease that runs out (the process died) makes the delivery claimable again.
/// </summary>
internal sealed class WebhookStore(Database db)
{
    public const string Pending = "pending", Succeeded = "succeeded", Failed = "failed";
    public const string Scheduled = "scheduled", Replay = "replay";

    private sealed record EndpointRow(string id, string account_id, string url, string? description, string events, long enabled, long created_at, long updated_at,
        long? previous_secret_expires_at);
    private sealed record EventRow(string id, string account_id, string type, long created_at, string payload);
    private sealed record DeliveryRow(string id, string event_id, string type, string endpoint_id, string account_id, string status, long attempts,
        long? next_attempt_at, long? last_status_code, string? last_error, long created_at, long updated_at);
    private sealed record AttemptRow(string id, string delivery_id, string kind, long attempted_at, long? status_code, string? error, long duration_ms, long? next_attempt_at);
    private sealed record TargetRow(string id, string account_id, string event_id, string type, string payload, string url, string secret_ciphertext,
        long enabled, long? deleted_at, string status, long attempts, string? previous_secret_ciphertext, long? previous_secret_expires_at);

    private static WebhookEndpoint Map(EndpointRow r) => new(r.id, r.account_id, r.url, r.description,
        JsonSerializer.Deserialize<string[]>(r.events) ?? [], r.enabled != 0, UnixMicros.ToDateTimeOffset(r.created_at), UnixMicros.ToDateTimeOffset(r.updated_at))
    {
        PreviousSecretExpiresAt = r.previous_secret_expires_at is { } e ? UnixMicros.ToDateTimeOffset(e) : null,
    };

    private const string EndpointColumns = "id, account_id, url, description, events, enabled, created_at, updated_at, previous_secret_expires_at";

    public async Task<WebhookEndpoint> CreateAsync(string accountId, string url, IReadOnlyList<string> events, string? description, string secretCiphertext,
        DateTimeOffset now, CancellationToken ct)
    {
        var id = "we_" + Guid.CreateVersion7().ToString("N");
        var at = UnixMicros.From(now);
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO webhook_endpoints (id, account_id, url, description, events, secret_ciphertext, enabled, created_at, updated_at)
            VALUES (@id, @accountId, @url, @description, @events, @secretCiphertext, 1, @at, @at)
            """, new { id, accountId, url, description, events = JsonSerializer.Serialize(events), secretCiphertext, at }, cancellationToken: ct));
        return new WebhookEndpoint(id, accountId, url, description, events, true, UnixMicros.ToDateTimeOffset(at), UnixMicros.ToDateTimeOffset(at));
    }

    public async Task<IReadOnlyList<WebhookEndpoint>> ListAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<EndpointRow>(new CommandDefinition(
            $"SELECT {EndpointColumns} FROM webhook_endpoints WHERE account_id = @accountId AND deleted_at IS NULL ORDER BY id",
            new { accountId }, cancellationToken: ct));
        return rows.Select(Map).ToList();
    }

    public async Task<WebhookEndpoint?> GetAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<EndpointRow>(new CommandDefinition(
            $"SELECT {EndpointColumns} FROM webhook_endpoints WHERE id = @id AND account_id = @accountId AND deleted_at IS NULL",
            new { id, accountId }, cancellationToken: ct));
        return row is null ? null : Map(row);
    }

    /// <summary>Changes the given fields (null: unchanged; an empty description clears it); null if there is no such endpoint.</summary>
    public async Task<WebhookEndpoint?> UpdateAsync(string accountId, string id, string? url, IReadOnlyList<string>? events, string? description, bool? enabled,
        DateTimeOffset now, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var changed = await c.ExecuteAsync(new CommandDefinition("""
            UPDATE webhook_endpoints SET
                url = COALESCE(@url, url),
                events = COALESCE(@events, events),
                description = CASE WHEN @description IS NULL THEN description WHEN @description = '' THEN NULL ELSE @description END,
                enabled = COALESCE(@enabled, enabled),
                updated_at = @at
            WHERE id = @id AND account_id = @accountId AND deleted_at IS NULL
            """, new
        {
            id, accountId, url, events = events is null ? null : JsonSerializer.Serialize(events), description,
            enabled = enabled is null ? (long?)null : enabled.Value ? 1 : 0, at = UnixMicros.From(now),
        }, cancellationToken: ct));
        return changed == 0 ? null : await GetAsync(accountId, id, ct);
    }

    /// <summary>
    /// Replaces the signing secret. With <paramref name="previousUntil"/> the secret being replaced keeps signing until
    /// then (a rotation during an overlap replaces the older previous secret); without it, it stops at once.
    /// </summary>
    public async Task<bool> SetSecretAsync(string accountId, string id, string secretCiphertext, DateTimeOffset now, DateTimeOffset? previousUntil, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        // The right-hand sides read the row as it was, on both engines: the old secret moves to previous_secret_ciphertext.
        return await c.ExecuteAsync(new CommandDefinition("""
            UPDATE webhook_endpoints SET
                previous_secret_ciphertext = CASE WHEN @until IS NULL THEN NULL ELSE secret_ciphertext END,
                previous_secret_expires_at = @until,
                secret_ciphertext = @secretCiphertext, updated_at = @at
            WHERE id = @id AND account_id = @accountId AND deleted_at IS NULL
            """, new { id, accountId, secretCiphertext, at = UnixMicros.From(now), until = previousUntil is { } u ? UnixMicros.From(u) : (long?)null },
            cancellationToken: ct)) == 1;
    }

    /// <summary>Soft delete: the endpoint stops receiving, its delivery log stays; pending deliveries to it are failed when claimed.</summary>
    public async Task<bool> DeleteAsync(string accountId, string id, DateTimeOffset now, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteAsync(new CommandDefinition(
            "UPDATE webhook_endpoints SET deleted_at = @at, updated_at = @at WHERE id = @id AND account_id = @accountId AND deleted_at IS NULL",
            new { id, accountId, at = UnixMicros.From(now) }, cancellationToken: ct)) == 1;
    }

    /// <summary>Whether an endpoint subscribed to <paramref name="patterns"/> receives events of <paramref name="type"/>.</summary>
    public static bool Matches(IEnumerable<string> patterns, string type) => patterns.Any(p =>
        p == "*" || p == type || (p.EndsWith(".*", StringComparison.Ordinal) && type.StartsWith(p[..^1], StringComparison.Ordinal)));

    /// <summary>
    /// Writes an event with its JSON body (<c>{"id","type","created","account_id","data"}</c>) and a pending delivery to
    /// every enabled endpoint of the account subscribed to its type, inside <paramref name="tx"/>. Returns the event id.
    /// </summary>
    public static async Task<string> AppendAsync(DbConnection c, DbTransaction tx, string accountId, string type, IReadOnlyDictionary<string, object?> data,
        DateTimeOffset now, CancellationToken ct)
    {
        var id = "evt_" + Guid.CreateVersion7().ToString("N");
        var at = UnixMicros.From(now);
        var payload = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["id"] = id, ["type"] = type, ["created"] = now.ToUnixTimeSeconds(), ["account_id"] = accountId, ["data"] = data,
        }, TollgateApp.Json);
        await c.ExecuteAsync(new CommandDefinition(
            "INSERT INTO webhook_events (id, account_id, type, created_at, payload) VALUES (@id, @accountId, @type, @at, @payload)",
            new { id, accountId, type, at, payload }, tx, cancellationToken: ct));
        var endpoints = await c.QueryAsync<(string Id, string Events)>(new CommandDefinition(
            "SELECT id, events FROM webhook_endpoints WHERE account_id = @accountId AND deleted_at IS NULL AND enabled = 1",
            new { accountId }, tx, cancellationToken: ct));
        foreach (var e in endpoints)
        {
            if (!Matches(JsonSerializer.Deserialize<string[]>(e.Events) ?? [], type)) continue;
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO webhook_deliveries (id, event_id, endpoint_id, account_id, status, attempts, next_attempt_at, created_at, updated_at)
                VALUES (@deliveryId, @id, @endpointId, @accountId, 'pending', 0, @at, @at, @at)
                """, new { deliveryId = "whd_" + Guid.CreateVersion7().ToString("N"), id, endpointId = e.Id, accountId, at }, tx, cancellationToken: ct));
        }
        return id;
    }

    /// <summary>The account's events, newest first, <paramref name="limit"/> at a time, before the event id <paramref name="before"/>.</summary>
    public async Task<IReadOnlyList<WebhookEvent>> ListEventsAsync(string accountId, string? type, string? before, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<EventRow>(new CommandDefinition("""
            SELECT id, account_id, type, created_at, payload FROM webhook_events
            WHERE account_id = @accountId AND (@before IS NULL OR id < @before) AND (@type IS NULL OR type = @type)
            ORDER BY id DESC LIMIT @limit
            """, new { accountId, before, type, limit }, cancellationToken: ct));
        return rows.Select(r => new WebhookEvent(r.id, r.account_id, r.type, UnixMicros.ToDateTimeOffset(r.created_at), r.payload)).ToList();
    }

    /// <summary>Claims up to <paramref name="batch"/> due deliveries for this process until <paramref name="leaseUntil"/>.</summary>
    public async Task<IReadOnlyList<ClaimedDelivery>> ClaimAsync(DateTimeOffset now, DateTimeOffset leaseUntil, int batch, CancellationToken ct)
    {
        var sql = db.Engine == DatabaseEngine.Postgres
            ? """
              UPDATE webhook_deliveries d SET lease_until = @lease
              FROM (SELECT id FROM webhook_deliveries
                    WHERE status = 'pending' AND next_attempt_at <= @now AND (lease_until IS NULL OR lease_until < @now)
                    ORDER BY next_attempt_at LIMIT @batch FOR UPDATE SKIP LOCKED) due
              WHERE d.id = due.id
              RETURNING d.id, d.attempts
              """
            : """
              UPDATE webhook_deliveries SET lease_until = @lease
              WHERE id IN (SELECT id FROM webhook_deliveries
                           WHERE status = 'pending' AND next_attempt_at <= @now AND (lease_until IS NULL OR lease_until < @now)
                           ORDER BY next_attempt_at LIMIT @batch)
              RETURNING id, attempts
              """;
        var lease = UnixMicros.From(leaseUntil);
        await using var c = await db.OpenAsync(ct);
        // Most rounds find nothing: a read first, so an idle poll never takes SQLite's write lock or PostgreSQL row locks.
        var due = await c.ExecuteScalarAsync<long?>(new CommandDefinition("""
            SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= @now AND (lease_until IS NULL OR lease_until < @now) LIMIT 1
            """, new { now = UnixMicros.From(now) }, cancellationToken: ct));
        if (due is null) return [];
        var rows = await c.QueryAsync<(string Id, long Attempts)>(new CommandDefinition(sql, new { now = UnixMicros.From(now), lease, batch }, cancellationToken: ct));
        return rows.Select(r => new ClaimedDelivery(r.Id, (int)r.Attempts, lease)).ToList();
    }

    /// <summary>What to send for a delivery of the account (null account: any, for the dispatcher); null if none.</summary>
    public async Task<DeliveryTarget?> TargetAsync(string deliveryId, string? accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var r = await c.QuerySingleOrDefaultAsync<TargetRow>(new CommandDefinition("""
            SELECT d.id, d.account_id, d.event_id, e.type, e.payload, w.url, w.secret_ciphertext, w.enabled, w.deleted_at, d.status, d.attempts,
                   w.previous_secret_ciphertext, w.previous_secret_expires_at
            FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id JOIN webhook_endpoints w ON w.id = d.endpoint_id
            WHERE d.id = @deliveryId AND (@accountId IS NULL OR d.account_id = @accountId)
            """, new { deliveryId, accountId }, cancellationToken: ct));
        return r is null ? null : new DeliveryTarget(r.id, r.account_id, r.event_id, r.type, r.payload, r.url, r.secret_ciphertext,
            r.enabled != 0 && r.deleted_at is null, r.status, (int)r.attempts)
        {
            PreviousSecretCiphertext = r.previous_secret_ciphertext,
            PreviousSecretExpiresAt = r.previous_secret_expires_at is { } e ? UnixMicros.ToDateTimeOffset(e) : null,
        };
    }

    /// <summary>
    /// Records one attempt and moves the delivery on: <paramref name="status"/>, the attempt count (scheduled attempts
    /// only; a replay is extra), the next attempt, and the lease released. A scheduled attempt whose lease was taken
    /// over meanwhile (it ran past the lease) leaves the delivery to the new holder but is still logged.
    /// </summary>
    public async Task<WebhookAttempt> RecordAttemptAsync(string deliveryId, string kind, long? leaseUntil, DateTimeOffset at, int? statusCode, string? error,
        long durationMs, string status, DateTimeOffset? nextAttemptAt, CancellationToken ct)
    {
        var attemptId = "wha_" + Guid.CreateVersion7().ToString("N");
        var now = UnixMicros.From(at);
        long? next = nextAttemptAt is { } n ? UnixMicros.From(n) : null;
        await using var c = await db.OpenAsync(ct);
        await using var tx = await c.BeginTransactionAsync(ct);
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO webhook_attempts (id, delivery_id, kind, attempted_at, status_code, error, duration_ms, next_attempt_at)
            VALUES (@attemptId, @deliveryId, @kind, @now, @statusCode, @error, @durationMs, @next)
            """, new { attemptId, deliveryId, kind, now, statusCode = (long?)statusCode, error, durationMs, next }, tx, cancellationToken: ct));
        if (kind == Scheduled)
            await c.ExecuteAsync(new CommandDefinition("""
                UPDATE webhook_deliveries SET status = @status, attempts = attempts + 1, next_attempt_at = @next, lease_until = NULL,
                    last_status_code = @statusCode, last_error = @error, updated_at = @now
                WHERE id = @deliveryId AND lease_until = @leaseUntil
                """, new { deliveryId, status, next, statusCode = (long?)statusCode, error, now, leaseUntil }, tx, cancellationToken: ct));
        else
            // A replay that got through settles the delivery; one that failed changes nothing of its schedule.
            await c.ExecuteAsync(new CommandDefinition("""
                UPDATE webhook_deliveries SET last_status_code = @statusCode, last_error = @error, updated_at = @now,
                    status = CASE WHEN @succeeded = 1 THEN 'succeeded' ELSE status END,
                    next_attempt_at = CASE WHEN @succeeded = 1 THEN NULL ELSE next_attempt_at END
                WHERE id = @deliveryId
                """, new { deliveryId, statusCode = (long?)statusCode, error, now, succeeded = status == Succeeded ? 1 : 0 }, tx, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return new WebhookAttempt(attemptId, kind, UnixMicros.ToDateTimeOffset(now), statusCode, error, durationMs, nextAttemptAt);
    }

    /// <summary>An endpoint's deliveries, newest first, each with its attempts (oldest first).</summary>
    public async Task<IReadOnlyList<WebhookDelivery>> ListDeliveriesAsync(string accountId, string endpointId, string? before, int limit, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var rows = (await c.QueryAsync<DeliveryRow>(new CommandDefinition("""
            SELECT d.id, d.event_id, e.type, d.endpoint_id, d.account_id, d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error,
                   d.created_at, d.updated_at
            FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
            WHERE d.account_id = @accountId AND d.endpoint_id = @endpointId AND (@before IS NULL OR d.id < @before)
            ORDER BY d.id DESC LIMIT @limit
            """, new { accountId, endpointId, before, limit }, cancellationToken: ct))).ToList();
        if (rows.Count == 0) return [];
        var ids = rows.Select(r => r.id).ToArray();
        var attempts = new List<AttemptRow>();
        // One query per page; the IN list is bounded by the page size.
        var parameters = new DynamicParameters();
        var names = new List<string>();
        for (var i = 0; i < ids.Length; i++) { names.Add("@d" + i); parameters.Add("d" + i, ids[i]); }
        attempts.AddRange(await c.QueryAsync<AttemptRow>(new CommandDefinition(
            $"SELECT id, delivery_id, kind, attempted_at, status_code, error, duration_ms, next_attempt_at FROM webhook_attempts WHERE delivery_id IN ({string.Join(", ", names)}) ORDER BY id",
            parameters, cancellationToken: ct)));
        var byDelivery = attempts.ToLookup(a => a.delivery_id);
        return rows.Select(r => new WebhookDelivery(r.id, r.event_id, r.type, r.endpoint_id, r.account_id, r.status, (int)r.attempts,
            r.next_attempt_at is { } n ? UnixMicros.ToDateTimeOffset(n) : null, (int?)r.last_status_code, r.last_error,
            UnixMicros.ToDateTimeOffset(r.created_at), UnixMicros.ToDateTimeOffset(r.updated_at),
            byDelivery[r.id].Select(a => new WebhookAttempt(a.id, a.kind, UnixMicros.ToDateTimeOffset(a.attempted_at), (int?)a.status_code, a.error, a.duration_ms,
                a.next_attempt_at is { } x ? UnixMicros.ToDateTimeOffset(x) : null)).ToList())).ToList();
    }

    /// <summary>Whether the endpoint exists for the account (deleted ones too: their delivery log stays readable).</summary>
    public async Task<bool> EndpointExistsAsync(string accountId, string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE id = @id AND account_id = @accountId", new { id, accountId }, cancellationToken: ct)) > 0;
    }
}
