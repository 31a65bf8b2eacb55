using System.Diagnostics;
using System.Globalization;
using Npgsql;
using Tollgate.Features.Analytics;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Bench;

/// <summary>
/// <c>--suite usage-summary</c>: a usage summary over a month of history on PostgreSQL. Migrates a fresh database
/// (tgbench_usage_summary), generates N usage records for one account spread evenly over 30 days with
/// <c>INSERT … SELECT generate_series</c> in chunks (folded into usage_rollups after each chunk, as the server folds
/// every real batch, so its cost is part of the load time), then times <see cref="AnalyticsStore.SummaryAsync"/>
/// (the code behind <c>GET /api/v1/usage/summary</c>) for group_by=day and group_by=model over the month, whole days
/// and with partial days at both ends, against a baseline: the same totals computed by one GROUP BY over
/// usage_records. Checks that both give the same totals.
/// </summary>
internal static class UsageSummaryBench
{
    public const string Usage = """
        Tollgate usage-summary benchmark: GET /api/v1/usage/summary's query over a month of records, rollups vs raw.

          dotnet run -c Release --project bench/Tollgate.Bench -- --suite usage-summary [options]

          --records N       usage records to generate (default 10000000)
          --models N        distinct models (default 20); providers = models / 4
          --keys N          distinct API keys (default 11)
          --customers N     distinct end customers (default 97)
          --runs N          timed runs per query; min and median are reported (default 5)
          --pg CONNSTRING   PostgreSQL server (default $TOLLGATE_BENCH_POSTGRES); database tgbench_usage_summary is
                            created and dropped on it
          --keep            keep the database afterwards (a re-run with --reuse skips generation)
          --reuse           use the kept database as it is
        """;

    private const string AccountId = "acct_bench";
    private const long Day = 86_400_000_000;

