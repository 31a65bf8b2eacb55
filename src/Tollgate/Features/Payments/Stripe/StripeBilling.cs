using System.Text.Json;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;

namespace Tollgate.Features.Payments.Stripe;

public sealed record CheckoutCreated(string Id, string Url, string? Pack, string? Plan, string? Interval, long AmountCents, string Currency, long AmountMicros);

/// <summary>
/// Money in through Stripe, the outgoing half: one Stripe customer per account (found by its metadata, else created
/// once with an idempotency key naming the account), Checkout Sessions for credit packs (and plans), and Customer Portal sessions. Every
/// session is recorded before its URL is returned, so the webhook credits only what Tollgate itself put on sale.
/// </summary>
internal sealed class StripeBilling(StripeClient stripe, StripeStore store, CreditPackCatalog packs, IOptions<StripeOptions> options, TimeProvider time)
{
    private readonly StripeOptions _options = options.Value;

    public async Task<string> CustomerAsync(Caller caller, CancellationToken ct)
    {
        if (await store.CustomerAsync(caller.AccountId, ct) is { } known) return known;
        if (await FindCustomerAsync(caller.AccountId, ct) is { } found) return await store.SaveCustomerAsync(caller.AccountId, found, ct);
        var created = await stripe.PostAsync("/v1/customers",
            [new("metadata[tollgate_account]", caller.AccountId), new("description", $"Tollgate account {caller.AccountId}")],
            $"tollgate-customer:{caller.AccountId}", ct);
        return await store.SaveCustomerAsync(caller.AccountId, created.GetProperty("id").GetString()!, ct);
    }

    /// <summary>
    /// A customer Stripe already has for the account (by its metadata) that Tollgate did not store — created before a crash
    /// or a restore, longer ago than Stripe keeps idempotency keys (24 h), so creating again would make a second one. Search
    /// is eventually consistent and not offered everywhere: not finding one, or search failing, falls back to creating
    /// (with the idempotency key, which covers the recent and concurrent cases).
    /// </summary>
    private async Task<string?> FindCustomerAsync(string accountId, CancellationToken ct)
    {
        try
        {
            var query = Uri.EscapeDataString($"metadata['tollgate_account']:'{accountId}'");
            var result = await stripe.GetAsync($"/v1/customers/search?query={query}&limit=1", ct);
            return result.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Array && data.GetArrayLength() > 0
                   && data[0].TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString() : null;
        }
        catch (StripeException e) when (e.Status is 400 or 403 or 404)
        {
            return null;
        }
    }

    /// <param name="requestKey">The client's own idempotency key, if it sent one: the same key returns the same session.</param>
    public async Task<CheckoutCreated> CheckoutCreditsAsync(Caller caller, CreditPack pack, string? requestKey, CancellationToken ct)
    {
        var customer = await CustomerAsync(caller, ct);
        var form = new List<KeyValuePair<string, string>>
        {
            new("mode", "payment"),
            new("customer", customer),
            new("client_reference_id", caller.AccountId),
            new("success_url", _options.SuccessUrl),
            new("cancel_url", _options.CancelUrl),
            new("metadata[tollgate_account]", caller.AccountId),
            new("metadata[pack]", pack.Id),
            new("metadata[amount_micros]", pack.AmountMicros.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            new("payment_intent_data[metadata][tollgate_account]", caller.AccountId),
            new("line_items[0][quantity]", "1"),
        };
        if (pack.StripePriceId is { } price) form.Add(new("line_items[0][price]", price));
        else
        {
            form.Add(new("line_items[0][price_data][currency]", pack.Currency));
            form.Add(new("line_items[0][price_data][unit_amount]", pack.PriceCents.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            form.Add(new("line_items[0][price_data][product_data][name]", pack.Name));
        }
        var key = $"tollgate-checkout:{caller.AccountId}:{requestKey ?? Guid.NewGuid().ToString("N")}";
        var session = await stripe.PostAsync("/v1/checkout/sessions", form, key, ct);
        var id = session.GetProperty("id").GetString()!;
        await store.InsertCheckoutAsync(new StripeCheckout(id, caller.AccountId, "payment", pack.Id, null, null, pack.PriceCents, pack.Currency,
            pack.AmountMicros, "open", null, 0, 0, 0, 0, time.GetUtcNow(), null), ct);
        return new CheckoutCreated(id, Url(session), pack.Id, null, null, pack.PriceCents, pack.Currency, pack.AmountMicros);
    }

    /// <summary>A Checkout Session in subscription mode for a plan's Stripe Price; the subscription carries the account in its metadata.</summary>
    public async Task<CheckoutCreated> CheckoutSubscriptionAsync(Caller caller, Plans.Plan plan, string interval, string priceId, string? requestKey, CancellationToken ct)
    {
        var customer = await CustomerAsync(caller, ct);
        var form = new List<KeyValuePair<string, string>>
        {
            new("mode", "subscription"),
            new("customer", customer),
            new("client_reference_id", caller.AccountId),
            new("success_url", _options.SuccessUrl),
            new("cancel_url", _options.CancelUrl),
            new("line_items[0][price]", priceId),
            new("line_items[0][quantity]", "1"),
            new("metadata[tollgate_account]", caller.AccountId),
            new("metadata[plan]", plan.Id),
            new("metadata[interval]", interval),
            new("subscription_data[metadata][tollgate_account]", caller.AccountId),
            new("subscription_data[metadata][plan]", plan.Id),
            new("subscription_data[metadata][interval]", interval),
        };
        var session = await stripe.PostAsync("/v1/checkout/sessions", form, $"tollgate-checkout:{caller.AccountId}:{requestKey ?? Guid.NewGuid().ToString("N")}", ct);
        var id = session.GetProperty("id").GetString()!;
        var cents = (interval == "year" ? plan.YearlyPriceCents : plan.MonthlyPriceCents) ?? 0;
        await store.InsertCheckoutAsync(new StripeCheckout(id, caller.AccountId, "subscription", null, plan.Id, interval, cents, "usd", 0, "open", null,
            0, 0, 0, 0, time.GetUtcNow(), null), ct);
        return new CheckoutCreated(id, Url(session), null, plan.Id, interval, cents, "usd", 0);
    }

    public async Task<string> PortalAsync(Caller caller, CancellationToken ct)
    {
        var customer = await CustomerAsync(caller, ct);
        var session = await stripe.PostAsync("/v1/billing_portal/sessions",
            [new("customer", customer), new("return_url", _options.PortalReturnUrl)], $"tollgate-portal:{caller.AccountId}:{Guid.NewGuid():N}", ct);
        return Url(session);
    }

    private static string Url(JsonElement session) =>
        session.TryGetProperty("url", out var url) && url.ValueKind == JsonValueKind.String ? url.GetString()! : "";

    public IReadOnlyList<CreditPack> Packs => packs.All;
}
