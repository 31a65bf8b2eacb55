using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Gateway;

/// <summary>Limits for one scope (a key or an account); 0 means unlimited.</summary>
public sealed record RateLimitOptions
{
    public int RequestsPerMinute { get; init; }
    public long TokensPerMinute { get; init; }
    public int ConcurrentRequests { get; init; }

    internal bool Any => RequestsPerMinute > 0 || TokensPerMinute > 0 || ConcurrentRequests > 0;
}

/// <summary>Configuration section <c>Tollgate:Gateway:RateLimits</c>: defaults per API key and per account, and how processes share them.</summary>
public sealed record GatewayRateLimitOptions
{
    public RateLimitOptions PerKey { get; init; } = new();
    public RateLimitOptions PerAccount { get; init; } = new();

    /// <summary>
    /// PostgreSQL only: how often each process exchanges its counts with the others (one round trip for every scope it
    /// touched). Shorter means a smaller overshoot across processes and more small statements.
    /// </summary>
    public int SyncIntervalMs { get; init; } = 100;

    /// <summary>
    /// PostgreSQL only: how long a process's concurrency leases and heartbeat live without renewal. A process that dies
    /// frees its concurrent-request slots after this long; it must be several sync intervals.
    /// </summary>
    public int LeaseSeconds { get; init; } = 5;

    /// <summary>PostgreSQL only: share limits between processes through the database (default). False keeps them per process.</summary>
    public bool Shared { get; init; } = true;
}

/// <summary>Why a call was refused, and when trying again can succeed.</summary>
internal readonly record struct RateLimitRejection(string Scope, string Limit, TimeSpan RetryAfter);

/// <summary>
/// Per-key and per-account limits on requests per minute, tokens per minute and concurrent requests. Minute limits use
/// a sliding window approximated from two fixed wall-clock minutes (the previous minute's count weighted by how much of
/// it still overlaps), which needs two counters per scope instead of a log of timestamps, and lets several processes
/// add up the same windows. Tokens are counted when the call finishes (actual usage); a call is admitted while the
/// window's tokens plus its prompt fit.
/// <para>
/// On PostgreSQL with <see cref="GatewayRateLimitOptions.Shared"/> the counts are shared by every process on the
/// database without a round trip per call: each process decides from what it knows — the other processes' counts as of
/// its last sync plus its own up to now — and <see cref="RateLimitSync"/> exchanges deltas every sync interval. To keep
/// a burst that hits every process at once from being admitted N times over, a process admits between two syncs at
/// most its share of what was left at the last one (see <see cref="Shares"/>). See docs/GATEWAY.md for the
/// overshoot this bounds. On SQLite (one process) the counts are simply this process's.
/// </para>
/// </summary>
internal sealed class GatewayRateLimiter
{
    private const int MaxScopes = 200_000;
    private readonly ConcurrentDictionary<string, Scope> _scopes = new(StringComparer.Ordinal);
    private readonly GatewayRateLimitOptions _options;
    private readonly TimeProvider _time;
    private int _liveProcesses = 1;
    private int _rank;
    private long _lastSyncTimestamp;

    public GatewayRateLimiter(IOptions<GatewayRateLimitOptions> options, TimeProvider time, Database db)
    {
        _options = options.Value;
        _time = time;
        Shared = _options.Shared && db.Engine == DatabaseEngine.Postgres;
    }

    public bool Enabled => _options.PerKey.Any || _options.PerAccount.Any;

    /// <summary>Counts are exchanged with other processes (PostgreSQL).</summary>
    public bool Shared { get; }

    /// <summary>Some key or account has limits in use here (so there is something to exchange).</summary>
    public bool HasScopes => !_scopes.IsEmpty;

    /// <summary>
    /// Raised when a scope is first used in this process (its global counts are unknown) or when a call took the last
    /// unit of this process's share (the others should learn it, and this process needs a new share): the sync loop
    /// then runs early instead of at the end of its interval, which narrows the window in which views differ.
    /// </summary>
    public event Action? SyncWanted;

    /// <summary>
    /// Shares apply only while syncs succeed: if the database is unreachable the process falls back to its own counts
    /// (and the full limit) rather than refusing everything once its share is spent.
    /// </summary>
    private bool SharesApply => Shared && Volatile.Read(ref _liveProcesses) > 1
        && _time.GetElapsedTime(Volatile.Read(ref _lastSyncTimestamp)) < TimeSpan.FromSeconds(_options.LeaseSeconds);

