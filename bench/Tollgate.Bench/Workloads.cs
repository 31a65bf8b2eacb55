using System.Diagnostics;

namespace Tollgate.Bench;

/// <summary>Something that posts one transfer from a customer to the revenue account and says whether it was posted.</summary>
internal interface ITransferTarget : IAsyncDisposable
{
    /// <summary>Posts <see cref="Workloads.Amount"/> micro-USD from customer number <paramref name="customer"/>.</summary>
    Task<bool> TransferAsync(string id, int customer);
}

/// <summary>Warm-up start, measured window start and end, in <see cref="Stopwatch"/> ticks.</summary>
internal readonly record struct Window(long Begin, long MeasureStart, long MeasureEnd)
{
    public static Window StartingIn(double delaySeconds, int warmup, int seconds)
    {
        var f = Stopwatch.Frequency;
        var begin = Stopwatch.GetTimestamp() + (long)(delaySeconds * f);
        return new(begin, begin + warmup * f, begin + (warmup + seconds) * f);
    }

    public double Seconds => (MeasureEnd - MeasureStart) / (double)Stopwatch.Frequency;
    public bool Contains(long t) => t >= MeasureStart && t < MeasureEnd;
}

/// <summary>What one measured window produced.</summary>
internal sealed record RunResult(
    long Posted,
    long NotPosted,
    long Errors,
    double Seconds,
    LatencyHistogram Latency,
    bool Saturated = false)
{
    public double PerSecond => Posted / Seconds;
}

/// <summary>
/// Load drivers. Both measure from a warm-up end to a window end on <see cref="Stopwatch"/> ticks.
/// Closed loop: N clients each await one transfer at a time; a transfer counts if it completed inside the window.
/// Open loop: transfers are released on a fixed schedule whatever the backlog; latency runs from each transfer's
/// scheduled time (so a late dispatcher or a queue counts against the system: no coordinated omission), and a
/// transfer counts if it was scheduled inside the window.
/// </summary>
internal static class Workloads
{
    /// <summary>Micro-USD per transfer (a tenth of a cent, a typical metered request).</summary>
    public const long Amount = 1_000;

    public static async Task<RunResult> ClosedLoopAsync(ITransferTarget target, int clients, int customers, Window w, string tag)
    {
        var histograms = new LatencyHistogram[clients];
        var posted = new long[clients];
        var notPosted = new long[clients];
        var errors = new long[clients];
        var (measureStart, measureEnd) = (w.MeasureStart, w.MeasureEnd);

        async Task Client(int c)
        {
            var rng = new Random(c * 7_919 + 17);
            var h = histograms[c] = new LatencyHistogram();
            long seq = 0;
            while (true)
            {
                var t0 = Stopwatch.GetTimestamp();
                if (t0 >= measureEnd) break;
                var id = $"{tag}.{c}.{seq++}";
                var customer = customers == 1 ? 0 : rng.Next(customers);
                bool ok;
                var failed = false;
                try { ok = await target.TransferAsync(id, customer); }
                catch (Exception e) { ok = false; failed = true; ReportError(e); }
                var t1 = Stopwatch.GetTimestamp();
                if (t1 < measureStart || t1 >= measureEnd) continue;
                if (failed) errors[c]++;
                else if (ok) { posted[c]++; h.Record(t1 - t0); }
                else notPosted[c]++;
            }
        }

        var tasks = new Task[clients];
        for (var c = 0; c < clients; c++)
        {
            var client = c;
            tasks[c] = Task.Run(() => Client(client));
        }
        await Task.WhenAll(tasks);
        var all = new LatencyHistogram();
        foreach (var h in histograms) all.Add(h);
        return new RunResult(posted.Sum(), notPosted.Sum(), errors.Sum(), w.Seconds, all);
    }

    public static async Task<RunResult> OpenLoopAsync(ITransferTarget target, int rate, int customers, Window w, string tag)
    {
        var latency = new LatencyHistogram();
        long posted = 0, notPosted = 0, errors = 0;
        var (begin, measureStart, measureEnd) = (w.Begin, w.MeasureStart, w.MeasureEnd);

        async Task Fire(string id, int customer, long scheduled, Action done)
        {
            bool ok = false, failed = false;
            try { ok = await target.TransferAsync(id, customer); }
            catch (Exception e) { failed = true; ReportError(e); }
            var finished = Stopwatch.GetTimestamp();
            if (scheduled >= measureStart && scheduled < measureEnd)
            {
                if (failed) Interlocked.Increment(ref errors);
                else if (ok) { Interlocked.Increment(ref posted); latency.RecordConcurrent(finished - scheduled); }
                else Interlocked.Increment(ref notPosted);
            }
            done();
        }

        // Latency counts from the exact schedule, so the dispatcher's ~1 ms bursts are included.
        var rng = new Random(4_242);
        var saturated = await OpenLoop.RunAsync(rate, begin, measureEnd,
            (issued, scheduled, done) => _ = Fire($"{tag}.{issued}", customers == 1 ? 0 : rng.Next(customers), scheduled, done));
        return new RunResult(posted, notPosted, errors, w.Seconds, latency, saturated);
    }

    private static int _errorsReported;

    private static void ReportError(Exception e)
    {
        if (Interlocked.Increment(ref _errorsReported) <= 5) Console.Error.WriteLine($"  transfer failed: {e.GetType().Name}: {e.Message}");
    }
}
