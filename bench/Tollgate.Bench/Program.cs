using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Npgsql;
using Tollgate.Bench;
using Tollgate.Infrastructure.Data;

// Ledger throughput benchmark: see BenchOptions.Usage and docs/BENCHMARKS.md.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

if (args.Length >= 2 && args[0] == "--suite")
{
    if (args[1] == "rating") return RatingBench.Run(args);
    if (args[1] == "usage") return await UsageBench.RunAsync(args[2..]);
    if (args[1] == "tokenizer") return TokenizerBench.Run(args);
    if (args[1] == "usage-summary") return await UsageSummaryBench.RunAsync(args[2..]);
    if (args[1] == "http-open") return await HttpOpenLoopBench.RunAsync(args[2..]);
    if (args[1] != "ledger") { Console.Error.WriteLine($"Unknown suite '{args[1]}' (ledger, rating, usage, usage-summary, tokenizer, http-open)."); return 2; }
    args = args[2..];
}

BenchOptions o;
try
{
    if (args.Contains("--help") || args.Contains("-h")) { Console.WriteLine(BenchOptions.Usage); Console.WriteLine(RatingBench.Usage); Console.WriteLine(UsageBench.Usage); Console.WriteLine(TokenizerBench.Usage); return 0; }
    o = BenchOptions.Parse(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

Console.WriteLine($"# Tollgate ledger benchmark  {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");
Console.WriteLine($"runtime {RuntimeInformation.FrameworkDescription}, {Environment.ProcessorCount} cores, GC server={System.Runtime.GCSettings.IsServerGC}");
Console.WriteLine($"window {o.Seconds} s after {o.Warmup} s warm-up; closed loop {o.Clients} clients; open loop {(o.Rate > 0 ? $"{o.Rate}/s" : "off")}; " +
                  $"spread over {o.Accounts} customers; {o.History:N0} transfers of history; MaxBatchTransfers {o.MaxBatch}; naive PostgreSQL pool {o.EffectiveNaivePool}");
Console.WriteLine($"each transfer: {Workloads.Amount} micro-USD, prepaid customer (debits_must_not_exceed_credits) -> revenue");
var meter = new CpuMeter(0);
if (o.Engines.Contains(Engine.Postgres))
{
    var (version, backend) = await ServerInfo.PostgresAsync(o.Postgres!);
    Console.WriteLine($"postgres: {version}");
    // A server on this machine: its postmaster is the parent of our backend, so its CPU can be told apart.
    meter = new CpuMeter(CpuMeter.ParentOf(backend));
}
if (o.Engines.Contains(Engine.Sqlite)) Console.WriteLine($"sqlite: {await ServerInfo.SqliteAsync(o.SqliteDir)} in {o.SqliteDir}");
Console.WriteLine();

var rows = new List<Row>();
foreach (var engine in o.Engines)
    foreach (var shape in o.Shapes)
    {
        var customers = shape == Shape.Hot ? 1 : o.Accounts;
        var e = engine.ToString().ToLowerInvariant();
        var s = shape.ToString().ToLowerInvariant();

        rows.Add(await RunLedgerAsync(engine, shape, customers, $"{e}_{s}_ledger", openRate: 0));
        if (o.Naive) rows.Add(await RunNaiveAsync(engine, shape, customers, $"{e}_{s}_naive"));
        if (o.Rate > 0) rows.Add(await RunLedgerAsync(engine, shape, customers, $"{e}_{s}_ledger_open", openRate: o.Rate));
    }

Console.WriteLine();
Console.WriteLine(Report.Table(rows));
return rows.Any(r => r.Healthy == false) ? 1 : 0;

async Task<Row> RunLedgerAsync(Engine engine, Shape shape, int customers, string name, int openRate)
{
    var db = await BenchDatabases.CreateAsync(o, engine, name);
    var target = await LedgerTarget.CreateAsync(db, o, customers);
    Row row;
    try
    {
        var window = Window.StartingIn(0.1, o.Warmup, o.Seconds);
        target.Store.Measure(window);
        // Garbage-collection pauses stall callers and the writer alike; printed so latency tails can be attributed.
        var (gcPause0, gen2Before) = (GC.GetTotalPauseDuration(), GC.CollectionCount(2));
        var cpu = meter.MeasureAsync(window);
        var wal = engine == Engine.Postgres ? new PgWalMeter(o.Postgres!).MeasureAsync(window) : Task.FromResult<PgWalMeter.Usage?>(null);
        var result = openRate > 0
            ? await Workloads.OpenLoopAsync(target, openRate, customers, window, "o")
            : await Workloads.ClosedLoopAsync(target, o.Clients, customers, window, "c");
        var batches = target.Store.Snapshot();
        var gc = $"GC during warm-up + window: {(GC.GetTotalPauseDuration() - gcPause0).TotalMilliseconds:F0} ms paused, {GC.CollectionCount(2) - gen2Before} gen2; ";
        bool? healthy = null;
        var note = "";
        if (o.Audit)
        {
            var audit = await target.Ledger.AuditAsync();
            healthy = audit.Healthy;
            note = audit.Healthy ? $"audit ok ({audit.Transfers:N0} transfers)" : "AUDIT FAILED: " + string.Join("; ", audit.Violations.Take(3));
        }
        row = new Row(engine, shape, "ledger", openRate > 0 ? $"open {openRate:N0}/s" : $"{o.Clients} clients", result, batches, healthy, gc + note, await cpu, await wal);
    }
    finally
    {
        await target.DisposeAsync();
        if (!o.Keep) await BenchDatabases.DropAsync(o, engine, name);
    }
    Console.WriteLine(Report.Line(row));
    return row;
}

async Task<Row> RunNaiveAsync(Engine engine, Shape shape, int customers, string name)
{
    var db = await BenchDatabases.CreateAsync(o, engine, name);
    ITransferTarget target = engine == Engine.Postgres
        ? await NaivePostgresTarget.CreateAsync(db, o, customers)
        : await NaiveSqliteTarget.CreateAsync(db, o, customers);
    Row row;
    try
    {
        var window = Window.StartingIn(0.1, o.Warmup, o.Seconds);
        var cpu = meter.MeasureAsync(window);
        var wal = engine == Engine.Postgres ? new PgWalMeter(o.Postgres!).MeasureAsync(window) : Task.FromResult<PgWalMeter.Usage?>(null);
        var result = await Workloads.ClosedLoopAsync(target, o.Clients, customers, window, "n");
        // Cross-check: every posted transfer left one transfer row and moved exactly Amount.
        var transfers = await BenchDatabases.ScalarAsync(db, "SELECT COUNT(*) FROM ledger_transfers");
        var debited = await BenchDatabases.ScalarAsync(db, "SELECT COALESCE(SUM(debits_posted), 0) FROM ledger_accounts");
        var healthy = debited == transfers * Workloads.Amount;
        var note = (healthy ? "check ok" : "CHECK FAILED") + $" ({transfers:N0} transfers)";
        var load = $"{o.Clients} clients" + (engine == Engine.Postgres ? $", pool {o.EffectiveNaivePool}" : ", 1 writer");
        row = new Row(engine, shape, "naive", load, result, null, healthy, note, await cpu, await wal);
    }
    finally
    {
        await target.DisposeAsync();
        if (!o.Keep) await BenchDatabases.DropAsync(o, engine, name);
    }
    Console.WriteLine(Report.Line(row));
    return row;
}

namespace Tollgate.Bench
{
    internal sealed record Row(Engine Engine, Shape Shape, string Kind, string Load, RunResult Result, BatchStats? Batches, bool? Healthy, string Note,
        CpuMeter.Usage? Cpu, PgWalMeter.Usage? Wal);

    internal static class Report
    {
        public static string Line(Row r)
        {
            var x = r.Result;
            var l = x.Latency;
            var sb = new StringBuilder();
            sb.Append($"{Name(r.Engine),-10} {Name(r.Shape),-6} {r.Kind,-6} {r.Load,-22} {x.PerSecond,9:N0} posted/s  ");
            sb.Append($"p50 {l.QuantileMs(0.50),7:F2}  p99 {l.QuantileMs(0.99),7:F2}  p99.9 {l.QuantileMs(0.999),7:F2}  max {l.MaxMs,7:F2} ms");
            if (x.NotPosted + x.Errors > 0) sb.Append($"  not posted {x.NotPosted}, errors {x.Errors}");
            if (x.Saturated) sb.Append("  SATURATED (backlog > 2 s, run stopped)");
            if (r.Batches is { } b)
                sb.Append($"\n{"",41}group commit: {b.Batches / b.WindowSeconds:N0} batches/s, {b.MeanBatch:N0} transfers/batch, " +
                          $"apply p50 {b.Apply.QuantileMs(0.5):F2} p99 {b.Apply.QuantileMs(0.99):F2} ms, writer busy {b.Busy:P0}");
            sb.Append($"\n{"",41}{r.Note}");
            if (r.Cpu is { } cpu)
            {
                sb.Append($"\n{"",41}{cpu}");
                if (x.Posted > 0)
                {
                    var us = 1e6 * Environment.ProcessorCount * x.Seconds / x.Posted;
                    sb.Append($"; per posted transfer: bench {cpu.Self * us:F1} µs, postgres {cpu.Postgres * us:F1} µs CPU");
                }
            }
            if (r.Wal is { } wal) sb.Append($"\n{"",41}{wal}");
            return sb.ToString();
        }

        public static string Table(IReadOnlyList<Row> rows)
        {
            var sb = new StringBuilder();
            sb.AppendLine("| engine | shape | run | load | posted/s | p50 ms | p99 ms | p99.9 ms | max ms | transfers/batch | ledger ÷ naive | others' CPU |");
            sb.AppendLine("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in rows)
            {
                var x = r.Result;
                var l = x.Latency;
                var naive = rows.FirstOrDefault(n => n.Kind == "naive" && n.Engine == r.Engine && n.Shape == r.Shape);
                var ratio = r.Kind == "ledger" && !r.Load.StartsWith("open", StringComparison.Ordinal) && naive is { Result.Posted: > 0 }
                    ? $"{x.PerSecond / naive.Result.PerSecond:F1}×" : "";
                var rate = $"{x.PerSecond:N0}" + (x.Saturated ? " (saturated)" : "") + (r.Healthy == false ? " (CHECK FAILED)" : "");
                sb.AppendLine($"| {Name(r.Engine)} | {Name(r.Shape)} | {r.Kind} | {r.Load} | {rate} | {l.QuantileMs(0.5):F2} | {l.QuantileMs(0.99):F2} | " +
                              $"{l.QuantileMs(0.999):F2} | {l.MaxMs:F2} | {(r.Batches is { } b ? $"{b.MeanBatch:N0}" : "1")} | {ratio} | {(r.Cpu is { } c ? $"{c.Others:P0}" : "")} |");
            }
            return sb.ToString();
        }

        private static string Name(Engine e) => e == Engine.Postgres ? "PostgreSQL" : "SQLite";
        private static string Name(Shape s) => s == Shape.Hot ? "hot" : "spread";
    }

    internal static class ServerInfo
    {
        public static async Task<(string Version, int BackendPid)> PostgresAsync(string connectionString)
        {
            await using var c = new NpgsqlConnection(connectionString);
            await c.OpenAsync();
            await using var cmd = new NpgsqlCommand(
                "SELECT current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || " +
                "current_setting('synchronous_commit') || ', full_page_writes=' || current_setting('full_page_writes') || ', wal_sync_method=' || " +
                "current_setting('wal_sync_method') || ', shared_buffers=' || current_setting('shared_buffers')", c);
            return ((string)(await cmd.ExecuteScalarAsync())!, c.ProcessID);
        }

        /// <summary>Version and the pragmas Tollgate's connections get, read from a throwaway file in <paramref name="dir"/>.</summary>
        public static async Task<string> SqliteAsync(string dir)
        {
            Directory.CreateDirectory(dir);
            string v;
            await using (var db = new Database(DatabaseTarget.Parse(Path.Combine(dir, "version.db"))))
            await using (var c = await db.OpenSqliteAsync(CancellationToken.None))
            await using (var cmd = c.CreateCommand())
            {
                cmd.CommandText = "SELECT sqlite_version() || ', journal_mode=' || (SELECT journal_mode FROM pragma_journal_mode) || " +
                                  "', synchronous=' || (SELECT synchronous FROM pragma_synchronous)";
                v = (string)(await cmd.ExecuteScalarAsync())!;
            }
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var f in Directory.GetFiles(dir, "version.db*")) File.Delete(f);
            return v + " (2 = FULL)";
        }
    }
}
