using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Bench;

/// <summary>
/// <c>--suite usage</c>: end-to-end usage ingestion. Boots the real app in-process on real Kestrel at 127.0.0.1 on a
/// fresh database, creates customers (account, large grant, API key) through the admin API, then drives
/// <c>POST /api/v1/usage/events</c> over real HTTP with batches of unique events, closed loop, N requests in flight.
/// Afterwards it checks: ledger audit healthy, usage records = accepted events, sum of user prices in the records =
/// sum of the usage transfers in the ledger = sum reported in the responses.
/// <list type="number">
/// <item>set-up: fresh database, app, customers (not measured)</item>
/// <item>warm-up: load, not counted</item>
/// <item>window: a batch counts if its response arrived inside it; throughput = accepted events of those batches / window</item>
/// <item>drain, then verify against everything accepted (warm-up included)</item>
/// </list>
/// The load generator runs in the same process and shares the cores with the app; its CPU is part of "bench".
/// </summary>
internal static class UsageBench
{
    public const string Usage = """
        Tollgate usage-ingestion benchmark: usage events per second through POST /api/v1/usage/events over HTTP,
        each event rated, debited through the ledger and recorded, durable commits.

          dotnet run -c Release --project bench/Tollgate.Bench -- --suite usage [options]

          --engine postgres|sqlite|all   engines to run (default postgres)
          --seconds N                    measured window (default 15)
          --warmup N                     unmeasured seconds before it (default 5)
          --inflight N                   concurrent requests (HTTP connections) (default 16)
          --batch N                      events per request (default 100)
          --accounts N                   customers, each with an API key; requests go round-robin (default 100)
          --model ID                     model of every event (default openai/gpt-4o-mini)
          --pg CONNSTRING                PostgreSQL server (default $TOLLGATE_BENCH_POSTGRES); database
                                         tgbench_usage is created and dropped on it
          --sqlite-dir DIR               where the SQLite file goes (default /tmp/tollgate-bench)
          --breakdown                    after the HTTP run, time each stage alone (same in-flight count, 3 s each):
                                         JSON parsing, the whole service call without HTTP, ledger debits only,
                                         record inserts only, duplicate lookup only
          --keep                         keep the benchmark database afterwards
        """;

    private const string AdminKey = "tg_admin_bench_0123456789abcdefghijklmnopqrstuvwxyz";
    /// <summary>Grant per customer (micro-USD): a million dollars, never exhausted by a run.</summary>
    private const long Grant = 1_000_000_000_000;

    private sealed record Settings(IReadOnlyList<Engine> Engines, int Seconds, int Warmup, int InFlight, int Batch, int Accounts, string Model, bool Breakdown, BenchOptions Db);

