using System.Diagnostics;

namespace Tollgate.Bench;

/// <summary>
/// Where the machine's CPU went during a window, from /proc (Linux only; elsewhere it reports nothing): this
/// benchmark process, the PostgreSQL server it talks to (the postmaster and its children), and everything else.
/// The last one is the noise: other people's builds and tests on a shared machine.
/// </summary>
internal sealed class CpuMeter(int postmasterPid)
{
    public readonly record struct Sample(long Total, long Busy, long Self, long Postgres, long At);

    /// <summary>Shares of all cores' time in the window (0..1 each).</summary>
    public readonly record struct Usage(double Machine, double Self, double Postgres)
    {
        public double Others => Math.Max(0, Machine - Self - Postgres);
        public override string ToString() =>
            $"CPU of {Environment.ProcessorCount} cores: bench {Self:P0}, postgres {Postgres:P0}, others {Others:P0}, idle {1 - Machine:P0}";
    }

    public Sample Take()
    {
        if (!OperatingSystem.IsLinux()) return default;
        try
        {
            var cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
            var total = cpu.Take(8).Sum();          // user nice system idle iowait irq softirq steal
            var idle = cpu[3] + cpu[4];
            long self = ProcessTicks(Environment.ProcessId), pg = 0;
            if (postmasterPid > 0)
            {
                pg = ProcessTicks(postmasterPid);
                foreach (var dir in Directory.EnumerateDirectories("/proc"))
                    if (int.TryParse(Path.GetFileName(dir), out var pid) && ParentOf(pid) == postmasterPid) pg += ProcessTicks(pid);
            }
            return new Sample(total, total - idle, self, pg, Stopwatch.GetTimestamp());
        }
        catch (IOException) { return default; }
        catch (UnauthorizedAccessException) { return default; }
    }

    public static Usage Between(Sample a, Sample b)
    {
        var total = (double)(b.Total - a.Total);
        if (total <= 0) return default;
        return new Usage((b.Busy - a.Busy) / total, (b.Self - a.Self) / total, (b.Postgres - a.Postgres) / total);
    }

    /// <summary>Samples at the window's start and end while the run goes on.</summary>
    public async Task<Usage?> MeasureAsync(Window w)
    {
        if (!OperatingSystem.IsLinux()) return null;
        await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, (w.MeasureStart - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency)));
        var a = Take();
        await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, (w.MeasureEnd - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency)));
        var b = Take();
        return a.Total == 0 ? null : Between(a, b);
    }

    // /proc/PID/stat: "pid (comm) state ppid … utime(14) stime(15)"; comm may hold spaces, so split after ')'.
    private static string[]? StatFields(int pid)
    {
        try
        {
            var s = File.ReadAllText($"/proc/{pid}/stat");
            return s[(s.LastIndexOf(')') + 2)..].Split(' ');
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    public static int ParentOf(int pid) => StatFields(pid) is { } f ? int.Parse(f[1]) : -1;

    private static long ProcessTicks(int pid) => StatFields(pid) is { } f ? long.Parse(f[11]) + long.Parse(f[12]) : 0;
}
