using System.Diagnostics;

namespace Tollgate.Bench;

/// <summary>
/// The open-loop schedule shared by the ledger and HTTP benchmarks: a thread that wakes about every millisecond and
/// releases every request that has come due (<c>rate</c> per second from <c>begin</c> until <c>end</c>, in Stopwatch
/// ticks), whatever is still in flight, so arrivals come in small bursts on a fixed schedule. It counts the requests
/// in flight and gives up — the rate is not sustainable — once they reach two seconds' worth (at least 1,000).
/// </summary>
internal static class OpenLoop
{
    /// <param name="release">Starts request number <c>issued</c>, scheduled at <c>scheduled</c> ticks, and calls the
    /// action it is given exactly once when that request ends.</param>
    /// <returns>Whether it stopped saturated.</returns>
    public static async Task<bool> RunAsync(int rate, long begin, long end, Action<long, long, Action> release)
    {
        var freq = Stopwatch.Frequency;
        var maxInFlight = Math.Max(1_000L, 2L * rate);
        long inFlight = 0;
        var saturated = false;
        Action done = () => Interlocked.Decrement(ref inFlight);
        var dispatcher = new Thread(() =>
        {
            long issued = 0;
            while (true)
            {
                var now = Stopwatch.GetTimestamp();
                var due = now < begin ? 0 : (long)((now - begin) * (double)rate / freq);
                while (issued < due)
                {
                    var scheduled = begin + (long)(issued * (double)freq / rate);
                    if (scheduled >= end) return;
                    if (Interlocked.Read(ref inFlight) >= maxInFlight) { saturated = true; return; }
                    Interlocked.Increment(ref inFlight);
                    release(issued, scheduled, done);
                    issued++;
                }
                if (now >= end) return;
                Thread.Sleep(1);
            }
        })
        { IsBackground = true, Name = "open-loop dispatcher" };
        dispatcher.Start();
        while (dispatcher.IsAlive || Interlocked.Read(ref inFlight) > 0) await Task.Delay(20);
        dispatcher.Join(); // already ended; makes its writes (saturated) visible here
        return saturated;
    }
}
