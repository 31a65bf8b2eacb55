using System.Net;
using System.Text;
using Tollgate.Features.Payments.Stripe;
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
        var settings = new Dictionary<string, string?>
        {
            ["Tollgate:Stripe:SecretKey"] = FakeStripe.SecretKey,
            ["Tollgate:Stripe:WebhookSecrets:0"] = Secret,
            ["Tollgate:Stripe:WebhookSecrets:1"] = RotatedSecret,
            ["Tollgate:Stripe:ApiBaseUrl"] = _stripe.BaseUrl.ToString(),
            ["Tollgate:Billing:CreditPacks:starter:PriceCents"] = "500",
            ["Tollgate:Billing:CreditPacks:starter:Credits"] = "5000",
            ["Tollgate:Billing:CreditPacks:big:PriceCents"] = "2000",
            ["Tollgate:Billing:CreditPacks:big:Credits"] = "20000",
            ["Tollgate:Billing:CreditPacks:big:BonusCredits"] = "5000",
            ["Tollgate:Billing:CreditPacks:big:Name"] = "Big pack",
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

    private static string Event(string id, string type, string obj) =>
        "{\"id\":\"" + id + "\",\"object\":\"event\",\"api_version\":\"2025-03-31.basil\",\"created\":" + DateTimeOffset.UtcNow.ToUnixTimeSeconds()
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
