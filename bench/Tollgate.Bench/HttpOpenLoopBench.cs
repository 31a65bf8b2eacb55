using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace Tollgate.Bench;

/// <summary>
/// <c>--suite http-open</c>: an open-loop HTTP load generator (what wrk2 does; Debian ships only wrk, which is closed
/// loop). Requests are released on a fixed schedule whatever the backlog (a dispatcher thread wakes about every
/// millisecond and releases every request that has come due), and each latency runs from the request's release, so a
/// slow server cannot hide its queueing by slowing the client down (coordinated omission): nothing waits for a
/// response before the next request is released. Measuring from the release rather than the exact schedule leaves out
/// the dispatcher's own tick (up to ~1 ms, a client artefact) but keeps every wait for a connection or the server.
/// Prints a RESULT line in the format of bench/gateway/chat.lua, so bench/run-gateway.sh treats both alike.
/// </summary>
internal static class HttpOpenLoopBench
{
    public const string Usage = """
        Open-loop HTTP load: POST one body at a fixed rate, latency from each request's release.

          dotnet run -c Release --project bench/Tollgate.Bench -- --suite http-open --url URL --rate N \
              [--seconds N] [--warmup N] [--body JSON] [--header 'Name: value']... [--connections N] [--slow-ms N]

          --url URL          the target (POST)
          --rate N           requests per second (default 1000)
          --seconds N        measured seconds (default 20)
          --warmup N         unmeasured seconds at the same rate first (default 3)
          --body JSON        request body (default: a short OpenAI chat completion for gpt-4o-mini)
          --header H         extra request header, repeatable (e.g. 'Authorization: Bearer …')
          --connections N    most connections to the target (default 256)
          --slow-ms N        also print each measured call that took N ms or more, by release time (SLOW lines)
        """;

    private const string DefaultBody = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}""";

    public static async Task<int> RunAsync(string[] args)
    {
        string? url = null;
        var rate = 1000;
        double seconds = 20, warmup = 3;
        var body = DefaultBody;
        var connections = 256;
        double? slowMs = null;
        var headers = new List<(string Name, string Value)>();
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--url": url = args[++i]; break;
                case "--rate": rate = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--seconds": seconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--body": body = args[++i]; break;
                case "--connections": connections = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--slow-ms": slowMs = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--header":
                    var h = args[++i];
                    var colon = h.IndexOf(':');
                    if (colon <= 0) { Console.Error.WriteLine($"--header '{h}' is not 'Name: value'."); return 2; }
                    headers.Add((h[..colon].Trim(), h[(colon + 1)..].Trim()));
                    break;
                case "--help" or "-h": Console.WriteLine(Usage); return 0;
                default: Console.Error.WriteLine($"Unknown argument '{args[i]}'.\n{Usage}"); return 2;
            }
        }
        if (url is null || rate <= 0 || seconds <= 0) { Console.Error.WriteLine(Usage); return 2; }

        using var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = connections, UseProxy = false, AllowAutoRedirect = false, UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
        };
        using var client = new HttpMessageInvoker(handler);
        var payload = Encoding.UTF8.GetBytes(body);
        var target = new Uri(url);

        HttpRequestMessage NewRequest()
        {
            var request = new HttpRequestMessage(HttpMethod.Post, target) { Version = HttpVersion.Version11, Content = new ByteArrayContent(payload) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            foreach (var (name, value) in headers) request.Headers.TryAddWithoutValidation(name, value);
            return request;
        }

        var freq = Stopwatch.Frequency;
        var begin = Stopwatch.GetTimestamp() + freq / 10;
        var measureStart = begin + (long)(warmup * freq);
        var measureEnd = measureStart + (long)(seconds * freq);
        var latency = new LatencyHistogram();
        long ok = 0, statusErrors = 0, socketErrors = 0;
        var slowCalls = new List<(double AtMs, double LatencyMs)>();

        async Task Fire(long scheduled, long released, Action done)
        {
            var failed = false;
            var status = 0;
            try
            {
                using var response = await client.SendAsync(NewRequest(), CancellationToken.None);
                status = (int)response.StatusCode;
                await response.Content.ReadAsByteArrayAsync();
            }
            catch (Exception) { failed = true; }
            var finished = Stopwatch.GetTimestamp();
            if (scheduled >= measureStart && scheduled < measureEnd)
            {
                if (failed) Interlocked.Increment(ref socketErrors);
                else if (status >= 400) Interlocked.Increment(ref statusErrors);
                else { Interlocked.Increment(ref ok); latency.RecordConcurrent(finished - released); }
                if (slowMs is { } slow && (finished - released) * 1000.0 / freq >= slow)
                    lock (slowCalls) slowCalls.Add(((released - measureStart) * 1000.0 / freq, (finished - released) * 1000.0 / freq));
            }
            done();
        }

        var saturated = await OpenLoop.RunAsync(rate, begin, measureEnd, (issued, scheduled, done) =>
        {
            var released = Stopwatch.GetTimestamp();
            _ = Task.Run(() => Fire(scheduled, released, done));
        });

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"RESULT rps={ok / seconds:F1} p50_ms={latency.QuantileMs(0.50):F3} p90_ms={latency.QuantileMs(0.90):F3} p99_ms={latency.QuantileMs(0.99):F3} " +
            $"max_ms={latency.MaxMs:F3} reqs={ok} errors_socket={socketErrors} http_status_errors={statusErrors} rate={rate} saturated={(saturated ? "yes" : "no")}"));
        // When the slow calls were released tells a stall (many at once) from queueing (spread out).
        foreach (var (at, ms) in slowCalls.OrderBy(c => c.AtMs))
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"SLOW at_ms={at:F1} latency_ms={ms:F2}"));
        return 0;
    }
}
