using System.Collections.Concurrent;
using System.Diagnostics;
using Xunit.Abstractions;
using static Tollgate.Tests.Processes.ServerApi;

namespace Tollgate.Tests.Processes;

/// <summary>
/// A <c>tollgate serve</c> process is SIGKILLed while 16 clients send grants, posted transfers, holds, settlements
/// and atomic pairs. After a restart on the same database:
/// 1. every transfer that got a 200 acknowledgement exists with the acknowledged content;
/// 2. the ledger audit is clean (counters = entries, no overdraft, holds = open pending transfers);
/// 3. resubmitting every attempted request, acknowledged or in doubt, applies each exactly once: acknowledged ones
///    replay, in-doubt ones either replay or apply now, atomic pairs never come back half-applied, and the final
///    balance and held amount equal what the whole request list adds up to.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class CrashSafetyTests(ITestOutputHelper output)
{
    private const long SeedMicros = 1_000_000_000; // 1,000 USD: more than the load can spend, so every request should succeed.
    private const int Workers = 16;
    private const int AcksBeforeKill = 600;
    private const int MaxRequestsPerWorker = 2_000;

    private sealed record Item(string Id, string Kind, long Amount, string? PendingId);

    /// <summary>One HTTP request a worker sent (or was about to send), with the transfers it carries.</summary>
    private sealed class Attempt(int worker, string path, string body, bool isGrant, IReadOnlyList<Item> items)
    {
        public int Worker { get; } = worker;
        public string Path { get; } = path;
        public string Body { get; } = body;
        public bool IsGrant { get; } = isGrant;
        public IReadOnlyList<Item> Items { get; } = items;
        public volatile bool Acknowledged;
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Serve_KilledMidLoad_KeepsEveryAcknowledgedTransferAndAppliesRetriesOnce(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);
        var attempts = new ConcurrentQueue<Attempt>();
        var errors = new ConcurrentQueue<string>();
        string accountId;
        long customer;
        var acked = 0;
        var clock = Stopwatch.StartNew();

        await using (var server = await TollgateServer.StartAsync(database))
        {
            (accountId, customer, var revenue) = await CreateFundedAccountAsync(server.Admin, SeedMicros);
            var workers = Enumerable.Range(0, Workers)
                .Select(w => Task.Run(() => WorkAsync(server.Admin, w, accountId, customer, revenue, attempts, errors, () => Interlocked.Increment(ref acked))))
                .ToArray();
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (Volatile.Read(ref acked) < AcksBeforeKill && DateTime.UtcNow < deadline && !workers.All(t => t.IsCompleted)) await Task.Delay(10);
            Assert.True(Volatile.Read(ref acked) >= AcksBeforeKill, $"only {acked} acknowledgements before the deadline; errors: {string.Join("; ", errors.Take(5))}\n{server.Output}");

            server.Kill();
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(errors.IsEmpty, "before the kill: " + string.Join("\n", errors.Take(10)));
        }
        var killedAt = clock.Elapsed;

        await using var restarted = await TollgateServer.StartAsync(database);
        var all = attempts.ToList();
        var acknowledged = all.Where(a => a.Acknowledged).ToList();
        output.WriteLine($"{engine}: {all.Count} requests sent, {acknowledged.Count} acknowledged, killed after {killedAt.TotalSeconds:F1} s, restarted after {clock.Elapsed.TotalSeconds:F1} s");

        // 1. Every acknowledged transfer is there, as acknowledged.
        await Parallel.ForEachAsync(acknowledged.SelectMany(a => a.Items), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (item, ct) =>
        {
            var response = await restarted.Admin.GetAsync($"/admin/v1/transfers/{Uri.EscapeDataString(item.Id)}", ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (response.StatusCode != HttpStatusCode.OK) { errors.Enqueue($"acknowledged {item.Id} is missing: {(int)response.StatusCode} {text}"); return; }
            var t = JsonDocument.Parse(text).RootElement;
            if (t.GetProperty("kind").GetString() != item.Kind || t.GetProperty("amount_micros").GetInt64() != item.Amount || t.GetProperty("pending_id").GetString() != item.PendingId)
                errors.Enqueue($"acknowledged {item.Id} differs: {text}");
        });
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        var settledHolds = acknowledged.SelectMany(a => a.Items).Where(i => i.Kind == "post_pending").Select(i => i.PendingId!).ToList();
        foreach (var hold in settledHolds.Take(50))
        {
            var t = await ReadOkAsync(await restarted.Admin.GetAsync($"/admin/v1/transfers/{hold}"));
            Assert.Equal("posted", t.GetProperty("status").GetString());
        }

        // 2. The ledger is consistent after the crash, before anything else touches it.
        await AuditAsync(restarted.Admin);

        // 3. Clients retry everything: each request is applied exactly once in total.
        var inDoubtApplied = 0;
        await Task.WhenAll(all.GroupBy(a => a.Worker).Select(g => Task.Run(async () =>
        {
            foreach (var attempt in g)
                if (await ResubmitAsync(restarted.Admin, attempt, errors) && !attempt.Acknowledged) Interlocked.Increment(ref inDoubtApplied);
        })));
        Assert.True(errors.IsEmpty, "on resubmission: " + string.Join("\n", errors.Take(10)));
        output.WriteLine($"{engine}: of {all.Count - acknowledged.Count} requests in doubt, {inDoubtApplied} had committed before the kill");

        var items = all.SelectMany(a => a.Items).ToList();
        var grants = all.Where(a => a.IsGrant).SelectMany(a => a.Items).Sum(i => i.Amount);
        var transfers = all.Where(a => !a.IsGrant).SelectMany(a => a.Items).ToList();
        var spent = transfers.Where(i => i.Kind is "posted" or "post_pending").Sum(i => i.Amount);
        var held = transfers.Where(i => i.Kind == "pending").Sum(i => i.Amount) - transfers.Where(i => i.Kind == "post_pending").Sum(i => i.Amount);
        var account = await ReadOkAsync(await restarted.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        Assert.Equal(SeedMicros + grants - spent, account.GetProperty("balance_micros").GetInt64());
        Assert.Equal(held, account.GetProperty("held_micros").GetInt64());
        var statement = await StatementAsync(restarted.Admin, accountId);
        Assert.Equal(items.Count + 1, statement.Count);
        Assert.Equal(statement.Count, statement.Select(l => l.GetProperty("transfer_id").GetString()).Distinct().Count());
        var audit = await AuditAsync(restarted.Admin);
        Assert.True(audit.GetProperty("transfers").GetInt64() >= items.Count + 1);
        Assert.Equal(customer, account.GetProperty("ledger_account_id").GetInt64());
    }

    /// <summary>Sends requests until the server dies (a transport error) or the bound is reached; records what was acknowledged.</summary>
    private static async Task WorkAsync(HttpClient admin, int w, string accountId, long customer, long revenue,
        ConcurrentQueue<Attempt> attempts, ConcurrentQueue<string> errors, Action onAck)
    {
        var openHolds = new Queue<string>();
        for (var i = 0; i < MaxRequestsPerWorker; i++)
        {
            var attempt = Next(w, i, accountId, customer, revenue, openHolds);
            attempts.Enqueue(attempt);
            string text;
            HttpStatusCode status;
            try
            {
                using var response = await admin.PostAsync(attempt.Path, Json(attempt.Body));
                status = response.StatusCode;
                text = await response.Content.ReadAsStringAsync();
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
            {
                return; // The server is gone: this attempt stays in doubt.
            }
            if (status != HttpStatusCode.OK) { errors.Enqueue($"{attempt.Path} {attempt.Body}: {(int)status} {text}"); return; }
            var body = JsonDocument.Parse(text).RootElement;
            if (!attempt.IsGrant && !body.EnumerateArray().All(r => r.GetProperty("result").GetString() == "ok"))
            {
                errors.Enqueue($"{attempt.Body}: {text}");
                return;
            }
            attempt.Acknowledged = true;
            onAck();
            foreach (var item in attempt.Items)
                if (item.Kind == "pending" && item.Id.StartsWith("h-")) openHolds.Enqueue(item.Id);
        }
    }

    /// <summary>The i-th request of worker w: a grant, a posted transfer, a hold, a settlement of an acknowledged hold, or an atomic pair.</summary>
    private static Attempt Next(int w, int i, string accountId, long customer, long revenue, Queue<string> openHolds)
    {
        static string Transfer(string id, string kind, long dr, long cr, long? amount, string? pendingId = null, int timeout = 0) =>
            $$"""{"id":"{{id}}","kind":"{{kind}}","debit_account_id":{{dr}},"credit_account_id":{{cr}},"amount_micros":{{(amount is { } a ? a : "null")}},"pending_id":{{(pendingId is null ? "null" : $"\"{pendingId}\"")}},"timeout_seconds":{{timeout}},"code":"load"}""";

        switch (i % 5)
        {
            case 0:
                var key = $"g-{w}-{i}";
                var amount = 1_000L + w;
                return new(w, $"/admin/v1/accounts/{accountId}/credits", $$"""{"amount_micros":{{amount}},"idempotency_key":"{{key}}","reason":"load"}""", true,
                    [new($"grant:{accountId}:{key}", "posted", amount, null)]);
            case 2:
                var hold = $"h-{w}-{i}";
                return new(w, "/admin/v1/transfers", $$"""{"transfers":[{{Transfer(hold, "pending", customer, revenue, 700, timeout: 3600)}}]}""", false,
                    [new(hold, "pending", 700, null)]);
            case 3 when openHolds.TryDequeue(out var pending):
                var settle = $"s-{w}-{i}";
                return new(w, "/admin/v1/transfers", $$"""{"transfers":[{{Transfer(settle, "post_pending", 0, 0, null, pending)}}]}""", false,
                    [new(settle, "post_pending", 700, pending)]);
            case 4:
                var (a, b) = ($"a-{w}-{i}-0", $"a-{w}-{i}-1");
                return new(w, "/admin/v1/transfers",
                    $$"""{"atomic":true,"transfers":[{{Transfer(a, "posted", customer, revenue, 300)}},{{Transfer(b, "pending", customer, revenue, 400, timeout: 3600)}}]}""", false,
                    [new(a, "posted", 300, null), new(b, "pending", 400, null)]);
            default:
                var posted = $"p-{w}-{i}";
                return new(w, "/admin/v1/transfers", $$"""{"transfers":[{{Transfer(posted, "posted", customer, revenue, 500)}}]}""", false,
                    [new(posted, "posted", 500, null)]);
        }
    }

    /// <summary>
    /// Sends an attempt again: acknowledged ones must replay; in-doubt ones replay or apply now, never fail, never
    /// half-apply. Returns whether it replayed (it had been stored before).
    /// </summary>
    private static async Task<bool> ResubmitAsync(HttpClient admin, Attempt attempt, ConcurrentQueue<string> errors)
    {
        using var response = await admin.PostAsync(attempt.Path, Json(attempt.Body));
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK) { errors.Enqueue($"{attempt.Body}: {(int)response.StatusCode} {text}"); return false; }
        var body = JsonDocument.Parse(text).RootElement;
        bool replayed;
        if (attempt.IsGrant)
        {
            replayed = body.GetProperty("replayed").GetBoolean();
        }
        else
        {
            var results = body.EnumerateArray().Select(r => r.GetProperty("result").GetString()).Distinct().ToList();
            if (results.Count != 1 || results[0] is not ("ok" or "replayed")) { errors.Enqueue($"{attempt.Body}: {text}"); return false; }
            replayed = results[0] == "replayed";
        }
        if (attempt.Acknowledged && !replayed) errors.Enqueue($"acknowledged request applied twice: {attempt.Body}");
        return replayed;
    }
}
