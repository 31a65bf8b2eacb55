using System.Buffers;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Gateway.Tokens;
using Tollgate.Features.Metering;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway;

internal sealed partial class GatewayHandler
{
    private const string AnthropicVersion = "2023-06-01";
    private const int MaxErrorBodyBytes = 64 * 1024;

    /// <summary>Sends to each target in turn until one answers; relays that answer; settles.</summary>
    private async Task RelayAsync(HttpContext http, Call call, ApiDialect dialect)
    {
        var clientGone = http.RequestAborted;
        for (var i = 0; i < call.Targets.Count; i++)
        {
            var target = call.Targets[i];
            var last = i == call.Targets.Count - 1;
            call.Target = target;
            HttpRequestMessage upstream;
            try
            {
                upstream = BuildRequest(call, target, dialect);
            }
            catch (Anthropic.TranslationException e) when (!last)
            {
                // This fallback cannot take the request as it is; the next one may.
                LogUpstreamFailed(logger, call.RequestId, target.Provider.Name, e.Message);
                continue;
            }
            catch (Anthropic.TranslationException e)
            {
                await FinishAsync(call, CallOutcome.UpstreamFailed, null, 0);
                await new GatewayError(400, e.Code, e.Message, e.Param).ExecuteAsync(http);
                return;
            }
            using var _ = upstream;
            // Shutdown's deadline ends the call too, a little before the server would drop the connection.
            using var total = CancellationTokenSource.CreateLinkedTokenSource(clientGone, calls.ShutdownDeadline);
            total.CancelAfter(target.Provider.Timeout);
            HttpResponseMessage response;
            try
            {
                using var firstByte = CancellationTokenSource.CreateLinkedTokenSource(total.Token);
                firstByte.CancelAfter(target.Provider.FirstByteTimeout);
                var sending = Stopwatch.GetTimestamp();
                if (i == 0) metrics.AddedLatency.Record(Stopwatch.GetElapsedTime(call.StartedTimestamp, sending).TotalSeconds);
                response = await target.Provider.Client.SendAsync(upstream, HttpCompletionOption.ResponseHeadersRead, firstByte.Token);
                metrics.UpstreamLatency.Record(Stopwatch.GetElapsedTime(sending).TotalSeconds, new KeyValuePair<string, object?>("provider", target.Provider.Name));
            }
            catch (Exception e) when (clientGone.IsCancellationRequested && e is OperationCanceledException)
            {
                // The client left before anything was produced: nothing to charge.
                await FinishAsync(call, CallOutcome.ClientAborted, null, 0);
                return;
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException)
            {
                var timeout = e is OperationCanceledException;
                LogUpstreamFailed(logger, call.RequestId, target.Provider.Name, timeout ? "timeout" : e.Message);
                if (!last) continue;
                await FinishAsync(call, CallOutcome.UpstreamFailed, null, 0);
                await ((timeout
                    ? new GatewayError(504, "upstream_timeout", $"The provider '{target.Provider.Name}' did not answer in time.")
                    : new GatewayError(502, "upstream_error", $"The provider '{target.Provider.Name}' could not be reached.")) with { Dialect = dialect })
                    .ExecuteAsync(http);
                return;
            }

            using (response)
            {
                if (!response.IsSuccessStatusCode)
                {
                    var status = (int)response.StatusCode;
                    if (status >= 500 && !last) continue;
                    var errorBody = await ReadBoundedAsync(response.Content, MaxErrorBodyBytes, total.Token);
                    await FinishAsync(call, CallOutcome.UpstreamFailed, null, 0);
                    // An upstream rate limit passes through with its advice on when to retry.
                    if (response.Headers.RetryAfter is { } retryAfter) http.Response.Headers.RetryAfter = retryAfter.ToString();
                    await WriteUpstreamErrorAsync(http, dialect, target, status, errorBody, response.Content.Headers.ContentType);
                    return;
                }
                if (call.Request.Stream) await RelayStreamAsync(http, call, dialect, response, total.Token);
                else await RelayBodyAsync(http, call, dialect, response, total.Token);
                return;
            }
        }
    }

