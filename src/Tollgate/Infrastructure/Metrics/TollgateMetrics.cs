using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Tollgate.Infrastructure.Metrics;

/// <summary>
/// Tollgate's instruments (System.Diagnostics.Metrics, meter <c>Tollgate</c>). Labels are bounded: routes are
/// templates, models and providers come from configuration, never user ids or keys.
/// </summary>
public sealed class TollgateMetrics : IDisposable
{
    public const string MeterName = "Tollgate";
    private readonly Meter _meter = new(MeterName);

    /// <summary>This app's meter: an exporter listens to it alone, so several apps in one process (tests) never mix.</summary>
    public Meter Meter => _meter;

    public TollgateMetrics()
    {
        HttpRequests = _meter.CreateCounter<long>("tollgate_http_requests_total", description: "HTTP requests by route template, method and status.");
        HttpDuration = _meter.CreateHistogram<double>("tollgate_http_request_duration_seconds", "s", "Time to answer an HTTP request, by route template.");
        GatewayCalls = _meter.CreateCounter<long>("tollgate_gateway_calls_total", description: "Gateway calls settled, by provider, model and outcome.");
        GatewayTokens = _meter.CreateCounter<long>("tollgate_gateway_tokens_total", description: "Tokens metered by the gateway, by model and kind.");
        GatewayCharged = _meter.CreateCounter<long>("tollgate_gateway_charged_microusd_total", description: "Micro-USD charged for gateway calls, by model.");
        UpstreamLatency = _meter.CreateHistogram<double>("tollgate_gateway_upstream_seconds", "s", "Upstream time to response headers, by provider.");
        AddedLatency = _meter.CreateHistogram<double>("tollgate_gateway_added_seconds", "s", "Time Tollgate added before forwarding (auth, rating, hold).");
        SettleLatency = _meter.CreateHistogram<double>("tollgate_gateway_settle_seconds", "s",
            "Time from the upstream's answer to its charge being committed (the part of the added latency after forwarding).");
        RateLimited = _meter.CreateCounter<long>("tollgate_gateway_rejections_total", description: "Gateway calls refused before forwarding, by reason.");
        LedgerBatchCommands = _meter.CreateHistogram<long>("tollgate_ledger_batch_commands", description: "Commands committed per ledger database transaction.");
        LedgerCommit = _meter.CreateHistogram<double>("tollgate_ledger_commit_seconds", "s", "Time to apply and commit one ledger batch.");
        Webhooks = _meter.CreateCounter<long>("tollgate_stripe_webhooks_total", description: "Stripe webhook deliveries, by outcome.");
        WebhookDeliveries = _meter.CreateCounter<long>("tollgate_webhook_deliveries_total",
            description: "Outgoing webhook delivery attempts, by outcome (delivered, retrying, failed, endpoint_gone).");
        _meter.CreateObservableGauge("tollgate_ledger_holds_open", () => Volatile.Read(ref _holdsOpen),
            description: "Pending holds (authorizations) not yet posted, voided or expired; refreshed at most every few seconds.");
        _meter.CreateObservableGauge("tollgate_ledger_held_microusd", () => Volatile.Read(ref _heldMicros),
            description: "Micro-USD reserved by open holds; refreshed at most every few seconds.");
        ObserveRuntime();
    }

    /// <summary>
    /// The process's own health: a starved thread pool (a queue that grows while the thread count climbs) shows up here
    /// before it shows up as a latency tail. Even the ledger writer's own thread waits for a pool thread at each
    /// database round trip (docs/BENCHMARKS.md, "Session 10").
    /// </summary>
    private void ObserveRuntime()
    {
        _meter.CreateObservableGauge("tollgate_runtime_threadpool_threads", () => (long)ThreadPool.ThreadCount,
            description: "Thread-pool threads in this process.");
        _meter.CreateObservableGauge("tollgate_runtime_threadpool_queue_length", () => ThreadPool.PendingWorkItemCount,
            description: "Work items queued for the thread pool and not yet started.");
        _meter.CreateObservableCounter("tollgate_runtime_threadpool_completed_items_total", () => ThreadPool.CompletedWorkItemCount,
            description: "Work items the thread pool has run.");
        _meter.CreateObservableCounter("tollgate_runtime_lock_contentions_total", () => Monitor.LockContentionCount,
            description: "Times a thread waited for a lock held by another.");
        _meter.CreateObservableCounter("tollgate_runtime_gc_collections_total", () => new[]
        {
            new Measurement<long>(GC.CollectionCount(0), new KeyValuePair<string, object?>("generation", "0")),
            new Measurement<long>(GC.CollectionCount(1), new KeyValuePair<string, object?>("generation", "1")),
            new Measurement<long>(GC.CollectionCount(2), new KeyValuePair<string, object?>("generation", "2")),
        }, description: "Garbage collections by generation (a collection of generation 2 counts for 0 and 1 too).");
        _meter.CreateObservableCounter("tollgate_runtime_gc_allocated_bytes_total", () => GC.GetTotalAllocatedBytes(precise: false),
            description: "Bytes allocated on the managed heap since start (what the collections have to clean up).");
        _meter.CreateObservableGauge("tollgate_runtime_gc_heap_bytes", () => GC.GetTotalMemory(forceFullCollection: false),
            description: "Bytes allocated on the managed heap and not yet collected.");
        _meter.CreateObservableGauge("tollgate_process_resident_memory_bytes", () => Environment.WorkingSet,
            description: "Resident memory of this process.");
    }

