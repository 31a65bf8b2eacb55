using System.Diagnostics;
using Npgsql;

namespace Tollgate.Bench;

/// <summary>
/// PostgreSQL's WAL activity during a window, from pg_stat_wal (cluster-wide; the benchmark cluster serves nothing
/// else). Write and sync times are there only with track_wal_io_timing=on, which bench/run-ledger.sh sets.
/// </summary>
internal sealed class PgWalMeter(string connectionString)
{
    private readonly record struct Sample(long Records, long Fpi, decimal Bytes, long Writes, long Syncs, double WriteMs, double SyncMs);

    public sealed record Usage(double Seconds, long Records, long Fpi, decimal Bytes, long Writes, long Syncs, double WriteMs, double SyncMs, bool Timed)
    {
        public override string ToString()
        {
            var s = $"WAL {(double)Bytes / Seconds / 1e6:F1} MB/s, {Syncs / Seconds:N0} fsyncs/s";
            if (Timed && Syncs > 0) s += $" averaging {SyncMs / Syncs:F2} ms (WAL sync busy {SyncMs / (Seconds * 1000):P0}, write busy {WriteMs / (Seconds * 1000):P0})";
            return s + $", {Fpi / Seconds:N0} full-page images/s";
        }
    }

    private async Task<(Sample, bool)> TakeAsync()
    {
        await using var c = new NpgsqlConnection(connectionString);
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync, wal_write_time, wal_sync_time, " +
            "current_setting('track_wal_io_timing')::boolean FROM pg_stat_wal", c);
        await using var r = await cmd.ExecuteReaderAsync();
        await r.ReadAsync();
        return (new Sample(r.GetInt64(0), r.GetInt64(1), r.GetDecimal(2), r.GetInt64(3), r.GetInt64(4), r.GetDouble(5), r.GetDouble(6)), r.GetBoolean(7));
    }

    public async Task<Usage?> MeasureAsync(Window w)
    {
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, (w.MeasureStart - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency)));
            var t0 = Stopwatch.GetTimestamp();
            var (a, _) = await TakeAsync();
            await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, (w.MeasureEnd - Stopwatch.GetTimestamp()) / (double)Stopwatch.Frequency)));
            var (b, timed) = await TakeAsync();
            var seconds = (Stopwatch.GetTimestamp() - t0) / (double)Stopwatch.Frequency;
            return new Usage(seconds, b.Records - a.Records, b.Fpi - a.Fpi, b.Bytes - a.Bytes, b.Writes - a.Writes, b.Syncs - a.Syncs,
                b.WriteMs - a.WriteMs, b.SyncMs - a.SyncMs, timed);
        }
        catch (NpgsqlException e)
        {
            Console.Error.WriteLine($"  pg_stat_wal unavailable: {e.Message}");
            return null;
        }
    }
}
