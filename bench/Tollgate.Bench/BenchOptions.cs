using System.Globalization;

namespace Tollgate.Bench;

internal enum Engine { Postgres, Sqlite }

internal enum Shape
{
    /// <summary>Every transfer debits the same prepaid customer.</summary>
    Hot,
    /// <summary>Every transfer debits a random one of <see cref="BenchOptions.Accounts"/> customers.</summary>
    Spread,
}

/// <summary>Command-line settings. Durations in seconds; rates in transfers per second.</summary>
internal sealed record BenchOptions
{
    public IReadOnlyList<Engine> Engines { get; init; } = [Engine.Postgres, Engine.Sqlite];
    public IReadOnlyList<Shape> Shapes { get; init; } = [Shape.Hot, Shape.Spread];
    /// <summary>Measured window of each run.</summary>
    public int Seconds { get; init; } = 10;
    /// <summary>Unmeasured load before the window (JIT tiering, caches, batch sizes settle).</summary>
    public int Warmup { get; init; } = 3;
    /// <summary>Concurrent client tasks of the closed-loop runs (ledger and naive alike).</summary>
    public int Clients { get; init; } = 256;
    /// <summary>Target of the open-loop (fixed-rate) ledger run; 0 skips it.</summary>
    public int Rate { get; init; } = 20_000;
    /// <summary>Customer accounts of the spread shape.</summary>
    public int Accounts { get; init; } = 10_000;
    /// <summary>Posted transfers already in the ledger before each run (history accounts, not the benchmark's).</summary>
    public int History { get; init; } = 1_000_000;
    /// <summary><see cref="Features.Ledger.LedgerOptions.MaxBatchTransfers"/> for the ledger runs.</summary>
    public int MaxBatch { get; init; } = new Features.Ledger.LedgerOptions().MaxBatchTransfers;
    /// <summary>PostgreSQL connections the naive baseline may use (capped below the server's max_connections).</summary>
    public int NaivePool { get; init; }
    public bool Naive { get; init; } = true;
    public bool Audit { get; init; } = true;
    /// <summary>Key-value connection string of a role allowed to CREATE DATABASE.</summary>
    public string? Postgres { get; init; } = Environment.GetEnvironmentVariable("TOLLGATE_BENCH_POSTGRES");
    public string SqliteDir { get; init; } = Path.Combine(Path.GetTempPath(), "tollgate-bench");
    public bool Keep { get; init; }

    public int EffectiveNaivePool => NaivePool > 0 ? NaivePool : Math.Min(Clients, 250);

    public const string Usage = """
        Tollgate ledger benchmark: posted transfers per second and acknowledgement latency, group-commit ledger vs
        one transaction per transfer, on PostgreSQL and SQLite with durable commits.

          dotnet run -c Release --project bench/Tollgate.Bench -- [options]

          --engine postgres|sqlite|all   engines to run (default all)
          --shape hot|spread|all         hot = one prepaid customer debited by every transfer;
                                         spread = a random one of --accounts customers (default all)
          --seconds N                    measured window per run (default 10)
          --warmup N                     unmeasured seconds before it (default 3)
          --clients N                    concurrent client tasks, closed loop (default 256)
          --rate N                       open-loop ledger run at N transfers/s; 0 = skip (default 20000)
          --accounts N                   customers in the spread shape (default 10000)
          --history N                    transfers already in the ledger before a run, for realistic index depth
                                         and planner statistics (default 1000000; 0 = start empty)
          --max-batch N                  ledger MaxBatchTransfers (default 2000)
          --naive-pool N                 PostgreSQL connections for the naive baseline (default min(clients, 250))
          --no-naive                     skip the naive one-transaction-per-transfer baseline
          --no-audit                     skip the ledger audit after each ledger run
          --pg CONNSTRING                PostgreSQL server (default $TOLLGATE_BENCH_POSTGRES); databases
                                         tgbench_* are created and dropped on it
          --sqlite-dir DIR               where the SQLite files go (default /tmp/tollgate-bench)
          --keep                         keep the benchmark databases afterwards
        """;

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value.");
            int Int(int min) => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v >= min
                ? v : throw new ArgumentException($"{a} needs an integer ≥ {min}.");
            o = a switch
            {
                "--engine" => o with { Engines = Value() switch
                {
                    "postgres" or "pg" => [Engine.Postgres],
                    "sqlite" => [Engine.Sqlite],
                    "all" => [Engine.Postgres, Engine.Sqlite],
                    var v => throw new ArgumentException($"Unknown engine '{v}'."),
                } },
                "--shape" => o with { Shapes = Value() switch
                {
                    "hot" => [Shape.Hot],
                    "spread" => [Shape.Spread],
                    "all" => [Shape.Hot, Shape.Spread],
                    var v => throw new ArgumentException($"Unknown shape '{v}'."),
                } },
                "--seconds" => o with { Seconds = Int(1) },
                "--warmup" => o with { Warmup = Int(0) },
                "--clients" => o with { Clients = Int(1) },
                "--rate" => o with { Rate = Int(0) },
                "--accounts" => o with { Accounts = Int(2) },
                "--max-batch" => o with { MaxBatch = Int(1) },
                "--history" => o with { History = Int(0) },
                "--naive-pool" => o with { NaivePool = Int(1) },
                "--no-naive" => o with { Naive = false },
                "--no-audit" => o with { Audit = false },
                "--pg" => o with { Postgres = Value() },
                "--sqlite-dir" => o with { SqliteDir = Value() },
                "--keep" => o with { Keep = true },
                _ => throw new ArgumentException($"Unknown option '{a}'."),
            };
        }
        if (o.Engines.Contains(Engine.Postgres) && string.IsNullOrWhiteSpace(o.Postgres))
            throw new ArgumentException("PostgreSQL needs --pg or TOLLGATE_BENCH_POSTGRES (bench/run-ledger.sh starts a durable server and sets it).");
        return o;
    }
}
