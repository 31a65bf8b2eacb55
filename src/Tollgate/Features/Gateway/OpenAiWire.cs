using System.Buffers;
using System.Text.Json;
using Tollgate.Features.Gateway.Tokens;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway;

/// <summary>Reading OpenAI chat completion usage and content (non-streaming bodies and stream chunks).</summary>
internal static class OpenAiWire
{
    /// <summary>
    /// OpenAI <c>usage</c> → Tollgate usage. <c>prompt_tokens</c> already includes cached tokens and
    /// <c>completion_tokens</c> already includes reasoning tokens (OpenAI's semantics), so nothing is added on top;
    /// DeepSeek's <c>prompt_cache_hit_tokens</c> stands in for <c>cached_tokens</c>. Counts are clamped into
    /// Tollgate's valid range (a provider's nonsense must not fail a settlement).
    /// </summary>
    public static TokenUsage? ReadUsage(JsonElement usage)
    {
        if (usage.ValueKind != JsonValueKind.Object) return null;
        var prompt = Int(usage, "prompt_tokens");
        var completion = Int(usage, "completion_tokens");
        var cached = usage.TryGetProperty("prompt_tokens_details", out var pd) && pd.ValueKind == JsonValueKind.Object ? Int(pd, "cached_tokens") : 0;
        if (cached == 0) cached = Int(usage, "prompt_cache_hit_tokens");
        var reasoning = usage.TryGetProperty("completion_tokens_details", out var cd) && cd.ValueKind == JsonValueKind.Object ? Int(cd, "reasoning_tokens") : 0;
        return Clamp(prompt, completion, cached, 0, reasoning);
    }

    public static TokenUsage Clamp(long input, long output, long cacheRead, long cacheWrite, long reasoning)
    {
        input = Math.Clamp(input, 0, TokenUsage.MaxTokens);
        output = Math.Clamp(output, 0, TokenUsage.MaxTokens);
        cacheRead = Math.Clamp(cacheRead, 0, input);
        cacheWrite = Math.Clamp(cacheWrite, 0, input - cacheRead);
        reasoning = Math.Clamp(reasoning, 0, output);
        return new TokenUsage(input, output, cacheRead, cacheWrite, reasoning);
    }

    private static long Int(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n : 0;

    /// <summary>Tokens of the generated content in a non-streaming response (all choices), for when it reports no usage.</summary>
    public static long CountCompletion(JsonElement response, BpeEncoding? encoding)
    {
        long tokens = 0;
        if (!response.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array) return 0;
        foreach (var choice in choices.EnumerateArray())
            if (choice.TryGetProperty("message", out var m)) tokens += CountDelta(m, encoding);
        return tokens;
    }

    /// <summary>Tokens of the content, reasoning and tool-call arguments in a message (each text counted whole).</summary>
    public static long CountDelta(JsonElement delta, BpeEncoding? encoding)
    {
        long tokens = 0;
        ForEachText(delta, text => tokens += TokenEstimator.CountText(text, encoding));
        return tokens;
    }

    /// <summary>Calls <paramref name="action"/> with each generated text of a message or stream delta: content,
    /// reasoning, refusal, tool names and tool-call arguments.</summary>
    public static void ForEachText(JsonElement delta, Action<string?> action)
    {
        if (delta.ValueKind != JsonValueKind.Object) return;
        foreach (var name in (ReadOnlySpan<string>)["content", "reasoning_content", "reasoning", "refusal"])
            if (delta.TryGetProperty(name, out var text) && text.ValueKind == JsonValueKind.String) action(text.GetString());
        if (delta.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
            foreach (var call in calls.EnumerateArray())
                if (call.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object)
                {
                    if (f.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String) action(n.GetString());
                    if (f.TryGetProperty("arguments", out var a) && a.ValueKind == JsonValueKind.String) action(a.GetString());
                }
    }
}

/// <summary>What a relay learned from the upstream's answer.</summary>
internal interface IUsageMeter
{
    /// <summary>The usage the upstream reported, if it did.</summary>
    TokenUsage? Usage { get; }
    /// <summary>The output relayed so far, counted (an estimate; used when no usage is reported).</summary>
    OutputCounter Output { get; }
    /// <summary>The upstream finished the answer normally.</summary>
    bool Completed { get; }
}

/// <summary>Relays one upstream stream to the client, event by event, metering it on the way.</summary>
internal interface IStreamRelay : IUsageMeter
{
    /// <summary>Writes the client's frames for one upstream event to <paramref name="output"/>.</summary>
    void OnEvent(in SseEvent e, IBufferWriter<byte> output);

    /// <summary>The stream's closing event (OpenAI's <c>[DONE]</c>, Anthropic's <c>message_stop</c>), which the gateway holds back until the charge is recorded.</summary>
    bool IsFinal(in SseEvent e);

    /// <summary>The prompt-side usage reported before the end (Anthropic's message_start), if any.</summary>
    TokenUsage? StartUsage { get; }

    /// <summary>The frames that end a stream the gateway cuts off or that failed (an in-band error, then the end marker).</summary>
    void WriteError(IBufferWriter<byte> output, string code, string message);
}

/// <summary>
/// Relays an OpenAI chat completions stream event by event. The final usage chunk (requested upstream whatever the
/// client asked) is forwarded only if the client asked for it; every other event is forwarded as it came.
/// </summary>
internal sealed class OpenAiStreamRelay(bool clientWantsUsage, BpeEncoding encoding) : IStreamRelay
{
    public OutputCounter Output { get; } = new(encoding);

    public TokenUsage? StartUsage => null;

    public bool IsFinal(in SseEvent e) => e.IsDone;

    public void WriteError(IBufferWriter<byte> output, string code, string message)
    {
        Frame(output, new GatewayError(code == "hold_exhausted" ? 402 : 502, code, message).ToJson());
        Frame(output, "[DONE]"u8);
    }

    public TokenUsage? Usage { get; private set; }
    public bool Completed { get; private set; }

    /// <summary>Writes the frames for one upstream event to <paramref name="output"/>.</summary>
    public void OnEvent(in SseEvent e, IBufferWriter<byte> output)
    {
        if (e.IsDone)
        {
            Completed = true;
            Frame(output, "[DONE]"u8);
            return;
        }
        var forward = true;
        try
        {
            var chunk = StreamChunkScanner.ScanOpenAiChunk(e.Data.Span, Output);
            if (chunk.Finished) Completed = true;
            // The usage object comes once per stream: parsed whole, as the non-streaming path reads it.
            if (chunk.UsageAt >= 0 && e.Data.Span[chunk.UsageAt] == (byte)'{')
            {
                using var usageDoc = JsonDocument.Parse(e.Data.Slice(chunk.UsageAt, chunk.UsageLength));
                if (OpenAiWire.ReadUsage(usageDoc.RootElement) is { } u)
                {
                    Usage = u;
                    if (chunk.ChoicesEmpty && !clientWantsUsage) forward = false;
                }
            }
        }
        catch (JsonException error)
        {
            // Every SDK stops at a frame it cannot parse, so relaying it only moves the failure to the client: end the
            // stream here with an error event instead, charged for what was delivered before it.
            throw new InvalidDataException("The provider sent a stream event that is not valid JSON.", error);
        }
        if (forward) Frame(output, e.Data.Span);
    }

    public static void Frame(IBufferWriter<byte> output, ReadOnlySpan<byte> data)
    {
        output.Write("data: "u8);
        output.Write(data);
        output.Write("\n\n"u8);
    }
}
