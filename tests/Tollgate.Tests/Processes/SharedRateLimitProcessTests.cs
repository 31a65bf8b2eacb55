using System.Net;
using System.Net.Http.Headers;
using Tollgate.Tests.Gateway.Fakes;
using Xunit.Abstractions;
using static Tollgate.Tests.Processes.ServerApi;

namespace Tollgate.Tests.Processes;

/// <summary>
/// Three <c>tollgate serve</c> processes on one PostgreSQL database share one key's rate limits: requests per minute and
/// concurrent requests add up across them (docs/GATEWAY.md, "Several processes"), the refused calls get 429
/// <c>rate_limited</c> with Retry-After, and the ledger stays consistent.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class SharedRateLimitProcessTests(ITestOutputHelper output)
{
    private const int Processes = 3;

    private static async Task<TollgateServer[]> StartAsync(string database, Dictionary<string, string?>? env = null)
    {
        var settings = new Dictionary<string, string?> { ["Tollgate__Gateway__RateLimits__SyncIntervalMs"] = "100" };
        if (env is not null) foreach (var (k, v) in env) settings[k] = v;
        return await Task.WhenAll(Enumerable.Range(0, Processes).Select(_ => TollgateServer.StartAsync(database, settings)));
    }

    private static HttpClient Client(TollgateServer server, string key)
    {
        var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return client;
    }

    private static async Task<(HttpStatusCode Status, string? Code, TimeSpan? RetryAfter)> CallAsync(HttpClient client, string model, bool stream, string text)
    {
        using var response = await client.PostAsync("/v1/chat/completions", Json(
            $$"""{"model":"{{model}}","stream":{{(stream ? "true" : "false")}},"max_tokens":50,"messages":[{"role":"user","content":"{{text}}"}]}"""));
        var body = await response.Content.ReadAsStringAsync();
        string? code = null;
        if (response.StatusCode != HttpStatusCode.OK) code = JsonDocument.Parse(body).RootElement.GetProperty("error").GetProperty("code").GetString();
        return (response.StatusCode, code, response.Headers.RetryAfter?.Delta);
    }

    private static async Task AssertConsistentAsync(TollgateServer server, string accountId, long grant, int answered)
    {
        var account = await ReadOkAsync(await server.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        Assert.Equal(0, account.GetProperty("held_micros").GetInt64());
        var balance = account.GetProperty("balance_micros").GetInt64();
        Assert.InRange(balance, 0, grant);
        var usage = (await StatementAsync(server.Admin, accountId)).Where(l => l.GetProperty("code").GetString() == "usage").ToList();
        Assert.Equal(answered, usage.Count);
        Assert.Equal(grant - balance, -usage.Sum(l => l.GetProperty("amount_micros").GetInt64()));
        await AuditAsync(server.Admin);
    }

    /// <summary>Both limits on one set of processes (starting three servers is most of the cost).</summary>
    [Fact]
    public async Task Three_processes_share_one_keys_requests_per_minute_and_concurrent_requests()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { Chunks = 8, DelayBetweenChunks = TimeSpan.FromMilliseconds(250) });
        var database = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var servers = await StartAsync(database, new Dictionary<string, string?>
        {
            ["Tollgate__Providers__openai__BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
            ["Tollgate__Providers__openai__ApiKey"] = "sk-fake-concurrency",
        });
        try
        {
            await RequestsPerMinuteAsync(servers);
            await ConcurrentRequestsAsync(servers);
        }
        finally
        {
            foreach (var s in servers) await s.DisposeAsync();
        }
    }

    private async Task RequestsPerMinuteAsync(TollgateServer[] servers)
    {
        const int limit = 30;
        var (accountId, _, _) = await CreateFundedAccountAsync(servers[0].Admin, 10_000_000);
        var key = (await ReadOkAsync(await servers[0].Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys",
            Json($$"""{"requests_per_minute":{{limit}}}""")), HttpStatusCode.Created)).GetProperty("key").GetString()!;
        var clients = servers.Select(s => Client(s, key)).ToArray();

        // Four waves of 30 calls (10 per process, streaming and not), a few sync intervals apart: 120 attempts on a limit of 30.
        var results = new List<(HttpStatusCode Status, string? Code, TimeSpan? RetryAfter)>();
        for (var wave = 0; wave < 4; wave++)
        {
            results.AddRange(await Task.WhenAll(Enumerable.Range(0, 30).Select(i =>
                CallAsync(clients[i % Processes], "demo/echo", i % 3 == 0, $"wave {wave} call {i}"))));
            await Task.Delay(300);
        }

        var admitted = results.Count(r => r.Status == HttpStatusCode.OK);
        var limited = results.Where(r => r.Status == HttpStatusCode.TooManyRequests).ToList();
        Assert.Equal(results.Count, admitted + limited.Count);
        Assert.All(limited, r =>
        {
            Assert.Equal("rate_limited", r.Code);
            Assert.True(r.RetryAfter >= TimeSpan.FromSeconds(1), $"Retry-After {r.RetryAfter}");
        });
        // A burst reaching every process between the same two syncs is split exactly; the documented tolerance for
        // views that differ by one sync is one share per other process (⌈30 / 3⌉ each).
        Assert.InRange(admitted, limit - Processes, limit + (Processes - 1) * (limit / Processes));
        // Every process refused some: the limit is not per process (that would admit 90).
        await AssertConsistentAsync(servers[1], accountId, 10_000_000, admitted);
        output.WriteLine($"requests per minute {limit}: {admitted} of {results.Count} admitted across {Processes} processes");
        foreach (var c in clients) c.Dispose();
    }

    private async Task ConcurrentRequestsAsync(TollgateServer[] servers)
    {
        const int limit = 4;
        var (accountId, _, _) = await CreateFundedAccountAsync(servers[0].Admin, 10_000_000);
        var key = (await ReadOkAsync(await servers[0].Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys",
            Json($$"""{"concurrent_requests":{{limit}}}""")), HttpStatusCode.Created)).GetProperty("key").GetString()!;
        var clients = servers.Select(s => Client(s, key)).ToArray();
        Task<(HttpStatusCode Status, string? Code, TimeSpan? RetryAfter)[]> Wave(int n, string name) =>
            Task.WhenAll(Enumerable.Range(0, n).Select(i => CallAsync(clients[i % Processes], "openai/gpt-4o-mini", stream: true, $"{name} {i}")));

        // Each admitted call streams for about 2 s. A burst of 12 across the three processes: at most 4 at once.
        var first = Wave(12, "first");
        await Task.Delay(500);
        // While those run (and every process has synced), a second burst: it counts against the same bound.
        var second = await Wave(6, "second");
        var firstDone = await first;
        var admittedFirst = firstDone.Count(r => r.Status == HttpStatusCode.OK);
        var admittedSecond = second.Count(r => r.Status == HttpStatusCode.OK);
        Assert.All(firstDone.Concat(second).Where(r => r.Status != HttpStatusCode.OK), r =>
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, r.Status);
            Assert.Equal("rate_limited", r.Code);
        });
        // Per-process limits would let 12 run at once. Shared: exactly 4 when the burst lands between the same two syncs
        // of every process; in general at most one share (⌈4 / 3⌉) more per other process (docs/GATEWAY.md).
        Assert.InRange(admittedFirst + admittedSecond, 2, limit + (Processes - 1) * ((limit + Processes - 1) / Processes));
        // Once every process knows the first burst's leases, a full set of slots leaves nothing for the second.
        if (admittedFirst >= limit) Assert.Equal(0, admittedSecond);

        // Once they finished and the processes synced, the slots are free again.
        await Task.Delay(300);
        var third = await Wave(limit, "third");
        Assert.InRange(third.Count(r => r.Status == HttpStatusCode.OK), 1, limit);
        await AssertConsistentAsync(servers[2], accountId, 10_000_000, admittedFirst + admittedSecond + third.Count(r => r.Status == HttpStatusCode.OK));
        output.WriteLine($"concurrent requests {limit}: {admittedFirst} + {admittedSecond} ran at once across {Processes} processes");
        foreach (var c in clients) c.Dispose();
    }
}
