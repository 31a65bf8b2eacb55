using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Payments.Stripe;

public sealed record CreditCheckoutInput(string? Pack);

public sealed record SubscriptionCheckoutInput(string? Plan, string? Interval);

public sealed record PortalResponse(string Url);

public sealed record CheckoutView(string Id, string Mode, string? Pack, long AmountCents, string Currency, long AmountMicros, string Status,
    long CreditedMicros, long RefundedCents, long ClawedBackMicros, long UnrecoveredMicros, DateTimeOffset CreatedAt, DateTimeOffset? CompletedAt)
{
    public static CheckoutView From(StripeCheckout c) => new(c.Id, c.Mode, c.PackId, c.AmountCents, c.Currency, c.AmountMicros, c.Status,
        c.CreditedMicros, c.RefundedCents, c.ClawedBackMicros, c.UnrecoveredMicros, c.CreatedAt, c.CompletedAt);
}

/// <summary>
/// <c>/api/v1/billing/…</c> (checkout for credit packs, the customer portal, the account's purchases) and
/// <c>POST /webhooks/stripe</c>. Without Stripe configured the billing routes answer 503 <c>stripe_not_configured</c>.
/// </summary>
internal static partial class StripeEndpoints
{
    /// <summary>Stripe's events are small; anything near this is not one.</summary>
    public const int MaxWebhookBytes = 1 << 20;

    public static void MapStripe(this IEndpointRouteBuilder routes)
    {
        var billing = routes.MapGroup("/api/v1/billing").RequireApiKey().ManagersOnly().WithTags("Billing");
        billing.MapPost("/checkout/credits", CheckoutCredits);
        billing.MapPost("/checkout/subscription", CheckoutSubscription);
        billing.MapPost("/portal", Portal);
        billing.MapGet("/checkouts", async (HttpContext http, StripeStore store, CancellationToken ct) =>
            TypedResults.Ok(new Dictionary<string, object> { ["data"] = (await store.CheckoutsAsync(http.GetCaller().AccountId, 100, ct)).Select(CheckoutView.From).ToList() }));
        routes.MapPost("/webhooks/stripe", Webhook).WithTags("Billing");
        var admin = routes.MapGroup("/admin/v1/payments").RequireAdminKey().WithTags("Admin: payments");
        admin.MapGet("/reconciliation", Reconcile);
        admin.MapPost("/invoice-usage", InvoiceUsage);
        billing.MapGet("/invoices", async (HttpContext http, PostpaidInvoicer invoicer, CancellationToken ct) =>
            TypedResults.Ok(new Dictionary<string, object> { ["data"] = await invoicer.ListAsync(http.GetCaller().AccountId, ct) }));
    }

    private static ProblemHttpResult NotConfigured() => Problems.Create(StatusCodes.Status503ServiceUnavailable, "stripe_not_configured",
        "Payments by card are not available: Stripe is not configured on this Tollgate (Tollgate:Stripe:SecretKey).");

    private static ProblemHttpResult ProviderError(StripeException e) => Problems.Create(StatusCodes.Status502BadGateway, "payment_provider_error",
        $"Stripe refused or failed the request ({(e.Status == 0 ? "unreachable" : e.Status.ToString(System.Globalization.CultureInfo.InvariantCulture))}): {e.Message}");

    private static async Task<Results<Created<CheckoutCreated>, ProblemHttpResult>> CheckoutCredits(CreditCheckoutInput? input, HttpContext http,
        StripeBilling billing, CreditPackCatalog packs, IOptions<StripeOptions> options, CancellationToken ct)
    {
        if (!options.Value.Enabled) return NotConfigured();
        if (packs.Find(input?.Pack) is not { } pack)
            return Problems.BadRequest("unknown_pack", $"'pack' must be one of: {string.Join(", ", packs.All.Select(p => p.Id))} (GET /api/v1/billing/credit-packs).", "pack");
        var key = http.Request.Headers["Idempotency-Key"] is [{ Length: > 0 and <= 100 } k] ? k : null;
        try
        {
            var created = await billing.CheckoutCreditsAsync(http.GetCaller(), pack, key, ct);
            return TypedResults.Created(created.Url, created);
        }
        catch (StripeException e)
        {
            return ProviderError(e);
        }
    }

