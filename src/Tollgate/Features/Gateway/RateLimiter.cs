using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Gateway;

/// <summary>Limits for one scope (a key or an account); 0 means unlimited.</summary>
public sealed record RateLimitOptions
{
    public int RequestsPerMinute { get; init; }
    public long TokensPerMinute { get; init; }
    public int ConcurrentRequests { get; init; }

    internal bool Any => RequestsPerMinute > 0 || TokensPerMinute > 0 || ConcurrentRequests > 0;
}

/// <summary>Configuration section <c>Tollgate:Gateway:RateLimits</c>: defaults per API key and per account.</summary>
public sealed record GatewayRateLimitOptions
{
    public RateLimitOptions PerKey { get; init; } = new();
    public RateLimitOptions PerAccount { get; init; } = new();
}

/// <summary>Why a call was refused, and when trying again can succeed.</summary>
internal readonly record struct RateLimitRejection(string Scope, string Limit, TimeSpan RetryAfter);

/// <summary>
/// Per-key and per-account limits on requests per minute, tokens per minute and concurrent requests, in this
/// process. Minute limits use a sliding window approximated from two fixed one-minute windows (the previous
/// window's count weighted by how much of it still overlaps), which is exact enough for limits and needs two
/// counters per scope instead of a log of timestamps. Tokens are counted when the call finishes (actual usage);
/// a call is admitted while the window's tokens plus its prompt fit. Several gateway processes each apply the
/// limits separately (a shared store is the operations issue's work).
/// </summary>
internal sealed class GatewayRateLimiter(IOptions<GatewayRateLimitOptions> options, TimeProvider time)
{
    private const int MaxScopes = 200_000;
    private readonly ConcurrentDictionary<string, Scope> _scopes = new(StringComparer.Ordinal);
    private readonly GatewayRateLimitOptions _options = options.Value;

    public bool Enabled => _options.PerKey.Any || _options.PerAccount.Any;

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
        var now = time.GetTimestamp();
        var key = keyLimits.Any ? ScopeFor("k:" + keyId) : null;
        var account = _options.PerAccount.Any ? ScopeFor("a:" + accountId) : null;
        if (key?.Check(keyLimits, promptTokens, now, time) is { } k) return new RateLimitRejection("key", k.Limit, k.RetryAfter);
        if (account?.Check(_options.PerAccount, promptTokens, now, time) is { } a) return new RateLimitRejection("account", a.Limit, a.RetryAfter);
        // Both passed: take the slots. A race between check and take can let a scope go over by the racing calls, never more.
        key?.Take(now, time);
        account?.Take(now, time);
        return null;
    }

    /// <summary>Ends an admitted call, adding the tokens it actually used to both minute windows.</summary>
    public void Release(string keyId, string accountId, long tokens)
    {
        var now = time.GetTimestamp();
        if (_scopes.TryGetValue("k:" + keyId, out var key)) key.Finish(tokens, now, time);
        if (_options.PerAccount.Any && _scopes.TryGetValue("a:" + accountId, out var account)) account.Finish(tokens, now, time);
    }

    private Scope ScopeFor(string id)
    {
        if (_scopes.TryGetValue(id, out var scope)) return scope;
        if (_scopes.Count >= MaxScopes) Evict();
        return _scopes.GetOrAdd(id, _ => new Scope());
    }

    private void Evict()
    {
        var now = time.GetTimestamp();
        foreach (var (id, scope) in _scopes)
            if (scope.Idle(now, time)) _scopes.TryRemove(id, out _);
    }

    private sealed class Scope
    {
        private static readonly TimeSpan Window = TimeSpan.FromMinutes(1);
        private readonly Lock _lock = new();
        private long _windowStart;
        private long _requests, _previousRequests, _tokens, _previousTokens;
        private int _inFlight;

        public (string Limit, TimeSpan RetryAfter)? Check(RateLimitOptions limits, long promptTokens, long now, TimeProvider time)
        {
            lock (_lock)
            {
                Roll(now, time);
                if (limits.ConcurrentRequests > 0 && _inFlight >= limits.ConcurrentRequests) return ("concurrent_requests", TimeSpan.FromSeconds(1));
                var (elapsed, weight) = Position(now, time);
                if (limits.RequestsPerMinute > 0 && Weighted(_previousRequests, _requests, weight) + 1 > limits.RequestsPerMinute)
                    return ("requests_per_minute", RetryAfter(elapsed));
                if (limits.TokensPerMinute > 0 && Weighted(_previousTokens, _tokens, weight) + promptTokens > limits.TokensPerMinute)
                    return ("tokens_per_minute", RetryAfter(elapsed));
                return null;
            }
        }

        public void Take(long now, TimeProvider time)
        {
            lock (_lock)
            {
                Roll(now, time);
                _requests++;
                _inFlight++;
            }
        }

        public void Finish(long tokens, long now, TimeProvider time)
        {
            lock (_lock)
            {
                Roll(now, time);
                _tokens += Math.Max(0, tokens);
                _inFlight = Math.Max(0, _inFlight - 1);
            }
        }

        public bool Idle(long now, TimeProvider time)
        {
            lock (_lock) return _inFlight == 0 && time.GetElapsedTime(_windowStart, now) > 2 * Window;
        }

        private void Roll(long now, TimeProvider time)
        {
            if (_windowStart == 0) { _windowStart = now; return; }
            var elapsed = time.GetElapsedTime(_windowStart, now);
            if (elapsed < Window) return;
            var adjacent = elapsed < 2 * Window;
            (_previousRequests, _previousTokens) = adjacent ? (_requests, _tokens) : (0, 0);
            (_requests, _tokens) = (0, 0);
            // Keep windows aligned to the first one, so the weighting below stays meaningful.
            _windowStart = now - (long)((elapsed.Ticks % Window.Ticks) * (time.TimestampFrequency / (double)TimeSpan.TicksPerSecond));
        }

        private (TimeSpan Elapsed, double PreviousWeight) Position(long now, TimeProvider time)
        {
            var elapsed = time.GetElapsedTime(_windowStart, now);
            return (elapsed, Math.Clamp(1 - elapsed / Window, 0, 1));
        }

        private static double Weighted(long previous, long current, double weight) => previous * weight + current;

        private static TimeSpan RetryAfter(TimeSpan elapsed) => TimeSpan.FromSeconds(Math.Max(1, Math.Ceiling((Window - elapsed).TotalSeconds)));
    }
}
