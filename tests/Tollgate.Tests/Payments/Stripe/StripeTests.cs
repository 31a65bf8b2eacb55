using System.Net;
using System.Text;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Tests.Alerts;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Payments.Stripe;

/// <summary>The reference vectors of Stripe's webhook signature scheme (../shared/reference/stripe.md §5, copied here).</summary>
public sealed class StripeSignatureTests
{
    private const string Secret = "whsec_test_secret";
    private const string Payload = """{"id":"evt_test_1","object":"event","type":"checkout.session.completed"}""";
    private static readonly DateTimeOffset At = DateTimeOffset.FromUnixTimeSeconds(1700000100);

    private static SignatureCheck Check(string header, string payload = Payload, string secret = Secret, DateTimeOffset? now = null) =>
        StripeSignature.Verify(header, Encoding.UTF8.GetBytes(payload), [secret], now ?? At, 300);

    [Fact]
    public void The_reference_vector_verifies_and_its_edge_cases_do_not()
    {
        const string v1 = "ca796b857b81e24d595a4c37abf88d2fafb533a32ede6ce4cfc9b0e892a35b08";
        Assert.Equal($"t=1700000000,v1={v1}", FakeStripe.Sign(Payload, Secret, 1700000000));
        Assert.Equal(SignatureCheck.Valid, Check($"t=1700000000,v1={v1}"));
        // Signed with a trailing newline: not this body.
        Assert.Equal(SignatureCheck.NoMatch, Check("t=1700000000,v1=7854769b40a61d9221f3400bd234d46266717db5108d575e7d10cc733057bb12"));
        // Rotation: old and new secret's signatures side by side (and a v0 to ignore).
        Assert.Equal(SignatureCheck.Valid, Check($"t=1700000000,v1=cd5a81daad4d7fc9a7fc9a1f1f401712aec638d1b7710be9a431782bbb148f1b,v1={v1},v0=deadbeef"));
        Assert.Equal(SignatureCheck.Valid, Check("t=1700000000,v1=cd5a81daad4d7fc9a7fc9a1f1f401712aec638d1b7710be9a431782bbb148f1b", secret: "whsec_old_secret"));
        Assert.Equal(SignatureCheck.Malformed, Check("t=1700000000,v0=deadbeef"));
        Assert.Equal(SignatureCheck.Malformed, Check($"v1={v1}"));
        Assert.Equal(SignatureCheck.OutsideTolerance, Check($"t=1700000000,v1={v1}", now: DateTimeOffset.FromUnixTimeSeconds(1700000301)));
        Assert.Equal(SignatureCheck.OutsideTolerance, Check($"t=1700000000,v1={v1}", now: DateTimeOffset.FromUnixTimeSeconds(1699999699)));
        Assert.Equal(SignatureCheck.NoMatch, Check($"t=1700000001,v1={v1}"));
    }
}

