using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace Tollgate.Features.Keys;

/// <summary>
/// Slows key guessing: counts presented credentials (API keys, sessions, admin keys) that failed, per client address
/// in one-minute windows; once an address reaches <c>Tollgate:Security:MaxFailedAuthPerMinute</c> (default 300, 0 =
/// off) every credential it presents is refused with 429 until the window ends, valid or not, so guessing cannot go
/// on. A request without any credential is not a guess and is not counted. Keys are 190-bit random strings looked up
/// by their SHA-256 hash, so this limits noise and load rather than protecting a guessable secret. Per process: behind
/// N processes an address gets N times the allowance.
/// </summary>
public sealed class AuthFailureLimiter(IConfiguration configuration, TimeProvider time)
{
    public const string Setting = "Tollgate:Security:MaxFailedAuthPerMinute";
    private const int MaxTrackedAddresses = 100_000;

    private readonly int _limit = configuration.GetValue(Setting, 300);
    private readonly ConcurrentDictionary<string, Window> _windows = new(StringComparer.Ordinal);

    private sealed class Window(long minute)
    {
        public long Minute = minute;
        public int Failures;
    }

    /// <summary>How long the caller's address must wait before presenting credentials again, or null if it may now.</summary>
    public TimeSpan? RetryAfter(HttpContext http)
    {
        if (_limit <= 0 || !_windows.TryGetValue(Address(http), out var window)) return null;
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (window)
        {
            if (window.Minute != now / 60_000 || window.Failures < _limit) return null;
        }
        return TimeSpan.FromMilliseconds(60_000 - now % 60_000);
    }

    /// <summary>Counts one failed credential from the caller's address.</summary>
    public void Failed(HttpContext http)
    {
        if (_limit <= 0) return;
        var minute = time.GetUtcNow().ToUnixTimeMilliseconds() / 60_000;
        if (_windows.Count >= MaxTrackedAddresses) _windows.Clear();
        var window = _windows.GetOrAdd(Address(http), _ => new Window(minute));
        lock (window)
        {
            if (window.Minute != minute) (window.Minute, window.Failures) = (minute, 0);
            window.Failures++;
        }
    }

    private static string Address(HttpContext http) => http.Connection.RemoteIpAddress?.ToString() ?? "unknown";

    /// <summary>The refusal's wording, shared by the problem and gateway shapes.</summary>
    public static string Message(TimeSpan retryAfter) =>
        $"Too many failed authentication attempts from this address; retry after {Seconds(retryAfter)} s.";

    public static string Seconds(TimeSpan retryAfter) => ((long)Math.Ceiling(retryAfter.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
