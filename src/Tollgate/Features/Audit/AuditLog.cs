using System.Threading.Channels;
using Dapper;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Audit;

/// <summary>
/// One audited change. <see cref="ActorType"/> is <c>admin</c> (an admin key: <see cref="ActorId"/> is a fingerprint of
/// its hash), <c>key</c> (an account API key id) or <c>member</c> (a dashboard session's user id). <see cref="Action"/>
/// is the method and route template (<c>DELETE /api/v1/keys/{keyId}</c>); the target is the resource its last route
/// parameter names, or the created resource. Before/after are JSON with every secret removed; null when not known.
/// </summary>
public sealed record AuditEntry(
    string Id, DateTimeOffset At, string ActorType, string ActorId, string? AccountId, string Action, string? TargetType, string? TargetId,
    int Status, string? BeforeJson, string? AfterJson, string RequestId, string? SourceIp)
{
    /// <summary>The row's position in the log (assigned on insert; the pagination cursor).</summary>
    public long Seq { get; init; }
}

/// <summary>Filters of the audit query API; all optional. <see cref="Before"/> is a cursor: only rows older than it.</summary>
public sealed record AuditQuery(string? AccountId, string? Actor, string? Action, string? TargetType, string? TargetId,
    DateTimeOffset? From, DateTimeOffset? To, long? Before, int Limit);

/// <summary>The audit_log table: insert and query only (there is deliberately no update or delete).</summary>
internal sealed class AuditStore(Database db)
{
    private sealed record Row(long seq, string id, long at, string actor_type, string actor_id, string? account_id, string action,
        string? target_type, string? target_id, long status, string? before_json, string? after_json, string request_id, string? source_ip);

    private const string Columns = "id, at, actor_type, actor_id, account_id, action, target_type, target_id, status, before_json, after_json, request_id, source_ip";

    public async Task AppendAsync(IReadOnlyList<AuditEntry> entries, CancellationToken ct)
    {
        var gate = db.Engine == DatabaseEngine.Sqlite ? db.SqliteWriteGate : null;
        if (gate is not null) await gate.WaitAsync(ct);
        try
        {
            await using var c = await db.OpenAsync(ct);
            await using var tx = await c.BeginTransactionAsync(ct);
            foreach (var e in entries)
                await c.ExecuteAsync(new CommandDefinition($"""
                    INSERT INTO audit_log ({Columns}) VALUES (@Id, @at, @ActorType, @ActorId, @AccountId, @Action, @TargetType, @TargetId,
                        @status, @BeforeJson, @AfterJson, @RequestId, @SourceIp)
                    """, new
                {
                    e.Id, at = UnixMicros.From(e.At), e.ActorType, e.ActorId, e.AccountId, e.Action, e.TargetType, e.TargetId, status = e.Status,
                    e.BeforeJson, e.AfterJson, e.RequestId, e.SourceIp,
                }, tx, cancellationToken: ct));
            await tx.CommitAsync(ct);
        }
        finally
        {
            gate?.Release();
        }
    }

    /// <summary>Newest first; at most <see cref="AuditQuery.Limit"/> rows.</summary>
    public async Task<IReadOnlyList<AuditEntry>> QueryAsync(AuditQuery q, CancellationToken ct)
    {
        var where = new List<string>();
        var p = new DynamicParameters();
        void Add(string clause, string name, object? value) { where.Add(clause); p.Add(name, value); }
        if (q.AccountId is not null) Add("account_id = @account", "account", q.AccountId);
        if (q.Actor is not null) Add("actor_id = @actor", "actor", q.Actor);
        if (q.Action is not null) Add("action = @action", "action", q.Action);
        if (q.TargetType is not null) Add("target_type = @targetType", "targetType", q.TargetType);
        if (q.TargetId is not null) Add("target_id = @targetId", "targetId", q.TargetId);
        if (q.From is { } from) Add("at >= @from", "from", UnixMicros.From(from));
        if (q.To is { } to) Add("at < @to", "to", UnixMicros.From(to));
        if (q.Before is { } before) Add("seq < @before", "before", before);
        p.Add("limit", (long)q.Limit);
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<Row>(new CommandDefinition($"""
            SELECT seq, {Columns} FROM audit_log {(where.Count == 0 ? "" : "WHERE " + string.Join(" AND ", where))}
            ORDER BY seq DESC LIMIT @limit
            """, p, cancellationToken: ct));
        return rows.Select(r => new AuditEntry(r.id, UnixMicros.ToDateTimeOffset(r.at), r.actor_type, r.actor_id, r.account_id, r.action,
            r.target_type, r.target_id, (int)r.status, r.before_json, r.after_json, r.request_id, r.source_ip) { Seq = r.seq }).ToList();
    }
}

/// <summary>
/// Writes audit entries with group commit: concurrent requests' entries share one transaction, and each request waits
/// until its entry is committed before its response is sent. So an acknowledged change always has its audit row (an
/// audit write that fails turns the response into a 5xx: the change may then have happened unacknowledged, and its
/// caller retries); and a burst of admin calls (bulk transfers) costs one commit per batch, not one per call.
/// </summary>
internal sealed class AuditLog : IAsyncDisposable
{
    private const int MaxBatch = 500;
    private readonly AuditStore _store;
    private readonly Channel<(AuditEntry Entry, TaskCompletionSource Done)> _queue =
        Channel.CreateUnbounded<(AuditEntry, TaskCompletionSource)>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;

    public AuditLog(AuditStore store)
    {
        _store = store;
        _writer = Task.Run(WriteLoopAsync);
    }

    /// <summary>Completes once the entry is committed; throws if it could not be.</summary>
    public Task AppendAsync(AuditEntry entry)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite((entry, done))) done.SetException(new ObjectDisposedException(nameof(AuditLog)));
        return done.Task;
    }

    private async Task WriteLoopAsync()
    {
        var batch = new List<(AuditEntry Entry, TaskCompletionSource Done)>(MaxBatch);
        while (await _queue.Reader.WaitToReadAsync())
        {
            batch.Clear();
            while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var item)) batch.Add(item);
            try
            {
                await _store.AppendAsync(batch.Select(b => b.Entry).ToList(), CancellationToken.None);
                foreach (var b in batch) b.Done.TrySetResult();
            }
            catch (Exception e)
            {
                foreach (var b in batch) b.Done.TrySetException(e);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _writer;
    }
}