    private static async Task<Results<Created<CheckoutCreated>, ProblemHttpResult>> CheckoutSubscription(SubscriptionCheckoutInput? input, HttpContext http,
        StripeBilling billing, Plans.PlanCatalog plans, IOptions<StripeOptions> options, CancellationToken ct)
    {
        if (!options.Value.Enabled) return NotConfigured();
        var interval = input?.Interval ?? "month";
        if (interval is not ("month" or "year")) return Problems.BadRequest("invalid_request", "'interval' must be 'month' or 'year'.", "interval");
        if (input?.Plan is not { } planId || !plans.Exists(planId)) return Problems.BadRequest("unknown_plan", "'plan' must name a plan (GET /api/v1/plan).", "plan");
        if (!options.Value.PlanPrices.TryGetValue(planId, out var prices) || !prices.TryGetValue(interval, out var price))
            return Problems.BadRequest("plan_not_sold", $"The plan '{planId}' is not sold by card for the interval '{interval}' (no Tollgate:Stripe:PlanPrices:{planId}:{interval}).", "plan");
        try
        {
            var created = await billing.CheckoutSubscriptionAsync(http.GetCaller(), plans.Get(planId), interval, price,
                http.Request.Headers["Idempotency-Key"] is [{ Length: > 0 and <= 100 } k] ? k : null, ct);
            return TypedResults.Created(created.Url, created);
        }
        catch (StripeException e)
        {
            return ProviderError(e);
        }
    }

    /// <summary><c>GET /admin/v1/payments/reconciliation?from=&amp;to=</c> (ISO 8601; default the last 30 days): Stripe against the ledger.</summary>
    private static async Task<Results<Ok<ReconciliationReport>, ProblemHttpResult>> Reconcile(DateTimeOffset? from, DateTimeOffset? to, StripeReconciler reconciler,
        IOptions<StripeOptions> options, TimeProvider time, CancellationToken ct)
    {
        if (!options.Value.Enabled) return NotConfigured();
        var end = to ?? time.GetUtcNow();
        var start = from ?? end.AddDays(-30);
        if (start >= end) return Problems.BadRequest("invalid_request", "'from' must be before 'to'.", "from");
        try
        {
            return TypedResults.Ok(await reconciler.ReconcileAsync(start, end, ct));
        }
        catch (StripeException e)
        {
            return ProviderError(e);
        }
    }

    /// <summary><c>POST /admin/v1/payments/invoice-usage?period=2026-11</c>: invoices postpaid accounts for a month that has ended (idempotent).</summary>
    private static async Task<Results<Ok<Dictionary<string, object>>, ProblemHttpResult>> InvoiceUsage(string? period, PostpaidInvoicer invoicer,
        IOptions<StripeOptions> options, CancellationToken ct)
    {
        if (!options.Value.Enabled) return NotConfigured();
        if (period is null || !DateTimeOffset.TryParseExact(period + "-01", "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture,
                System.Globalization.DateTimeStyles.AssumeUniversal, out var month))
            return Problems.BadRequest("invalid_request", "'period' is a month: yyyy-MM (e.g. 2026-10).", "period");
        try
        {
            var invoices = await invoicer.InvoiceMonthAsync(month, ct);
            return TypedResults.Ok(new Dictionary<string, object> { ["period"] = period, ["data"] = invoices });
        }
        catch (ArgumentException e)
        {
            return Problems.BadRequest("period_not_ended", e.Message, "period");
        }
        catch (StripeException e)
        {
            return ProviderError(e);
        }
    }

    private static async Task<Results<Ok<PortalResponse>, ProblemHttpResult>> Portal(HttpContext http, StripeBilling billing, IOptions<StripeOptions> options, CancellationToken ct)
    {
        if (!options.Value.Enabled) return NotConfigured();
        try
        {
            return TypedResults.Ok(new PortalResponse(await billing.PortalAsync(http.GetCaller(), ct)));
        }
        catch (StripeException e)
        {
            return ProviderError(e);
        }
    }

