using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Features.Ledger;
using Tollgate.Features.Statements;
using Tollgate.Tests.Api;
using Tollgate.Tests.Ledger;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Statements;

/// <summary>Monthly statements built from the ledger: every kind of movement, exact totals, stored once, HTML and PDF.</summary>
public sealed class StatementTests
{
    private static readonly DateTimeOffset Start = new(2026, 10, 20, 10, 0, 0, TimeSpan.Zero);

    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["Tollgate:Plans:starter:MonthlyPriceCents"] = "2900",
        ["Tollgate:Plans:pro:MonthlyPriceCents"] = "9900",
        ["Tollgate:Statements:JobIntervalSeconds"] = "0",
    };

    private static async Task<(TestApp App, ManualTimeProvider Clock)> StartAsync(string engine, Dictionary<string, string?>? extra = null)
    {
        var clock = new ManualTimeProvider(Start);
        var settings = new Dictionary<string, string?>(Settings);
        foreach (var (k, v) in extra ?? []) settings[k] = v;
        var app = await TestApp.StartAsync(engine, settings, services: s => s.AddSingleton<TimeProvider>(clock));
        return (app, clock);
    }

    private static async Task<long> LedgerAccountIdAsync(TestApp app, string accountId) =>
        (await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{accountId}"), HttpStatusCode.OK)).Long("ledger_account_id");

    private static async Task<long> SumOfLedgerCodeAsync(TestApp app, string accountId, string code) =>
        (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{accountId}/ledger?limit=500"))
        .GetProperty("data").EnumerateArray().Where(l => l.Str("code") == code).Sum(l => l.Long("amount_micros"));

    private static long Line(JsonElement statement, string code, string? source = null) =>
        statement.GetProperty("lines").EnumerateArray().Where(l => l.Str("code") == code && (source is null || l.Str("source") == source)).Sum(l => l.Long("amount_micros"));

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task A_month_with_every_kind_of_movement_adds_up_exactly(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(100_000_000); // October: the opening balance of November
        using var creator = await app.CustomerAsync(0);
        var ledger = app.Get<LedgerService>();
        var system = app.Get<SystemAccounts>();
        var account = await LedgerAccountIdAsync(app, c.AccountId);

        clock.Advance(TimeSpan.FromDays(14)); // 2026-11-03
        async Task PostAsync(string id, long debit, long credit, long amount, string code) =>
            Assert.Equal(TransferResultCode.Ok, (await ledger.TransferAsync(new TransferRequest { Id = $"{c.AccountId}:{id}", DebitAccountId = debit, CreditAccountId = credit, Amount = amount, Code = code })).Code);
        var stripe = await system.StripeClearingAsync(CancellationToken.None);
        var usdc = await system.GetIdAsync(SystemAccounts.UsdcPayments, LedgerAccountKinds.PaymentsClearing, CancellationToken.None);
        var revenue = await system.RevenueAsync(CancellationToken.None);
        await PostAsync("stripe", stripe, account, 3_000_000, "topup");
        await PostAsync("usdc", usdc, account, 2_000_000, "topup");
        await PostAsync("refund", account, stripe, 1_000_000, "refund");
        await PostAsync("adjust", account, await system.AdjustmentsAsync(CancellationToken.None), 250_000, "adjustment");
        await PostAsync("addon", account, revenue, 400_000, "addon");
        await PostAsync("plan-credits", await system.PromotionsAsync(CancellationToken.None), account, 1_500_000, "plan_credits");
        await PostAsync("excess", account, revenue, 7, "usage_excess");
        await app.GrantAsync(c.AccountId, 1_000_000);

        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/api/v1/subscription", AdminApi.JsonBody("""{"plan":"starter","interval":"month"}"""))).StatusCode);
        clock.Advance(TimeSpan.FromDays(10));
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/api/v1/subscription", AdminApi.JsonBody("""{"plan":"pro","interval":"month"}"""))).StatusCode);

        var chat = await c.Client.PostAsync("/v1/chat/completions", AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":20,"messages":[{"role":"user","content":"statement please"}]}"""));
        var usage = (await MeteringApi.BodyAsync(chat, HttpStatusCode.OK)).GetProperty("usage");
        var charge = long.Parse(chat.Headers.GetValues("x-tollgate-charge-micros").Single());

        var agent = await MeteringApi.BodyAsync(await creator.Client.PostAsync("/api/v1/agents", AdminApi.JsonBody("""{"name":"Helper","pricing_mode":"one_time","price_micros":2000000}""")), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync($"/api/v1/agents/{agent.Str("id")}/purchase", null)).StatusCode);

        var closingExpected = (await c.AccountAsync()).Long("balance_micros");
        var fees = await SumOfLedgerCodeAsync(app, c.AccountId, "subscription_fee");
        var proration = await SumOfLedgerCodeAsync(app, c.AccountId, "proration_credit");
        Assert.True(fees < 0 && proration > 0, $"fees {fees}, proration {proration}");

        // The current month is built live and not stored.
        var live = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/statements/2026-11"), HttpStatusCode.OK);
        Assert.False(live.GetProperty("final").GetBoolean());

        clock.Advance(TimeSpan.FromDays(19)); // 2026-12-02
        var response = await c.Client.GetAsync("/api/v1/statements/2026-11");
        var text = await response.Content.ReadAsStringAsync();
        var s = await MeteringApi.BodyAsync(response, HttpStatusCode.OK);
        Assert.True(s.GetProperty("final").GetBoolean());
        Assert.Equal(100_000_000, s.Long("opening_balance_micros"));
        Assert.Equal(closingExpected, s.Long("closing_balance_micros"));
        Assert.Equal(s.Long("closing_balance_micros") - s.Long("opening_balance_micros"), s.GetProperty("lines").EnumerateArray().Sum(l => l.Long("amount_micros")));

        Assert.Equal(3_000_000, Line(s, "topup", "stripe"));
        Assert.Equal(2_000_000, Line(s, "topup", "usdc"));
        Assert.Equal(-1_000_000, Line(s, "refund"));
        Assert.Equal(-250_000, Line(s, "adjustment"));
        Assert.Equal(-400_000, Line(s, "addon"));
        Assert.Equal(1_500_000, Line(s, "plan_credits"));
        Assert.Equal(1_000_000, Line(s, "grant"));
        Assert.Equal(-charge, Line(s, "usage"));
        Assert.Equal(-7, Line(s, "usage_excess"));
        Assert.Equal(fees, Line(s, "subscription_fee"));
        Assert.Equal(proration, Line(s, "proration_credit"));
        Assert.Equal(-2_000_000, Line(s, "agent_purchase"));
        var totals = s.GetProperty("totals_by_category");
        Assert.Equal((5_000_000L, 2_500_000L, -charge - 7, -2_000_000L), (totals.Long("topups"), totals.Long("grants"), totals.Long("usage"), totals.Long("marketplace")));
        Assert.Equal(JsonValueKind.Null, s.GetProperty("amount_due_micros").ValueKind); // prepaid

        var model = s.GetProperty("usage_by_model").EnumerateArray().Single();
        Assert.Equal(("demo/echo", 1L, usage.Long("prompt_tokens"), usage.Long("completion_tokens"), charge),
            (model.Str("model"), model.Long("requests"), model.Long("input_tokens"), model.Long("output_tokens"), model.Long("price_micros")));

        // Stored once: later movements (dated December) and regenerating change nothing.
        await app.GrantAsync(c.AccountId, 123);
        var again = await (await c.Client.GetAsync("/api/v1/statements/2026-11")).Content.ReadAsStringAsync();
        Assert.Equal(text, again);
        var admin = await (await app.Admin.GetAsync($"/admin/v1/accounts/{c.AccountId}/statements/2026-11.json")).Content.ReadAsStringAsync();
        Assert.Equal(text, admin);
        var list = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/statements"), HttpStatusCode.OK)).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(["2026-12", "2026-11", "2026-10"], list.Select(p => p.Str("period")));
        Assert.Equal([false, true, false], list.Select(p => p.GetProperty("stored").GetBoolean()));
        // October: nothing but the opening grant.
        var october = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/statements/2026-10"), HttpStatusCode.OK);
        Assert.Equal((0L, 100_000_000L), (october.Long("opening_balance_micros"), october.Long("closing_balance_micros")));

        var html = await c.Client.GetAsync("/api/v1/statements/2026-11.html");
        Assert.Equal("text/html", html.Content.Headers.ContentType!.MediaType);
        var page = await html.Content.ReadAsStringAsync();
        Assert.Contains("Statement 2026-11", page);
        Assert.Contains(Tollgate.Infrastructure.Money.Money.FormatMicros(closingExpected), page);
        Assert.Contains("@media print", page);

        Assert.Equal("invalid_period", (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/statements/2026-13"), HttpStatusCode.BadRequest)).Str("code"));
        Assert.Equal(HttpStatusCode.NotFound, (await c.Client.GetAsync("/api/v1/statements/2027-01")).StatusCode);
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task The_job_stores_last_months_statements_and_a_postpaid_account_owes_its_negative_balance(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        var postpaid = await app.CreateAccountAsync("postpaid", creditLimitMicros: 50_000_000);
        await app.GrantAsync(postpaid, 1_000_000);
        var account = await LedgerAccountIdAsync(app, postpaid);
        var ledger = app.Get<LedgerService>();
        var revenue = await app.Get<SystemAccounts>().RevenueAsync(CancellationToken.None);
        clock.Advance(TimeSpan.FromDays(15)); // November
        Assert.Equal(TransferResultCode.Ok, (await ledger.TransferAsync(new TransferRequest
            { Id = $"{postpaid}:usage", DebitAccountId = account, CreditAccountId = revenue, Amount = 4_500_000, Code = "usage" })).Code);
        clock.Advance(TimeSpan.FromDays(30)); // December

        var job = app.Get<StatementJob>();
        Assert.True(await job.RunOnceAsync(CancellationToken.None) >= 1);
        Assert.Equal(0, await job.RunOnceAsync(CancellationToken.None));
        var s = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{postpaid}/statements/2026-11"), HttpStatusCode.OK);
        Assert.Equal((1_000_000L, -3_500_000L, 50_000_000L, 3_500_000L),
            (s.Long("opening_balance_micros"), s.Long("closing_balance_micros"), s.Long("credit_limit_micros"), s.Long("amount_due_micros")));
        var list = (await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{postpaid}/statements"), HttpStatusCode.OK)).GetProperty("data");
        Assert.True(list.EnumerateArray().Single(p => p.Str("period") == "2026-11").GetProperty("stored").GetBoolean());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Without_chromium_the_pdf_is_a_clear_503(string engine)
    {
        var (app, _) = await StartAsync(engine, new() { ["Tollgate:Statements:ChromiumPath"] = "/nonexistent/chromium" });
        await using var __ = app;
        using var c = await app.CustomerAsync(1_000);
        var problem = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/statements/2026-10.pdf"), HttpStatusCode.ServiceUnavailable);
        Assert.Equal("pdf_unavailable", problem.Str("code"));
        Assert.Contains("Chromium", problem.Str("detail"));
    }

    /// <summary>Needs Chromium (scripts/test.sh exports TOLLGATE_TEST_CHROMIUM; else PATH): fails, never skips, without it.</summary>
    [Fact]
    public async Task The_pdf_is_printed_by_headless_chromium()
    {
        var chromium = Environment.GetEnvironmentVariable("TOLLGATE_TEST_CHROMIUM") is { Length: > 0 } env ? env
            : new ChromiumPdf(Microsoft.Extensions.Options.Options.Create(new StatementOptions())).FindBinary();
        Assert.True(chromium is not null && File.Exists(chromium),
            "Chromium is needed for the PDF test: run scripts/test.sh (it installs it) or set TOLLGATE_TEST_CHROMIUM.");
        var (app, _) = await StartAsync(TestDatabases.Sqlite, new() { ["Tollgate:Statements:ChromiumPath"] = chromium });
        await using var __ = app;
        using var c = await app.CustomerAsync(2_500_000);
        var response = await c.Client.GetAsync("/api/v1/statements/2026-10.pdf");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/pdf", response.Content.Headers.ContentType!.MediaType);
        var pdf = await response.Content.ReadAsByteArrayAsync();
        Assert.True(pdf.Length > 1000);
        Assert.Equal("%PDF-", System.Text.Encoding.ASCII.GetString(pdf, 0, 5));
    }
}