    private HttpRequestMessage BuildRequest(Call call, RouteTarget target, ApiDialect dialect)
    {
        var provider = target.Provider;
        var translated = IsTranslated(dialect, target);
        var anthropic = dialect == ApiDialect.Anthropic || translated;
        var body = translated
            ? Anthropic.ChatToMessages.TranslateRequest(call.Request.Root, target.UpstreamModel, call.MaxOutputTokens)
            : call.Request.Rewrite(target.UpstreamModel, call.ClampedOutputTokens);
        var message = new HttpRequestMessage(HttpMethod.Post, anthropic ? provider.MessagesEndpoint : provider.ChatEndpoint)
        {
            Content = new ByteArrayContent(body),
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (anthropic)
        {
            if (target.ApiKey is { } key) message.Headers.TryAddWithoutValidation("x-api-key", key);
            message.Headers.TryAddWithoutValidation("anthropic-version", call.AnthropicVersion ?? AnthropicVersion);
            if (call.AnthropicBeta is { } beta) message.Headers.TryAddWithoutValidation("anthropic-beta", beta);
        }
        else if (target.ApiKey is { } key) message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        foreach (var (name, value) in provider.Headers)
        {
            message.Headers.Remove(name);
            message.Headers.TryAddWithoutValidation(name, value);
        }
        message.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(call.Request.Stream ? "text/event-stream" : "application/json"));
        return message;
    }

    /// <summary>An OpenAI-dialect call to an Anthropic-kind provider: translated both ways.</summary>
    private static bool IsTranslated(ApiDialect dialect, RouteTarget target) => dialect == ApiDialect.OpenAi && target.Provider.Kind == ProviderKind.Anthropic;

    private async Task RelayBodyAsync(HttpContext http, Call call, ApiDialect dialect, HttpResponseMessage response, CancellationToken ct)
    {
        byte[] body;
        try
        {
            body = await ReadBoundedAsync(response.Content, _options.MaxResponseBodyBytes, ct);
        }
        catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException or InvalidDataException)
        {
            var clientLeft = http.RequestAborted.IsCancellationRequested;
            // The provider did the work even if the body was lost on the way: charge for a completed prompt at least.
            await FinishAsync(call, clientLeft ? CallOutcome.ClientAborted : CallOutcome.UpstreamFailed, null, 0);
            if (!clientLeft)
                await ((e is OperationCanceledException
                    ? new GatewayError(504, "upstream_timeout", "The provider did not finish its answer in time.")
                    : new GatewayError(502, "upstream_error", "The provider's answer was cut off or too large.")) with { Dialect = dialect })
                    .ExecuteAsync(http);
            return;
        }

