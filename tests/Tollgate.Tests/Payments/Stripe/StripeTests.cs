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
            ["Tollgate:Stripe:PastDueGraceSeconds"] = "2",
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
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r0", "charge.refunded", Charge(100))), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r1", "charge.refunded", Charge(100))), HttpStatusCode.OK);
        Assert.Equal(4_000_000, await BalanceAsync(c));

        // The customer spends 3.5 M of the 4 M left; then the rest of the charge is refunded: only 0.5 M can be taken.
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            AdminApi.JsonBody("""{"amount_micros":-3500000,"idempotency_key":"spend-1"}""")), HttpStatusCode.OK);
        var full = await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r2", "charge.refunded", Charge(500))), HttpStatusCode.OK);
        Assert.Equal("refunded:flagged_unrecovered", full.Str("outcome"));
        Assert.Equal(0, await BalanceAsync(c));
        // A stale, older state delivered late changes nothing.
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_r3", "charge.refunded", Charge(300))), HttpStatusCode.OK);
        var row = (await MeteringApi.BodyAsync(await c.Client.GetAsync("/api/v1/billing/checkouts"), HttpStatusCode.OK)).GetProperty("data").EnumerateArray().Single(x => x.Str("id") == session);
        Assert.Equal((500L, 1_500_000L, 3_500_000L), (row.Long("refunded_cents"), row.Long("clawed_back_micros"), row.Long("unrecovered_micros")));
        Assert.Equal(0, await BalanceAsync(c));
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
    public async Task An_invoice_left_unpaid_past_the_grace_period_drops_the_account_to_the_default_plan(string engine)
    {
        var app = _apps[engine];
        using var c = await app.CustomerAsync(0);
        var sub = "sub_grace_" + engine;
        await SubscribeAsync(app, c, sub);
        var t = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_gsc_" + sub, "customer.subscription.created", Subscription(sub, c.AccountId, "active", false, t, t + 30 * 86400), created: t)), HttpStatusCode.OK);
        await MeteringApi.BodyAsync(await DeliverAsync(app, Event("evt_gif_" + sub, "invoice.payment_failed", Invoice(sub), created: t + 1)), HttpStatusCode.OK);
        Assert.Equal(("pro", "past_due"), ((await AdminSubscriptionAsync(app, c.AccountId)).Str("plan"), (await AdminSubscriptionAsync(app, c.AccountId)).GetProperty("subscription").Str("status")));

        // Grace is 2 s here and the sweep runs every second.
        var until = DateTime.UtcNow.AddSeconds(15);
        while ((await AdminSubscriptionAsync(app, c.AccountId)).Str("plan") != "default")
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
        var account = await MeteringApi.BodyAsync(await app.Admin.GetAsync($"/admin/v1/accounts/{postpaid}"), HttpStatusCode.OK);
        // −1,500,003 − 100,000 + 1,510,000
        Assert.Equal(-90_003, account.Long("balance_micros"));
        await AdminApi.AssertAuditHealthyAsync(app.Admin);
    }
}