    /// <summary>The key's limits: its own where it sets them, the configured per-key defaults otherwise.</summary>
    private RateLimitOptions KeyLimits(Keys.KeySettings settings) => !settings.HasRateLimits ? _options.PerKey : new RateLimitOptions
    {
        RequestsPerMinute = settings.RequestsPerMinute ?? _options.PerKey.RequestsPerMinute,
        TokensPerMinute = settings.TokensPerMinute ?? _options.PerKey.TokensPerMinute,
        ConcurrentRequests = settings.ConcurrentRequests ?? _options.PerKey.ConcurrentRequests,
    };

    /// <summary>Admits a call for the key and the account, or says which limit refused it. Admitted calls must be released.</summary>
    public RateLimitRejection? TryAcquire(string keyId, string accountId, long promptTokens, Keys.KeySettings settings)
    {
        var keyLimits = KeyLimits(settings);
        if (!keyLimits.Any && !_options.PerAccount.Any) return null;
        var at = _time.GetUtcNow();
        var now = Clock.From(at);
        var shares = SharesApply ? Shares.For(Volatile.Read(ref _liveProcesses), Volatile.Read(ref _rank), at) : default;
        var key = keyLimits.Any ? ScopeFor(KeyScope(keyId)) : null;
        var account = _options.PerAccount.Any ? ScopeFor(AccountScope(accountId)) : null;
        var shareSpent = false;
        if (key?.Check(keyLimits, promptTokens, now, shares, ref shareSpent) is { } k) return new RateLimitRejection("key", k.Limit, k.RetryAfter);
        if (account?.Check(_options.PerAccount, promptTokens, now, shares, ref shareSpent) is { } a) return new RateLimitRejection("account", a.Limit, a.RetryAfter);
        // Both passed: take the slots. A race between check and take can let a scope go over by the racing calls, never more.
        key?.Take(now);
        account?.Take(now);
        if (shareSpent) SyncWanted?.Invoke();
        return null;
    }

    /// <summary>Ends an admitted call, adding the tokens it actually used to both minute windows.</summary>
    public void Release(string keyId, string accountId, long tokens)
    {
        var now = Clock.From(_time.GetUtcNow());
        if (_scopes.TryGetValue(KeyScope(keyId), out var key)) key.Finish(tokens, now);
        if (_options.PerAccount.Any && _scopes.TryGetValue(AccountScope(accountId), out var account)) account.Finish(tokens, now);
    }

    internal static string KeyScope(string keyId) => "k:" + keyId;
    internal static string AccountScope(string accountId) => "a:" + accountId;

    private Scope ScopeFor(string id)
    {
        if (_scopes.TryGetValue(id, out var scope)) return scope;
        if (_scopes.Count >= MaxScopes) Evict(Clock.From(_time.GetUtcNow()));
        var added = false;
        scope = _scopes.GetOrAdd(id, _ => { added = true; return new Scope(Clock.From(_time.GetUtcNow()).Minute); });
        if (added && Shared) SyncWanted?.Invoke();
        return scope;
    }

    private void Evict(Clock now)
    {
        foreach (var (id, scope) in _scopes)
            if (scope.Idle(now, Shared)) _scopes.TryRemove(id, out _);
    }

    /// <summary>
    /// Sync step 1: this process's counts not yet written (per scope and minute), its in-flight calls per scope (the
    /// leases to renew), and the scopes whose global counts it needs. Idle scopes are dropped here.
    /// </summary>
    public RateSyncBatch CollectSync()
    {
        var now = Clock.From(_time.GetUtcNow());
        var batch = new RateSyncBatch(now.Minute, now.PreviousWeight);
        foreach (var (id, scope) in _scopes)
        {
            if (scope.Idle(now, Shared)) { _scopes.TryRemove(id, out _); continue; }
            scope.Collect(id, now, batch);
        }
        return batch;
    }

    /// <summary>Sync step 2 (after the store wrote the deltas): the global counts replace what was known of the others.</summary>
    public void ApplySync(RateSyncBatch batch, RateSyncResult result)
    {
        Volatile.Write(ref _liveProcesses, Math.Max(1, result.LiveProcesses));
        Volatile.Write(ref _rank, Math.Clamp(result.Rank, 0, Math.Max(0, result.LiveProcesses - 1)));
        foreach (var id in batch.Active)
            if (_scopes.TryGetValue(id, out var scope)) scope.Apply(id, batch, result);
        Volatile.Write(ref _lastSyncTimestamp, _time.GetTimestamp());
    }

    /// <summary>Sync failed: the collected deltas were not written, so they are pending again.</summary>
    public void RevertSync(RateSyncBatch batch)
    {
        foreach (var d in batch.Deltas)
            if (_scopes.TryGetValue(d.Scope, out var scope)) scope.Unpush(d);
    }