        TokenUsage? usage = null;
        long counted = 0;
        var anthropicBody = dialect == ApiDialect.Anthropic || IsTranslated(dialect, call.Target);
        var answered = false;
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                answered = true;
                if (root.TryGetProperty("usage", out var u))
                    usage = anthropicBody ? AnthropicWire.ReadUsage(u) : OpenAiWire.ReadUsage(u);
                if (usage is null)
                    counted = anthropicBody ? AnthropicWire.CountContent(root, call.Encoding ?? BpeEncoding.O200kBase) : OpenAiWire.CountCompletion(root, call.Encoding ?? BpeEncoding.O200kBase);
                if (IsTranslated(dialect, call.Target))
                    body = Anthropic.ChatToMessages.TranslateResponse(root, call.Request.Model, "chatcmpl-" + call.RequestId, call.StartedAt.ToUnixTimeSeconds());
            }
        }
        catch (JsonException)
        {
            // Handled below with any other body that is not an answer.
        }
        if (!answered)
        {
            // A 200 whose body is empty, truncated, an HTML page from a proxy or JSON but not an object is no answer:
            // no client can use it, so nothing is charged and the caller gets an error it can retry on.
            LogUpstreamFailed(logger, call.RequestId, call.Target.Provider.Name, $"a 200 answer that is not a JSON object ({body.Length} bytes)");
            await FinishAsync(call, CallOutcome.UpstreamFailed, null, 0);
            await (new GatewayError(502, "upstream_error", $"The provider '{call.Target.Provider.Name}' sent an answer that is not valid JSON.") { Dialect = dialect }).ExecuteAsync(http);
            return;
        }
        var settlement = await FinishAsync(call, CallOutcome.Completed, usage, counted);
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = IsTranslated(dialect, call.Target) ? "application/json" : response.Content.Headers.ContentType?.ToString() ?? "application/json";
        http.Response.ContentLength = body.Length;
        http.Response.Headers["x-tollgate-charge-micros"] = settlement.ChargedMicros.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (call.Hold is not null)
            http.Response.Headers["x-tollgate-balance-micros"] = settlement.BalanceAfterMicros.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // The record is durable before the client sees the answer: an acknowledged call is never missing from usage.
        await call.RecordWritten;
        await http.Response.Body.WriteAsync(body, CancellationToken.None);
    }

    private async Task RelayStreamAsync(HttpContext http, Call call, ApiDialect dialect, HttpResponseMessage response, CancellationToken ct)
    {
        var counting = call.Encoding ?? BpeEncoding.O200kBase;
        IStreamRelay relay = dialect == ApiDialect.Anthropic
            ? new AnthropicNativeRelay(counting)
            : IsTranslated(dialect, call.Target)
                ? new AnthropicTranslatedRelay(new Anthropic.MessagesStreamTranslator(call.Request.Model, "chatcmpl-" + call.RequestId,
                    call.StartedAt.ToUnixTimeSeconds(), call.Request.ClientWantsUsage), counting)
                : new OpenAiStreamRelay(call.Request.ClientWantsUsage, counting);
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = "text/event-stream; charset=utf-8";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["x-accel-buffering"] = "no";
        var writer = http.Response.BodyWriter;
        // Output allowed before the call is cut off: the hold's output bound, with slack for counting differences.
        var limit = call.MaxOutputTokens * call.Request.N;
        limit += Math.Max(16, limit / 50);
        var outcome = CallOutcome.Completed;
        var final = new ArrayBufferWriter<byte>(64);
        await using var upstreamBody = await response.Content.ReadAsStreamAsync(ct);
        await using var reader = new SseReader(upstreamBody);
        try
        {
            await http.Response.StartAsync(ct);
            while (await reader.ReadAsync(ct) is { } e)
            {
                if (relay.IsFinal(e))
                {
                    // The end marker (like any closing error below) waits until the charge and the record are durable.
                    relay.OnEvent(e, final);
                    break;
                }
                relay.OnEvent(e, writer);
                call.Output = relay.Output;
                if (relay.Usage is null && call.Hold is not null && relay.Output.Exceeds(limit))
                {
                    outcome = CallOutcome.CutOff;
                    relay.WriteError(final, "hold_exhausted",
                        $"The answer was cut off: it exceeded the {call.MaxOutputTokens * call.Request.N} output tokens the credit hold covers.");
                    break;
                }
                var flush = await writer.FlushAsync(ct);
                if (flush.IsCanceled || flush.IsCompleted) { outcome = CallOutcome.ClientAborted; break; }
            }
            if (outcome == CallOutcome.Completed && !relay.Completed)
            {
                outcome = CallOutcome.UpstreamFailed;
                relay.WriteError(final, "upstream_error", "The provider ended the stream before finishing its answer.");
            }
        }
        catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException or InvalidDataException or JsonException)
        {
            if (http.RequestAborted.IsCancellationRequested) outcome = CallOutcome.ClientAborted;
            else if (calls.ShutdownDeadline.IsCancellationRequested)
            {
                // The server is stopping and its grace period is up: end the stream cleanly, charged for what was relayed.
                outcome = CallOutcome.CutOff;
                relay.WriteError(final, "server_shutting_down", "The gateway is restarting and its grace period ran out: the answer was cut off, and only the part delivered is charged.");
            }
            else
            {
                outcome = CallOutcome.UpstreamFailed;
                LogUpstreamFailed(logger, call.RequestId, call.Target.Provider.Name, e is OperationCanceledException ? "timeout mid-stream" : e.Message);
                relay.WriteError(final, e is OperationCanceledException ? "upstream_timeout" : "upstream_error", "The provider's stream failed.");
            }
        }
        // Without final usage, Anthropic's message_start still gave the exact prompt side.
        var counted = relay.Usage is null ? relay.Output.Count : 0;
        TokenUsage? partial = relay.Usage is null && relay.StartUsage is { } start
            ? OpenAiWire.Clamp(start.InputTokens, counted, start.CacheReadTokens, start.CacheWriteTokens, 0)
            : null;
        await FinishAsync(call, outcome, relay.Usage, counted, partial);
        await call.RecordWritten;
        if (final.WrittenCount > 0 && !http.RequestAborted.IsCancellationRequested)
        {
            try
            {
                await writer.WriteAsync(final.WrittenMemory, CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
                // The client left after the charge was recorded; nothing else to do.
            }
        }
    }

    private async Task WriteUpstreamErrorAsync(HttpContext http, ApiDialect dialect, RouteTarget target, int status, byte[] body, MediaTypeHeaderValue? contentType)
    {
        var text = System.Text.Encoding.UTF8.GetString(body);
        if (IsTranslated(dialect, target) && status < 500)
        {
            if (Anthropic.AnthropicErrors.IsOperatorProblem(status, body))
            {
                await new GatewayError(502, "upstream_error", $"The provider '{target.Provider.Name}' refused the gateway's credentials or quota (HTTP {status}).").ExecuteAsync(http);
                return;
            }
            http.Response.StatusCode = status;
            http.Response.ContentType = "application/json";
            await http.Response.Body.WriteAsync(Anthropic.AnthropicErrors.ToOpenAiError(status, body), CancellationToken.None);
            return;
        }
        // The provider refusing Tollgate's own credentials or quota is the operator's problem, not the caller's.
        if (status is 401 or 403 || (status == 429 && text.Contains("insufficient_quota", StringComparison.Ordinal)))
        {
            await new GatewayError(502, "upstream_error", $"The provider '{target.Provider.Name}' refused the gateway's credentials or quota (HTTP {status}).") { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        if (status >= 500)
        {
            await new GatewayError(502, "upstream_error", $"The provider '{target.Provider.Name}' failed (HTTP {status}).",
                Extra: new Dictionary<string, object?> { ["upstream_status"] = status }) { Dialect = dialect }.ExecuteAsync(http);
            return;
        }
        // Other 4xx: the request itself was wrong for the provider; pass its answer through as it came.
        http.Response.StatusCode = status;
        http.Response.ContentType = contentType?.ToString() ?? "application/json";
        await http.Response.Body.WriteAsync(body, CancellationToken.None);
    }

    private static async Task<byte[]> ReadBoundedAsync(HttpContent content, long max, CancellationToken ct)
    {
        if (content.Headers.ContentLength > max) throw new InvalidDataException($"The upstream body exceeds {max} bytes.");
        await using var stream = await content.ReadAsStreamAsync(ct);
        using var buffer = new MemoryStream(content.Headers.ContentLength is { } n and > 0 and < int.MaxValue ? (int)n : 4096);
        var chunk = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int read;
            while ((read = await stream.ReadAsync(chunk, ct)) > 0)
            {
                if (buffer.Length + read > max) throw new InvalidDataException($"The upstream body exceeds {max} bytes.");
                buffer.Write(chunk, 0, read);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        return buffer.ToArray();
    }

    /// <summary>
    /// Rates what was delivered and settles the hold, then queues the usage record (awaited by the caller through
    /// <c>call.RecordWritten</c>). Without reported usage the charge is an estimate — the prompt count plus the
    /// counted output — never more than the hold. Nothing delivered (no usage, no output, not completed): the hold is
    /// released and nothing recorded.
    /// </summary>
    private async Task<Settlement> FinishAsync(Call call, CallOutcome outcome, TokenUsage? reported, long countedOutput, TokenUsage? partial = null)
    {
        if (call.Settled) return call.Settlement;
        call.Settled = true;
        var nothingDelivered = reported is null && partial is null && countedOutput == 0 && outcome != CallOutcome.Completed;
        if (nothingDelivered)
        {
            if (call.Hold is not null) await billing.VoidAsync(call.Hold, call.CapHolds);
            call.Settlement = new Settlement(0, 0, call.Hold?.DebitBalanceAfter ?? 0, null);
            return call.Settlement;
        }

        call.Delivered = true;
        var estimated = reported is null;
        var usage = reported ?? partial ?? new TokenUsage(Math.Min(ApproximatePrompt(call), TokenUsage.MaxTokens), Math.Min(countedOutput, TokenUsage.MaxTokens));
        call.UsedTokens = usage.InputTokens + usage.OutputTokens;
        var target = call.Target;
        Rating? rating = target.Priced is { } priced ? Rater.Rate(priced, usage, call.StartedAt, call.PlanMarkup) : null;
        var price = rating is { } rated ? UserPrice(target, rated, byokOptions.Value.FeePercent) : 0;
        var basePrice = price;
        if (call.Agent is { } agent) price = agent.UserPrice(price);
        if (estimated && call.Hold is not null) price = Math.Min(price, call.Hold.Amount);
        var latencyMs = (long)Stopwatch.GetElapsedTime(call.StartedTimestamp).TotalMilliseconds;
        var metadata = UsageMetadata(call, usage, estimated, outcome, latencyMs);
        var now = time.GetUtcNow();
        UsageRecord Record(long charged, string? transferId) => new(call.RequestId, call.Caller.AccountId, call.Caller.KeyId, target.ModelId,
            target.Provider.Name, usage.InputTokens, usage.OutputTokens, usage.CacheReadTokens, usage.CacheWriteTokens, usage.ReasoningTokens,
            rating?.ProviderCostMicros, rating is { } r ? PricingEndpoints.Dec(r.ProviderCostUsd) : null,
            rating is null ? null : call.Caller.IsInternal ? price : charged,
            rating is null ? UsageBillingStatus.NeedsReview
                : call.Caller.IsInternal ? UsageBillingStatus.Internal
                : target.IsByok ? UsageBillingStatus.Byok : UsageBillingStatus.Billed,
            call.RequestId, metadata, transferId, now, call.StartedAt) { CustomerId = call.CustomerId };

        Settlement settlement;
        if (call.Hold is not null)
        {
            // The record commits in the same transaction as the charge (see LedgerCommit.Records).
            // Through a per-token agent, the creator's share of the markup moves in the settlement's own atomic batch.
            Func<long, string, Ledger.TransferRequest?>? share = null;
            if (call.Agent is { PricingMode: Marketplace.PricingModes.PerToken } through)
            {
                var earnings = await market.EarningsAccountAsync(through.CreatorAccountId, CancellationToken.None);
                var charge = new Marketplace.AgentCharge(through, earnings, call.Caller.AccountId, basePrice, rating?.ProviderCostMicros);
                var revenue = call.Hold.CreditAccountId;
                share = (charged, id) => Marketplace.MarketplaceService.ShareTransfer(charge, id, charged, revenue, call.RequestId);
            }
            var settling = Stopwatch.GetTimestamp();
            settlement = await billing.SettleAsync(call.Hold, call.CapHolds, price, metadata, Record, share);
            metrics.SettleLatency.Record(Stopwatch.GetElapsedTime(settling).TotalSeconds);
        }
        else
        {
            settlement = new Settlement(0, 0, 0, null);
            // Nothing held (an internal key, an unpriced model): no ledger transaction to ride on; the store groups inserts itself.
            call.RecordWritten = records.InsertManyAsync([Record(0, null)], CancellationToken.None);
        }
        call.Settlement = settlement;
        if (settlement.TransferId is not null) alerts.PostBalance(call.Caller.AccountId, settlement.BalanceAfterMicros);
        for (var i = 0; i < settlement.CapSpentMicros.Count && i < call.CapLegs.Count; i++)
        {
            var leg = call.CapLegs[i];
            alerts.PostUsage(call.Caller.AccountId, leg.AlertSubject, leg.Period.Key, settlement.CapSpentMicros[i], leg.Cap.LimitMicros);
        }
        if (settlement.UnchargedMicros > 0) LogUncharged(logger, call.RequestId, settlement.UnchargedMicros);
        KeyValuePair<string, object?> model = new("model", target.ModelId);
        metrics.GatewayCalls.Add(1, new("provider", target.Provider.Name), model, new("outcome", outcome.ToString().ToLowerInvariant()));
        metrics.GatewayTokens.Add(usage.InputTokens, model, new("kind", "input"));
        metrics.GatewayTokens.Add(usage.OutputTokens, model, new("kind", "output"));
        if (settlement.ChargedMicros > 0) metrics.GatewayCharged.Add(settlement.ChargedMicros, model);
        return settlement;
    }

    /// <summary>The prompt count for an estimated charge: exact with the model's tokenizer, else an o200k approximation (not the byte bound used for holds).</summary>
    private static long ApproximatePrompt(Call call) =>
        call.Encoding is not null || call.Request.Dialect == ApiDialect.Anthropic
            ? call.PromptTokens
            : TokenEstimator.CountChatPrompt(call.Request.Root, BpeEncoding.O200kBase);

    private static string UsageMetadata(Call call, TokenUsage usage, bool estimated, CallOutcome outcome, long latencyMs)
    {
        using var buffer = new MemoryStream(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("endpoint", call.Request.Dialect == ApiDialect.Anthropic ? "messages" : "chat.completions");
            w.WriteString("model", call.Target.ModelId);
            w.WriteString("upstream_model", call.Target.UpstreamModel);
            w.WriteBoolean("stream", call.Request.Stream);
            w.WriteBoolean("estimated", estimated);
            if (call.Target.IsByok) w.WriteBoolean("byok", true);
            w.WriteString("outcome", outcome switch
            {
                CallOutcome.Completed => "completed", CallOutcome.CutOff => "cut_off", CallOutcome.ClientAborted => "client_aborted", _ => "upstream_failed",
            });
            w.WriteNumber("latency_ms", latencyMs);
            w.WriteNumber("input_tokens", usage.InputTokens);
            w.WriteNumber("output_tokens", usage.OutputTokens);
            w.WriteNumber("cache_read_tokens", usage.CacheReadTokens);
            w.WriteNumber("cache_write_tokens", usage.CacheWriteTokens);
            w.WriteNumber("reasoning_tokens", usage.ReasoningTokens);
            if (call.ClampedOutputTokens is { } clamped) w.WriteNumber("clamped_max_tokens", clamped);
            if (call.Agent is { } agent) w.WriteString("agent_id", agent.Id);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Request {RequestId}: provider {Provider} failed: {Reason}")]
    private static partial void LogUpstreamFailed(ILogger logger, string requestId, string provider, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Request {RequestId}: the call cost {Micros} micro-USD more than the hold and the available balance covered; not charged")]
    private static partial void LogUncharged(ILogger logger, string requestId, long micros);

    [LoggerMessage(Level = LogLevel.Error, Message = "Request {RequestId}: relaying failed")]
    private static partial void LogRelayFailed(ILogger logger, Exception e, string requestId);
}