/// <summary>Credit packs bought through Stripe Checkout (a fake Stripe speaking the wire format) and Stripe's webhooks, end to end.</summary>
public sealed class StripeTests : IAsyncLifetime
{
    private const string Secret = "whsec_test_secret";
    private const string RotatedSecret = "whsec_rotated_secret";
    private FakeStripe _stripe = null!;
    private readonly Dictionary<string, TestApp> _apps = new();

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync()
    {
        _stripe = await FakeStripe.StartAsync();
        var settings = new Dictionary<string, string?>(_stripe.Settings(Secret, RotatedSecret))
        {
            ["Tollgate:Billing:CreditPacks:starter:PriceCents"] = "500",
            ["Tollgate:Billing:CreditPacks:starter:Credits"] = "5000",
            ["Tollgate:Billing:CreditPacks:big:PriceCents"] = "2000",
            ["Tollgate:Billing:CreditPacks:big:Credits"] = "20000",
            ["Tollgate:Billing:CreditPacks:big:BonusCredits"] = "5000",
            ["Tollgate:Billing:CreditPacks:big:Name"] = "Big pack",
            ["Tollgate:Plans:pro:MonthlyPriceCents"] = "999",
            ["Tollgate:Plans:pro:Models:0"] = "demo/*",
            ["Tollgate:Stripe:PlanPrices:pro:month"] = "price_pro_monthly",
            ["Tollgate:Plans:basic:MonthlyPriceCents"] = "199",
            ["Tollgate:Plans:basic:Models:0"] = "demo/*",
            // An hour by default; pro's own policy: 3 s, then down to basic (not the default plan).
            ["Tollgate:Stripe:PastDueGraceSeconds"] = "3600",
            ["Tollgate:Stripe:PastDuePolicies:pro:GraceSeconds"] = "3",
            ["Tollgate:Stripe:PastDuePolicies:pro:DowngradeTo"] = "basic",
            ["Tollgate:Stripe:GraceSweepSeconds"] = "1",
            ["Tollgate:Alerts:CacheTtl"] = "00:00:00",
        };
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres }) _apps[engine] = await TestApp.StartAsync(engine, settings);
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
        await _stripe.DisposeAsync();
    }

    private static async Task<JsonElement> CheckoutAsync(Customer c, string pack, HttpStatusCode expected = HttpStatusCode.Created) =>
        await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/billing/checkout/credits", AdminApi.JsonBody($$"""{"pack":"{{pack}}"}""")), expected);

    private static string Event(string id, string type, string obj, long? created = null) =>
        "{\"id\":\"" + id + "\",\"object\":\"event\",\"api_version\":\"2025-03-31.basil\",\"created\":" + (created ?? DateTimeOffset.UtcNow.ToUnixTimeSeconds())
        + ",\"livemode\":false,\"type\":\"" + type + "\",\"data\":{\"object\":" + obj + "}}";

    private static string Session(string id, string account, long amount = 500, string paymentStatus = "paid", string pi = "pi_1") =>
        $$$"""{"id":"{{{id}}}","object":"checkout.session","mode":"payment","status":"complete","payment_status":"{{{paymentStatus}}}","amount_total":{{{amount}}},"currency":"usd","payment_intent":"{{{pi}}}","client_reference_id":"{{{account}}}","metadata":{"tollgate_account":"{{{account}}}"}}""";

    private static async Task<HttpResponseMessage> DeliverAsync(TestApp app, string payload, string secret = Secret, long? timestamp = null, string? header = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Stripe-Signature", header ?? FakeStripe.Sign(payload, secret, timestamp ?? DateTimeOffset.UtcNow.ToUnixTimeSeconds()));
        return await app.Anonymous.SendAsync(request);
    }

    private static async Task<long> BalanceAsync(Customer c) => (await c.AccountAsync()).Long("balance_micros");

    [Theory, MemberData(nameof(Engines))]
    public async Task Packs_are_listed_publicly_and_a_checkout_session_is_created_once_per_customer_with_idempotency_keys(string engine)
    {
        var app = _apps[engine];
        var packs = await MeteringApi.BodyAsync(await app.Anonymous.GetAsync("/api/v1/billing/credit-packs"), HttpStatusCode.OK);
        var big = packs.GetProperty("data").EnumerateArray().Single(p => p.Str("id") == "big");
        Assert.Equal((2000L, "usd", 25_000L, 5_000L, 25_000_000L), (big.Long("price_cents"), big.Str("currency"), big.Long("credits"), big.Long("bonus_credits"), big.Long("amount_micros")));

        using var c = await app.CustomerAsync(0);
        var first = await CheckoutAsync(c, "starter");
        Assert.StartsWith("https://checkout.stripe.com/", first.Str("url"));
        Assert.Equal(5_000_000, first.Long("amount_micros"));
        var session = _stripe.Calls.Last(x => x.Path == "/v1/checkout/sessions");
        Assert.Equal(("payment", "500", "usd", c.AccountId, c.AccountId, "starter"), (session.Field("mode"), session.Field("line_items[0][price_data][unit_amount]"),
            session.Field("line_items[0][price_data][currency]"), session.Field("client_reference_id"), session.Field("metadata[tollgate_account]"), session.Field("metadata[pack]")));
        Assert.NotNull(session.IdempotencyKey);
        Assert.Equal("2025-03-31.basil", session.StripeVersion);

        // The Stripe customer is created once per account, then reused.
        await CheckoutAsync(c, "big");
        Assert.Single(_stripe.Calls, x => x.Path == "/v1/customers" && x.Field("metadata[tollgate_account]") == c.AccountId);
        var customers = _stripe.Calls.Where(x => x.Path == "/v1/checkout/sessions" && x.Field("client_reference_id") == c.AccountId)
            .Select(x => x.Field("customer")).Distinct().ToList();
        Assert.StartsWith("cus_", Assert.Single(customers));

        var unknown = await CheckoutAsync(c, "nope", HttpStatusCode.BadRequest);
        Assert.Equal("unknown_pack", unknown.Str("code"));
        var portal = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/billing/portal", null), HttpStatusCode.OK);
        Assert.StartsWith("https://billing.stripe.com/", portal.Str("url"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Concurrent_first_checkouts_of_an_account_create_its_Stripe_customer_once(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        // Each new request takes a while at the fake, so the four customer creations overlap: Stripe answers the
        // later ones 409 (key in use) until the first has finished, then replays its customer.
        _stripe.ExecuteDelay = TimeSpan.FromMilliseconds(150);
        HttpResponseMessage[] responses;
        try
        {
            responses = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ =>
                c.Client.PostAsync("/api/v1/billing/checkout/credits", AdminApi.JsonBody("""{"pack":"starter"}"""))));
        }
        finally
        {
            _stripe.ExecuteDelay = TimeSpan.Zero;
        }
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var creations = _stripe.Calls.Where(x => x.Path == "/v1/customers" && x.Field("metadata[tollgate_account]") == c.AccountId).ToList();
        Assert.True(creations.Count > 1, "the customer creations did not overlap");
        Assert.Equal($"tollgate-customer:{c.AccountId}", Assert.Single(creations.Select(x => x.IdempotencyKey).Distinct()));
        var customers = _stripe.Calls.Where(x => x.Path == "/v1/checkout/sessions" && x.Field("client_reference_id") == c.AccountId)
            .Select(x => x.Field("customer")).Distinct().ToList();
        Assert.StartsWith("cus_", Assert.Single(customers));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_Stripe_customer_that_already_exists_for_the_account_is_found_not_created_again(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        // Made for this account long ago (its id lost to Tollgate, its idempotency key pruned at Stripe).
        using var http = new HttpClient { BaseAddress = _stripe.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new("Bearer", FakeStripe.SecretKey);
        var existing = await MeteringApi.BodyAsync(await http.PostAsync("/v1/customers",
            new FormUrlEncodedContent(new Dictionary<string, string> { ["metadata[tollgate_account]"] = c.AccountId })), HttpStatusCode.OK);

        await CheckoutAsync(c, "starter");
        await CheckoutAsync(c, "starter");
        var sessions = _stripe.Calls.Where(x => x.Path == "/v1/checkout/sessions" && x.Field("client_reference_id") == c.AccountId).ToList();
        Assert.All(sessions, s => Assert.Equal(existing.Str("id"), s.Field("customer")));
        Assert.DoesNotContain(_stripe.Calls, x => x.Path == "/v1/customers" && x.IdempotencyKey == $"tollgate-customer:{c.AccountId}");
        // Searched once: after that the stored id is used.
        Assert.Single(_stripe.Calls, x => x.Path == "/v1/customers/search" && x.Query.Contains(Uri.EscapeDataString(c.AccountId)));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_Stripe_500_is_retried_with_the_same_idempotency_key(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        await CheckoutAsync(c, "starter");
        var before = _stripe.Calls.Count;
        _stripe.FailNext(1);
        var created = await CheckoutAsync(c, "starter");
        var attempts = _stripe.Calls.Skip(before).Where(x => x.Path == "/v1/checkout/sessions").ToList();
        Assert.Equal(2, attempts.Count);
        Assert.Equal(attempts[0].IdempotencyKey, attempts[1].IdempotencyKey);
        Assert.StartsWith("cs_test_", created.Str("id"));

        _stripe.FailNext(10);
        var failed = await CheckoutAsync(c, "starter", HttpStatusCode.BadGateway);
        Assert.Equal("payment_provider_error", failed.Str("code"));
        _stripe.FailNext(0);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_paid_checkout_credits_the_pack_exactly_once_however_the_event_is_delivered(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var session = (await CheckoutAsync(c, "big")).Str("id")!;
        var payload = Event("evt_" + session, "checkout.session.completed", Session(session, c.AccountId, amount: 2000, pi: "pi_" + session));

        // Forged, stale and unsigned deliveries are refused with 400 and change nothing.
        Assert.Equal(HttpStatusCode.BadRequest, (await DeliverAsync(app, payload, secret: "whsec_forged")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await DeliverAsync(app, payload, timestamp: DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 301)).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await DeliverAsync(app, payload, header: "")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await DeliverAsync(app, payload.Replace("2000", "2001"), header: FakeStripe.Sign(payload, Secret, DateTimeOffset.UtcNow.ToUnixTimeSeconds()))).StatusCode);
        Assert.Equal(0, await BalanceAsync(c));

        // Ten concurrent deliveries (one signed with the rotated secret): one credit of 25,000 credits.
        var deliveries = await Task.WhenAll(Enumerable.Range(0, 10).Select(i => DeliverAsync(app, payload, secret: i == 0 ? RotatedSecret : Secret)));
        Assert.All(deliveries, d => Assert.Equal(HttpStatusCode.OK, d.StatusCode));
        Assert.Equal(25_000_000, await BalanceAsync(c));
        var again = await MeteringApi.BodyAsync(await DeliverAsync(app, payload), HttpStatusCode.OK);
        Assert.StartsWith("duplicate:", again.Str("outcome"));
        // Another event about the same session (Stripe sends both for delayed methods) does not credit again.
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_async_" + session, "checkout.session.async_payment_succeeded",
            Session(session, c.AccountId, amount: 2000, pi: "pi_" + session))), HttpStatusCode.OK);
        Assert.Equal(25_000_000, await BalanceAsync(c));

        var statement = await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK);
        var row = statement.GetProperty("data").EnumerateArray().Single(x => x.Str("id") == session);
        Assert.Equal(("complete", 25_000_000L), (row.Str("status"), row.Long("credited_micros")));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_paid_checkout_resolves_a_low_balance_alert_at_once(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(1_000_000);
        await c.SetAlertSettingsAsync("""{"balance_low_micros":2000000}""");
        Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions",
            AdminApi.JsonBody("""{"model":"demo/echo","max_tokens":4,"messages":[{"role":"user","content":"below the line"}]}"""))).StatusCode);
        await c.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low" && x.Str("status") == "active"));

        // The top-up is the only thing that happens: no call follows it, yet the alert resolves.
        var session = (await CheckoutAsync(c, "starter")).Str("id")!;
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_low_" + session, "checkout.session.completed",
            Session(session, c.AccountId, pi: "pi_low_" + session))), HttpStatusCode.OK);
        var alerts = await c.WaitForAlertsAsync(app, a => a.Any(x => x.Str("subject") == "balance:low" && x.Str("status") == "resolved"));
        Assert.Single(alerts, a => a.Str("subject") == "balance:low");
        var events = (await c.EventsAsync()).Where(e => e.GetProperty("data").Str("subject") == "balance:low").Select(e => e.Str("type")!).Reverse().ToArray();
        Assert.Equal(new[] { "alert.fired", "alert.resolved" }, events);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Unpaid_mismatched_unknown_and_unhandled_events_credit_nothing(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var session = (await CheckoutAsync(c, "starter")).Str("id")!;

        var unpaid = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u1", "checkout.session.completed", Session(session, c.AccountId, paymentStatus: "unpaid"))), HttpStatusCode.OK);
        Assert.Equal("awaiting_payment", unpaid.Str("outcome"));
        var wrongAmount = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u2", "checkout.session.async_payment_succeeded", Session(session, c.AccountId, amount: 1))), HttpStatusCode.OK);
        Assert.Equal("rejected:amount_mismatch", wrongAmount.Str("outcome"));
        var foreign = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u3", "checkout.session.completed", Session("cs_not_ours", c.AccountId))), HttpStatusCode.OK);
        Assert.Equal("ignored:unknown_session", foreign.Str("outcome"));
        var unknownType = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u4", "customer.tax_id.created", """{"id":"txi_1"}""")), HttpStatusCode.OK);
        Assert.Equal("ignored:unhandled_type", unknownType.Str("outcome"));
        var live = Event("evt_u5", "checkout.session.completed", Session(session, c.AccountId)).Replace("\"livemode\":false", "\"livemode\":true");
        Assert.Equal("livemode_mismatch", (await MeteringApi.BodyAsync(await DeliverAsync(app, live), HttpStatusCode.BadRequest)).Str("code"));
        Assert.Equal("invalid_event", (await MeteringApi.BodyAsync(await DeliverAsync(app, """{"hello":"world"}"""), HttpStatusCode.BadRequest)).Str("code"));
        Assert.Equal(0, await BalanceAsync(c));

        // Paid later: credited then.
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u6", "checkout.session.async_payment_succeeded", Session(session, c.AccountId))), HttpStatusCode.OK);
        Assert.Equal(5_000_000, await BalanceAsync(c));

        // A session abandoned (expired) or whose delayed payment failed is closed with nothing credited; a late expiry of a
        // completed one does not reopen it.
        var abandoned = (await CheckoutAsync(c, "starter")).Str("id")!;
        var failed = (await CheckoutAsync(c, "starter")).Str("id")!;
        Assert.Equal("closed", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u7", "checkout.session.expired", Session(abandoned, c.AccountId, paymentStatus: "unpaid"))), HttpStatusCode.OK)).Str("outcome"));
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u8", "checkout.session.async_payment_failed", Session(failed, c.AccountId, paymentStatus: "unpaid"))), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_u9", "checkout.session.expired", Session(session, c.AccountId))), HttpStatusCode.OK);
        var statuses = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK)).GetProperty("data").EnumerateArray()
            .ToDictionary(x => x.Str("id")!, x => x.Str("status"));
        Assert.Equal(("expired", "payment_failed", "complete"), (statuses[abandoned], statuses[failed], statuses[session]));
        Assert.Equal(5_000_000, await BalanceAsync(c));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_refund_takes_back_the_refunded_share_and_only_what_is_left_when_it_was_spent(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var session = (await CheckoutAsync(c, "starter")).Str("id")!;
        var pi = "pi_r_" + session;
        string Charge(long refunded) => $$$"""{"id":"ch_{{{session}}}","object":"charge","amount":500,"amount_refunded":{{{refunded}}},"refunded":{{{(refunded == 500 ? "true" : "false")}}},"currency":"usd","payment_intent":"{{{pi}}}","metadata":{"tollgate_account":"{{{c.AccountId}}}"}}""";

        // A refund that arrives before the purchase completed is asked for again later (non-2xx), not lost.
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await DeliverAsync(app, Event("evt_r0", "charge.refunded", Charge(100)))).StatusCode);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_paid_" + session, "checkout.session.completed", Session(session, c.AccountId, pi: pi))), HttpStatusCode.OK);
        Assert.Equal(5_000_000, await BalanceAsync(c));

        // $1 of $5 refunded → a fifth of the credits back; the redelivered early event now applies the same state once.
        // The state is the charge as Stripe has it now (GET /v1/charges/{id}), not the event's snapshot.
        _stripe.SetCharge("ch_" + session, 500, 100, pi, c.AccountId);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r0", "charge.refunded", Charge(100))), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r1", "charge.refunded", Charge(100))), HttpStatusCode.OK);
        Assert.Equal(4_000_000, await BalanceAsync(c));

        // The customer spends 3.5 M of the 4 M left; then the rest of the charge is refunded: only 0.5 M can be taken.
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            AdminApi.JsonBody("""{"amount_micros":-3500000,"idempotency_key":"spend-1"}""")), HttpStatusCode.OK);
        _stripe.SetCharge("ch_" + session, 500, 500, pi, c.AccountId);
        var full = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r2", "charge.refunded", Charge(500))), HttpStatusCode.OK);
        Assert.Equal("refunded:flagged_unrecovered", full.Str("outcome"));
        Assert.Equal(0, await BalanceAsync(c));
        // A stale, older snapshot delivered late changes nothing: Stripe's charge says 500.
        Assert.Equal("ignored:refund_state_unchanged", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r3", "charge.refunded", Charge(300))), HttpStatusCode.OK)).Str("outcome"));
        var row = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK)).GetProperty("data").EnumerateArray().Single(x => x.Str("id") == session);
        Assert.Equal((500L, 1_500_000L, 3_500_000L), (row.Long("refunded_cents"), row.Long("clawed_back_micros"), row.Long("unrecovered_micros")));
        Assert.Equal(0, await BalanceAsync(c));

        // Reconciliation flags the credits the refund could not take back until an operator decides; here they are written off
        // (from system:adjustments to Stripe's clearing account): the account keeps its balance, the flag is resolved.
        async Task<JsonElement> FlaggedAsync() => (await MeteringApi.BodyAsync(await app.Admin.GetAsync("/admin/v1/payments/reconciliation"), HttpStatusCode.OK))
            .GetProperty("mismatches").EnumerateArray().Single(m => m.Str("reference") == session + ":refund");
        var flagged = await FlaggedAsync();
        Assert.Equal(("refund_unrecovered", c.AccountId, 3_500_000L), (flagged.Str("kind"), flagged.Str("account_id"), flagged.Long("credited_micros")));
        var writeOff = await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/payments/reconciliation/resolutions", AdminApi.JsonBody(
            $$"""{"source":"stripe","reference":"{{session}}:refund","account_id":"{{c.AccountId}}","amount_micros":3500000,"write_off":true,"reason":"spent before the refund"}""")), HttpStatusCode.Created);
        Assert.Equal("written_off", writeOff.Str("resolution"));
        flagged = await FlaggedAsync();
        Assert.Equal(("written_off", 0L), (flagged.Str("resolution"), flagged.Long("resolved_micros")));
        Assert.Equal(0, await BalanceAsync(c));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Refund_events_take_back_within_the_credit_limit_and_a_failed_refund_gives_the_credits_back(string engine)
    {
        var app = _apps[engine];
        // Postpaid: may go 2 M micro-USD below zero.
        var accountId = await app.CreateAccountAsync("postpaid refunds", creditLimitMicros: 2_000_000);
        var key = await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("{}")), HttpStatusCode.Created);
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new("Bearer", key.Str("key"));
        using var c = new Customer(accountId, key.Str("id")!, key.Str("key")!, client);
        var session = (await CheckoutAsync(c, "starter")).Str("id")!;
        var (pi, charge) = ("pi_f_" + session, "ch_f_" + session);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_fp_" + session, "checkout.session.completed", Session(session, c.AccountId, pi: pi))), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            AdminApi.JsonBody("""{"amount_micros":-4000000,"idempotency_key":"spend-f"}""")), HttpStatusCode.OK);
        Assert.Equal(1_000_000, await BalanceAsync(c));
        string Refund(string id, string status) =>
            $$$"""{"id":"{{{id}}}","object":"refund","amount":500,"charge":"{{{charge}}}","payment_intent":"{{{pi}}}","currency":"usd","status":"{{{status}}}","metadata":{}}""";

        // refund.created (API 2024-10-28.acacia and later): the whole 5 M is owed, 3 M is available (1 M + the 2 M limit).
        _stripe.SetCharge(charge, 500, 500, pi, c.AccountId);
        Assert.Equal("refunded:flagged_unrecovered", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_fr1_" + session, "refund.created", Refund("re_1", "pending"))), HttpStatusCode.OK)).Str("outcome"));
        Assert.Equal(-2_000_000, await BalanceAsync(c));
        JsonElement Row(JsonElement list) => list.GetProperty("data").EnumerateArray().Single(x => x.Str("id") == session);
        var row = Row(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK));
        Assert.Equal((500L, 3_000_000L, 2_000_000L), (row.Long("refunded_cents"), row.Long("clawed_back_micros"), row.Long("unrecovered_micros")));

        // The account is topped up, then $1 of the refund fails (refunded 500 → 400): a falling total takes nothing more,
        // even though 1 M of the 4 M now owed was never taken back and the balance would allow it.
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            AdminApi.JsonBody("""{"amount_micros":2000000,"idempotency_key":"topup-f"}""")), HttpStatusCode.OK);
        _stripe.SetCharge(charge, 500, 400, pi, c.AccountId);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_fr15_" + session, "refund.updated", Refund("re_1", "pending"))), HttpStatusCode.OK);
        Assert.Equal(0, await BalanceAsync(c));
        row = Row(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK));
        Assert.Equal((400L, 3_000_000L, 1_000_000L), (row.Long("refunded_cents"), row.Long("clawed_back_micros"), row.Long("unrecovered_micros")));

        // The refund fails: Stripe's charge is back to nothing refunded, and what was taken for it is given back.
        _stripe.SetCharge(charge, 500, 0, pi, c.AccountId);
        Assert.Equal("refund_reversed", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_fr2_" + session, "refund.failed", Refund("re_1", "failed"))), HttpStatusCode.OK)).Str("outcome"));
        Assert.Equal(3_000_000, await BalanceAsync(c));
        row = Row(await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK));
        Assert.Equal((0L, 0L, 0L), (row.Long("refunded_cents"), row.Long("clawed_back_micros"), row.Long("unrecovered_micros")));

        // Refunded again to the same total: a new change, taken again (not a replay of the first) — all 5 M this time, the
        // balance allowing it; concurrent deliveries apply it once.
        _stripe.SetCharge(charge, 500, 500, pi, c.AccountId);
        var again = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => DeliverAsync(app, Event($"evt_fr3_{i}_{session}", i % 2 == 0 ? "charge.refunded" : "refund.updated",
            i % 2 == 0 ? $$$"""{"id":"{{{charge}}}","object":"charge","amount":500,"amount_refunded":500,"payment_intent":"{{{pi}}}","metadata":{"tollgate_account":"{{{c.AccountId}}}"}}""" : Refund("re_2", "succeeded")))));
        Assert.All(again, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(-2_000_000, await BalanceAsync(c));
        var ledger = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{c.AccountId}/ledger"), HttpStatusCode.OK);
        Assert.Equal(3, ledger.GetProperty("data").EnumerateArray().Count(l => l.GetRawText().Contains(charge)));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_dispute_freezes_the_disputed_credits_and_a_lost_one_takes_them(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var won = (await CheckoutAsync(c, "starter")).Str("id")!;
        var lost = (await CheckoutAsync(c, "starter")).Str("id")!;
        foreach (var s in new[] { won, lost })
            await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_p_" + s, "checkout.session.completed", Session(s, c.AccountId, pi: "pi_d_" + s))), HttpStatusCode.OK);
        Assert.Equal(10_000_000, await BalanceAsync(c));
        string Dispute(string s, string status) => $$"""{"id":"dp_{{s}}","object":"dispute","amount":500,"charge":"ch_{{s}}","payment_intent":"pi_d_{{s}}","currency":"usd","reason":"fraudulent","status":"{{status}}"}""";

        foreach (var s in new[] { won, lost })
            Assert.Equal("frozen", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_dc_" + s, "charge.dispute.created", Dispute(s, "needs_response"))), HttpStatusCode.OK)).Str("outcome"));
        var account = await c.AccountAsync();
        Assert.Equal((10_000_000L, 10_000_000L, 0L), (account.Long("balance_micros"), account.Long("held_micros"), account.Long("available_micros")));

        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_dw", "charge.dispute.closed", Dispute(won, "won"))), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_dl", "charge.dispute.closed", Dispute(lost, "lost"))), HttpStatusCode.OK);
        account = await c.AccountAsync();
        Assert.Equal((5_000_000L, 0L, 5_000_000L), (account.Long("balance_micros"), account.Long("held_micros"), account.Long("available_micros")));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Reconciliation_lists_money_without_credit_credit_without_money_and_amount_mismatches(string engine)
    {
        var app = _apps[engine];
        var from = DateTimeOffset.UtcNow.AddSeconds(-2);
        using var c = await app.CustomerAsync(0);
        var ids = new List<string>();
        for (var i = 0; i < 4; i++) ids.Add((await CheckoutAsync(c, "starter")).Str("id")!);
        var (fine, undelivered, cheaper, unpaid) = (ids[0], ids[1], ids[2], ids[3]);
        _stripe.MarkPaid(fine, 500);
        _stripe.MarkPaid(undelivered, 500);
        _stripe.MarkPaid(cheaper, 400);
        // Credited from webhooks that claimed 500 cents paid; Stripe's own list disagrees for two of them.
        foreach (var s in new[] { fine, cheaper, unpaid })
            await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_rec_" + s, "checkout.session.completed", Session(s, c.AccountId, pi: "pi_rec_" + s))), HttpStatusCode.OK);

        var to = DateTimeOffset.UtcNow.AddSeconds(2);
        var report = await MeteringApi.BodyAsync(await app.Admin.GetAsync(
            $"/admin/v1/payments/reconciliation?from={Uri.EscapeDataString(from.ToString("O"))}&to={Uri.EscapeDataString(to.ToString("O"))}"), HttpStatusCode.OK);
        var found = report.GetProperty("mismatches").EnumerateArray().Where(m => m.Str("account_id") == c.AccountId)
            .ToDictionary(m => m.Str("reference")!, m => m.Str("kind"));
        Assert.Equal(3, found.Count);
        Assert.Equal("money_without_credit", found[undelivered]);
        Assert.Equal("amount_mismatch", found[cheaper]);
        Assert.Equal("credit_without_money", found[unpaid]);
        Assert.False(found.ContainsKey(fine));
        Assert.False(report.GetProperty("clean").GetBoolean());
        // It reports; it changes nothing.
        Assert.Equal(15_000_000, await BalanceAsync(c));
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/admin/v1/payments/reconciliation")).StatusCode);

        // The operator resolves each with one idempotent adjustment against Stripe's clearing account.
        Task<HttpResponseMessage> Resolve(string reference, long micros, string reason = "checked in the Stripe dashboard") =>
            app.Admin.PostAsync("/admin/v1/payments/reconciliation/resolutions", AdminApi.JsonBody(
                $$"""{"source":"stripe","reference":"{{reference}}","account_id":"{{c.AccountId}}","amount_micros":{{micros}},"reason":"{{reason}}"}"""));
        var resolved = await MeteringApi.BodyAsync(await Resolve(undelivered, 5_000_000), HttpStatusCode.Created);
        Assert.Equal(($"reconcile:stripe:{undelivered}", false), (resolved.Str("transfer_id"), resolved.GetProperty("replayed").GetBoolean()));
        await MeteringApi.BodyAsync(await Resolve(cheaper, -1_000_000), HttpStatusCode.Created);
        await MeteringApi.BodyAsync(await Resolve(unpaid, -5_000_000), HttpStatusCode.Created);
        // A repeat is a replay; the same mismatch resolved differently is refused; nothing moves twice.
        Assert.True((await MeteringApi.BodyAsync(await Resolve(undelivered, 5_000_000), HttpStatusCode.OK)).GetProperty("replayed").GetBoolean());
        Assert.Equal("already_resolved", (await MeteringApi.BodyAsync(await Resolve(undelivered, 6_000_000), HttpStatusCode.Conflict)).Str("code"));
        Assert.Equal("invalid_request", (await MeteringApi.BodyAsync(await Resolve(fine, 0), HttpStatusCode.BadRequest)).Str("code"));
        Assert.Equal(14_000_000, await BalanceAsync(c));

        report = await MeteringApi.BodyAsync(await app.Admin.GetAsync(
            $"/admin/v1/payments/reconciliation?from={Uri.EscapeDataString(from.ToString("O"))}&to={Uri.EscapeDataString(to.ToString("O"))}"), HttpStatusCode.OK);
        var mine = report.GetProperty("mismatches").EnumerateArray().Where(m => m.Str("account_id") == c.AccountId)
            .ToDictionary(m => m.Str("reference")!, m => (m.Str("resolved_by"), m.Long("resolved_micros")));
        Assert.Equal(($"reconcile:stripe:{undelivered}", 5_000_000L), mine[undelivered]);
        Assert.Equal(($"reconcile:stripe:{cheaper}", -1_000_000L), mine[cheaper]);
        Assert.Equal(($"reconcile:stripe:{unpaid}", -5_000_000L), mine[unpaid]);
        Assert.Equal(report.GetProperty("mismatches").EnumerateArray().Count(m => m.Str("account_id") != c.AccountId), report.GetProperty("unresolved").GetInt32());
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_creator_payout_is_sent_to_the_connected_account_once_even_when_Stripe_fails_first(string engine)
    {
        var app = _apps[engine];
        using var creator = await app.CustomerAsync(0);
        using var buyer = await app.CustomerAsync(10_000_000);
        var agent = await MeteringApi.BodyAsync(await creator.Client.PostAsync("/api/v1/agents",
            AdminApi.JsonBody("""{"name":"Paid helper","pricing_mode":"one_time","price_micros":5000000}""")), HttpStatusCode.Created);
        Assert.True((await buyer.Client.PostAsync($"/api/v1/agents/{agent.Str("id")}/purchase", AdminApi.JsonBody("{}"))).IsSuccessStatusCode);
        Task<HttpResponseMessage> Payout(string body) => app.Admin.PostAsync($"/admin/v1/creators/{creator.AccountId}/payouts", AdminApi.JsonBody(body));

        // Earned 4.5 USD (90 %). A Stripe payout must be whole cents.
        Assert.Equal(HttpStatusCode.BadRequest, (await Payout("""{"id":"p1","amount_micros":4500001,"stripe_destination":"acct_creator1"}""")).StatusCode);
        _stripe.FailNext(10);
        var failed = await MeteringApi.BodyAsync(await Payout("""{"id":"p1","amount_micros":4500000,"stripe_destination":"acct_creator1"}"""), HttpStatusCode.BadGateway);
        Assert.Equal("payment_provider_error", failed.Str("code"));
        _stripe.FailNext(0);
        var sent = await MeteringApi.BodyAsync(await Payout("""{"id":"p1","amount_micros":4500000,"stripe_destination":"acct_creator1"}"""), HttpStatusCode.OK);
        Assert.StartsWith("tr_", sent.Str("stripe_transfer_id"));
        var again = await MeteringApi.BodyAsync(await Payout("""{"id":"p1","amount_micros":4500000,"stripe_destination":"acct_creator1"}"""), HttpStatusCode.OK);
        Assert.Equal(sent.Str("stripe_transfer_id"), again.Str("stripe_transfer_id"));
        var transfers = _stripe.Calls.Where(c => c.Path == "/v1/transfers" && c.Field("metadata[tollgate_account]") == creator.AccountId).ToList();
        Assert.Single(transfers.Select(t => t.IdempotencyKey).Distinct());
        Assert.Equal(("450", "usd", "acct_creator1"), (transfers[^1].Field("amount"), transfers[^1].Field("currency"), transfers[^1].Field("destination")));
        // Paid out once in the ledger: nothing is left to pay.
        Assert.Equal(HttpStatusCode.Conflict, (await Payout("""{"id":"p2"}""")).StatusCode);
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }

    private static string Subscription(string id, string account, string status, bool cancelAtPeriodEnd, long start, long end) =>
        $$$$"""{"id":"{{{{id}}}}","object":"subscription","customer":"cus_x","status":"{{{{status}}}}","cancel_at_period_end":{{{{(cancelAtPeriodEnd ? "true" : "false")}}}},"metadata":{"tollgate_account":"{{{{account}}}}"},"items":{"object":"list","data":[{"id":"si_1","price":{"id":"price_pro_monthly","recurring":{"interval":"month"}},"quantity":1,"current_period_start":{{{{start}}}},"current_period_end":{{{{end}}}}}]}}""";

    private static string Invoice(string subscription) =>
        $$$$"""{"id":"in_{{{{Guid.NewGuid():N}}}}","object":"invoice","customer":"cus_x","status":"open","amount_due":999,"parent":{"type":"subscription_details","subscription_details":{"subscription":"{{{{subscription}}}}"}}}""";

    private static async Task<JsonElement> AdminSubscriptionAsync(TestApp app, string accountId) =>
        await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{accountId}/subscription"), HttpStatusCode.OK);

    private async Task<string> SubscribeAsync(TestApp app, Customer c, string subscriptionId)
    {
        var created = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/billing/checkout/subscription",
            AdminApi.JsonBody("""{"plan":"pro","interval":"month"}""")), HttpStatusCode.Created);
        var call = _stripe.Sessions[created.Str("id")!];
        Assert.Equal(("subscription", "price_pro_monthly", c.AccountId), (call.Field("mode"), call.Field("line_items[0][price]"), call.Field("subscription_data[metadata][tollgate_account]")));
        var sessionId = created.Str("id");
        var session = $$$"""{"id":"{{{sessionId}}}","object":"checkout.session","mode":"subscription","status":"complete","payment_status":"paid","amount_total":999,"currency":"usd","subscription":"{{{subscriptionId}}}","customer":"cus_x","client_reference_id":"{{{c.AccountId}}}"}""";
        Assert.Equal("subscribed", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_cs_" + subscriptionId, "checkout.session.completed", session)), HttpStatusCode.OK)).Str("outcome"));
        return created.Str("id")!;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Pre_basil_payloads_are_read_too_period_at_the_top_level_and_the_invoice_subscription_field(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var sub = "sub_old_" + engine;
        await SubscribeAsync(app, c, sub);
        var t = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var (start, end) = (t - 60, t + 31 * 86400);
        // An endpoint pinned to an API version before 2025-03-31.basil: the period is on the subscription, not its items.
        var old = $$$$"""{"id":"{{{{sub}}}}","object":"subscription","customer":"cus_x","status":"active","cancel_at_period_end":false,"current_period_start":{{{{start}}}},"current_period_end":{{{{end}}}},"metadata":{"tollgate_account":"{{{{c.AccountId}}}}"},"items":{"object":"list","data":[{"id":"si_1","price":{"id":"price_pro_monthly","recurring":{"interval":"month"}},"quantity":1}]}}""";
        Assert.Equal("subscription_active", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_ob_" + sub, "customer.subscription.updated", old, created: t + 10)), HttpStatusCode.OK)).Str("outcome"));
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(end), (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").GetProperty("current_period_end").GetDateTimeOffset());
        // …and the invoice names its subscription at the top level.
        var invoice = $$$$"""{"id":"in_old_{{{{sub}}}}","object":"invoice","customer":"cus_x","status":"open","amount_due":999,"subscription":"{{{{sub}}}}"}""";
        Assert.Equal("invoice_failed", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_oif_" + sub, "invoice.payment_failed", invoice, created: t + 20)), HttpStatusCode.OK)).Str("outcome"));
        Assert.Equal("past_due", (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status"));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Subscription_events_set_the_plan_by_their_state_whatever_order_they_arrive_in(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var sub = "sub_order_" + engine;
        Assert.Equal(HttpStatusCode.BadRequest, (await c.Client.PostAsync("/api/v1/billing/checkout/subscription", AdminApi.JsonBody("""{"plan":"pro","interval":"year"}"""))).StatusCode);
        await SubscribeAsync(app, c, sub);
        var state = await AdminSubscriptionAsync(app, c.AccountId);
        Assert.Equal(("pro", "active", "external"), (state.Str("plan"), state.GetProperty("subscription").Str("status"), state.GetProperty("subscription").Str("billing")));

        var t = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var (start, end) = (t - 3600, t + 29 * 86400);
        // The update (cancel at period end) is newer than the creation but arrives first: the creation is then stale.
        Assert.Equal("subscription_active", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_su_" + sub, "customer.subscription.updated",
            Subscription(sub, c.AccountId, "active", true, start, end), created: t + 20)), HttpStatusCode.OK)).Str("outcome"));
        Assert.Equal("ignored:stale_subscription_state", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_sc_" + sub, "customer.subscription.created",
            Subscription(sub, c.AccountId, "active", false, start, end), created: t + 10)), HttpStatusCode.OK)).Str("outcome"));
        var synced = (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription");
        Assert.True(synced.GetProperty("cancel_at_period_end").GetBoolean());
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(end), synced.GetProperty("current_period_end").GetDateTimeOffset());

        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_if_" + sub, "invoice.payment_failed", Invoice(sub), created: t + 30)), HttpStatusCode.OK);
        Assert.Equal("past_due", (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status"));
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_ip_" + sub, "invoice.paid", Invoice(sub), created: t + 40)), HttpStatusCode.OK);
        Assert.Equal("active", (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status"));
        // A failure older than the payment changes nothing.
        Assert.Equal("ignored:stale_invoice_state", (await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_if2_" + sub, "invoice.payment_failed", Invoice(sub), created: t + 35)), HttpStatusCode.OK)).Str("outcome"));

        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_sd_" + sub, "customer.subscription.deleted", Subscription(sub, c.AccountId, "canceled", false, start, end), created: t + 50)), HttpStatusCode.OK);
        var ended = await AdminSubscriptionAsync(app, c.AccountId);
        Assert.Equal(("default", "canceled"), (ended.Str("plan"), ended.GetProperty("subscription").Str("status")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_invoice_left_unpaid_past_the_plans_grace_period_drops_the_account_to_the_plans_downgrade(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var sub = "sub_grace_" + engine;
        await SubscribeAsync(app, c, sub);
        var t = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_gsc_" + sub, "customer.subscription.created", Subscription(sub, c.AccountId, "active", false, t, t + 30 * 86400), created: t)), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_gif_" + sub, "invoice.payment_failed", Invoice(sub), created: t + 1)), HttpStatusCode.OK);
        Assert.Equal(("pro", "past_due"), ((await AdminSubscriptionAsync(app, c.AccountId)).Str("plan"), (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status")));

        // pro's grace is 3 s here (the general one an hour) and the sweep runs every second.
        var until = DateTime.UtcNow.AddSeconds(15);
        while ((await AdminSubscriptionAsync(app, c.AccountId)).Str("plan") != "basic")
        {
            Assert.True(DateTime.UtcNow < until, "the past-due subscription was not ended after its grace period");
            await Task.Delay(200);
        }
        Assert.Equal("canceled", (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status"));
    }
}

/// <summary>Without Stripe configured, Tollgate runs and its card routes say so.</summary>
public sealed class StripeNotConfiguredTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    [Theory, MemberData(nameof(Engines))]
    public async Task Billing_routes_answer_503_and_the_webhook_credits_nothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        var problem = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/billing/checkout/credits", AdminApi.JsonBody("""{"pack":"starter"}""")), HttpStatusCode.ServiceUnavailable);
        Assert.Equal("stripe_not_configured", problem.Str("code"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await app.Anonymous.PostAsync("/webhooks/stripe", AdminApi.JsonBody("{}"))).StatusCode);
        // The public pack list needs no Stripe: it is data.
        var packs = await MeteringApi.BodyAsync(await app.Anonymous.GetAsync("/api/v1/billing/credit-packs"), HttpStatusCode.OK);
        var usd20 = packs.GetProperty("data").EnumerateArray().Single(p => p.Str("id") == "usd20");
        Assert.Equal((2000L, "usd", 25_000L, 25_000_000L), (usd20.Long("price_cents"), usd20.Str("currency"), usd20.Long("credits"), usd20.Long("amount_micros")));
    }

    [Fact]
    public async Task Enabled_with_invalid_settings_stops_start_up_listing_every_problem()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(() => TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?>
        {
            ["Tollgate:Stripe:SecretKey"] = "pk_test_not_a_secret",
            ["Tollgate:Stripe:PublishableKey"] = "sk_test_swapped",
            ["Tollgate:Stripe:ApiBaseUrl"] = "ftp://api.stripe.com",
            ["Tollgate:Stripe:PlanPrices:pro:week"] = "price_weekly",
            ["Tollgate:Stripe:PlanPrices:pro:month"] = "prod_not_a_price",
        }));
        var message = e.ToString();
        foreach (var expected in new[] { "SecretKey must be a secret", "PublishableKey must start with pk_", "WebhookSecrets needs at least one", "ApiBaseUrl must be",
                     "PlanPrices:pro:week: the interval", "PlanPrices:pro:month must be a Stripe Price id" })
            Assert.Contains(expected, message);

        var pack = await Assert.ThrowsAnyAsync<Exception>(() => TestApp.StartAsync(TestDatabases.Sqlite, new Dictionary<string, string?>
        {
            ["Tollgate:Billing:CreditPacks:cheap:PriceCents"] = "10",
            ["Tollgate:Billing:CreditPacks:cheap:Credits"] = "100",
            ["Tollgate:Billing:CreditPacks:cheap:StripePriceId"] = "10usd",
        }));
        Assert.Contains("PriceCents must be 50", pack.ToString());
        Assert.Contains("StripePriceId must be a Stripe Price id", pack.ToString());
    }
}


/// <summary>Postpaid accounts invoiced through Stripe for what they owe at a month's end, on a clock the test moves.</summary>
public sealed class PostpaidInvoiceTests : IAsyncLifetime
{
    private const string Secret = "whsec_test_secret";
    private readonly Ledger.ManualTimeProvider _clock = new(new DateTimeOffset(2026, 10, 31, 22, 0, 0, TimeSpan.Zero));
    private FakeStripe _stripe = null!;
    private readonly Dictionary<string, TestApp> _apps = new();

    public static TheoryData<string> Engines => TestDatabases.Engines;

    public async Task InitializeAsync()
    {
        _stripe = await FakeStripe.StartAsync();
        var settings = new Dictionary<string, string?>(_stripe.Settings(Secret))
        {
            ["Tollgate:Stripe:InvoicePostpaidUsage"] = "false",
        };
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres })
            _apps[engine] = await TestApp.StartAsync(engine, settings, services: s => Microsoft.Extensions.DependencyInjection.ServiceCollectionServiceExtensions.AddSingleton<TimeProvider>(s, _clock));
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await app.DisposeAsync();
        await _stripe.DisposeAsync();
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_month_end_debt_beyond_credits_is_invoiced_once_and_credited_when_paid(string engine)
    {
        var app = _apps[engine];
        var postpaid = await app.CreateAccountAsync("postpaid", creditLimitMicros: 5_000_000);
        var prepaid = await app.CreateAccountAsync("prepaid");
        await app.GrantAsync(postpaid, 1_000_000);
        await app.GrantAsync(prepaid, 1_000_000);
        // Spends its million of credits and 1,500,003 micro-USD more (within its limit).
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{postpaid}/credits",
            AdminApi.JsonBody("""{"amount_micros":-2500003,"idempotency_key":"usage-oct"}""")), HttpStatusCode.OK);

        Assert.Equal("period_not_ended", (await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/payments/invoice-usage?period=2026-10", null), HttpStatusCode.BadRequest)).Str("code"));
        _clock.Advance(TimeSpan.FromHours(3));
        // November's spending is not October's debt.
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{postpaid}/credits",
            AdminApi.JsonBody("""{"amount_micros":-100000,"idempotency_key":"usage-nov"}""")), HttpStatusCode.OK);

        var run = await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/payments/invoice-usage?period=2026-10", null), HttpStatusCode.OK);
        var invoice = run.GetProperty("data").EnumerateArray().Single(i => i.Str("account_id") == postpaid);
        // 1,500,003 micro-USD rounds up to 151 cents.
        Assert.Equal((151L, 1_510_000L, "open"), (invoice.Long("amount_cents"), invoice.Long("amount_micros"), invoice.Str("status")));
        Assert.DoesNotContain(run.GetProperty("data").EnumerateArray(), i => i.Str("account_id") == prepaid);
        var item = _stripe.Calls.Last(c => c.Path == "/v1/invoiceitems" && c.Field("metadata[tollgate_account]") == postpaid);
        Assert.Equal(("151", "usd", "2026-10"), (item.Field("amount"), item.Field("currency"), item.Field("metadata[period]")));

        // A rerun (or a second process) invoices nothing more.
        var before = _stripe.Calls.Count(c => c.Path == "/v1/invoiceitems");
        await MeteringApi.BodyAsync(await app.Admin.PostAsync("/admin/v1/payments/invoice-usage?period=2026-10", null), HttpStatusCode.OK);
        Assert.Equal(before, _stripe.Calls.Count(c => c.Path == "/v1/invoiceitems"));

        var paid = $$"""{"id":"{{invoice.Str("id")}}","object":"invoice","status":"paid","amount_paid":151,"customer":"cus_x"}""";
        var payload = "{\"id\":\"evt_paid_" + invoice.Str("id") + "\",\"object\":\"event\",\"created\":" + _clock.GetUtcNow().ToUnixTimeSeconds()
            + ",\"livemode\":false,\"type\":\"invoice.paid\",\"data\":{\"object\":" + paid + "}}";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, System.Text.Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Stripe-Signature", FakeStripe.Sign(payload, Secret, _clock.GetUtcNow().ToUnixTimeSeconds()));
        Assert.Equal("usage_invoice_paid", (await MeteringApi.BodyAsync(await app.Anonymous.SendAsync(request), HttpStatusCode.OK)).Str("outcome"));
        // Redelivered: the event was recorded with the credit, in the same transaction; nothing more is credited.
        using var again = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, System.Text.Encoding.UTF8, "application/json") };
        again.Headers.TryAddWithoutValidation("Stripe-Signature", FakeStripe.Sign(payload, Secret, _clock.GetUtcNow().ToUnixTimeSeconds()));
        Assert.Equal("duplicate:usage_invoice_paid", (await MeteringApi.BodyAsync(await app.Anonymous.SendAsync(again), HttpStatusCode.OK)).Str("outcome"));
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{postpaid}"), HttpStatusCode.OK);
        // −1,500,003 − 100,000 + 1,510,000
        Assert.Equal(-90_003, account.Long("balance_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