    /// <summary>
    /// How what is left of a limit is split between the live processes until their next sync: evenly, the remainder
    /// going one each to some of them, so the shares add up to exactly what was left. Which ones get the remainder turns
    /// every second (<paramref name="Turn"/>: the process's rank by id plus the wall-clock second, modulo the count),
    /// so with a limit smaller than the number of processes no process is shut out for good.
    /// <see cref="Count"/> 0 = no sharing (one process, or sync not working).
    /// </summary>
    internal readonly record struct Shares(int Count, int Turn)
    {
        public static Shares For(int count, int rank, DateTimeOffset now) =>
            new(count, (int)((rank + now.ToUnixTimeSeconds() % count) % count));

        public long Of(double left)
        {
            var whole = (long)Math.Floor(Math.Max(0, left));
            return whole / Count + (Turn < whole % Count ? 1 : 0);
        }
    }

    /// <summary>A point in time as the limiter needs it: the wall-clock minute and how far into it.</summary>
    internal readonly record struct Clock(long Minute, double Elapsed)
    {
        public static Clock From(DateTimeOffset at)
        {
            var ms = at.ToUnixTimeMilliseconds();
            var minute = Math.DivRem(ms, 60_000, out var rest);
            if (rest < 0) { minute--; rest += 60_000; }
            return new Clock(minute, rest / 60_000.0);
        }

        /// <summary>How much of the previous minute still lies within the sliding minute ending now.</summary>
        public double PreviousWeight => 1 - Elapsed;

        public TimeSpan UntilNextMinute => TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling((1 - Elapsed) * 60)));
    }

    /// <summary>Requests and tokens in one minute window.</summary>
    private struct Counts
    {
        public long Requests, Tokens;
    }

    private sealed class Scope(long createdMinute)
    {
        private readonly Lock _lock = new();
        private long _minute = long.MinValue;
        // [0] = current minute, [1] = previous minute.
        private readonly Counts[] _own = new Counts[2];     // admitted by this process
        private readonly Counts[] _pushed = new Counts[2];  // of _own, already written to the shared store
        private readonly Counts[] _others = new Counts[2];  // admitted by other processes, as of the last sync
        private int _inFlight, _othersInFlight;
        // Budget share between syncs (shared mode only).
        private bool _synced;
        private double _knownRequestsAtSync;
        private int _knownInFlightAtSync;
        private int _admittedSinceSync;
        private int _collectedSinceSync;
        private long _lastUsedMinute = createdMinute;

        /// <param name="shareSpent">Set when admitting this call takes the last unit of a share.</param>
        public (string Limit, TimeSpan RetryAfter)? Check(RateLimitOptions limits, long promptTokens, Clock now, Shares shares, ref bool shareSpent)
        {
            lock (_lock)
            {
                Roll(now.Minute);
                _lastUsedMinute = now.Minute;
                if (limits.ConcurrentRequests > 0)
                {
                    if (_inFlight + _othersInFlight >= limits.ConcurrentRequests) return ("concurrent_requests", TimeSpan.FromSeconds(1));
                    if (shares.Count > 1)
                    {
                        var share = shares.Of(limits.ConcurrentRequests - (_synced ? _knownInFlightAtSync : 0));
                        if (_admittedSinceSync + 1 > share) return ("concurrent_requests", TimeSpan.FromSeconds(1));
                        shareSpent |= _admittedSinceSync + 1 == share;
                    }
                }
                var w = now.PreviousWeight;
                if (limits.RequestsPerMinute > 0)
                {
                    var requests = (_own[1].Requests + _others[1].Requests) * w + _own[0].Requests + _others[0].Requests;
                    if (requests + 1 > limits.RequestsPerMinute) return ("requests_per_minute", now.UntilNextMinute);
                    // Between syncs, only this process's share of what was left: a burst across N processes then stays within the limit.
                    if (shares.Count > 1)
                    {
                        var share = shares.Of(limits.RequestsPerMinute - (_synced ? _knownRequestsAtSync : 0));
                        if (_admittedSinceSync + 1 > share) return ("requests_per_minute", TimeSpan.FromSeconds(1));
                        shareSpent |= _admittedSinceSync + 1 == share;
                    }
                }
                if (limits.TokensPerMinute > 0)
                {
                    var tokens = (_own[1].Tokens + _others[1].Tokens) * w + _own[0].Tokens + _others[0].Tokens;
                    if (tokens + promptTokens > limits.TokensPerMinute) return ("tokens_per_minute", now.UntilNextMinute);
                }
                return null;
            }
        }

        public void Take(Clock now)
        {
            lock (_lock)
            {
                Roll(now.Minute);
                _own[0].Requests++;
                _inFlight++;
                _admittedSinceSync++;
            }
        }

        public void Finish(long tokens, Clock now)
        {
            lock (_lock)
            {
                Roll(now.Minute);
                _own[0].Tokens += Math.Max(0, tokens);
                _inFlight = Math.Max(0, _inFlight - 1);
            }
        }

        /// <summary>Nothing in flight, unused for over two minutes and (when shared) nothing left to write: safe to forget.</summary>
        public bool Idle(Clock now, bool shared)
        {
            lock (_lock)
                return _inFlight == 0 && now.Minute - _lastUsedMinute > 2
                       && (!shared || (_own[0].Requests == _pushed[0].Requests && _own[0].Tokens == _pushed[0].Tokens
                                       && _own[1].Requests == _pushed[1].Requests && _own[1].Tokens == _pushed[1].Tokens));
        }

        public void Collect(string id, Clock now, RateSyncBatch batch)
        {
            lock (_lock)
            {
                Roll(now.Minute);
                for (var i = 0; i < 2; i++)
                {
                    var requests = _own[i].Requests - _pushed[i].Requests;
                    var tokens = _own[i].Tokens - _pushed[i].Tokens;
                    if (requests == 0 && tokens == 0) continue;
                    batch.Deltas.Add(new RateDelta(id, _minute - i, requests, tokens));
                    _pushed[i] = _own[i];
                }
                if (_inFlight > 0) batch.Leases.Add(new RateLease(id, _inFlight));
                batch.Active.Add(id);
                _collectedSinceSync = _admittedSinceSync;
            }
        }

        public void Unpush(RateDelta d)
        {
            lock (_lock)
            {
                var i = d.Minute == _minute ? 0 : d.Minute == _minute - 1 ? 1 : -1;
                if (i < 0) return; // that minute is gone; its counts no longer matter
                _pushed[i].Requests -= d.Requests;
                _pushed[i].Tokens -= d.Tokens;
            }
        }

        public void Apply(string id, RateSyncBatch batch, RateSyncResult result)
        {
            lock (_lock)
            {
                Roll(batch.Minute);
                for (var m = batch.Minute - 1; m <= batch.Minute; m++)
                {
                    var i = _minute - m;
                    if (i is < 0 or > 1) continue; // the minute rolled on since the collect
                    var total = result.Windows.GetValueOrDefault((id, m));
                    // The store's total includes everything this process pushed, so the rest is the others'.
                    _others[i] = new Counts
                    {
                        Requests = Math.Max(0, total.Requests - _pushed[i].Requests),
                        Tokens = Math.Max(0, total.Tokens - _pushed[i].Tokens),
                    };
                }
                _othersInFlight = result.OthersInFlight.GetValueOrDefault(id);
                var w = batch.PreviousWeight;
                _knownRequestsAtSync = (_others[1].Requests + _pushed[1].Requests) * w + _others[0].Requests + _pushed[0].Requests;
                _knownInFlightAtSync = _othersInFlight + _inFlight;
                // Admissions after the collect are not in what the sync learnt: they still count against the new share.
                _admittedSinceSync -= _collectedSinceSync;
                _collectedSinceSync = 0;
                _synced = true;
            }
        }

        private void Roll(long minute)
        {
            if (minute <= _minute) return;
            if (minute == _minute + 1)
            {
                _own[1] = _own[0];
                _pushed[1] = _pushed[0];
                _others[1] = _others[0];
            }
            else
            {
                _own[1] = _pushed[1] = _others[1] = default;
            }
            _own[0] = _pushed[0] = _others[0] = default;
            _minute = minute;
        }
    }
}

/// <summary>Counts one process admitted for a scope in one minute and has not yet written.</summary>
internal readonly record struct RateDelta(string Scope, long Minute, long Requests, long Tokens);

/// <summary>Calls a process has in flight for a scope.</summary>
internal readonly record struct RateLease(string Scope, int InFlight);

/// <summary>What one sync writes and asks about.</summary>
internal sealed class RateSyncBatch(long minute, double previousWeight)
{
    public long Minute { get; } = minute;
    public double PreviousWeight { get; } = previousWeight;
    public List<RateDelta> Deltas { get; } = [];
    public List<RateLease> Leases { get; } = [];
    public List<string> Active { get; } = [];
}

/// <summary>
/// What a sync learnt: global counts per (scope, minute), other processes' calls in flight per scope, the number of
/// live processes and this one's rank among them (how many live processes have a smaller id).
/// </summary>
internal sealed record RateSyncResult(
    Dictionary<(string Scope, long Minute), (long Requests, long Tokens)> Windows,
    Dictionary<string, int> OthersInFlight,
    int LiveProcesses,
    int Rank);
