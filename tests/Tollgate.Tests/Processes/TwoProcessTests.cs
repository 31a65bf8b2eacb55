using System.Collections.Concurrent;
using Xunit.Abstractions;
using static Tollgate.Tests.Processes.ServerApi;

namespace Tollgate.Tests.Processes;

/// <summary>
/// Two <c>tollgate serve</c> processes on one PostgreSQL database, 64 clients split across them, all spending one
/// prepaid account that cannot cover every request. Each client places holds and settles them (post in full, post
/// in part, or void, often through the other process), sends some direct posts, and a few abandon short holds for
/// the two processes' expiry sweepers to race over. Afterwards the ledger must be consistent, the account never
/// overdrawn, and everything acknowledged present and in its final state.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class TwoProcessTests(ITestOutputHelper output)
{
    private const long GrantMicros = 2_000_000; // 2 USD: about an eighth of what the clients ask for.
    private const int Clients = 64;
    private const int Rounds = 8;

    private sealed record Ack(string Id, string Kind, long Amount, string? PendingId);

    [Fact]
    public async Task Serve_TwoProcessesOnePrepaidAccount_NeverOverdrawsAndKeepsEveryAcknowledgedOp()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var fastSweep = new Dictionary<string, string?> { ["Tollgate__Ledger__ExpirySweepIntervalMs"] = "200" };
        // Both start (and migrate) at once: the advisory lock must let exactly one apply the schema.
        var started = await Task.WhenAll(TollgateServer.StartAsync(database, fastSweep), TollgateServer.StartAsync(database, fastSweep));
        await using var a = started[0];
        await using var b = started[1];
        TollgateServer[] servers = [a, b];
        var (accountId, customer, revenue) = await CreateFundedAccountAsync(a.Admin, GrantMicros);

        var acks = new ConcurrentQueue<Ack>();
        var errors = new ConcurrentQueue<string>();
        var refused = 0;
        var abandoned = new ConcurrentQueue<string>();
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(c);
            for (var r = 0; r < Rounds; r++)
            {
                var home = servers[c % 2].Admin;
                var other = servers[(c + r) % 2].Admin;
                if (c % 8 == 0 && r == 0)
                {
                    // Abandoned: nobody settles this hold; a sweeper (either process) must expire it.
                    var id = $"x-{c}";
                    var result = await TransferAsync(home, $$"""{"id":"{{id}}","kind":"pending","debit_account_id":{{customer}},"credit_account_id":{{revenue}},"amount_micros":1000,"timeout_seconds":1}""", errors);
                    if (result == "ok") { acks.Enqueue(new(id, "pending", 1000, null)); abandoned.Enqueue(id); }
                    else if (result == "insufficient_funds") Interlocked.Increment(ref refused);
                }
                if (r % 4 == 3)
                {
                    var id = $"p-{c}-{r}";
                    var result = await TransferAsync(other, $$"""{"id":"{{id}}","debit_account_id":{{customer}},"credit_account_id":{{revenue}},"amount_micros":3000}""", errors);
                    if (result == "ok") acks.Enqueue(new(id, "posted", 3000, null));
                    else if (result == "insufficient_funds") Interlocked.Increment(ref refused);
                }

                var hold = $"h-{c}-{r}";
                var amount = random.Next(5_000, 60_001);
                var held = await TransferAsync(home, $$"""{"id":"{{hold}}","kind":"pending","debit_account_id":{{customer}},"credit_account_id":{{revenue}},"amount_micros":{{amount}},"timeout_seconds":30}""", errors);
                if (held == "insufficient_funds") { Interlocked.Increment(ref refused); continue; }
                if (held != "ok") continue;
                acks.Enqueue(new(hold, "pending", amount, null));

                var settle = $"s-{c}-{r}";
                var (kind, settleJson, settled) = (r % 3) switch
                {
                    0 => ("post_pending", $$"""{"id":"{{settle}}","kind":"post_pending","pending_id":"{{hold}}"}""", amount),
                    1 => ("post_pending", $$"""{"id":"{{settle}}","kind":"post_pending","pending_id":"{{hold}}","amount_micros":{{amount / 2}}}""", amount / 2),
                    _ => ("void_pending", $$"""{"id":"{{settle}}","kind":"void_pending","pending_id":"{{hold}}"}""", (long)amount),
                };
                if (await TransferAsync(other, settleJson, errors) == "ok") acks.Enqueue(new(settle, kind, settled, hold));
                else errors.Enqueue($"settling acknowledged hold {hold} failed");
            }
        })));
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)) + "\n" + a.Output + "\n" + b.Output);
        output.WriteLine($"{acks.Count} acknowledged, {refused} refused for insufficient funds, {abandoned.Count} abandoned holds");
        Assert.True(refused > 0, "the account was never short: the test did not contend for funds");

        // The abandoned holds expire (through whichever sweeper gets there first) and release their funds.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((await ReadOkAsync(await a.Admin.GetAsync($"/admin/v1/accounts/{accountId}"))).GetProperty("held_micros").GetInt64() != 0 && DateTime.UtcNow < deadline)
            await Task.Delay(100);

        var account = await ReadOkAsync(await b.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        var all = acks.ToList();
        var posted = all.Where(x => x.Kind is "posted" or "post_pending").Sum(x => x.Amount);
        Assert.True(posted <= GrantMicros, $"posted {posted} > granted {GrantMicros}");
        Assert.Equal(0, account.GetProperty("held_micros").GetInt64());
        Assert.True(account.GetProperty("available_micros").GetInt64() >= 0);
        Assert.Equal(GrantMicros - posted, account.GetProperty("balance_micros").GetInt64());
        var revenueAccount = await ReadOkAsync(await a.Admin.GetAsync($"/admin/v1/ledger/accounts/{revenue}"));
        Assert.Equal(posted, revenueAccount.GetProperty("credits_posted_micros").GetInt64());
        Assert.Equal(0, revenueAccount.GetProperty("credits_pending_micros").GetInt64());
        await AuditAsync(a.Admin);
        await AuditAsync(b.Admin);

        // Every acknowledged op is stored, read through the other process than the one that wrote most of them.
        var settledHolds = all.Where(x => x.PendingId is not null).ToDictionary(x => x.PendingId!, x => x.Kind);
        await Parallel.ForEachAsync(all, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (ack, ct) =>
        {
            var response = await servers[ack.Id.GetHashCode() & 1].Admin.GetAsync($"/admin/v1/transfers/{ack.Id}", ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (response.StatusCode != HttpStatusCode.OK) { errors.Enqueue($"acknowledged {ack.Id} missing: {text}"); return; }
            var t = JsonDocument.Parse(text).RootElement;
            if (t.GetProperty("kind").GetString() != ack.Kind || t.GetProperty("amount_micros").GetInt64() != ack.Amount)
                errors.Enqueue($"acknowledged {ack.Id} differs: {text}");
            if (ack.Kind != "pending") return;
            var expected = settledHolds.TryGetValue(ack.Id, out var how) ? (how == "void_pending" ? "voided" : "posted") : "expired";
            if (t.GetProperty("status").GetString() != expected) errors.Enqueue($"hold {ack.Id} is {t.GetProperty("status")}, expected {expected}");
        });
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));

        // One statement line per acknowledged op, one per expiry, plus the grant; nothing else, nothing twice.
        var statement = await StatementAsync(b.Admin, accountId);
        Assert.Equal(all.Count + abandoned.Count + 1, statement.Count);
        Assert.Equal(statement.Count, statement.Select(l => l.GetProperty("transfer_id").GetString()).Distinct().Count());
        Assert.Equal(abandoned.Order(), statement.Select(l => l.GetProperty("transfer_id").GetString()!)
            .Where(id => id.StartsWith('~')).Select(id => id[(id.IndexOf(':') + 1)..]).Order());
    }

    [Fact]
    public async Task Serve_TwoProcessesSameIdempotencyKeys_ApplyEachOnce()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var started = await Task.WhenAll(TollgateServer.StartAsync(database), TollgateServer.StartAsync(database));
        await using var a = started[0];
        await using var b = started[1];
        var (accountId, customer, revenue) = await CreateFundedAccountAsync(a.Admin, 1_000_000);

        // 32 identical grants and 32 identical transfers per id, half through each process, all at once; plus, for
        // each of 8 more ids, 32 requests with different amounts, of which exactly one may win.
        var grants = Enumerable.Range(0, 32).Select(i => (i % 2 == 0 ? a : b).Admin.PostAsync($"/admin/v1/accounts/{accountId}/credits",
            Json("""{"amount_micros":250000,"idempotency_key":"same-grant","reason":"race"}""")));
        var same = Enumerable.Range(0, 8).SelectMany(k => Enumerable.Range(0, 32).Select(i => (i % 2 == 0 ? a : b).Admin.PostAsync("/admin/v1/transfers",
            Json($$"""{"transfers":[{"id":"same-{{k}}","debit_account_id":{{customer}},"credit_account_id":{{revenue}},"amount_micros":1000}]}"""))));
        var differing = Enumerable.Range(0, 8).SelectMany(k => Enumerable.Range(0, 32).Select(i => (i % 2 == 0 ? a : b).Admin.PostAsync("/admin/v1/transfers",
            Json($$"""{"transfers":[{"id":"differ-{{k}}","debit_account_id":{{customer}},"credit_account_id":{{revenue}},"amount_micros":{{1000 + i}}}]}"""))));
        var grantResponses = await Task.WhenAll(grants.Select(async r => await ReadOkAsync(await r)));
        var sameResults = await Task.WhenAll(same.Select(async r => (await ReadOkAsync(await r))[0]));
        var differingResults = await Task.WhenAll(differing.Select(async r => (await ReadOkAsync(await r))[0]));

        Assert.Single(grantResponses, g => !g.GetProperty("replayed").GetBoolean());
        Assert.Single(grantResponses.Select(g => g.GetProperty("transfer").GetRawText()).Distinct());
        foreach (var group in sameResults.GroupBy(r => r.GetProperty("id").GetString()))
        {
            Assert.Single(group, r => r.GetProperty("result").GetString() == "ok");
            Assert.All(group, r => Assert.Contains(r.GetProperty("result").GetString(), new[] { "ok", "replayed" }));
        }
        var winners = 0L;
        foreach (var group in differingResults.GroupBy(r => r.GetProperty("id").GetString()))
        {
            var ok = Assert.Single(group, r => r.GetProperty("result").GetString() == "ok");
            winners += ok.GetProperty("transfer").GetProperty("amount_micros").GetInt64();
            Assert.All(group, r => Assert.Contains(r.GetProperty("result").GetString(), new[] { "ok", "replayed", "idempotency_conflict" }));
        }
        var account = await ReadOkAsync(await b.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        Assert.Equal(1_000_000 + 250_000 - 8 * 1_000 - winners, account.GetProperty("balance_micros").GetInt64());
        Assert.Equal(1 + 1 + 8 + 8, (await StatementAsync(a.Admin, accountId)).Count);
        await AuditAsync(a.Admin);
    }

    /// <summary>Posts one transfer; returns its result code, or null after recording an HTTP-level error.</summary>
    private static async Task<string?> TransferAsync(HttpClient admin, string transferJson, ConcurrentQueue<string> errors)
    {
        using var response = await admin.PostAsync("/admin/v1/transfers", Json($$"""{"transfers":[{{transferJson}}]}"""));
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK) { errors.Enqueue($"{transferJson}: {(int)response.StatusCode} {text}"); return null; }
        var result = JsonDocument.Parse(text).RootElement[0].GetProperty("result").GetString();
        if (result is not ("ok" or "insufficient_funds")) errors.Enqueue($"{transferJson}: {text}");
        return result;
    }
}
