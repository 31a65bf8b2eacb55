using System.Net;
using System.Text.RegularExpressions;
using Tollgate.Infrastructure.Metrics;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Api;

/// <summary>Apps whose hold gauges are re-read on every scrape, so a test sees its own hold at once.</summary>
public sealed class MetricsFixture() : SharedEngineApps(new Dictionary<string, string?> { ["Tollgate:Metrics:HoldGaugeRefreshMs"] = "0" });

/// <summary><c>/metrics</c>: Prometheus text format, admin only, and numbers that match what happened.</summary>
public sealed class MetricsTests(MetricsFixture fixture) : IClassFixture<MetricsFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static long Sample(string body, string series)
    {
        var line = body.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        return line is null ? 0 : long.Parse(line[(series.Length + 1)..]);
    }

    [Fact]
    public void Label_values_are_escaped_as_the_exposition_format_requires() =>
        Assert.Equal("a\\\"b\\\\c\\n", PrometheusExporter.Escape("a\"b\\c\n"));

    [Fact]
    public async Task The_process_reports_its_thread_pool_memory_and_collections()
    {
        var app = await fixture.AppAsync(TestDatabases.Sqlite);
        var first = await app.Admin.GetStringAsync("/metrics");
        // Something that needs the pool and the heap between the scrapes.
        await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Task.Run(() => new byte[64 * 1024].Length)));
        GC.Collect(0);
        var second = await app.Admin.GetStringAsync("/metrics");

        Assert.Contains("# TYPE tollgate_runtime_threadpool_threads gauge\n", second);
        Assert.Contains("# TYPE tollgate_runtime_threadpool_completed_items_total counter\n", second);
        Assert.Contains("# TYPE tollgate_process_resident_memory_bytes gauge\n", second);
        Assert.InRange(Sample(second, "tollgate_runtime_threadpool_threads"), 1, 10_000);
        Assert.True(Sample(second, "tollgate_runtime_threadpool_queue_length") >= 0);
        Assert.True(Sample(second, "tollgate_runtime_threadpool_completed_items_total") >= Sample(first, "tollgate_runtime_threadpool_completed_items_total") + 50);
        Assert.InRange(Sample(second, "tollgate_process_resident_memory_bytes"), 10L << 20, 100L << 30);
        Assert.True(Sample(second, "tollgate_runtime_gc_heap_bytes") > 0);
        Assert.True(Sample(second, "tollgate_runtime_gc_allocated_bytes_total") >= Sample(first, "tollgate_runtime_gc_allocated_bytes_total") + 50 * 64 * 1024);
        long Collections(string body, int generation) => Sample(body, $"tollgate_runtime_gc_collections_total{{generation=\"{generation}\"}}");
        Assert.True(Collections(second, 0) > Collections(first, 0));
        Assert.True(Collections(second, 0) >= Collections(second, 1) && Collections(second, 1) >= Collections(second, 2));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_gateway_call_shows_up_in_requests_tokens_and_micro_dollars_charged(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await c.Client.GetAsync("/metrics")).StatusCode);

        var before = await app.Admin.GetStringAsync("/metrics");
        var response = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"count me"}]}"""));
        var usage = (await MeteringApi.BodyAsync(response, HttpStatusCode.OK)).GetProperty("usage");
        var charge = long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single());

        // The request counter is written when the response has completed, which can be just after the client has read
        // it: wait (bounded) for it rather than racing the server's middleware.
        const string requestSeries = "tollgate_http_requests_total{method=\"POST\",route=\"/v1/chat/completions\",status=\"200\"}";
        HttpResponseMessage metrics;
        string after;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        do
        {
            metrics = await app.Admin.GetAsync("/metrics");
            after = await metrics.Content.ReadAsStringAsync();
            if (Sample(after, requestSeries) > Sample(before, requestSeries)) break;
            await Task.Delay(20);
        }
        while (DateTime.UtcNow < deadline);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", metrics.Content.Headers.ContentType!.ToString());
        Assert.EndsWith("\n", after);
        long Delta(string series) => Sample(after, series) - Sample(before, series);
        Assert.Equal(charge, Delta("tollgate_gateway_charged_microusd_total{model=\"demo/echo\"}"));
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt64(), Delta("tollgate_gateway_tokens_total{kind=\"input\",model=\"demo/echo\"}"));
        Assert.Equal(usage.GetProperty("completion_tokens").GetInt64(), Delta("tollgate_gateway_tokens_total{kind=\"output\",model=\"demo/echo\"}"));
        Assert.Equal(1, Delta(requestSeries));
        Assert.Equal(1, Delta("tollgate_gateway_settle_seconds_count"));
        // Histograms: cumulative buckets ending in +Inf, equal to _count.
        var inf = Regex.Match(after, @"tollgate_ledger_commit_seconds_bucket\{le=""\+Inf""\} (\d+)");
        Assert.True(inf.Success);
        Assert.Equal(inf.Groups[1].Value, Regex.Match(after, @"tollgate_ledger_commit_seconds_count (\d+)").Groups[1].Value);
        Assert.Single(Regex.Matches(after, "^# TYPE tollgate_gateway_tokens_total counter$", RegexOptions.Multiline));
    }

    [Fact]
    public async Task The_postgres_ledger_writer_counts_batches_it_committed_from_its_cache_as_a_running_total()
    {
        var app = await fixture.AppAsync(TestDatabases.Postgres);
        using var c = await app.CustomerAsync(1_000_000);
        const string series = "tollgate_ledger_speculated_batches_total";
        var before = await app.Admin.GetStringAsync("/metrics");
        Assert.Single(Regex.Matches(before, $"^# TYPE {series} counter$", RegexOptions.Multiline));
        Assert.Single(Regex.Matches(before, "^# TYPE tollgate_ledger_speculation_stale_total counter$", RegexOptions.Multiline));

        // Each call's settle names the hold this writer just committed, so it is applied from the cache.
        for (var i = 0; i < 3; i++)
        {
            var response = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","messages":[{"role":"user","content":"cached"}]}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        var after = await app.Admin.GetStringAsync("/metrics");
        Assert.InRange(Sample(after, series) - Sample(before, series), 3, 100);
        // Each call's hold was acknowledged before its batch's commit returned (under the claim, or read under locks).
        Assert.InRange(Sample(after, "tollgate_ledger_early_acknowledged_total") - Sample(before, "tollgate_ledger_early_acknowledged_total"), 3, 100);
        Assert.Single(Regex.Matches(after, "^# TYPE tollgate_ledger_writer_claim gauge$", RegexOptions.Multiline));
        // An observed total, not a sum of observations: two scrapes with no ledger work in between agree.
        Assert.Equal(Sample(after, series), Sample(await app.Admin.GetStringAsync("/metrics"), series));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Open_holds_and_held_micro_dollars_are_gauges_that_follow_holds(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        var before = await app.Admin.GetStringAsync("/metrics");
        Assert.Single(Regex.Matches(before, "^# TYPE tollgate_ledger_holds_open gauge$", RegexOptions.Multiline));
        Assert.Single(Regex.Matches(before, "^# TYPE tollgate_ledger_held_microusd gauge$", RegexOptions.Multiline));

        Assert.Equal(HttpStatusCode.Created, (await c.AuthorizeAsync("gauge-hold-1", 300_000)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await c.AuthorizeAsync("gauge-hold-2", 200_000)).StatusCode);
        var held = await app.Admin.GetStringAsync("/metrics");
        Assert.Equal(2, Sample(held, "tollgate_ledger_holds_open") - Sample(before, "tollgate_ledger_holds_open"));
        Assert.Equal(500_000, Sample(held, "tollgate_ledger_held_microusd") - Sample(before, "tollgate_ledger_held_microusd"));

        // A gauge is a level, not a sum: settling the holds takes it back down.
        Assert.Equal(HttpStatusCode.OK, (await c.CaptureAsync("gauge-hold-1", 100_000)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.VoidAsync("gauge-hold-2")).StatusCode);
        var settled = await app.Admin.GetStringAsync("/metrics");
        Assert.Equal(Sample(before, "tollgate_ledger_holds_open"), Sample(settled, "tollgate_ledger_holds_open"));
        Assert.Equal(Sample(before, "tollgate_ledger_held_microusd"), Sample(settled, "tollgate_ledger_held_microusd"));
    }
}
