using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Admin;

/// <summary>
/// <c>Tollgate:SignIn</c>: how many failed sign-ins are allowed per window, per client IP and per email, before further
/// attempts get 429 with <c>Retry-After</c> until the window ends.
/// </summary>
public sealed record SignInLimitOptions
{
    public const string Section = "Tollgate:SignIn";

    /// <summary>Failed password sign-ins or wrong admin keys from one IP per window (default 10).</summary>
    [Range(1, int.MaxValue)] public int MaxFailuresPerIp { get; init; } = 10;

    /// <summary>Failed password sign-ins for one email per window, from anywhere (default 10).</summary>
    [Range(1, int.MaxValue)] public int MaxFailuresPerEmail { get; init; } = 10;

    /// <summary>Length of the window in seconds (default 900: 15 minutes), counted from its first failure.</summary>
    [Range(1, 86_400)] public int WindowSeconds { get; init; } = 900;
}

/// <summary>
/// Counts failed credential checks — member passwords (API and dashboard sign-in) and admin keys (admin API and the
/// operator's dashboard sign-in) — in fixed windows per IP and per email, so guessing is slowed to a handful of tries
/// per window. When a counter is full every further attempt is refused before the credential is checked, right or
/// wrong, or a guess would still learn something. A successful password sign-in clears its email's counter (not the
/// IP's, which another account's valid password must not reset). In memory and per process: each of N processes
/// behind a load balancer allows its own share.
/// </summary>
internal sealed class SignInAttempts(IOptions<SignInLimitOptions> options, TimeProvider time)
{
    public const string AdminScope = "admin", PasswordScope = "password";

    /// <summary>Bound on tracked counters, so a flood from many addresses cannot grow memory without limit.</summary>
    private const int MaxCounters = 100_000;

    private sealed class Window(DateTimeOffset start)
    {
        public DateTimeOffset Start = start;
        public int Failures;
    }

    private readonly ConcurrentDictionary<string, Window> _windows = new(StringComparer.Ordinal);
    private readonly SignInLimitOptions _options = options.Value;
    private TimeSpan Length => TimeSpan.FromSeconds(_options.WindowSeconds);

    /// <summary>How long until another attempt is allowed, or null if it is allowed now.</summary>
    public TimeSpan? RetryAfter(string scope, IPAddress? ip, string? email)
    {
        var now = time.GetUtcNow();
        TimeSpan? wait = null;
        foreach (var (key, max) in Keys(scope, ip, email))
        {
            if (!_windows.TryGetValue(key, out var w)) continue;
            lock (w)
            {
                if (now - w.Start >= Length || w.Failures < max) continue;
                var left = w.Start + Length - now;
                if (wait is null || left > wait) wait = left;
            }
        }
        return wait;
    }

    public void RecordFailure(string scope, IPAddress? ip, string? email)
    {
        var now = time.GetUtcNow();
        if (_windows.Count >= MaxCounters) Prune(now);
        foreach (var (key, _) in Keys(scope, ip, email))
        {
            var w = _windows.GetOrAdd(key, _ => new Window(now));
            lock (w)
            {
                if (now - w.Start >= Length) { w.Start = now; w.Failures = 0; }
                w.Failures++;
            }
        }
    }

    public void RecordSuccess(string scope, string? email)
    {
        if (email is not null) _windows.TryRemove(scope + "|email|" + Normalise(email), out _);
    }

    private IEnumerable<(string Key, int Max)> Keys(string scope, IPAddress? ip, string? email)
    {
        yield return (scope + "|ip|" + (ip?.ToString() ?? "unknown"), _options.MaxFailuresPerIp);
        if (email is not null) yield return (scope + "|email|" + Normalise(email), _options.MaxFailuresPerEmail);
    }

    private static string Normalise(string email) => email.Trim().ToLowerInvariant();

    private void Prune(DateTimeOffset now)
    {
        foreach (var (key, w) in _windows)
            if (now - w.Start >= Length) _windows.TryRemove(key, out _);
        if (_windows.Count >= MaxCounters) _windows.Clear();
    }

    /// <summary>The 429 answer: <c>Retry-After</c> in whole seconds (rounded up).</summary>
    public static Microsoft.AspNetCore.Http.HttpResults.ProblemHttpResult TooMany(HttpContext http, TimeSpan wait)
    {
        var seconds = Math.Max(1, (long)Math.Ceiling(wait.TotalSeconds));
        http.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        return Problems.Create(StatusCodes.Status429TooManyRequests, "too_many_attempts",
            $"Too many failed sign-in attempts; try again in {seconds} seconds.");
    }
}