    private long _holdsOpen, _heldMicros;

    /// <summary>Publishes the PostgreSQL ledger writer's speculative batches (see Features/Ledger/LedgerStateCache).</summary>
    public void ObserveLedgerSpeculation(Func<long> committed, Func<long> stale)
    {
        _meter.CreateObservableCounter("tollgate_ledger_speculated_batches_total", committed,
            description: "Ledger batches committed in one round trip from the writer's cached account state.");
        _meter.CreateObservableCounter("tollgate_ledger_speculation_stale_total", stale,
            description: "Speculative ledger batches whose cached state was stale (another process wrote the accounts); applied again from fresh state.");
    }

    /// <summary>Publishes how many ledger commands (gateway holds) the PostgreSQL writer acknowledged before their batch committed.</summary>
    public void ObserveLedgerEarlyAcknowledgements(Func<long> acknowledged, Func<long> holdsClaim, Func<long> staleUnderClaim)
    {
        _meter.CreateObservableCounter("tollgate_ledger_claim_stale_total", staleUnderClaim,
            description: "Batches whose cached state was found stale while this writer held the claim: a write that bypassed it (SQL by hand, a clock step on the database server).");
        _meter.CreateObservableCounter("tollgate_ledger_early_acknowledged_total", acknowledged,
            description: "Gateway holds (relaxed ledger commands) acknowledged before their batch's commit returned: under the writer's claim, or read under row locks.");
        _meter.CreateObservableGauge("tollgate_ledger_writer_claim", holdsClaim,
            description: "1 while this process's ledger writer holds the exclusive writer claim (PostgreSQL), else 0.");
    }

    /// <summary>Publishes the PostgreSQL ledger writer's deferred batches (see Features/Ledger/PostgresLedgerStore.Deferred).</summary>
    public void ObserveLedgerDeferredBatches(Func<long> deferred) =>
        _meter.CreateObservableCounter("tollgate_ledger_deferred_batches_total", deferred,
            description: "Ledger batches applied to the writer's state under its claim and written by the sender thread, together with those queued behind them.");

    /// <summary>Sets the open-hold gauges (from a cheap cached query, see Features/Ledger/HoldGauges).</summary>
    public void SetHolds(long open, long heldMicros)
    {
        Volatile.Write(ref _holdsOpen, open);
        Volatile.Write(ref _heldMicros, heldMicros);
    }

    public Counter<long> HttpRequests { get; }
    public Histogram<double> HttpDuration { get; }
    public Counter<long> GatewayCalls { get; }
    public Counter<long> GatewayTokens { get; }
    public Counter<long> GatewayCharged { get; }
    public Histogram<double> UpstreamLatency { get; }
    public Histogram<double> AddedLatency { get; }
    public Histogram<double> SettleLatency { get; }
    public Counter<long> RateLimited { get; }
    public Histogram<long> LedgerBatchCommands { get; }
    public Histogram<double> LedgerCommit { get; }
    public Counter<long> Webhooks { get; }
    public Counter<long> WebhookDeliveries { get; }

    public void Dispose() => _meter.Dispose();
}