    private sealed record Result(Engine Engine, Settings S, long Events, long Batches, double Seconds, LatencyHistogram Latency, long Failed,
        string Checks, bool Healthy, CpuMeter.Usage? Cpu, double GcPauseMs)
    {
        public double PerSecond => Events / Seconds;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        Settings s;
        try { s = Parse(args); }
        catch (ArgumentException e) { Console.Error.WriteLine(e.Message); Console.Error.WriteLine(Usage); return 2; }

        Console.WriteLine($"# Tollgate usage-ingestion benchmark  {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");
        Console.WriteLine($"runtime {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}, {Environment.ProcessorCount} cores, GC server={System.Runtime.GCSettings.IsServerGC}");
        Console.WriteLine($"window {s.Seconds} s after {s.Warmup} s warm-up; {s.InFlight} requests in flight; {s.Batch} events/request; " +
                          $"{s.Accounts} customers round-robin; model {s.Model}");
        var meter = new CpuMeter(0);
        if (s.Engines.Contains(Engine.Postgres))
        {
            var (version, backend) = await ServerInfo.PostgresAsync(s.Db.Postgres!);
            Console.WriteLine($"postgres: {version}");
            meter = new CpuMeter(CpuMeter.ParentOf(backend));
        }
        if (s.Engines.Contains(Engine.Sqlite)) Console.WriteLine($"sqlite: {await ServerInfo.SqliteAsync(s.Db.SqliteDir)} in {s.Db.SqliteDir}");
        Console.WriteLine();

        var results = new List<Result>();
        foreach (var engine in s.Engines)
        {
            var r = await RunOneAsync(s, engine, meter);
            results.Add(r);
            Console.WriteLine(Line(r));
        }
        Console.WriteLine();
        Console.WriteLine("| engine | in flight | events/request | events/s | requests/s | p50 ms | p99 ms | max ms | checks | CPU (machine / bench / postgres) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
        foreach (var r in results)
            Console.WriteLine($"| {(r.Engine == Engine.Postgres ? "PostgreSQL" : "SQLite")} | {r.S.InFlight} | {r.S.Batch} | {r.PerSecond:N0} | {r.Batches / r.Seconds:N0} | " +
                              $"{r.Latency.QuantileMs(0.5):F1} | {r.Latency.QuantileMs(0.99):F1} | {r.Latency.MaxMs:F1} | {(r.Healthy ? "ok" : "FAILED")} | " +
                              $"{(r.Cpu is { } c ? $"{c.Machine:P0} / {c.Self:P0} / {c.Postgres:P0}" : "")} |");
        return results.All(r => r.Healthy) ? 0 : 1;
    }

    private static string Line(Result r)
    {
        var l = r.Latency;
        var sb = new StringBuilder();
        sb.Append($"{(r.Engine == Engine.Postgres ? "PostgreSQL" : "SQLite"),-10} {r.S.InFlight} in flight  {r.PerSecond,9:N0} events/s  {r.Batches / r.Seconds:N0} requests/s  ");
        sb.Append($"request p50 {l.QuantileMs(0.5):F1}  p99 {l.QuantileMs(0.99):F1}  max {l.MaxMs:F1} ms");
        if (r.Failed > 0) sb.Append($"  FAILED REQUESTS {r.Failed}");
        sb.Append($"\n{"",11}{r.Checks}");
        sb.Append($"\n{"",11}GC paused {r.GcPauseMs:F0} ms during warm-up + window");
        if (r.Cpu is { } cpu)
        {
            var us = 1e6 * Environment.ProcessorCount * r.Seconds / Math.Max(1, r.Events);
            sb.Append($"\n{"",11}{cpu}; per event: bench (app + load generator) {cpu.Self * us:F1} µs, postgres {cpu.Postgres * us:F1} µs CPU");
        }
        return sb.ToString();
    }

    private static async Task<Result> RunOneAsync(Settings s, Engine engine, CpuMeter meter)
    {
        const string name = "usage";
        await BenchDatabases.CreateAsync(s.Db, engine, name);
        var database = engine == Engine.Postgres
            ? new NpgsqlConnectionStringBuilder(s.Db.Postgres) { Database = $"tgbench_{name}" }.ConnectionString
            : Path.Combine(s.Db.SqliteDir, name + ".db");
        var app = TollgateApp.Build(["--urls", "http://127.0.0.1:0"], database, b =>
        {
            b.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Tollgate:AdminKey"] = AdminKey });
            b.Logging.SetMinimumLevel(LogLevel.Warning);
        });
        try
        {
            await TollgateApp.PrepareAsync(app);
            await app.StartAsync();
            var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

            using var handler = new SocketsHttpHandler
            {
                MaxConnectionsPerServer = s.InFlight,
                PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
                AutomaticDecompression = DecompressionMethods.None,
                UseProxy = false,
                UseCookies = false,
                AllowAutoRedirect = false,
            };
            using var http = new HttpClient(handler, disposeHandler: false) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) };
            var keys = await CreateCustomersAsync(http, s.Accounts);

            var window = Window.StartingIn(0.1, s.Warmup, s.Seconds);
            var gc0 = GC.GetTotalPauseDuration();
            var cpu = meter.MeasureAsync(window);
            var workers = Enumerable.Range(0, s.InFlight).Select(w => DriveAsync(http, keys, s, w, window)).ToArray();
            var done = await Task.WhenAll(workers);
            var gcMs = (GC.GetTotalPauseDuration() - gc0).TotalMilliseconds;

            var latency = new LatencyHistogram();
            long events = 0, batches = 0, failed = 0, allAccepted = 0, allPrice = 0;
            foreach (var d in done)
            {
                latency.Add(d.Latency);
                events += d.WindowEvents;
                batches += d.WindowBatches;
                failed += d.Failed;
                allAccepted += d.Accepted;
                allPrice += d.Price;
            }

            // Verification over everything accepted, warm-up included.
            var audit = await app.Services.GetRequiredService<LedgerService>().AuditAsync();
            var db = app.Services.GetRequiredService<Database>();
            var records = await Scalar(db, "SELECT COUNT(*) FROM usage_records");
            var recordPrice = await Scalar(db, "SELECT COALESCE(SUM(user_price_micros), 0) FROM usage_records");
            var transfers = await Scalar(db, "SELECT COUNT(*) FROM ledger_transfers WHERE code = 'usage'");
            var debited = await Scalar(db, "SELECT COALESCE(SUM(amount), 0) FROM ledger_transfers WHERE code = 'usage'");
            var healthy = audit.Healthy && failed == 0 && records == allAccepted && transfers == allAccepted && recordPrice == allPrice && debited == allPrice;
            var checks = $"{(healthy ? "checks ok" : "CHECKS FAILED")}: audit {(audit.Healthy ? "ok" : "FAILED " + string.Join("; ", audit.Violations.Take(3)))} " +
                         $"({audit.Transfers:N0} transfers); accepted {allAccepted:N0}, records {records:N0}, usage transfers {transfers:N0}; " +
                         $"price reported {allPrice:N0}, recorded {recordPrice:N0}, debited {debited:N0} micro-USD";
            var result = new Result(engine, s, events, batches, window.Seconds, latency, failed, checks, healthy, await cpu, gcMs);
            if (s.Breakdown) await BreakdownAsync(app.Services, s, meter);
            return result;
        }
        finally
        {
            await app.StopAsync();
            // A Database given to DI as an instance is not disposed with it; its connection pool would block DROP DATABASE.
            await app.Services.GetRequiredService<Database>().DisposeAsync();
            await app.DisposeAsync();
            if (engine == Engine.Postgres)
            {
                // The app's ledger writer may still hold a pooled connection; end them so DROP DATABASE can go ahead.
                await using var admin = new NpgsqlConnection(s.Db.Postgres);
                await admin.OpenAsync();
                await using var kill = new NpgsqlCommand(
                    $"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'tgbench_{name}' AND pid <> pg_backend_pid()", admin);
                await kill.ExecuteNonQueryAsync();
            }
            if (!s.Db.Keep) await BenchDatabases.DropAsync(s.Db, engine, name);
        }
    }

    private static async Task<string[]> CreateCustomersAsync(HttpClient http, int count)
    {
        var keys = new string[count];
        for (var i = 0; i < count; i++)
        {
            var account = await Admin(http, "/admin/v1/accounts", $$"""{"name":"bench {{i}}"}""");
            var id = account.GetProperty("id").GetString()!;
            await Admin(http, $"/admin/v1/accounts/{id}/credits", $$"""{"amount_micros":{{Grant}},"idempotency_key":"bench-grant-{{i}}","reason":"bench"}""");
            keys[i] = (await Admin(http, $"/admin/v1/accounts/{id}/keys", "{}")).GetProperty("key").GetString()!;
        }
        return keys;
    }

    private static async Task<JsonElement> Admin(HttpClient http, string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode) throw new InvalidOperationException($"{path}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private sealed record WorkerResult(LatencyHistogram Latency, long WindowEvents, long WindowBatches, long Accepted, long Price, long Failed);

    /// <summary>One connection's closed loop: a batch, its answer, the next batch, until the window ends.</summary>
    private static async Task<WorkerResult> DriveAsync(HttpClient http, string[] keys, Settings s, int worker, Window w)
    {
        await Task.Yield();
        var latency = new LatencyHistogram();
        long windowEvents = 0, windowBatches = 0, accepted = 0, price = 0, failed = 0;
        var random = new Random(worker);
        var sb = new StringBuilder(s.Batch * 200);
        var delay = w.Begin - Stopwatch.GetTimestamp();
        if (delay > 0) await Task.Delay(TimeSpan.FromSeconds(delay / (double)Stopwatch.Frequency));
        for (var seq = 0; Stopwatch.GetTimestamp() < w.MeasureEnd; seq++)
        {
            var key = keys[(worker + seq * s.InFlight) % keys.Length];
            var json = BatchJson(sb, random, s, worker.ToString(CultureInfo.InvariantCulture), seq);
            using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/usage/events")
            {
                Content = new StringContent(json, Encoding.UTF8, "application/json"),
            };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            var t0 = Stopwatch.GetTimestamp();
            long ok = 0, sum = 0;
            try
            {
                using var response = await http.SendAsync(request);
                var body = await response.Content.ReadAsByteArrayAsync();
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    if (failed++ < 3) Console.Error.WriteLine($"usage request: {(int)response.StatusCode} {Encoding.UTF8.GetString(body)[..Math.Min(500, body.Length)]}");
                    continue;
                }
                using var doc = JsonDocument.Parse(body);
                foreach (var e in doc.RootElement.GetProperty("data").EnumerateArray())
                {
                    if (e.GetProperty("status").GetString() != "accepted") continue;
                    ok++;
                    sum += e.GetProperty("user_price_micros").GetInt64();
                }
                if (ok != s.Batch && failed++ < 3) Console.Error.WriteLine($"usage request: {s.Batch - ok} events not accepted: {Encoding.UTF8.GetString(body)[..Math.Min(500, body.Length)]}");
            }
            catch (HttpRequestException e)
            {
                if (failed++ < 3) Console.Error.WriteLine($"usage request: {e.Message}");
                continue;
            }
            var t1 = Stopwatch.GetTimestamp();
            accepted += ok;
            price += sum;
            if (w.Contains(t1) && t0 >= w.MeasureStart)
            {
                latency.Record(t1 - t0);
                windowEvents += ok;
                windowBatches++;
            }
            else if (w.Contains(t1))
            {
                // Started in the warm-up, answered in the window: its events count, its latency straddles the edge.
                windowEvents += ok;
                windowBatches++;
            }
        }
        return new WorkerResult(latency, windowEvents, windowBatches, accepted, price, failed);
    }

    /// <summary>
    /// Each stage of ingestion alone, with as many concurrent loops as requests in flight, for 3 s: events/s and CPU
    /// per event (this process; PostgreSQL's own). Stages that touch the database use fresh ids.
    /// </summary>
    private static async Task BreakdownAsync(IServiceProvider services, Settings s, CpuMeter meter)
    {
        var db = services.GetRequiredService<Database>();
        var callers = new List<Caller>();
        await using (var c = await db.OpenAsync(CancellationToken.None))
        await using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT k.id, a.id, a.ledger_account_id FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY a.id";
            await using var r = await cmd.ExecuteReaderAsync();
            while (await r.ReadAsync()) callers.Add(new Caller(r.GetString(0), r.GetString(1), r.GetInt64(2)));
        }
        var ledger = services.GetRequiredService<LedgerService>();
        var revenue = await services.GetRequiredService<SystemAccounts>().RevenueAsync(CancellationToken.None);
        var store = services.GetRequiredService<IUsageStore>();
        var usage = services.GetRequiredService<UsageEventService>();
        var run = 0;

        byte[] Body(string tag, int seq) => Encoding.UTF8.GetBytes(BatchJson(new StringBuilder(), new Random(seq), s, tag, seq));
        (UsageEvent? Event, UsageEventResult? Rejection)[] ParseBody(byte[] body)
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.GetProperty("events").EnumerateArray().Select(UsageEndpoints.Parse).ToArray();
        }

        Console.WriteLine($"{"",11}stages alone, {s.InFlight} concurrent loops of {s.Batch} events:");
        var sample = Body("p", 0);
        await Stage("JSON parse + event validation (no I/O)", 1, async (loop, seq) => { ParseBody(sample); await Task.CompletedTask; });
        await Stage("UsageEventService.ProcessAsync (no HTTP)", s.InFlight, async (loop, seq) =>
            await usage.ProcessAsync(callers[(loop + seq) % callers.Count], ParseBody(Body($"s{run}-{loop}", seq)), CancellationToken.None));
        await Stage("ledger debits only (TransferAsync x batch)", s.InFlight, async (loop, seq) =>
        {
            var caller = callers[(loop + seq) % callers.Count];
            await Task.WhenAll(Enumerable.Range(0, s.Batch).Select(k => ledger.TransferAsync(new TransferRequest
            {
                Id = $"bd:{run}:{loop}:{seq}:{k}", DebitAccountId = caller.LedgerAccountId, CreditAccountId = revenue, Amount = 1_000, Code = "bench",
            }, CancellationToken.None)));
        });
        await Stage("usage record inserts only (InsertManyAsync)", s.InFlight, async (loop, seq) =>
        {
            var caller = callers[(loop + seq) % callers.Count];
            var now = DateTimeOffset.UtcNow;
            var records = Enumerable.Range(0, s.Batch).Select(k => new UsageRecord($"bd-{run}-{loop}-{seq}-{k}", caller.AccountId, caller.KeyId, "openai/gpt-4o-mini",
                "openai", 1000, 200, 100, 0, 0, 123, "0.000123", 150, UsageBillingStatus.Billed, $"req-{k}", null, null, now, now)).ToArray();
            await store.InsertManyAsync(records, CancellationToken.None);
        });
        await Stage("duplicate lookup only (GetManyAsync, none found)", s.InFlight, async (loop, seq) =>
            await store.GetManyAsync(callers[(loop + seq) % callers.Count].AccountId,
                Enumerable.Range(0, s.Batch).Select(k => $"none-{loop}-{seq}-{k}").ToArray(), CancellationToken.None));

        async Task Stage(string name, int loops, Func<int, int, Task> batch)
        {
            run++;
            var w = Window.StartingIn(0, 1, 3);
            var cpu = meter.MeasureAsync(w);
            var counts = await Task.WhenAll(Enumerable.Range(0, loops).Select(async loop =>
            {
                await Task.Yield();
                long n = 0;
                for (var seq = 0; Stopwatch.GetTimestamp() < w.MeasureEnd; seq++)
                {
                    await batch(loop, seq);
                    if (w.Contains(Stopwatch.GetTimestamp())) n += s.Batch;
                }
                return n;
            }));
            var events = counts.Sum();
            var usageCpu = await cpu;
            var us = 1e6 * Environment.ProcessorCount * w.Seconds / Math.Max(1, events);
            Console.WriteLine($"{"",13}{name,-50} {events / w.Seconds,9:N0} events/s" +
                              (usageCpu is { } c ? $"  CPU/event: bench {c.Self * us:F1} µs, postgres {c.Postgres * us:F1} µs" : ""));
        }
    }

    private static string BatchJson(StringBuilder sb, Random random, Settings s, string tag, int seq)
    {
        sb.Clear().Append("{\"events\":[");
        for (var k = 0; k < s.Batch; k++)
        {
            if (k > 0) sb.Append(',');
            // Typical chat-completion shapes: a few hundred to a few thousand prompt tokens, some cached.
            var input = random.Next(200, 4_000);
            sb.Append(CultureInfo.InvariantCulture,
                $$"""{"id":"evt-{{tag}}-{{seq}}-{{k}}","model":"{{s.Model}}","input_tokens":{{input}},"output_tokens":{{random.Next(20, 800)}},"cache_read_tokens":{{random.Next(0, input / 2)}},"cache_write_tokens":0,"reasoning_tokens":0,"request_id":"req-{{tag}}-{{seq}}-{{k}}"}""");
        }
        return sb.Append("]}").ToString();
    }

    private static async Task<long> Scalar(Database db, string sql)
    {
        await using var connection = await db.OpenAsync(CancellationToken.None);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    private static Settings Parse(string[] args)
    {
        IReadOnlyList<Engine> engines = [Engine.Postgres];
        int seconds = 15, warmup = 5, inflight = 16, batch = 100, accounts = 100;
        var model = "openai/gpt-4o-mini";
        var db = new BenchOptions();
        var breakdown = false;
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value.");
            int Int(int min, int max = int.MaxValue) => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max
                ? v : throw new ArgumentException($"{a} needs an integer {min}–{max}.");
            switch (a)
            {
                case "--engine":
                    engines = Value() switch
                    {
                        "postgres" or "pg" => [Engine.Postgres],
                        "sqlite" => [Engine.Sqlite],
                        "all" => [Engine.Postgres, Engine.Sqlite],
                        var v => throw new ArgumentException($"Unknown engine '{v}'."),
                    };
                    break;
                case "--seconds": seconds = Int(1); break;
                case "--warmup": warmup = Int(0); break;
                case "--inflight": inflight = Int(1); break;
                case "--batch": batch = Int(1, 1_000); break;
                case "--accounts": accounts = Int(1); break;
                case "--model": model = Value(); break;
                case "--pg": db = db with { Postgres = Value() }; break;
                case "--sqlite-dir": db = db with { SqliteDir = Value() }; break;
                case "--breakdown": breakdown = true; break;
                case "--keep": db = db with { Keep = true }; break;
                default: throw new ArgumentException($"Unknown option '{a}'.");
            }
        }
        if (engines.Contains(Engine.Postgres) && string.IsNullOrWhiteSpace(db.Postgres))
            throw new ArgumentException("PostgreSQL needs --pg or TOLLGATE_BENCH_POSTGRES (bench/run-usage.sh starts a durable server and sets it).");
        return new Settings(engines, seconds, warmup, inflight, batch, accounts, model, breakdown, db with { Engines = engines });
    }
}
