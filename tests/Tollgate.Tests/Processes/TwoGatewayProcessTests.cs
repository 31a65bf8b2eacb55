using System.Net;
using System.Net.Http.Headers;
using static Tollgate.Tests.Processes.ServerApi;

namespace Tollgate.Tests.Processes;

/// <summary>
/// Two <c>tollgate serve</c> processes on one PostgreSQL database, 120 gateway calls (demo provider, streaming and not)
/// spread across both against one prepaid account that affords only part of them: the holds of the two processes
/// meet in the ledger, so the account never overdraws, the refused calls get 402, and every answered call is charged
/// and recorded exactly once, while each process's ledger writer tries batches from its cached account state.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class TwoGatewayProcessTests
{
    [Fact]
    public async Task Two_gateway_processes_share_one_balance_without_overdraft()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var started = await Task.WhenAll(TollgateServer.StartAsync(database), TollgateServer.StartAsync(database));
        await using var a = started[0];
        await using var b = started[1];
        // Each call holds ≈ 2 × (prompt + 2 × 200) µ$ ≈ 900 µ$ and costs ≈ 130 µ$: 20,000 µ$ holds about 22 at once.
        var (accountId, _, _) = await CreateFundedAccountAsync(a.Admin, 20_000);
        var key = (await ReadOkAsync(await a.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", Json("{}")), HttpStatusCode.Created)).GetProperty("key").GetString()!;
        HttpClient Client(TollgateServer s)
        {
            var c = new HttpClient { BaseAddress = s.BaseAddress };
            c.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
            return c;
        }
        using var ca = Client(a);
        using var cb = Client(b);

        var responses = await Task.WhenAll(Enumerable.Range(0, 120).Select(async i =>
        {
            var client = i % 2 == 0 ? ca : cb;
            var stream = i % 3 == 0 ? "true" : "false";
            var response = await client.PostAsync("/v1/chat/completions", Json(
                $$"""{"model":"demo/echo","stream":{{stream}},"max_tokens":200,"messages":[{"role":"user","content":"call number {{i}} across two processes"}]}"""));
            await response.Content.LoadIntoBufferAsync();
            return response;
        }));

        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.PaymentRequired, r.StatusCode.ToString()));
        var ok = responses.Count(r => r.StatusCode == HttpStatusCode.OK);
        Assert.True(ok >= 20, $"only {ok} calls were answered");
        Assert.Contains(responses, r => r.StatusCode == HttpStatusCode.PaymentRequired);

        var account = await ReadOkAsync(await b.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        var balance = account.GetProperty("balance_micros").GetInt64();
        Assert.InRange(balance, 0, 20_000);
        Assert.Equal(0, account.GetProperty("held_micros").GetInt64());
        // Every answered call left exactly one settlement: the statement's usage debits add up to what was spent.
        var statement = await StatementAsync(a.Admin, accountId);
        var settlements = statement.Where(l => l.GetProperty("code").GetString() == "usage").ToList();
        Assert.Equal(ok, settlements.Count);
        Assert.Equal(20_000 - balance, -settlements.Sum(l => l.GetProperty("amount_micros").GetInt64()));
        var audit = await AuditAsync(a.Admin);
        Assert.Equal(0, audit.GetProperty("violations").GetArrayLength());

        // A writer's settlements name holds it committed itself, so it tries them from its cached account state: the
        // attempt either commits or is sent back to the locked path by the other process's writes. Either way the result
        // above is exact; this run exercised that path, not only the store's own tests. (Summed over both processes: one
        // of them may have lost every hold race and settled nothing.)
        async Task<long> Metric(TollgateServer s, string name)
        {
            var line = (await s.Admin.GetStringAsync("/metrics")).Split('\n').Single(l => l.StartsWith(name + " ", StringComparison.Ordinal));
            return long.Parse(line[(name.Length + 1)..]);
        }
        var attempts = 0L;
        foreach (var server in new[] { a, b })
            attempts += await Metric(server, "tollgate_ledger_speculated_batches_total") + await Metric(server, "tollgate_ledger_speculation_stale_total");
        Assert.True(attempts > 0);
        // The writer claim: the first process wrote the account's funding alone and took it. Usually the second's first
        // write comes while it is held, is refused and waits; a writer then sees the refusal (contended) and the claim is
        // let go. On a slow machine the claim may lapse before the second process writes at all, and nobody is refused.
        // Either way every refusal was seen, and with two writers taking turns neither holds the claim now (migration
        // 0030), so neither acknowledges a hold from its cache before the database confirmed it.
        await using (var connection = new Npgsql.NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var claim = new Npgsql.NpgsqlCommand(
                "SELECT coalesce(pg_sequence_last_value('ledger_claim_refusals'), 0), refusals_seen, contended_at IS NOT NULL, holder IS NULL FROM ledger_writer_claim",
                connection);
            await using var row = await claim.ExecuteReaderAsync();
            Assert.True(await row.ReadAsync());
            var refusals = row.GetInt64(0);
            Assert.Equal((refusals, refusals > 0, true), (row.GetInt64(1), row.GetBoolean(2), row.GetBoolean(3)));
        }
        foreach (var server in new[] { a, b }) Assert.Equal(0, await Metric(server, "tollgate_ledger_writer_claim"));
    }
}
