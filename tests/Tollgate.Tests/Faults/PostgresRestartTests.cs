using System.Collections.Concurrent;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Processes;
using Xunit.Abstractions;

namespace Tollgate.Tests.Faults;

/// <summary>
/// PostgreSQL is restarted (pg_ctl stop -m fast, then start) while clients send gateway calls and ledger transfers.
/// Runs on a cluster of its own (see <see cref="DedicatedPostgres"/>), never the shared test server. While the database
/// is down every request fails cleanly and quickly — 503 with OpenAI error JSON on /v1, a problem document elsewhere,
/// never a 500 or a hang — and after the restart requests succeed again. Afterwards no acknowledged transfer is lost,
/// replaying every idempotency key applies each transfer exactly once, and the balance is what the acknowledged and
/// replayed requests add up to.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class PostgresRestartTests(ITestOutputHelper output)
{
    private const long SeedMicros = 1_000_000_000;
    private const long TransferMicros = 500;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(20);

    private sealed record Sent(string Kind, string Id, int Status, string Body, string? RequestId, long ChargeMicros);

    [Fact]
    public async Task Requests_fail_with_503_while_postgres_restarts_and_nothing_acknowledged_is_lost_or_charged_twice()
    {
        await using var pg = await DedicatedPostgres.StartAsync();
        await using var app = await TestApp.StartAsync(TestDatabases.Postgres, database: pg.ConnectionString);
        using var customer = await app.CustomerAsync(SeedMicros);
        var revenue = (await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/ledger/accounts", AdminApi.JsonBody("""{"kind":"revenue"}""")), HttpStatusCode.Created)).Long("id");
        var ledgerId = (await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{customer.AccountId}"), HttpStatusCode.OK)).Long("ledger_account_id");

        using var admin = new HttpClient { BaseAddress = app.BaseAddress, Timeout = Hang };
        admin.DefaultRequestHeaders.Authorization = new("Bearer", TestApp.AdminKey);
        using var gateway = new HttpClient { BaseAddress = app.BaseAddress, Timeout = Hang };
        gateway.DefaultRequestHeaders.Authorization = new("Bearer", customer.Key);

        var sent = new ConcurrentQueue<Sent>();
        var problems = new ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        var phase = 0; // 0 before the stop, 1 while down, 2 after the restart
        var okAfter = 0;

        async Task WorkAsync(int worker)
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var gatewayCall = (i + worker) % 2 == 0;
                var id = $"pgr-{worker}-{i}";
                try
                {
                    using var response = gatewayCall
                        ? await gateway.PostAsync("/v1/chat/completions", AdminApi.JsonBody($$"""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"call {{id}}"}]}"""))
                        : await admin.PostAsync("/admin/v1/transfers", AdminApi.JsonBody(TransferBody(id, ledgerId, revenue)));
                    var body = await response.Content.ReadAsStringAsync();
                    var status = (int)response.StatusCode;
                    var requestId = response.Headers.TryGetValues("x-tollgate-request-id", out var r) ? r.Single() : null;
                    var charge = response.Headers.TryGetValues("x-tollgate-charge-micros", out var c) ? long.Parse(c.Single(), System.Globalization.CultureInfo.InvariantCulture) : 0;
                    sent.Enqueue(new Sent(gatewayCall ? "gateway" : "transfer", id, status, body, requestId, charge));
                    if (status == 200)
                    {
                        if (!gatewayCall && !body.Contains("\"result\":\"ok\"", StringComparison.Ordinal)) problems.Enqueue($"{id}: 200 but {body}");
                        if (Volatile.Read(ref phase) == 2) Interlocked.Increment(ref okAfter);
                    }
                    else if (status == 503)
                    {
                        var code = gatewayCall ? OpenAiErrorCode(body) : ProblemCode(body);
                        if (code is not ("database_unavailable" or "ledger_unavailable")) problems.Enqueue($"{id}: 503 without a clean error body: {body}");
                    }
                    else problems.Enqueue($"{id}: {status} {body}");
                }
                catch (TaskCanceledException) when (!stop.IsCancellationRequested)
                {
                    problems.Enqueue($"{id}: no answer within {Hang.TotalSeconds} s (a hang)");
                    sent.Enqueue(new Sent(gatewayCall ? "gateway" : "transfer", id, 0, "hang", null, 0));
                }
                catch (HttpRequestException e)
                {
                    problems.Enqueue($"{id}: transport error {e.Message}");
                    sent.Enqueue(new Sent(gatewayCall ? "gateway" : "transfer", id, 0, e.Message, null, 0));
                }
                if (Volatile.Read(ref phase) == 1) await Task.Delay(20);
            }
        }

        var workers = Enumerable.Range(0, 6).Select(w => Task.Run(() => WorkAsync(w))).ToArray();
        await WaitForAsync(() => sent.Count(s => s.Status == 200) >= 60, "60 acknowledgements before the restart");

        Volatile.Write(ref phase, 1);
        await pg.StopAsync();
        var downSince = sent.Count;
        await WaitForAsync(() => sent.Skip(downSince).Count(s => s is { Status: 503, Kind: "gateway" }) >= 5
                                 && sent.Skip(downSince).Count(s => s is { Status: 503, Kind: "transfer" }) >= 5, "503s while the database is down");
        var ready = await app.Anonymous.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);

        await pg.StartAgainAsync();
        Volatile.Write(ref phase, 2);
        await WaitForAsync(() => Volatile.Read(ref okAfter) >= 40, "40 acknowledgements after the restart");
        await stop.CancelAsync();
        await Task.WhenAll(workers);

        var all = sent.ToList();
        output.WriteLine($"{all.Count} requests: {all.Count(s => s.Status == 200)} acknowledged, {all.Count(s => s.Status == 503)} refused with 503");
        Assert.True(problems.IsEmpty, string.Join("\n", problems.Take(10)));
        Assert.Equal(HttpStatusCode.OK, (await app.Anonymous.GetAsync("/health/ready")).StatusCode);
        await AdminApi.AssertAuditHealthyAsync(app.Admin);

        // Every acknowledged transfer is there; every transfer id replays (acknowledged) or applies now (refused).
        var transfers = all.Where(s => s.Kind == "transfer").ToList();
        foreach (var t in transfers)
        {
            var replay = await app.Admin.PostAsync("/admin/v1/transfers", AdminApi.JsonBody(TransferBody(t.Id, ledgerId, revenue)));
            var result = (await MeteringApi.BodyAsync(replay, HttpStatusCode.OK))[0].Str("result");
            if (t.Status == 200) Assert.True(result == "replayed", $"acknowledged {t.Id} was not stored: {result}");
            else Assert.True(result is "ok" or "replayed", $"{t.Id}: {result}");
        }

        // Every acknowledged gateway call was charged once, as its response said; a refused call holds or charges nothing.
        var charged = 0L;
        var stillHeld = 0L;
        var inDoubt = 0;
        foreach (var call in all.Where(s => s.Kind == "gateway"))
        {
            // Every answer names its request (and so its hold), a 503 from the exception handler included.
            Assert.True(call.RequestId is not null, $"{call.Id}: {call.Status} without x-tollgate-request-id");
            var settle = await app.Admin.GetAsync($"/admin/v1/transfers/gw:{customer.AccountId}:{call.RequestId}:settle");
            if (call.Status == 200)
            {
                Assert.True(call.ChargeMicros > 0, $"{call.Id}: acknowledged without a charge");
                Assert.Equal(call.ChargeMicros, (await MeteringApi.BodyAsync(settle, HttpStatusCode.OK)).Long("amount_micros"));
                charged += call.ChargeMicros;
            }
            else if (settle.StatusCode == HttpStatusCode.OK)
            {
                // In doubt: the settlement's commit reached the server as it shut down, but its acknowledgement never
                // came back, so the caller got a 503. Charged once (with its usage record), never twice; only a
                // request in flight at the moment of the stop can end like this.
                inDoubt++;
                charged += (await MeteringApi.BodyAsync(settle, HttpStatusCode.OK)).Long("amount_micros");
                Assert.NotNull(await app.Get<Tollgate.Features.Metering.IUsageStore>().GetAsync(customer.AccountId, call.RequestId, CancellationToken.None));
            }
            else
            {
                Assert.True(settle.StatusCode == HttpStatusCode.NotFound, $"{call.Id}: {(int)settle.StatusCode} {await settle.Content.ReadAsStringAsync()}");
                // A hold placed just before the outage whose void could not be written either stays pending until it
                // expires (then the sweeper voids it): held, never charged.
                var hold = await app.Admin.GetAsync($"/admin/v1/transfers/gw:{customer.AccountId}:{call.RequestId}");
                if (hold.StatusCode == HttpStatusCode.OK && await MeteringApi.BodyAsync(hold, HttpStatusCode.OK) is var h && h.Str("status") == "pending")
                {
                    Assert.True(h.GetProperty("expires_at").ValueKind == JsonValueKind.String, $"{call.Id}: a pending hold that never expires");
                    stillHeld += h.Long("amount_micros");
                }
            }
        }

        Assert.True(inDoubt <= 6, $"{inDoubt} refused calls were settled; at most one per client can be in flight at the stop");
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{customer.AccountId}"), HttpStatusCode.OK);
        Assert.Equal(SeedMicros - transfers.Count * TransferMicros - charged, account.Long("balance_micros"));
        Assert.Equal(stillHeld, account.Long("held_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    private static string TransferBody(string id, long debit, long credit) =>
        $$"""{"transfers":[{"id":"{{id}}","kind":"posted","debit_account_id":{{debit}},"credit_account_id":{{credit}},"amount_micros":{{TransferMicros}},"code":"load"}]}""";

    private static string? OpenAiErrorCode(string body)
    {
        try
        {
            return JsonDocument.Parse(body).RootElement.GetProperty("error").Str("code");
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return null;
        }
    }

    private static string? ProblemCode(string body)
    {
        try
        {
            var root = JsonDocument.Parse(body).RootElement;
            return root.TryGetProperty("status", out _) ? root.Str("code") : null;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return null;
        }
    }

    private static async Task WaitForAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("timed out waiting for " + what);
            await Task.Delay(20);
        }
    }
}
