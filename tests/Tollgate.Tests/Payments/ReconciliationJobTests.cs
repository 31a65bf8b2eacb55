using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Stripe;
using Tollgate.Tests.Processes;

namespace Tollgate.Tests.Payments;

/// <summary>
/// The background reconciliation job and <c>tollgate reconcile</c>: both compare the payment side (a fake Stripe, a scripted
/// JSON-RPC node) with the ledger, list what disagrees, and fix nothing.
/// </summary>
public sealed class ReconciliationJobTests
{
    private const string Secret = "whsec_test_secret";
    private const string Treasury = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    public static TheoryData<string> Engines => TestDatabases.Engines;

    /// <summary>A Checkout Session paid at Stripe for <paramref name="accountId"/> that Tollgate never heard of (created straight at the fake).</summary>
    private static async Task<string> PaidElsewhereAsync(FakeStripe stripe, string accountId)
    {
        using var http = new HttpClient { BaseAddress = stripe.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new("Bearer", FakeStripe.SecretKey);
        var created = await http.PostAsync("/v1/checkout/sessions", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["mode"] = "payment", ["success_url"] = "https://example.com/ok", ["metadata[tollgate_account]"] = accountId,
        }));
        var id = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        stripe.MarkPaid(id, 500);
        return id;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_job_reports_unresolved_mismatches_on_its_schedule_and_then_shows_them_resolved(string engine)
    {
        await using var stripe = await FakeStripe.StartAsync();
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>(stripe.Settings(Secret))
        {
            ["Tollgate:Reconciliation:InitialDelaySeconds"] = "0",
            ["Tollgate:Reconciliation:IntervalSeconds"] = "1",
        });
        var account = await app.CreateAccountAsync("reconciled");
        var session = await PaidElsewhereAsync(stripe, account);

        async Task<JsonElement> LatestMismatchAsync(Func<JsonElement, bool> done)
        {
            var until = DateTime.UtcNow.AddSeconds(15);
            while (true)
            {
                var latest = await MeteringApi.BodyAsync(await app.Admin.GetAsync("/admin/v1/payments/reconciliation/latest"), HttpStatusCode.OK);
                var report = latest.GetProperty("data").EnumerateArray().SingleOrDefault(r => r.Str("source") == "stripe");
                if (report.ValueKind == JsonValueKind.Object && report.GetProperty("report").ValueKind == JsonValueKind.Object
                    && report.GetProperty("report").GetProperty("mismatches").EnumerateArray().FirstOrDefault(m => m.Str("reference") == session) is { ValueKind: JsonValueKind.Object } m
                    && done(m))
                    return report.GetProperty("report");
                Assert.True(DateTime.UtcNow < until, "the reconciliation job did not report the mismatch");
                await Task.Delay(200);
            }
        }

        var open = await LatestMismatchAsync(m => m.Str("kind") == "money_without_credit");
        Assert.False(open.GetProperty("clean").GetBoolean());
        Assert.Equal(0, (await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{account}"), HttpStatusCode.OK)).Long("balance_micros"));

        await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/payments/reconciliation/resolutions", AdminApi.JsonBody(
            $$"""{"source":"stripe","reference":"{{session}}","account_id":"{{account}}","amount_micros":5000000,"reason":"paid, webhook lost"}""")), HttpStatusCode.Created);
        var closed = await LatestMismatchAsync(m => m.TryGetProperty("resolved_by", out var r) && r.ValueKind == JsonValueKind.String);
        Assert.True(closed.GetProperty("clean").GetBoolean());
        Assert.Equal(5_000_000, (await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{account}"), HttpStatusCode.OK)).Long("balance_micros"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/admin/v1/payments/reconciliation/latest")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_reconcile_command_covers_Stripe_and_the_chain_and_exits_1_on_a_mismatch(string engine)
    {
        await using var stripe = await FakeStripe.StartAsync();
        await using var node = await Crypto.FakeEvmNode.StartAsync();
        var database = await TestDatabases.CreateAsync(engine);
        var session = await PaidElsewhereAsync(stripe, "acct_elsewhere");
        // USDC to the treasury from a wallet nobody linked, well inside the confirmed range.
        var tx = node.Mine([new(Features.Payments.Crypto.CryptoOptions.BaseUsdc, Crypto.TestWallet.Random().Address, Treasury, 4_000_000)], block: node.BlockNumber - 10);
        var block = node.BlockNumber - 10;
        var environment = new Dictionary<string, string?>
        {
            ["Tollgate__Stripe__SecretKey"] = FakeStripe.SecretKey,
            ["Tollgate__Stripe__ApiBaseUrl"] = stripe.BaseUrl.ToString(),
            ["Tollgate__Stripe__WebhookSecrets__0"] = Secret,
            ["Tollgate__Crypto__Enabled"] = "true",
            ["Tollgate__Crypto__RpcUrl"] = node.Url,
            ["Tollgate__Crypto__TreasuryAddress"] = Treasury,
            ["Tollgate__Crypto__Confirmations"] = "3",
        };

        // --to a minute ahead: the period's end is exclusive to the second, and the session may have been made in this one.
        var to = DateTimeOffset.UtcNow.AddMinutes(1).ToString("O");
        var both = await TollgateExecutable.RunAsync(["reconcile", "--database", database, "--to", to, "--from-block", block.ToString(), "--to-block", block.ToString()], environment);
        Assert.True(both.ExitCode == 1, both.ToString());
        var reports = both.Json().GetProperty("reports").EnumerateArray().ToDictionary(r => r.Str("source")!);
        var paid = Assert.Single(reports["stripe"].GetProperty("mismatches").EnumerateArray(), m => m.Str("reference") == session);
        Assert.Equal(("money_without_credit", "acct_elsewhere"), (paid.Str("kind"), paid.Str("account_id")));
        var received = Assert.Single(reports["usdc"].GetProperty("mismatches").EnumerateArray());
        Assert.Equal("money_without_credit", received.Str("kind"));
        Assert.StartsWith(tx + "#", received.Str("reference"));
        Assert.Equal((block, block), (reports["usdc"].Long("from_block"), reports["usdc"].Long("to_block")));

        // A range without transfers to the treasury, the chain only: clean, exit code 0.
        var quiet = await TollgateExecutable.RunAsync(["reconcile", "--database", database, "--source", "usdc", "--from-block", "1", "--to-block", "2"], environment);
        Assert.True(quiet.ExitCode == 0, quiet.ToString());
        Assert.True(quiet.Json().GetProperty("clean").GetBoolean());
        Assert.Single(quiet.Json().GetProperty("reports").EnumerateArray());
    }
}
