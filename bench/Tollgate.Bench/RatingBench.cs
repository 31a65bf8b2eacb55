using System.Diagnostics;
using System.Globalization;
using Tollgate.Features.Pricing;

namespace Tollgate.Bench;

/// <summary>
/// <c>--suite rating</c>: how many calls per second <see cref="Rater.Rate"/> prices on one thread, and the bytes it
/// allocates per call (should be 0). Usages and models are drawn up front from a fixed seed across the whole shipped
/// catalog, with timestamps spread over three years so date-bounded and off-peak prices are exercised.
/// </summary>
internal static class RatingBench
{
    public const string Usage = """
        Tollgate rating micro-benchmark: ratings per second of the pure pricing function on one thread.

          dotnet run -c Release --project bench/Tollgate.Bench -- --suite rating [--seconds N] [--warmup N]
        """;

    public static int Run(string[] args)
    {
        var seconds = 5;
        var warmup = 2;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--suite": i++; break;
                case "--seconds": seconds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default: Console.Error.WriteLine($"Unknown option '{args[i]}'.\n{Usage}"); return 2;
            }
        }

        var catalog = new PricingCatalog(GenAiPricesParser.LoadEmbedded(), new PricingOptions());
        const int n = 1 << 16;
        var random = new Random(42);
        var models = new PricedModel[n];
        var usages = new TokenUsage[n];
        var times = new DateTimeOffset[n];
        var start = new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);
        for (var i = 0; i < n; i++)
        {
            models[i] = catalog.Models[random.Next(catalog.Models.Count)];
            var input = random.NextInt64(0, 300_000);
            var cacheRead = random.Next(2) == 0 ? 0 : random.NextInt64(0, input + 1);
            var output = random.NextInt64(0, 8_000);
            usages[i] = new TokenUsage(input, output, cacheRead, 0, random.NextInt64(0, output + 1));
            times[i] = start.AddSeconds(random.NextInt64(0, 3L * 365 * 86_400));
        }

        Console.WriteLine($"# Tollgate rating benchmark  {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");
        Console.WriteLine($"runtime {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}, {Environment.ProcessorCount} cores; " +
                          $"{catalog.Models.Count:N0} catalog models; {n:N0} pre-drawn calls; 1 thread; {warmup} s warm-up, {seconds} s measured");
        Loop(models, usages, times, TimeSpan.FromSeconds(warmup), out _, out _);
        var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        var gcBefore = GC.CollectionCount(0);
        var elapsed = Loop(models, usages, times, TimeSpan.FromSeconds(seconds), out var count, out var checksum);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        Console.WriteLine($"rating: {count / elapsed.TotalSeconds:N0} ratings/s ({elapsed.TotalMilliseconds * 1e6 / count:F0} ns each), " +
                          $"{(double)allocated / count:F3} bytes allocated per rating, {GC.CollectionCount(0) - gcBefore} gen0 GCs; " +
                          $"checksum {checksum} micro-USD");
        return 0;
    }

    private static TimeSpan Loop(PricedModel[] models, TokenUsage[] usages, DateTimeOffset[] times, TimeSpan duration, out long count, out long checksum)
    {
        var sw = Stopwatch.StartNew();
        count = 0;
        checksum = 0;
        var mask = models.Length - 1;
        while (sw.Elapsed < duration)
        {
            // Check the clock every 4,096 ratings so the loop measures rating, not Stopwatch.
            for (var k = 0; k < 4_096; k++, count++)
            {
                var i = (int)(count & mask);
                checksum += Rater.Rate(models[i], usages[i], times[i]).UserPriceMicros;
            }
        }
        return sw.Elapsed;
    }
}
