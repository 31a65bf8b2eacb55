using Microsoft.Extensions.DependencyInjection;
using System.Net;
using System.Net.Http.Headers;
using Tollgate.Features.Metering;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Budgets;

/// <summary>
/// Spend caps on accounts, keys and end customers, through the gateway with the demo provider. The caps are counted
/// in the ledger, so they must hold exactly under concurrency like the balance does.
/// </summary>
public sealed class SpendCapTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static HttpContent Chat(string text = "cap me", int maxTokens = 4, string? user = null) =>
        AdminApi.JsonBody($$"""{"model":"demo/echo","max_tokens":{{maxTokens}}{{(user is null ? "" : $",\"user\":\"{user}\"")}},"messages":[{"role":"user","content":"{{text}}"}]}""");

    private static long Charge(HttpResponseMessage r) => long.Parse(r.Headers.GetValues("x-tollgate-charge-micros").Single());

    private static async Task<JsonElement> PutCapsAsync(HttpClient client, string path, string json, HttpStatusCode expected = HttpStatusCode.OK) =>
        await MeteringApi.BodyAsync(await client.PutAsync(path, AdminApi.JsonBody(json)), expected);

    private static JsonElement Cap(JsonElement view, string window) =>
        view.GetProperty("caps").EnumerateArray().Single(c => c.Str("window") == window);

    private static async Task<JsonElement> BudgetErrorAsync(HttpResponseMessage response)
    {
        var error = (await MeteringApi.BodyAsync(response, HttpStatusCode.PaymentRequired)).GetProperty("error");
        Assert.Equal("budget_exceeded", error.Str("code"));
        return error;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_account_daily_cap_holds_exactly_under_200_concurrent_calls(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000_000);
        // One call to learn its price; the cap then affords a few dozen of them.
        var probe = await c.Client.PostAsync("/v1/chat/completions", Chat());
        Assert.Equal(HttpStatusCode.OK, probe.StatusCode);
        var price = Charge(probe);
        var cap = price * 50;
        var set = await PutCapsAsync(c.Client, "/api/v1/spend-caps", $$"""{"daily_micros":{{cap}}}""");
        Assert.Equal(cap, Cap(set, "day").Long("limit_micros"));
        Assert.Equal(0, Cap(set, "day").Long("spent_micros"));

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => c.Client.PostAsync("/v1/chat/completions", Chat())));

        var ok = responses.Where(r => r.StatusCode == HttpStatusCode.OK).ToList();
        var charged = ok.Sum(Charge);
        Assert.InRange(charged, 1, cap);
        foreach (var refused in responses.Where(r => r.StatusCode != HttpStatusCode.OK))
        {
            var error = await BudgetErrorAsync(refused);
            var which = error.GetProperty("cap");
            Assert.Equal(("account", "day", cap), (which.Str("scope"), which.Str("window"), which.Long("limit_micros")));
            Assert.True(which.GetProperty("resets_at").GetDateTimeOffset() > DateTimeOffset.UtcNow);
        }
        var after = Cap(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK), "day");
        Assert.Equal((charged, 0L, cap - charged), (after.Long("spent_micros"), after.Long("held_micros"), after.Long("remaining_micros")));
        Assert.Equal(100_000_000 - price - charged, (await c.AccountAsync()).Long("balance_micros"));
        // What is left cannot cover another call's hold.
        await BudgetErrorAsync(await c.Client.PostAsync("/v1/chat/completions", Chat()));

        // Raising the cap lets calls through again at once; removing it lifts it.
        await PutCapsAsync(c.Client, "/api/v1/spend-caps", $$"""{"daily_micros":{{cap + 10 * price}}}""");
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var removed = await PutCapsAsync(c.Client, "/api/v1/spend-caps", "{}");
        Assert.Equal(0, removed.GetProperty("caps").GetArrayLength());
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_key_cap_limits_that_key_only_and_survives_rotation(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000_000);
        var probe = await c.Client.PostAsync("/v1/chat/completions", Chat());
        var price = Charge(probe);
        var other = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"other"}""")), HttpStatusCode.Created);
        using var otherClient = new HttpClient { BaseAddress = app.BaseAddress };
        otherClient.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", other.Str("key"));

        var view = await PutCapsAsync(c.Client, $"/api/v1/keys/{other.Str("id")}/spend-caps", $$"""{"monthly_micros":{{2 * price}},"total_micros":{{3 * price}}}""");
        Assert.Equal(("key", 2), (view.Str("scope"), view.GetProperty("caps").GetArrayLength()));

        Assert.Equal(HttpStatusCode.OK, (await otherClient.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await otherClient.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var error = await BudgetErrorAsync(await otherClient.PostAsync("/v1/chat/completions", Chat()));
        Assert.Equal(("key", "month"), (error.GetProperty("cap").Str("scope"), error.GetProperty("cap").Str("window")));
        // The account's first key has no cap of its own.
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);

        // A rotated key is the same budget: rotation is no way around a cap.
        var rotated = await MeteringApi.BodyAsync(await c.Client.PostAsync($"/api/v1/keys/{other.Str("id")}/rotate", null), HttpStatusCode.Created);
        otherClient.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", rotated.Str("key"));
        await BudgetErrorAsync(await otherClient.PostAsync("/v1/chat/completions", Chat()));
        var status = await MeteringApi.BodyAsync(await c.Client.GetAsync($"/api/v1/keys/{rotated.Str("id")}/spend-caps"), HttpStatusCode.OK);
        Assert.Equal(2 * price, Cap(status, "month").Long("spent_micros"));
        Assert.Equal(2 * price, Cap(status, "total").Long("spent_micros"));
        Assert.Null(Cap(status, "total").GetProperty("resets_at").GetString());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task End_customers_are_named_per_call_recorded_capped_and_blockable(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000_000);
        var price = Charge(await c.Client.PostAsync("/v1/chat/completions", Chat()));

        var put = await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/customers/alice",
            AdminApi.JsonBody($$$"""{"name":"Alice","metadata":{"tier":"gold"},"spend_caps":{"daily_micros":{{{price}}}}}""")), HttpStatusCode.OK);
        Assert.Equal(("Alice", false), (put.Str("name"), put.GetProperty("blocked").GetBoolean()));

        HttpRequestMessage As(string customer) => new(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = Chat(), Headers = { { "x-tollgate-customer", customer } },
        };
        var first = await c.Client.SendAsync(As("alice"));
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var record = await app.Get<IUsageStore>().GetAsync(c.AccountId, first.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None);
        Assert.Equal("alice", record!.CustomerId);
        var error = await BudgetErrorAsync(await c.Client.SendAsync(As("alice")));
        Assert.Equal("customer", error.GetProperty("cap").Str("scope"));

        // Another customer (named by OpenAI's `user` field, registered on first sight) is not limited by Alice's cap.
        var bob = await c.Client.PostAsync("/v1/chat/completions", Chat(user: "bob"));
        Assert.Equal(HttpStatusCode.OK, bob.StatusCode);
        Assert.Equal("bob", (await app.Get<IUsageStore>().GetAsync(c.AccountId, bob.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None))!.CustomerId);
        var list = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/customers"), HttpStatusCode.OK);
        Assert.Equal("alice,bob", string.Join(",", list.GetProperty("data").EnumerateArray().Select(x => x.Str("id"))));
        var alice = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/customers/alice"), HttpStatusCode.OK);
        Assert.Equal(Charge(first), Cap(Wrap(alice), "day").Long("spent_micros"));
        Assert.Equal("gold", alice.GetProperty("metadata").Str("tier"));

        // Blocking takes effect at once in this process.
        await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/customers/bob", AdminApi.JsonBody("""{"blocked":true}""")), HttpStatusCode.OK);
        var blocked = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat(user: "bob")), HttpStatusCode.Forbidden)).GetProperty("error");
        Assert.Equal("customer_blocked", blocked.Str("code"));

        var badHeader = (await MeteringApi.BodyAsync(await c.Client.SendAsync(As("no spaces allowed")), HttpStatusCode.BadRequest)).GetProperty("error");
        Assert.Equal("x-tollgate-customer", badHeader.Str("param"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    private static JsonElement Wrap(JsonElement customer) =>
        JsonDocument.Parse($$"""{"caps":{{customer.GetProperty("spend_caps").GetRawText()}}}""").RootElement;

    [Theory, MemberData(nameof(Engines))]
    public async Task A_key_bound_to_a_customer_charges_it_and_cannot_act_for_another(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000_000);
        var bound = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"customer_id":"carol"}""")), HttpStatusCode.Created);
        Assert.Equal("carol", bound.Str("customer_id"));
        using var carol = new HttpClient { BaseAddress = app.BaseAddress };
        carol.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", bound.Str("key"));

        var ok = await carol.PostAsync("/v1/chat/completions", Chat(user: "someone-else"));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("carol", (await app.Get<IUsageStore>().GetAsync(c.AccountId, ok.Headers.GetValues("x-tollgate-request-id").Single(), CancellationToken.None))!.CustomerId);
        var other = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = Chat(), Headers = { { "x-tollgate-customer", "dave" } } };
        var refused = (await MeteringApi.BodyAsync(await carol.SendAsync(other), HttpStatusCode.Forbidden)).GetProperty("error");
        Assert.Equal("customer_not_allowed", refused.Str("code"));
        var badId = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"customer_id":"bad id"}""")), HttpStatusCode.BadRequest);
        Assert.Equal("customer_id", badId.Str("param"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Caps_and_customers_of_one_account_are_invisible_to_another(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var a = await app.CustomerAsync(1_000_000);
        using var b = await app.CustomerAsync(1_000_000);
        await MeteringApi.BodyAsync(await b.Client.PutAsync("/api/v1/customers/zed", AdminApi.JsonBody("{}")), HttpStatusCode.OK);
        await PutCapsAsync(b.Client, "/api/v1/spend-caps", """{"daily_micros":5}""");

        Assert.Equal(HttpStatusCode.NotFound, (await a.Client.GetAsync($"/api/v1/keys/{b.KeyId}/spend-caps")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.Client.PutAsync($"/api/v1/keys/{b.KeyId}/spend-caps", AdminApi.JsonBody("""{"daily_micros":0}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await a.Client.GetAsync("/api/v1/customers/zed")).StatusCode);
        Assert.Equal(0, (await MeteringApi.BodyAsync(await a.Client.GetAsync("/api/v1/customers"), HttpStatusCode.OK)).GetProperty("data").GetArrayLength());
        Assert.Equal(0, (await MeteringApi.BodyAsync(await a.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK)).GetProperty("caps").GetArrayLength());
        // A's own customer "zed" is a different customer from B's.
        await MeteringApi.BodyAsync(await a.Client.PutAsync("/api/v1/customers/zed", AdminApi.JsonBody("""{"name":"A's zed"}""")), HttpStatusCode.OK);
        Assert.Null((await MeteringApi.BodyAsync(await b.Client.GetAsync("/api/v1/customers/zed"), HttpStatusCode.OK)).GetProperty("name").GetString());
        // B's 5 µ$ daily cap did not limit A.
        Assert.Equal(HttpStatusCode.OK, (await a.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        await BudgetErrorAsync(await b.Client.PostAsync("/v1/chat/completions", Chat()));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Authorizations_hold_against_caps_and_release_or_capture_them_together(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(10_000_000);
        await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/customers/erin",
            AdminApi.JsonBody("""{"spend_caps":{"monthly_micros":1000}}""")), HttpStatusCode.OK);
        Task<HttpResponseMessage> Authorize(string id, long micros, string? customer = "erin") =>
            c.Client.PostAsync("/api/v1/authorizations", AdminApi.JsonBody(
                $$"""{"id":"{{id}}","amount_micros":{{micros}}{{(customer is null ? "" : $",\"customer_id\":\"{customer}\"")}}}"""));
        async Task<JsonElement> Month() => Cap(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/customers/erin/spend-caps"), HttpStatusCode.OK), "month");

        await MeteringApi.BodyAsync(await Authorize("a1", 600), HttpStatusCode.Created);
        var refused = await MeteringApi.BodyAsync(await Authorize("a2", 600), HttpStatusCode.PaymentRequired);
        Assert.Equal(("budget_exceeded", "customer"), (refused.Str("code"), refused.GetProperty("cap").Str("scope")));
        Assert.Equal((0L, 600L), ((await Month()).Long("spent_micros"), (await Month()).Long("held_micros")));
        // Without the customer the same amount is only the balance's business.
        await MeteringApi.BodyAsync(await Authorize("a3", 600, customer: null), HttpStatusCode.Created);

        // Capturing more than held charges the excess only as far as the cap allows: 600 held + 400 left under the cap.
        var captured = await MeteringApi.BodyAsync(await c.CaptureAsync("a1", 2_000), HttpStatusCode.OK);
        Assert.Equal(1_000, captured.Long("captured_micros"));
        Assert.Equal((1_000L, 0L, 0L), ((await Month()).Long("spent_micros"), (await Month()).Long("held_micros"), (await Month()).Long("remaining_micros")));

        // A voided hold gives its room back.
        await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/customers/erin/spend-caps", AdminApi.JsonBody("""{"monthly_micros":1500}""")), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await Authorize("a4", 500), HttpStatusCode.Created);
        Assert.Equal(500, (await Month()).Long("held_micros"));
        await MeteringApi.BodyAsync(await c.VoidAsync("a4"), HttpStatusCode.OK);
        Assert.Equal((1_000L, 0L), ((await Month()).Long("spent_micros"), (await Month()).Long("held_micros")));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Usage_events_are_refused_past_a_cap_and_replays_are_not_counted_twice(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(100_000_000);
        Task<HttpResponseMessage> Event(string id, string? customer) => c.Client.PostAsync("/api/v1/usage/events", AdminApi.JsonBody(
            $$"""{"id":"{{id}}","model":"demo/echo","input_tokens":100,"output_tokens":50{{(customer is null ? "" : $",\"customer_id\":\"{customer}\"")}}}"""));
        // demo/echo: 2 µ$ per input and 4 per output token at the default markup, so each event costs 400.
        await PutCapsAsync(c.Client, "/api/v1/spend-caps", """{"total_micros":1000}""");

        var first = (await MeteringApi.BodyAsync(await Event("e1", "fay"), HttpStatusCode.OK)).GetProperty("data")[0];
        Assert.Equal(("accepted", 400L), (first.Str("status"), first.Long("user_price_micros")));
        Assert.Equal("accepted", (await MeteringApi.BodyAsync(await Event("e2", null), HttpStatusCode.OK)).GetProperty("data")[0].Str("status"));
        Assert.Equal("duplicate", (await MeteringApi.BodyAsync(await Event("e1", "fay"), HttpStatusCode.OK)).GetProperty("data")[0].Str("status"));
        var third = (await MeteringApi.BodyAsync(await Event("e3", null), HttpStatusCode.OK)).GetProperty("data")[0];
        Assert.Equal(("rejected", "budget_exceeded"), (third.Str("status"), third.GetProperty("error").Str("code")));
        Assert.Equal(800, Cap(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK), "total").Long("spent_micros"));
        Assert.Equal("fay", (await app.Get<IUsageStore>().GetAsync(c.AccountId, "e1", CancellationToken.None))!.CustomerId);
        Assert.Null(await app.Get<IUsageStore>().GetAsync(c.AccountId, "e3", CancellationToken.None));
        Assert.Equal(100_000_000 - 800, (await c.AccountAsync()).Long("balance_micros"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Usage_events_and_captures_report_cap_and_balance_alerts_like_gateway_calls(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(20_000);
        await PutCapsAsync(c.Client, "/api/v1/spend-caps", """{"daily_micros":10000}""");
        await c.SetAlertSettingsAsync("""{"thresholds":[50,100],"balance_low_micros":12000}""");
        static bool IsCap(JsonElement a) => a.Str("subject")!.StartsWith("cap:account:", StringComparison.Ordinal);

        // A usage event of 6,000 µ$ (demo/echo: 2 per input and 4 per output token): 60 % of the daily cap.
        var accepted = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/usage/events",
            AdminApi.JsonBody("""{"id":"cap-alert-1","model":"demo/echo","input_tokens":1000,"output_tokens":1000}""")), HttpStatusCode.OK)).GetProperty("data")[0];
        Assert.Equal(("accepted", 6_000L), (accepted.Str("status"), accepted.Long("user_price_micros")));
        var alerts = await c.WaitForAlertsAsync(app, a => a.Any(x => IsCap(x) && x.Long("threshold_percent") == 50));
        Assert.Equal([50L], alerts.Where(IsCap).Select(x => x.Long("threshold_percent")).ToArray());
        Assert.DoesNotContain(alerts, a => a.Str("subject") == "balance:low");

        // A capture of 4,000 µ$ more: the cap is used up (100 %) and the balance (10,000) is below its line.
        await MeteringApi.BodyAsync(await c.AuthorizeAsync("cap-alert-hold", 3_000), HttpStatusCode.Created);
        Assert.Equal(4_000, (await MeteringApi.BodyAsync(await c.CaptureAsync("cap-alert-hold", 4_000), HttpStatusCode.OK)).Long("captured_micros"));
        alerts = await c.WaitForAlertsAsync(app, a => a.Any(x => IsCap(x) && x.Long("threshold_percent") == 100) && a.Any(x => x.Str("subject") == "balance:low"));
        Assert.Equal([50L, 100L], alerts.Where(IsCap).Select(x => x.Long("threshold_percent")).Order().ToArray());
        Assert.Equal(10_000, Assert.Single(alerts, a => a.Str("subject") == "balance:low").Long("balance_micros"));
        Assert.All(alerts.Where(IsCap), a => Assert.EndsWith(":day", a.Str("subject")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Bad_cap_input_is_refused_and_changes_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await PutCapsAsync(c.Client, "/api/v1/spend-caps", """{"daily_micros":1000}""");
        foreach (var body in new[] { """{"daily_micros":-1}""", """{"monthly_micros":1.5}""", """{"weekly_micros":5}""", """{"daily_micros":"10"}""" })
            Assert.Equal(HttpStatusCode.BadRequest, (await c.Client.PutAsync("/api/v1/spend-caps", AdminApi.JsonBody(body))).StatusCode);
        var view = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK);
        Assert.Equal(1000, Cap(view, "day").Long("limit_micros"));
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.PutAsync("/admin/v1/accounts/acct_nope/spend-caps", AdminApi.JsonBody("{}"))).StatusCode);
        var admin = await PutCapsAsync(app.Admin, $"/admin/v1/accounts/{c.AccountId}/spend-caps", """{"total_micros":7}""");
        Assert.Equal(("total", 7L), (admin.GetProperty("caps")[0].Str("window"), admin.GetProperty("caps")[0].Long("limit_micros")));
    }
}

/// <summary>Cap windows on a clock the test moves: a day's and a month's caps end exactly at the UTC boundary.</summary>
public sealed class SpendCapWindowTests : IAsyncLifetime
{
    private readonly Tollgate.Tests.Ledger.ManualTimeProvider _clock = new(new DateTimeOffset(2026, 3, 31, 23, 59, 0, TimeSpan.Zero));
    private readonly Dictionary<string, TestApp> _apps = new();

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync()
    {
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres })
            _apps[engine] = await TestApp.StartAsync(engine, services: s => s.AddSingleton<TimeProvider>(_clock));
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
    }

    private static HttpContent Chat() => AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"tick"}]}""");

    [Theory, MemberData(nameof(Engines))]
    public async Task Daily_and_monthly_caps_reset_at_the_UTC_boundary(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(100_000_000);
        // A 1 µ$ cap refuses the call and says what its hold needs; caps of exactly that size then fit one call a day.
        await c.Client.PutAsync("/api/v1/spend-caps", AdminApi.JsonBody("""{"daily_micros":1}"""));
        var hold = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat()), HttpStatusCode.PaymentRequired)).GetProperty("error").Long("required_micros");
        var set = await MeteringApi.BodyAsync(await c.Client.PutAsync("/api/v1/spend-caps",
            AdminApi.JsonBody($$"""{"daily_micros":{{hold}},"monthly_micros":{{2 * hold}}}""")), HttpStatusCode.OK);
        Assert.All(set.GetProperty("caps").EnumerateArray(), cap => Assert.Equal(0, cap.Long("spent_micros")));

        var first = await c.Client.PostAsync("/v1/chat/completions", Chat());
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var price = long.Parse(first.Headers.GetValues("x-tollgate-charge-micros").Single());
        var refused = (await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat()), HttpStatusCode.PaymentRequired)).GetProperty("error");
        Assert.Equal("day", refused.GetProperty("cap").Str("window"));
        Assert.Equal(new DateTimeOffset(2026, 4, 1, 0, 0, 0, TimeSpan.Zero), refused.GetProperty("cap").GetProperty("resets_at").GetDateTimeOffset());

        _clock.Advance(TimeSpan.FromSeconds(59));
        Assert.Equal(HttpStatusCode.PaymentRequired, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(1));
        // 2026-04-01T00:00:00Z: a new day and a new month.
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat())).StatusCode);
        var view = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/spend-caps"), HttpStatusCode.OK);
        Assert.Equal(price, view.GetProperty("caps").EnumerateArray().Single(x => x.Str("window") == "day").Long("spent_micros"));
        Assert.Equal(price, view.GetProperty("caps").EnumerateArray().Single(x => x.Str("window") == "month").Long("spent_micros"));
        Assert.Equal(new DateTimeOffset(2026, 5, 1, 0, 0, 0, TimeSpan.Zero),
            view.GetProperty("caps").EnumerateArray().Single(x => x.Str("window") == "month").GetProperty("resets_at").GetDateTimeOffset());
    }
}
