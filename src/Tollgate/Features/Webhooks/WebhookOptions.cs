using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Webhooks;

/// <summary>Configuration section <c>Tollgate:Webhooks</c>.</summary>
public sealed record WebhookOptions
{
    public const string Section = "Tollgate:Webhooks";

    /// <summary>The wait before each retry, by attempt (the last one repeats): 10 s, 1 min, 5 min, 30 min, 2 h, 5 h, 10 h.</summary>
    public static readonly IReadOnlyList<TimeSpan> DefaultRetryDelays =
        [TimeSpan.FromSeconds(10), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(30), TimeSpan.FromHours(2), TimeSpan.FromHours(5), TimeSpan.FromHours(10)];

    /// <summary>Attempts per delivery before it is given up as failed (first try included); 1–50, default 8 (≈ 18 h with the default delays).</summary>
    public int MaxAttempts { get; init; } = 8;

    /// <summary>
    /// Waits before the 2nd, 3rd … attempt (<c>Tollgate:Webhooks:RetryDelays:0 = 00:00:10</c> …); the last repeats.
    /// Unset: <see cref="DefaultRetryDelays"/>. Nullable so that configuration replaces the defaults instead of appending to them.
    /// </summary>
    public TimeSpan[]? RetryDelays { get; init; }

    /// <summary>How long one POST may take before it counts as failed; default 10 s (1 ms – 5 min).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the dispatcher looks for due deliveries when nothing wakes it; default 1 s.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Deliveries claimed per round (and sent in parallel); default 20.</summary>
    public int BatchSize { get; init; } = 20;

    /// <summary>
    /// How long a claimed delivery stays with the process that claimed it; after that (the process died mid-send) any
    /// process may take it again. Default 2 min; must exceed <see cref="Timeout"/>.
    /// </summary>
    public TimeSpan Lease { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Whether this process sends deliveries at all (events are still written); default true.</summary>
    public bool DispatcherEnabled { get; init; } = true;

    public IReadOnlyList<TimeSpan> EffectiveRetryDelays => RetryDelays is { Length: > 0 } d ? d : DefaultRetryDelays;

    /// <summary>The wait after failed attempt number <paramref name="attempt"/> (1-based).</summary>
    public TimeSpan DelayAfter(int attempt)
    {
        var delays = EffectiveRetryDelays;
        return delays[Math.Clamp(attempt - 1, 0, delays.Count - 1)];
    }
}

internal sealed class WebhookOptionsValidator : IValidateOptions<WebhookOptions>
{
    public ValidateOptionsResult Validate(string? name, WebhookOptions o)
    {
        var errors = new List<string>();
        if (o.MaxAttempts is < 1 or > 50) errors.Add("Tollgate:Webhooks:MaxAttempts must be 1–50.");
        if (o.RetryDelays is { } d && d.Any(x => x <= TimeSpan.Zero || x > TimeSpan.FromDays(7)))
            errors.Add("Tollgate:Webhooks:RetryDelays must all be positive and at most 7 days.");
        if (o.Timeout <= TimeSpan.Zero || o.Timeout > TimeSpan.FromMinutes(5)) errors.Add("Tollgate:Webhooks:Timeout must be positive and at most 5 minutes.");
        if (o.PollInterval <= TimeSpan.Zero || o.PollInterval > TimeSpan.FromMinutes(10)) errors.Add("Tollgate:Webhooks:PollInterval must be positive and at most 10 minutes.");
        if (o.BatchSize is < 1 or > 1000) errors.Add("Tollgate:Webhooks:BatchSize must be 1–1000.");
        if (o.Lease <= o.Timeout) errors.Add("Tollgate:Webhooks:Lease must be longer than Tollgate:Webhooks:Timeout.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// The <c>Tollgate-Signature</c> header, Stripe's scheme: <c>t=&lt;unix seconds&gt;,v1=&lt;hex HMAC-SHA256&gt;</c> where
/// the HMAC key is the UTF-8 bytes of the whole secret (<c>whsec_…</c>, prefix included) and the message is
/// <c>"{t}.{body}"</c> over the exact body bytes sent.
/// </summary>
public static class WebhookSignature
{
    public const string Header = "Tollgate-Signature";
    public const string SecretPrefix = "whsec_";

    public static string NewSecret() => SecretPrefix + Infrastructure.Secrets.RandomBase62(40);

    public static string Sign(string secret, long unixSeconds, ReadOnlySpan<byte> body) => Sign([secret], unixSeconds, body);

    /// <summary>One <c>v1</c> per secret (the current one first), as Stripe does while an old secret is still honoured.</summary>
    public static string Sign(IReadOnlyList<string> secrets, long unixSeconds, ReadOnlySpan<byte> body)
    {
        var t = unixSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var prefix = Encoding.UTF8.GetBytes(t + ".");
        var message = new byte[prefix.Length + body.Length];
        prefix.CopyTo(message, 0);
        body.CopyTo(message.AsSpan(prefix.Length));
        var header = new StringBuilder("t=").Append(t);
        foreach (var secret in secrets)
            header.Append(",v1=").Append(Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), message)));
        return header.ToString();
    }
}