/// <summary>
/// Aggregates the <c>Tollgate</c> meter in memory (a MeterListener) and writes the Prometheus text exposition format
/// 0.0.4: counters as sums per label set, histograms as cumulative buckets with <c>_sum</c> and <c>_count</c>.
/// </summary>
public sealed class PrometheusExporter : IDisposable
{
    /// <summary>Bucket bounds for histograms in seconds, and for counts.</summary>
    private static readonly double[] SecondsBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    private static readonly double[] CountBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000];

    private sealed class Family(string name, string type, string? help, double[]? buckets, bool observed = false)
    {
        /// <summary>An observable instrument reports its current value (a gauge's level, a counter's running total), which replaces the last.</summary>
        public bool Observed { get; } = observed;
        public string Name { get; } = name;
        public string Type { get; } = type;
        public string? Help { get; } = help;
        public double[]? Buckets { get; } = buckets;
        public ConcurrentDictionary<string, Series> Series { get; } = new(StringComparer.Ordinal);
    }

    private sealed class Series(int buckets)
    {
        public readonly long[] Counts = new long[buckets + 1];
        public long Count;
        public long SumBits;
        public long Total;

        public void AddSum(double value)
        {
            // Lock-free double accumulation.
            long seen, next;
            do
            {
                seen = Interlocked.Read(ref SumBits);
                next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + value);
            } while (Interlocked.CompareExchange(ref SumBits, next, seen) != seen);
        }
    }

    private readonly ConcurrentDictionary<string, Family> _families = new(StringComparer.Ordinal);
    private readonly MeterListener _listener = new();

    public PrometheusExporter(TollgateMetrics metrics)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (!ReferenceEquals(instrument.Meter, metrics.Meter)) return;
            var histogram = instrument.GetType().Name.StartsWith("Histogram", StringComparison.Ordinal);
            var gauge = instrument.GetType().Name.StartsWith("ObservableGauge", StringComparison.Ordinal);
            var observed = instrument.IsObservable;
            var family = _families.GetOrAdd(instrument.Name, name => new Family(name, histogram ? "histogram" : gauge ? "gauge" : "counter", instrument.Description,
                histogram ? instrument.Unit == "s" ? SecondsBuckets : CountBuckets : null, observed));
            listener.EnableMeasurementEvents(instrument, family);
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, state) => Record((Family)state!, value, tags));
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, state) => Record((Family)state!, value, tags));
        _listener.Start();
    }

    private static void Record(Family family, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var series = family.Series.GetOrAdd(Labels(tags), _ => new Series(family.Buckets?.Length ?? 0));
        if (family.Buckets is { } bounds)
        {
            var i = 0;
            while (i < bounds.Length && value > bounds[i]) i++;
            Interlocked.Increment(ref series.Counts[i]);
            Interlocked.Increment(ref series.Count);
            series.AddSum(value);
        }
        // An observation replaces the last one; a counter's measurement adds to the sum.
        else if (family.Observed) Interlocked.Exchange(ref series.Total, (long)value);
        else Interlocked.Add(ref series.Total, (long)value);
    }

    /// <summary>The label set as exposition text (<c>a="x",b="y"</c>), sorted by name so one set has one key.</summary>
    private static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0) return "";
        var pairs = new KeyValuePair<string, object?>[tags.Length];
        tags.CopyTo(pairs);
        Array.Sort(pairs, (a, b) => string.CompareOrdinal(a.Key, b.Key));
        var sb = new StringBuilder();
        foreach (var (key, value) in pairs)
        {
            if (sb.Length > 0) sb.Append(',');
            sb.Append(key).Append("=\"").Append(Escape(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "")).Append('"');
        }
        return sb.ToString();
    }

    /// <summary>Label value escaping: backslash, double quote and newline.</summary>
    public static string Escape(string value) => value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    private static string Number(double v) => double.IsPositiveInfinity(v) ? "+Inf" : v.ToString("R", CultureInfo.InvariantCulture);

    public void Write(TextWriter w)
    {
        // Observable instruments (the gauges) report when asked: now, once per scrape.
        _listener.RecordObservableInstruments();
        foreach (var family in _families.Values.OrderBy(f => f.Name, StringComparer.Ordinal))
        {
            if (family.Series.IsEmpty) continue;
            if (family.Help is { } help) w.Write($"# HELP {family.Name} {help.Replace("\\", "\\\\").Replace("\n", "\\n")}\n");
            w.Write($"# TYPE {family.Name} {family.Type}\n");
            foreach (var (labels, s) in family.Series.OrderBy(s => s.Key, StringComparer.Ordinal))
            {
                if (family.Buckets is not { } bounds)
                {
                    w.Write($"{family.Name}{Braces(labels)} {Interlocked.Read(ref s.Total).ToString(CultureInfo.InvariantCulture)}\n");
                    continue;
                }
                long cumulative = 0;
                for (var i = 0; i <= bounds.Length; i++)
                {
                    cumulative += Interlocked.Read(ref s.Counts[i]);
                    var le = $"le=\"{(i < bounds.Length ? Number(bounds[i]) : "+Inf")}\"";
                    w.Write($"{family.Name}_bucket{{{(labels.Length == 0 ? le : labels + "," + le)}}} {cumulative.ToString(CultureInfo.InvariantCulture)}\n");
                }
                w.Write($"{family.Name}_sum{Braces(labels)} {Number(BitConverter.Int64BitsToDouble(Interlocked.Read(ref s.SumBits)))}\n");
                w.Write($"{family.Name}_count{Braces(labels)} {cumulative.ToString(CultureInfo.InvariantCulture)}\n");
            }
        }
    }

    private static string Braces(string labels) => labels.Length == 0 ? "" : "{" + labels + "}";

    public void Dispose() => _listener.Dispose();
}