    public static async Task<int> RunAsync(string[] args)
    {
        long records = 10_000_000;
        int models = 20, keys = 11, customers = 97, runs = 5;
        var pg = Environment.GetEnvironmentVariable("TOLLGATE_BENCH_POSTGRES");
        bool keep = false, reuse = false;
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--records": records = long.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--models": models = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--keys": keys = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--customers": customers = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--runs": runs = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--pg": pg = Next(); break;
                case "--keep": keep = true; break;
                case "--reuse": reuse = true; break;
                case "--help" or "-h": Console.WriteLine(Usage); return 0;
                default: Console.Error.WriteLine($"Unknown option {args[i]}.\n{Usage}"); return 2;
            }
        }
        if (pg is null) { Console.Error.WriteLine("--pg or $TOLLGATE_BENCH_POSTGRES is required."); return 2; }

        const string dbName = "tgbench_usage_summary";
        var target = new NpgsqlConnectionStringBuilder(pg) { Database = dbName, CommandTimeout = 0 }.ConnectionString;
        Console.WriteLine($"# Tollgate usage-summary benchmark  {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");
        Console.WriteLine($"{Environment.ProcessorCount} cores; {records:N0} records, {models} models, {keys} keys, {customers} end customers, one account, 30 days");
        if (!reuse)
        {
            NpgsqlConnection.ClearAllPools();
            await using (var admin = new NpgsqlConnection(pg))
            {
                await admin.OpenAsync();
                await Exec(admin, $"DROP DATABASE IF EXISTS {dbName}");
                await Exec(admin, $"CREATE DATABASE {dbName}");
            }
        }
        var db = new Database(DatabaseTarget.Parse(target));
        await new Migrator(db).MigrateAsync(CancellationToken.None);
        var monthStart = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var startMicros = monthStart.ToUnixTimeMilliseconds() * 1000;
        var spacing = 30 * Day / records;
        await using var c = new NpgsqlConnection(target);
        await c.OpenAsync();
        Console.WriteLine($"postgres: {await Scalar(c, "SELECT version()")}");
        // The API turns JIT off for its summary transaction (AnalyticsStore); the baseline gets the same treatment.
        await Exec(c, "SET jit = off");
        if (!reuse)
        {
            await Exec(c, $"""
                INSERT INTO ledger_accounts (kind, key, created_at) VALUES ('customer', 'bench', 0);
                INSERT INTO accounts (id, name, ledger_account_id, created_at) SELECT '{AccountId}', 'bench', id, 0 FROM ledger_accounts WHERE key = 'bench';
                """);
            var load = Stopwatch.StartNew();
            const long chunk = 1_000_000;
            for (long first = 0; first < records; first += chunk)
            {
                var last = Math.Min(records, first + chunk) - 1;
                await Exec(c, $"""
                    INSERT INTO usage_records (account_id, id, key_id, model, provider, input_tokens, output_tokens, cache_read_tokens,
                        cache_write_tokens, reasoning_tokens, provider_cost_micros, provider_cost_usd, user_price_micros, billing_status,
                        request_id, metadata, transfer_id, created_at, occurred_at, customer_id)
                    SELECT '{AccountId}', 'r' || g, 'key_' || (g % {keys}), 'model-' || (g % {models}), 'provider-' || (g % {models} / 4),
                           500 + g % 1000, 100 + g % 300, g % 50, 0, g % 7, 100 + g % 900, NULL, 200 + g % 1800,
                           CASE WHEN g % 50 = 0 THEN 'internal' ELSE 'billed' END, NULL, NULL, NULL,
                           {startMicros} + g * {spacing}, {startMicros} + g * {spacing}, 'cust-' || (g % {customers})
                    FROM generate_series(CAST({first} AS bigint), {last}) g
                    """);
                // What UsageRollupFolder does every second in a running server: fold what arrived into the rollups.
                await Exec(c, "SELECT usage_rollups_fold()");
            }
            load.Stop();
            await Exec(c, "VACUUM ANALYZE usage_records");
            await Exec(c, "VACUUM ANALYZE usage_rollups");
            Console.WriteLine($"generated and folded {records:N0} records in {load.Elapsed.TotalSeconds:F1} s " +
                              $"({records / load.Elapsed.TotalSeconds:N0} records/s)");
        }
        Console.WriteLine($"usage_records: {await Scalar(c, "SELECT count(*) FROM usage_records"):N0} rows, " +
                          $"{await Scalar(c, "SELECT pg_size_pretty(pg_total_relation_size('usage_records'))")}; " +
                          $"usage_rollups: {await Scalar(c, "SELECT count(*) FROM usage_rollups"):N0} rows, " +
                          $"{await Scalar(c, "SELECT pg_size_pretty(pg_total_relation_size('usage_rollups'))")}");
        Console.WriteLine();

        var store = new AnalyticsStore(db);
        var whole = new UsageFilter(AccountId, startMicros, startMicros + 30 * Day, null, null, null, null, null, null);
        var partial = whole with { FromMicros = startMicros + 5 * 3_600_000_000L, ToMicros = startMicros + 30 * Day - 3 * 3_600_000_000L };
        Console.WriteLine("| query | group_by | range | groups | requests | min ms | median ms |");
        Console.WriteLine("|---|---|---|---:|---:|---:|---:|");
        var failed = false;
        foreach (var (grouping, column) in new[] { (UsageGrouping.Day, "occurred_at / 86400000000"), (UsageGrouping.Model, "model") })
            foreach (var (label, filter) in new[] { ("whole days", whole), ("partial ends", partial) })
            {
                IReadOnlyList<UsageTotals> rollup = [];
                var (rollupMin, rollupMedian) = await TimeAsync(runs, async () => rollup = await store.SummaryAsync(filter, grouping, null, CancellationToken.None));
                Print("rollups (API)", grouping, label, rollup.Count, rollup.Sum(g => g.Requests), rollupMin, rollupMedian);
                var rawRequests = 0L;
                var rawGroups = 0;
                var rawInput = 0L;
                var rawPrice = 0L;
                var (rawMin, rawMedian) = await TimeAsync(runs, async () =>
                {
                    await using var cmd = new NpgsqlCommand($"""
                        SELECT {column}, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
                               sum(reasoning_tokens), sum(coalesce(user_price_micros, 0))
                        FROM usage_records WHERE account_id = @a AND occurred_at >= @f AND occurred_at < @t GROUP BY 1
                        """, c);
                    cmd.Parameters.AddWithValue("a", AccountId);
                    cmd.Parameters.AddWithValue("f", filter.FromMicros!.Value);
                    cmd.Parameters.AddWithValue("t", filter.ToMicros!.Value);
                    (rawGroups, rawRequests, rawInput, rawPrice) = (0, 0, 0, 0);
                    await using var r = await cmd.ExecuteReaderAsync();
                    while (await r.ReadAsync())
                    {
                        rawGroups++;
                        rawRequests += r.GetInt64(1);
                        rawInput += (long)r.GetDecimal(2);
                        rawPrice += (long)r.GetDecimal(7);
                    }
                });
                Print("baseline: GROUP BY usage_records", grouping, label, rawGroups, rawRequests, rawMin, rawMedian);
                if (rawGroups != rollup.Count || rawRequests != rollup.Sum(g => g.Requests) || rawInput != rollup.Sum(g => g.InputTokens)
                    || rawPrice != rollup.Sum(g => g.UserPriceMicros))
                {
                    Console.WriteLine($"MISMATCH: rollups and records disagree for {grouping} {label}");
                    failed = true;
                }
            }
        await c.CloseAsync();
        await db.DisposeAsync();
        if (!keep)
        {
            NpgsqlConnection.ClearAllPools();
            await using var admin = new NpgsqlConnection(pg);
            await admin.OpenAsync();
            await Exec(admin, $"DROP DATABASE IF EXISTS {dbName}");
        }
        return failed ? 1 : 0;
    }

    private static void Print(string query, UsageGrouping g, string range, int groups, long requests, double min, double median) =>
        Console.WriteLine($"| {query} | {g.ToString().ToLowerInvariant()} | {range} | {groups:N0} | {requests:N0} | {min:F1} | {median:F1} |");

    /// <summary>One untimed warm-up run, then <paramref name="runs"/> timed runs.</summary>
    private static async Task<(double Min, double Median)> TimeAsync(int runs, Func<Task> run)
    {
        await run();
        var ms = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            await run();
            ms.Add(sw.Elapsed.TotalMilliseconds);
        }
        ms.Sort();
        return (ms[0], ms[ms.Count / 2]);
    }

    private static async Task Exec(NpgsqlConnection c, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, c) { CommandTimeout = 0 };
        await cmd.ExecuteNonQueryAsync();
    }

    private static async Task<object?> Scalar(NpgsqlConnection c, string sql)
    {
        await using var cmd = new NpgsqlCommand(sql, c) { CommandTimeout = 0 };
        return await cmd.ExecuteScalarAsync();
    }
}
