using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>
/// Configuration section <c>Tollgate:Stripe</c>. Stripe is enabled when <see cref="SecretKey"/> is set (directly or
/// through <see cref="SecretKeyEnv"/>); Tollgate runs without it otherwise, and its billing routes answer 503.
/// </summary>
public sealed record StripeOptions
{
    public const string Section = "Tollgate:Stripe";

    public string? SecretKey { get; init; }
    /// <summary>The name of an environment variable holding the secret key (keeps it out of configuration files).</summary>
    public string? SecretKeyEnv { get; init; }
    public string? PublishableKey { get; init; }
    /// <summary>Webhook signing secrets (<c>whsec_…</c>); several at once while rotating. A signature by any of them is accepted.</summary>
    public string[] WebhookSecrets { get; init; } = [];
    public string ApiBaseUrl { get; init; } = "https://api.stripe.com";
    /// <summary>The API version requests are pinned to; webhook payloads of both pre- and post-basil shapes are read.</summary>
    public string ApiVersion { get; init; } = "2025-03-31.basil";
    /// <summary>Seconds a webhook signature's timestamp may differ from the clock, either way.</summary>
    public int WebhookToleranceSeconds { get; init; } = 300;
    public string SuccessUrl { get; init; } = "http://localhost:8080/billing/success?session_id={CHECKOUT_SESSION_ID}";
    public string CancelUrl { get; init; } = "http://localhost:8080/billing/cancel";
    public string PortalReturnUrl { get; init; } = "http://localhost:8080/";
    /// <summary>Stripe Price ids of plans: <c>PlanPrices:&lt;plan&gt;:month</c> / <c>:year</c>.</summary>
    public Dictionary<string, Dictionary<string, string>> PlanPrices { get; init; } = new(StringComparer.Ordinal);
    /// <summary>How long a Stripe subscription may stay past due (its invoice unpaid) before the account goes back to the default plan.</summary>
    public int PastDueGraceSeconds { get; init; } = 7 * 24 * 3600;
    /// <summary>Per plan: <c>PastDuePolicies:&lt;plan&gt;:GraceSeconds</c> (instead of <see cref="PastDueGraceSeconds"/>) and
    /// <c>:DowngradeTo</c> (the plan the account drops to when the grace ends; default the default plan).</summary>
    public Dictionary<string, PastDuePolicy> PastDuePolicies { get; init; } = new(StringComparer.Ordinal);
    /// <summary>Bill postpaid accounts (credit limit above zero) for what they owe at each month's end, through Stripe invoices.</summary>
    public bool InvoicePostpaidUsage { get; init; } = true;
    /// <summary>How often the grace period is checked.</summary>
    public int GraceSweepSeconds { get; init; } = 60;
    public int TimeoutSeconds { get; init; } = 30;
    /// <summary>Attempts per API call on a connection failure, 409 (key in use by a concurrent request), 429 or 5xx (same idempotency key each time).</summary>
    public int MaxAttempts { get; init; } = 3;

    public string? ResolvedSecretKey => SecretKey is { Length: > 0 } k ? k : SecretKeyEnv is { Length: > 0 } env ? Environment.GetEnvironmentVariable(env) : null;
    public bool Enabled => ResolvedSecretKey is { Length: > 0 };
    /// <summary>Live keys take live events only, test keys test events only.</summary>
    /// <summary>The plan and interval a Stripe Price id sells, from <see cref="PlanPrices"/>.</summary>
    public (string Plan, string Interval)? PlanOfPrice(string? priceId)
    {
        if (priceId is null) return null;
        foreach (var (plan, prices) in PlanPrices)
            foreach (var (interval, price) in prices)
                if (price == priceId) return (plan, interval);
        return null;
    }

    public bool LiveMode => ResolvedSecretKey?.StartsWith("sk_live_", StringComparison.Ordinal) == true || ResolvedSecretKey?.StartsWith("rk_live_", StringComparison.Ordinal) == true;
}

/// <summary>What happens to a plan's Stripe subscription that stays past due.</summary>
public sealed record PastDuePolicy
{
    public int? GraceSeconds { get; init; }
    public string? DowngradeTo { get; init; }
}

internal sealed class StripeOptionsValidator : IValidateOptions<StripeOptions>
{
    public ValidateOptionsResult Validate(string? name, StripeOptions o)
    {
        if (!o.Enabled) return ValidateOptionsResult.Success;
        var errors = new List<string>();
        var key = o.ResolvedSecretKey!;
        if (!(key.StartsWith("sk_", StringComparison.Ordinal) || key.StartsWith("rk_", StringComparison.Ordinal)))
            errors.Add("Tollgate:Stripe:SecretKey must be a secret (sk_…) or restricted (rk_…) key.");
        if (o.PublishableKey is { Length: > 0 } pk && !pk.StartsWith("pk_", StringComparison.Ordinal))
            errors.Add("Tollgate:Stripe:PublishableKey must start with pk_.");
        if (o.WebhookSecrets.Length == 0) errors.Add("Tollgate:Stripe:WebhookSecrets needs at least one whsec_… secret: without it no payment can be credited.");
        foreach (var s in o.WebhookSecrets)
            if (!s.StartsWith("whsec_", StringComparison.Ordinal)) errors.Add("Tollgate:Stripe:WebhookSecrets: every secret starts with whsec_.");
        if (!Uri.TryCreate(o.ApiBaseUrl, UriKind.Absolute, out var api) || api.Scheme is not ("https" or "http"))
            errors.Add("Tollgate:Stripe:ApiBaseUrl must be an absolute http(s) URL.");
        foreach (var (field, url) in new[] { ("SuccessUrl", o.SuccessUrl), ("CancelUrl", o.CancelUrl), ("PortalReturnUrl", o.PortalReturnUrl) })
            if (!Uri.TryCreate(url.Replace("{CHECKOUT_SESSION_ID}", "x"), UriKind.Absolute, out _)) errors.Add($"Tollgate:Stripe:{field} must be an absolute URL.");
        if (o.WebhookToleranceSeconds is < 1 or > 3600) errors.Add("Tollgate:Stripe:WebhookToleranceSeconds must be 1–3600.");
        if (o.MaxAttempts is < 1 or > 10) errors.Add("Tollgate:Stripe:MaxAttempts must be 1–10.");
        if (o.PastDueGraceSeconds < 0) errors.Add("Tollgate:Stripe:PastDueGraceSeconds must not be negative.");
        if (o.GraceSweepSeconds < 1) errors.Add("Tollgate:Stripe:GraceSweepSeconds must be at least 1.");
        foreach (var (plan, prices) in o.PlanPrices)
            foreach (var interval in prices.Keys)
                if (interval is not ("month" or "year")) errors.Add($"Tollgate:Stripe:PlanPrices:{plan}:{interval}: the interval is 'month' or 'year'.");
        foreach (var (plan, policy) in o.PastDuePolicies)
            if (policy.GraceSeconds is < 0) errors.Add($"Tollgate:Stripe:PastDuePolicies:{plan}:GraceSeconds must not be negative.");
        foreach (var (plan, prices) in o.PlanPrices)
            foreach (var (interval, price) in prices)
                if (!price.StartsWith("price_", StringComparison.Ordinal))
                    errors.Add($"Tollgate:Stripe:PlanPrices:{plan}:{interval} must be a Stripe Price id (price_…), not a product or an amount.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