    /// <summary>
    /// Verifies the signature over the raw body before reading anything in it (400 on any failure, never 500), then
    /// handles the event. A transient failure answers 503 so Stripe delivers the event again.
    /// </summary>
    private static async Task<IResult> Webhook(HttpContext http, StripeWebhooks webhooks, IOptions<StripeOptions> options, TimeProvider time,
        ILoggerFactory loggers, Infrastructure.Metrics.TollgateMetrics metrics, CancellationToken ct)
    {
        var result = await HandleWebhookAsync(http, webhooks, options, time, loggers, ct);
        var outcome = result is IStatusCodeHttpResult { StatusCode: { } status } ? status switch
        {
            200 => "processed", 400 => "rejected", 503 => "retry", _ => "other",
        } : "other";
        metrics.Webhooks.Add(1, new KeyValuePair<string, object?>("outcome", outcome));
        return result;
    }

    private static async Task<IResult> HandleWebhookAsync(HttpContext http, StripeWebhooks webhooks, IOptions<StripeOptions> options, TimeProvider time,
        ILoggerFactory loggers, CancellationToken ct)
    {
        var o = options.Value;
        if (!o.Enabled) return NotConfigured();
        if (http.Request.ContentLength > MaxWebhookBytes) return Problems.BadRequest("payload_too_large", "Not a Stripe event: the body is too large.");
        byte[] body;
        try
        {
            using var buffer = new MemoryStream();
            var chunk = new byte[16 * 1024];
            int read;
            while ((read = await http.Request.Body.ReadAsync(chunk, ct)) > 0)
            {
                if (buffer.Length + read > MaxWebhookBytes) return Problems.BadRequest("payload_too_large", "Not a Stripe event: the body is too large.");
                buffer.Write(chunk, 0, read);
            }
            body = buffer.ToArray();
        }
        catch (BadHttpRequestException)
        {
            return Problems.BadRequest("invalid_body", "The request body could not be read.");
        }
        var check = StripeSignature.Verify(http.Request.Headers["Stripe-Signature"].ToString(), body, o.WebhookSecrets, time.GetUtcNow(), o.WebhookToleranceSeconds);
        if (check != SignatureCheck.Valid)
            return Problems.BadRequest("invalid_signature", check switch
            {
                SignatureCheck.Malformed => "The Stripe-Signature header is missing or malformed (t=…,v1=…).",
                SignatureCheck.OutsideTolerance => $"The signature's timestamp is more than {o.WebhookToleranceSeconds} s from now; refusing a possible replay.",
                _ => "No v1 signature matches any configured webhook secret.",
            });

        JsonElement e;
        try
        {
            e = JsonDocument.Parse(body).RootElement;
            if (e.GetProperty("id").GetString() is not { Length: > 0 } || e.GetProperty("type").GetString() is not { Length: > 0 } || e.GetProperty("data").GetProperty("object").ValueKind != JsonValueKind.Object)
                throw new JsonException("not an event");
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return Problems.BadRequest("invalid_event", "The body is signed but is not a Stripe event object.");
        }
        if (e.TryGetProperty("livemode", out var live) && live.ValueKind is JsonValueKind.True or JsonValueKind.False && live.GetBoolean() != o.LiveMode)
            return Problems.BadRequest("livemode_mismatch", $"A {(live.GetBoolean() ? "live" : "test")} event reached a Tollgate configured with a {(o.LiveMode ? "live" : "test")} key.");

        try
        {
            var outcome = await webhooks.HandleAsync(e, CancellationToken.None);
            return outcome.Retry
                ? Problems.Create(StatusCodes.Status503ServiceUnavailable, "retry_later", $"Not handled yet ({outcome.Outcome}); deliver it again later.")
                : TypedResults.Ok(new Dictionary<string, object?> { ["received"] = true, ["outcome"] = outcome.Outcome });
        }
        catch (Exception ex) when (ex is Ledger.LedgerUnavailableException or System.Data.Common.DbException or InvalidOperationException)
        {
            LogWebhookFailed(loggers.CreateLogger(typeof(StripeEndpoints).FullName!), ex, e.GetProperty("id").GetString());
            return Problems.Create(StatusCodes.Status503ServiceUnavailable, "retry_later", "The event could not be processed now; deliver it again later.");
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Stripe event {EventId} failed; Stripe will retry it")]
    private static partial void LogWebhookFailed(ILogger logger, Exception e, string? eventId);
}
