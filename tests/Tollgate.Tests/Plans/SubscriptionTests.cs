using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Features.Plans;
using Tollgate.Tests.Api;
using Tollgate.Tests.Ledger;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>
/// Subscriptions on an app whose clock is a <see cref="ManualTimeProvider"/> (starting 2026-01-01T00:00Z, so the first
/// monthly period is 31 days). Renewals are run by calling the service (the sweepers' ticks are far apart).
/// </summary>
public sealed class SubscriptionTests
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    internal static readonly Dictionary<string, string?> Settings = new()
    {
        ["Tollgate:Subscriptions:SweepSeconds"] = "86400",
        ["Tollgate:PlanCredits:SweepSeconds"] = "86400",
        ["Tollgate:Plans:starter:MonthlyPriceCents"] = "2900",
        ["Tollgate:Plans:starter:YearlyPriceCents"] = "29000",
        ["Tollgate:Plans:starter:IncludedRequests"] = "3",
        ["Tollgate:Plans:pro:MonthlyPriceCents"] = "9900",
        ["Tollgate:Plans:pro:YearlyPriceCents"] = "99000",
        ["Tollgate:Plans:trial:MonthlyPriceCents"] = "1000",
        ["Tollgate:Plans:trial:TrialDays"] = "14",
        ["Tollgate:Plans:tokens:IncludedTokens"] = "1",
        ["Tollgate:Plans:overage:IncludedRequests"] = "1",
        ["Tollgate:Plans:overage:OveragePolicy"] = "bill",
        ["Tollgate:Plans:expiring:IncludedCreditsMicros"] = "5000000",
        ["Tollgate:Plans:expiring:ExpireIncludedCredits"] = "true",
    };

    private static async Task<(TestApp App, ManualTimeProvider Clock)> StartAsync(string engine)
    {
        var clock = new ManualTimeProvider(Start);
        var app = await TestApp.StartAsync(engine, Settings, services: s => s.AddSingleton<TimeProvider>(clock));
        return (app, clock);
    }

    private static Task<HttpResponseMessage> SubscribeAsync(Customer c, string plan, string interval = "month") =>
        c.Client.PostAsync("/api/v1/subscription", AdminApi.JsonBody($$"""{"plan":"{{plan}}","interval":"{{interval}}"}"""));

    private static async Task<JsonElement> OkAsync(Task<HttpResponseMessage> call) => await MeteringApi.BodyAsync(await call, HttpStatusCode.OK);

    private static async Task<long> BalanceAsync(Customer c) => (await c.AccountAsync()).Long("balance_micros");

    private static Task<int> RenewAsync(TestApp app) => app.Get<SubscriptionService>().RenewDueAsync(CancellationToken.None);

    private static async Task<List<JsonElement>> LedgerLinesAsync(TestApp app, string accountId, string code) =>
        (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{accountId}/ledger?limit=500"))
        .GetProperty("data").EnumerateArray().Where(l => l.Str("code") == code).ToList();

    private static HttpContent Chat() => AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":20,"messages":[{"role":"user","content":"hello"}]}""");

    [Fact]
    public void Proration_rounds_the_credit_down_and_the_charge_up()
    {
        // $29 for 31 days, 21 days left: 29,000,000 × 21 / 31 = 19,645,161.29…; $99: 99,000,000 × 21 / 31 = 67,064,516.12…
        var day = 86_400_000_000L;
        Assert.Equal(19_645_161, Proration.CreditMicros(29_000_000, 21 * day, 31 * day));
        Assert.Equal(67_064_517, Proration.ChargeMicros(99_000_000, 21 * day, 31 * day));
        Assert.Equal(99_000_000, Proration.ChargeMicros(99_000_000, 31 * day, 31 * day));
        Assert.Equal(0, Proration.CreditMicros(29_000_000, 0, 31 * day));
        // Large prices over long periods do not overflow (128-bit products).
        Assert.Equal(500_000_000_000_000, Proration.CreditMicros(1_000_000_000_000_000, 183 * day, 366 * day));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Subscribe_upgrade_with_proration_downgrade_at_period_end_cancel_and_resume(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(200_000_000);

        var subscribed = await OkAsync(SubscribeAsync(c, "starter"));
        Assert.Equal(("subscribed", 29_000_000L), (subscribed.Str("change"), subscribed.Long("fee_micros")));
        var sub = subscribed.GetProperty("subscription");
        Assert.Equal(("starter", "active", "month", "credits"), (sub.Str("plan"), sub.Str("status"), sub.Str("interval"), sub.Str("billing")));
        Assert.Equal(Start, sub.GetProperty("current_period_start").GetDateTimeOffset());
        Assert.Equal(Start.AddMonths(1), sub.GetProperty("current_period_end").GetDateTimeOffset());
        Assert.Equal(171_000_000, await BalanceAsync(c));
        // The same request again changes nothing.
        Assert.Equal("unchanged", (await OkAsync(SubscribeAsync(c, "starter"))).Str("change"));
        Assert.Equal(171_000_000, await BalanceAsync(c));

        // Ten days into the 31-day period, upgrade to $99: 21/31 of the period remains.
        clock.Advance(TimeSpan.FromDays(10));
        var upgraded = await OkAsync(SubscribeAsync(c, "pro"));
        const long credit = 19_645_161; // floor(29,000,000 × 21 / 31) = floor(19,645,161.29)
        const long charge = 67_064_517; // ceil(99,000,000 × 21 / 31) = ceil(67,064,516.13)
        Assert.Equal(("upgraded", credit, charge), (upgraded.Str("change"), upgraded.Long("proration_credit_micros"), upgraded.Long("fee_micros")));
        Assert.Equal("pro", upgraded.GetProperty("subscription").Str("plan"));
        // The period does not move on an upgrade.
        Assert.Equal(Start.AddMonths(1), upgraded.GetProperty("subscription").GetProperty("current_period_end").GetDateTimeOffset());
        Assert.Equal(171_000_000 + credit - charge, await BalanceAsync(c));
        Assert.Equal(credit, Assert.Single(await LedgerLinesAsync(app, c.AccountId, "proration_credit")).Long("amount_micros"));
        Assert.Equal(2, (await LedgerLinesAsync(app, c.AccountId, "subscription_fee")).Count);

        // A cheaper plan waits for the period end.
        var scheduled = await OkAsync(SubscribeAsync(c, "starter"));
        Assert.Equal("downgrade_scheduled", scheduled.Str("change"));
        Assert.Equal(("pro", "starter"), (scheduled.GetProperty("subscription").Str("plan"), scheduled.GetProperty("subscription").Str("pending_plan")));
        Assert.Equal(0, await RenewAsync(app));
        var afterUpgrade = await BalanceAsync(c);

        clock.Advance(Start.AddMonths(1) - clock.GetUtcNow());
        Assert.Equal(1, await RenewAsync(app));
        Assert.Equal(0, await RenewAsync(app));
        var renewed = (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription");
        Assert.Equal(("starter", "active", JsonValueKind.Null), (renewed.Str("plan"), renewed.Str("status"), renewed.GetProperty("pending_plan").ValueKind));
        Assert.Equal(Start.AddMonths(2), renewed.GetProperty("current_period_end").GetDateTimeOffset());
        Assert.Equal(afterUpgrade - 29_000_000, await BalanceAsync(c));
        Assert.Equal("starter", (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).Str("id"));

        // Cancel at the period end, resume, cancel again: the plan stays until the end, then the account is on 'default'.
        var canceling = await OkAsync(c.Client.PostAsync("/api/v1/subscription/cancel", AdminApi.JsonBody("{}")));
        Assert.Equal(("cancel_scheduled", true), (canceling.Str("change"), canceling.GetProperty("subscription").GetProperty("cancel_at_period_end").GetBoolean()));
        var resumed = await OkAsync(c.Client.PostAsync("/api/v1/subscription/resume", null));
        Assert.False(resumed.GetProperty("subscription").GetProperty("cancel_at_period_end").GetBoolean());
        await OkAsync(c.Client.PostAsync("/api/v1/subscription/cancel", AdminApi.JsonBody("""{"at_period_end":true}""")));
        var beforeEnd = await BalanceAsync(c);
        clock.Advance(Start.AddMonths(2) - clock.GetUtcNow());
        Assert.Equal(1, await RenewAsync(app));
        var ended = await OkAsync(c.Client.GetAsync("/api/v1/subscription"));
        Assert.Equal(("default", "canceled"), (ended.Str("plan"), ended.GetProperty("subscription").Str("status")));
        Assert.Equal(beforeEnd, await BalanceAsync(c));
        clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal("default", (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).Str("id"));
        var history = await OkAsync(app.Admin.GetAsync($"/admin/v1/accounts/{c.AccountId}/subscription"));
        Assert.Equal(["canceled", "cancel_scheduled", "resumed", "cancel_scheduled", "downgraded", "downgrade_scheduled", "upgraded", "subscribed"],
            history.GetProperty("history").EnumerateArray().Select(e => e.Str("event")!).ToArray());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task An_unaffordable_subscription_or_upgrade_is_402_and_changes_nothing(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(40_000_000);
        var refused = await MeteringApi.BodyAsync(await SubscribeAsync(c, "pro"), HttpStatusCode.PaymentRequired);
        Assert.Equal(("insufficient_credits", 99_000_000L), (refused.Str("code"), refused.Long("fee_micros")));
        Assert.Equal(JsonValueKind.Null, (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription").ValueKind);

        await OkAsync(SubscribeAsync(c, "starter"));
        clock.Advance(TimeSpan.FromDays(1));
        await MeteringApi.BodyAsync(await SubscribeAsync(c, "pro"), HttpStatusCode.PaymentRequired);
        Assert.Equal(11_000_000, await BalanceAsync(c));
        Assert.Empty(await LedgerLinesAsync(app, c.AccountId, "proration_credit"));
        Assert.Equal("starter", (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription").Str("plan"));
        // A yearly price only where the plan has one.
        var noYear = await MeteringApi.BodyAsync(await SubscribeAsync(c, "trial", "year"), HttpStatusCode.BadRequest);
        Assert.Equal("interval", noYear.Str("param"));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task A_trial_becomes_active_at_its_end_and_an_unpaid_renewal_is_past_due_until_paid(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(0);

        var trial = (await OkAsync(SubscribeAsync(c, "trial"))).GetProperty("subscription");
        Assert.Equal("trialing", trial.Str("status"));
        Assert.Equal(Start.AddDays(14), trial.GetProperty("trial_end").GetDateTimeOffset());
        Assert.Equal(0, await BalanceAsync(c));

        clock.Advance(TimeSpan.FromDays(14));
        Assert.Equal(1, await RenewAsync(app));
        var pastDue = (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription");
        Assert.Equal("past_due", pastDue.Str("status"));
        Assert.Equal(Start.AddDays(14), pastDue.GetProperty("current_period_start").GetDateTimeOffset());
        Assert.Equal(Start.AddDays(14).AddMonths(1), pastDue.GetProperty("current_period_end").GetDateTimeOffset());

        await app.GrantAsync(c.AccountId, 15_000_000);
        Assert.Equal(1, await RenewAsync(app));
        Assert.Equal("active", (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription").Str("status"));
        Assert.Equal(5_000_000, await BalanceAsync(c));
        Assert.Equal(0, await RenewAsync(app));
        Assert.Equal(5_000_000, await BalanceAsync(c));

        // A second subscription after canceling gets no new trial.
        await OkAsync(c.Client.PostAsync("/api/v1/subscription/cancel", AdminApi.JsonBody("""{"at_period_end":false}""")));
        await app.GrantAsync(c.AccountId, 10_000_000);
        var again = (await OkAsync(SubscribeAsync(c, "trial"))).GetProperty("subscription");
        Assert.Equal("active", again.Str("status"));
        Assert.Equal(5_000_000, await BalanceAsync(c));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Included_requests_reset_exactly_at_the_subscriptions_period_boundary(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(100_000_000);
        clock.Advance(TimeSpan.FromHours(5));
        await OkAsync(SubscribeAsync(c, "starter"));
        var periodEnd = Start.AddHours(5).AddMonths(1);
        clock.Advance(TimeSpan.FromSeconds(2));

        for (var i = 0; i < 3; i++) Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);

        clock.Advance(periodEnd.AddTicks(-10) - clock.GetUtcNow());
        var refused = await c.Client.PostAsync("/v1/chat/completions", Chat());
        var error = (await MeteringApi.BodyAsync(refused, HttpStatusCode.TooManyRequests)).GetProperty("error");
        Assert.Equal(("quota_exceeded", periodEnd), (error.Str("code"), error.GetProperty("resets_at").GetDateTimeOffset()));

        clock.Advance(TimeSpan.FromTicks(10));
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var quota = (await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas")[0];
        Assert.Equal(("requests", 1L), (quota.Str("kind"), quota.Long("used")));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Used_up_tokens_are_refused_and_overage_billing_lets_calls_continue(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var tokens = await app.CustomerAsync(10_000_000);
        await OkAsync(SubscribeAsync(tokens, "tokens"));
        clock.Advance(TimeSpan.FromSeconds(2));
        var first = await MeteringApi.BodyAsync(await tokens.Client.PostAsync("/v1/chat/completions", Chat()), HttpStatusCode.OK);
        var used = first.GetProperty("usage").Long("prompt_tokens") + first.GetProperty("usage").Long("completion_tokens");
        var refused = await MeteringApi.BodyAsync(await tokens.Client.PostAsync("/v1/chat/completions", Chat()), HttpStatusCode.TooManyRequests);
        Assert.Equal(("quota_exceeded", "tokens", 1L), (refused.GetProperty("error").Str("code"), refused.GetProperty("error").Str("kind"), refused.GetProperty("error").Long("limit")));
        var quota = (await tokens.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas").EnumerateArray().Single(q => q.Str("kind") == "tokens");
        Assert.Equal((used, 0L), (quota.Long("used"), quota.Long("remaining")));

        using var billed = await app.CustomerAsync(10_000_000);
        await OkAsync(SubscribeAsync(billed, "overage"));
        clock.Advance(TimeSpan.FromSeconds(2));
        var before = await BalanceAsync(billed);
        long charged = 0;
        for (var i = 0; i < 3; i++)
        {
            var response = await billed.Client.PostAsync("/v1/chat/completions", Chat());
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            charged += long.Parse(response.Headers.GetValues("x-tollgate-charge-micros").Single());
        }
        Assert.True(charged > 0);
        Assert.Equal(before - charged, await BalanceAsync(billed));
        var requests = (await billed.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan")).GetProperty("quotas")[0];
        Assert.Equal((1L, 3L, 0L), (requests.Long("limit"), requests.Long("used"), requests.Long("remaining")));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Unspent_included_credits_expire_at_the_period_end_never_more_than_the_balance(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        var credits = app.Get<PlanCreditsService>();

        // Bought credits are kept; included credits not spent by the end are taken back.
        using var spender = await app.CustomerAsync(1_000_000);
        await OkAsync(SubscribeAsync(spender, "expiring"));
        Assert.Equal(6_000_000, await BalanceAsync(spender));
        clock.Advance(TimeSpan.FromSeconds(2));
        var charge = long.Parse((await spender.Client.PostAsync("/v1/chat/completions", Chat())).Headers.GetValues("x-tollgate-charge-micros").Single());
        Assert.True(charge > 0);

        // Taken all but 1,000,000 away: the expiry cannot take more than that.
        using var poor = await app.CustomerAsync(0);
        await OkAsync(SubscribeAsync(poor, "expiring"));
        await MeteringApi.BodyAsync(await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{poor.AccountId}/credits",
            new { amount_micros = -4_000_000, idempotency_key = "down", reason = "test" }), HttpStatusCode.OK);

        // The second subscription began 2 s after the first: both periods are over here.
        clock.Advance(Start.AddMonths(1).AddSeconds(2) - clock.GetUtcNow());
        Assert.Equal(2, await RenewAsync(app));
        Assert.Equal(0, await credits.GrantDueAsync(CancellationToken.None));

        // Statement amounts are signed: the expiry is a debit of the account.
        Assert.Equal(-(5_000_000 - charge), Assert.Single(await LedgerLinesAsync(app, spender.AccountId, "plan_credits_expired")).Long("amount_micros"));
        Assert.Equal(1_000_000 + 5_000_000, await BalanceAsync(spender));
        Assert.Equal(-1_000_000, Assert.Single(await LedgerLinesAsync(app, poor.AccountId, "plan_credits_expired")).Long("amount_micros"));
        Assert.Equal(5_000_000, await BalanceAsync(poor));
        Assert.Equal(2, (await LedgerLinesAsync(app, poor.AccountId, "plan_credits")).Count);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Members_without_manage_rights_cannot_change_and_keys_only_reach_their_own_account(string engine)
    {
        var (app, _) = await StartAsync(engine);
        await using var __ = app;
        using var a = await app.CustomerAsync(100_000_000);
        using var b = await app.CustomerAsync(100_000_000);
        await OkAsync(SubscribeAsync(b, "starter"));

        var viewer = $"viewer-{Guid.NewGuid():N}@example.com";
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{a.AccountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{viewer}}","password":"viewer password 1","role":"member"}""")), HttpStatusCode.Created);
        var session = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"{{viewer}}","password":"viewer password 1"}""")), HttpStatusCode.Created);
        using var member = new HttpClient { BaseAddress = app.BaseAddress };
        member.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", session.Str("token"));
        Assert.Equal(HttpStatusCode.OK, (await member.GetAsync("/api/v1/subscription")).StatusCode);
        foreach (var (path, body) in new[] { ("/api/v1/subscription", """{"plan":"starter"}"""), ("/api/v1/subscription/cancel", "{}"), ("/api/v1/subscription/resume", "{}") })
            Assert.Equal("forbidden", (await MeteringApi.BodyAsync(await member.PostAsync(path, AdminApi.JsonBody(body)), HttpStatusCode.Forbidden)).Str("code"));
        Assert.Equal(JsonValueKind.Null, (await OkAsync(a.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription").ValueKind);

        // A's key sees and changes only A's subscription; the admin routes do not take it.
        Assert.Equal(JsonValueKind.Null, (await OkAsync(a.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription").ValueKind);
        Assert.Equal(HttpStatusCode.NotFound, (await a.Client.PostAsync("/api/v1/subscription/cancel", AdminApi.JsonBody("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await a.Client.GetAsync($"/admin/v1/accounts/{b.AccountId}/subscription")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await a.Client.PatchAsync($"/admin/v1/accounts/{b.AccountId}/subscription",
            AdminApi.JsonBody("""{"status":"canceled"}"""))).StatusCode);
        var bs = (await OkAsync(b.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription");
        Assert.Equal(("starter", "active", false), (bs.Str("plan"), bs.Str("status"), bs.GetProperty("cancel_at_period_end").GetBoolean()));
        Assert.Equal(71_000_000, await BalanceAsync(b));

        // The admin sets the status (what payment webhooks will do) and billing.
        var pastDue = await OkAsync(app.Admin.PatchAsync($"/admin/v1/accounts/{b.AccountId}/subscription", AdminApi.JsonBody("""{"status":"past_due"}""")));
        Assert.Equal("past_due", pastDue.GetProperty("subscription").Str("status"));
        var external = await OkAsync(app.Admin.PostAsync($"/admin/v1/accounts/{a.AccountId}/subscription",
            AdminApi.JsonBody("""{"plan":"pro","interval":"year","billing":"external"}""")));
        Assert.Equal(("external", "pro", 0L), (external.GetProperty("subscription").Str("billing"), external.GetProperty("subscription").Str("plan"), external.Long("fee_micros")));
        Assert.Equal(100_000_000, await BalanceAsync(a));
        // The customer cannot change an externally billed plan here, and once it ends a new subscription pays from credits.
        Assert.Equal("billing_external", (await MeteringApi.BodyAsync(await SubscribeAsync(a, "starter"), HttpStatusCode.Conflict)).Str("code"));
        await OkAsync(a.Client.PostAsync("/api/v1/subscription/cancel", AdminApi.JsonBody("""{"at_period_end":false}""")));
        var again = await OkAsync(SubscribeAsync(a, "starter"));
        Assert.Equal(("credits", 29_000_000L), (again.GetProperty("subscription").Str("billing"), again.Long("fee_micros")));
        Assert.Equal(71_000_000, await BalanceAsync(a));
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Two_processes_renewing_and_concurrent_upgrades_charge_once(string engine)
    {
        var clock = new ManualTimeProvider(Start);
        await using var app = await TestApp.StartAsync(engine, Settings, services: s => s.AddSingleton<TimeProvider>(clock));
        await using var other = await TestApp.StartAsync(engine, Settings, database: app.DatabaseConnection, services: s => s.AddSingleton<TimeProvider>(clock));
        using var c = await app.CustomerAsync(500_000_000);
        await OkAsync(SubscribeAsync(c, "starter"));
        clock.Advance(TimeSpan.FromDays(10));

        var upgrades = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => SubscribeAsync(c, "pro")));
        Assert.All(upgrades, r => Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.Conflict, r.StatusCode.ToString()));
        Assert.Contains(upgrades, r => r.StatusCode == HttpStatusCode.OK);
        Assert.Single(await LedgerLinesAsync(app, c.AccountId, "proration_credit"));
        Assert.Equal(500_000_000 - 29_000_000 + 19_645_161 - 67_064_517, await BalanceAsync(c));

        clock.Advance(Start.AddMonths(1) - clock.GetUtcNow());
        await Task.WhenAll(app.Get<SubscriptionService>().RenewDueAsync(CancellationToken.None),
            other.Get<SubscriptionService>().RenewDueAsync(CancellationToken.None));
        Assert.Equal(3, (await LedgerLinesAsync(app, c.AccountId, "subscription_fee")).Count);
        Assert.Equal(500_000_000 - 29_000_000 + 19_645_161 - 67_064_517 - 99_000_000, await BalanceAsync(c));
        var sub = (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription");
        Assert.Equal(Start.AddMonths(2), sub.GetProperty("current_period_end").GetDateTimeOffset());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task A_yearly_interval_has_twelve_month_periods_and_switching_to_it_starts_a_new_period(string engine)
    {
        var (app, clock) = await StartAsync(engine);
        await using var _ = app;
        using var c = await app.CustomerAsync(500_000_000);
        await OkAsync(SubscribeAsync(c, "starter"));
        clock.Advance(TimeSpan.FromDays(10));

        // Monthly $29 → yearly $290: the unused 21/31 of the month is credited, the year charged in full from now.
        var yearly = await OkAsync(SubscribeAsync(c, "starter", "year"));
        Assert.Equal(("upgraded", 19_645_161L, 290_000_000L), (yearly.Str("change"), yearly.Long("proration_credit_micros"), yearly.Long("fee_micros")));
        var sub = yearly.GetProperty("subscription");
        Assert.Equal((Start.AddDays(10), Start.AddDays(10).AddMonths(12)),
            (sub.GetProperty("current_period_start").GetDateTimeOffset(), sub.GetProperty("current_period_end").GetDateTimeOffset()));
        clock.Advance(TimeSpan.FromDays(40));
        var plan = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        Assert.Equal(Start.AddDays(10).AddMonths(12), plan.GetProperty("period_end").GetDateTimeOffset());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task The_hosted_sweeper_renews_due_subscriptions_on_its_own(string engine)
    {
        var clock = new ManualTimeProvider(Start);
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>(Settings) { ["Tollgate:Subscriptions:SweepSeconds"] = "1" },
            services: s => s.AddSingleton<TimeProvider>(clock));
        using var c = await app.CustomerAsync(100_000_000);
        await OkAsync(SubscribeAsync(c, "starter"));
        clock.Advance(TimeSpan.FromDays(31));
        JsonElement sub = default;
        for (var i = 0; i < 50; i++)
        {
            sub = (await OkAsync(c.Client.GetAsync("/api/v1/subscription"))).GetProperty("subscription");
            if (sub.GetProperty("current_period_end").GetDateTimeOffset() > Start.AddMonths(1)) break;
            await Task.Delay(200);
        }
        Assert.Equal(Start.AddMonths(2), sub.GetProperty("current_period_end").GetDateTimeOffset());
        Assert.Equal(100_000_000 - 2 * 29_000_000, await BalanceAsync(c));
    }
}
