using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Webhooks;

/// <summary>Wakes the dispatcher of this process when an event was committed (other processes find it by polling).</summary>
internal sealed class WebhookSignal
{
    private readonly SemaphoreSlim _wake = new(0, 1);

    public void Notify()
    {
        // At most one wake-up pending: a burst of events is one round.
        try { if (_wake.CurrentCount == 0) _wake.Release(); } catch (SemaphoreFullException) { }
    }

    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _wake.WaitAsync(timeout, ct);
}

/// <summary>
/// Signs and sends deliveries. The secret is decrypted per send (Data Protection, purpose <c>tollgate.webhooks.v1</c>);
/// redirects are never followed, so a delivery only ever reaches the registered URL.
/// </summary>
internal sealed partial class WebhookSender(IHttpClientFactory clients, IDataProtectionProvider protection, IOptions<WebhookOptions> options,
    TimeProvider time)
{
    public const string ClientName = "tollgate-webhooks";
    public const string Purpose = "tollgate.webhooks.v1";
    private const int MaxErrorLength = 500;

    private readonly IDataProtector _protector = protection.CreateProtector(Purpose);

    public string Protect(string secret) => _protector.Protect(secret);

    /// <summary>One POST; never throws for what the receiver or the network did (that is the result).</summary>
    public async Task<(int? StatusCode, string? Error, long DurationMs)> SendAsync(DeliveryTarget target, CancellationToken ct)
    {
        var body = Encoding.UTF8.GetBytes(target.Payload);
        var started = Stopwatch.GetTimestamp();
        using var request = new HttpRequestMessage(HttpMethod.Post, target.Url) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        var now = time.GetUtcNow();
        var secrets = target.PreviousSecretCiphertext is { } previous && target.PreviousSecretExpiresAt > now
            ? new[] { _protector.Unprotect(target.SecretCiphertext), _protector.Unprotect(previous) }
            : [_protector.Unprotect(target.SecretCiphertext)];
        request.Headers.TryAddWithoutValidation(WebhookSignature.Header, WebhookSignature.Sign(secrets, now.ToUnixTimeSeconds(), body));
        request.Headers.TryAddWithoutValidation("Tollgate-Event-Id", target.EventId);
        request.Headers.TryAddWithoutValidation("Tollgate-Event-Type", target.EventType);
        request.Headers.TryAddWithoutValidation("Tollgate-Delivery-Id", target.DeliveryId);
        request.Headers.UserAgent.ParseAdd("Tollgate-Webhooks/1");
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.Value.Timeout);
        try
        {
            using var response = await clients.CreateClient(ClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var code = (int)response.StatusCode;
            return (code, code is >= 200 and < 300 ? null : $"HTTP {code}", Elapsed());
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            return (null, $"timeout after {options.Value.Timeout.TotalSeconds:0.###} s", Elapsed());
        }
        catch (HttpRequestException e)
        {
            return (null, Truncate(e.Message), Elapsed());
        }

        long Elapsed() => (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static string Truncate(string s) => s.Length <= MaxErrorLength ? s : s[..MaxErrorLength];
}

/// <summary>
/// The background dispatcher: every <see cref="WebhookOptions.PollInterval"/> (or at once when this process wrote an
/// event) it claims due deliveries under a lease, sends them in parallel, and records each attempt:
///
///   2xx                        → succeeded
///   anything else, attempts &lt; max → pending again, next attempt after <see cref="WebhookOptions.DelayAfter"/>
///   anything else, attempts = max → failed (replay can still send it)
///   endpoint deleted/disabled  → failed without sending
///
/// Several processes on one PostgreSQL share the work: a claimed delivery is skipped by the others until its lease ends.
/// </summary>
internal sealed partial class WebhookDispatcher(WebhookStore store, WebhookSender sender, WebhookSignal signal, IOptions<WebhookOptions> options,
    TimeProvider time, Infrastructure.Metrics.TollgateMetrics metrics, ILogger<WebhookDispatcher> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        if (!o.DispatcherEnabled) return;
        await Task.Yield();
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                // A full batch suggests more are due: go again before sleeping.
                while (await RunOnceAsync(stoppingToken) >= o.BatchSize) { }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogRoundFailed(logger, e);
            }
            try { await signal.WaitAsync(o.PollInterval, stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>One round: claim, send, record. Returns how many deliveries were claimed.</summary>
    public async Task<int> RunOnceAsync(CancellationToken ct)
    {
        var o = options.Value;
        var now = time.GetUtcNow();
        var claimed = await store.ClaimAsync(now, now + o.Lease, o.BatchSize, ct);
        await Task.WhenAll(claimed.Select(d => DeliverAsync(d, ct)));
        return claimed.Count;
    }

    private async Task DeliverAsync(ClaimedDelivery claimed, CancellationToken ct)
    {
        try
        {
            var o = options.Value;
            var target = await store.TargetAsync(claimed.Id, null, ct);
            if (target is null) return;
            if (!target.EndpointUsable)
            {
                await store.RecordAttemptAsync(claimed.Id, WebhookStore.Scheduled, claimed.LeaseUntil, time.GetUtcNow(), null,
                    "the endpoint was deleted or disabled", 0, WebhookStore.Failed, null, ct);
                metrics.WebhookDeliveries.Add(1, new KeyValuePair<string, object?>("outcome", "endpoint_gone"));
                return;
            }
            var (code, error, ms) = await sender.SendAsync(target, ct);
            var attempt = claimed.Attempts + 1;
            var at = time.GetUtcNow();
            var (status, next) = error is null ? (WebhookStore.Succeeded, (DateTimeOffset?)null)
                : attempt >= o.MaxAttempts ? (WebhookStore.Failed, null)
                : (WebhookStore.Pending, at + o.DelayAfter(attempt));
            await store.RecordAttemptAsync(claimed.Id, WebhookStore.Scheduled, claimed.LeaseUntil, at, code, error, ms, status, next, ct);
            metrics.WebhookDeliveries.Add(1, new KeyValuePair<string, object?>("outcome",
                status == WebhookStore.Succeeded ? "delivered" : status == WebhookStore.Failed ? "failed" : "retrying"));
            if (error is not null) LogAttemptFailed(logger, claimed.Id, attempt, error);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            // The lease runs out and another round takes the delivery again.
            LogDeliveryFailed(logger, e, claimed.Id);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "A webhook dispatch round failed; retrying after the poll interval.")]
    private static partial void LogRoundFailed(ILogger logger, Exception e);

    [LoggerMessage(Level = LogLevel.Error, Message = "Webhook delivery {DeliveryId} could not be processed; it is retried when its lease ends.")]
    private static partial void LogDeliveryFailed(ILogger logger, Exception e, string deliveryId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook delivery {DeliveryId} attempt {Attempt} failed: {Error}.")]
    private static partial void LogAttemptFailed(ILogger logger, string deliveryId, int attempt, string error);
}
