using System.Diagnostics;
using System.Numerics;

namespace Tollgate.Bench;

/// <summary>
/// An HDR-style log-linear histogram of <see cref="Stopwatch"/> ticks: exact below 128 ticks, then 64 linear
/// sub-buckets per power of two (relative error under 1.6 %). Fixed size, so recording never allocates.
/// <see cref="Record"/> is for one writer; <see cref="RecordConcurrent"/> for many (interlocked).
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 7;                 // 128 exact values, then 64 sub-buckets per octave
    private const int Sub = 1 << SubBits;
    private const int Half = Sub / 2;
    private const int Buckets = Sub + (64 - SubBits) * Half;

    private readonly long[] _counts = new long[Buckets];
    private long _count;
    private long _max;
    private long _sum;

    public long Count => Volatile.Read(ref _count);
    public long MaxTicks => Volatile.Read(ref _max);

    public void Record(long ticks)
    {
        if (ticks < 0) ticks = 0;
        _counts[Index(ticks)]++;
        _count++;
        _sum += ticks;
        if (ticks > _max) _max = ticks;
    }

    public void RecordConcurrent(long ticks)
    {
        if (ticks < 0) ticks = 0;
        Interlocked.Increment(ref _counts[Index(ticks)]);
        Interlocked.Increment(ref _count);
        Interlocked.Add(ref _sum, ticks);
        long seen;
        while (ticks > (seen = Volatile.Read(ref _max)) && Interlocked.CompareExchange(ref _max, ticks, seen) != seen) { }
    }

    public void Add(LatencyHistogram other)
    {
        for (var i = 0; i < Buckets; i++) _counts[i] += other._counts[i];
        _count += other._count;
        _sum += other._sum;
        _max = Math.Max(_max, other._max);
    }

    /// <summary>Value at quantile q (0..1) in milliseconds: the upper edge of the bucket holding it, capped at the max.</summary>
    public double QuantileMs(double q)
    {
        if (_count == 0) return double.NaN;
        var rank = (long)Math.Ceiling(q * _count);
        if (rank < 1) rank = 1;
        long seen = 0;
        for (var i = 0; i < Buckets; i++)
        {
            seen += _counts[i];
            if (seen >= rank) return ToMs(Math.Min(UpperEdge(i), _max));
        }
        return ToMs(_max);
    }

    public double MeanMs => _count == 0 ? double.NaN : ToMs(_sum / (double)_count);
    public double MaxMs => ToMs(_max);

    public static double ToMs(double ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    private static int Index(long v)
    {
        if (v < Sub) return (int)v;
        var msb = BitOperations.Log2((ulong)v);       // ≥ SubBits
        var shift = msb - (SubBits - 1);              // v >> shift lands in [Half, Sub)
        return Sub + (shift - 1) * Half + (int)((v >> shift) - Half);
    }

    private static long UpperEdge(int index)
    {
        if (index < Sub) return index;
        var shift = (index - Sub) / Half + 1;
        var sub = (index - Sub) % Half + Half;
        return ((long)(sub + 1) << shift) - 1;
    }
}
