using Microsoft.Extensions.Options;

namespace Tollgate.Features.Gateway;

/// <summary>Configuration section <c>Tollgate:Gateway</c>: how the proxy sizes holds and treats requests.</summary>
public sealed record GatewayOptions
{
    public const string Section = "Tollgate:Gateway";

    /// <summary>Output tokens a hold covers when the request sets no <c>max_tokens</c> / <c>max_completion_tokens</c>.</summary>
    public int DefaultMaxOutputTokens { get; init; } = 4_096;

    /// <summary>
    /// When the balance cannot cover the requested maximum output, lower the request's max tokens to what it affords
    /// instead of refusing with 402 — provided that is at least <see cref="MinClampedOutputTokens"/>.
    /// </summary>
    public bool ClampMaxTokens { get; init; }

    public int MinClampedOutputTokens { get; init; } = 256;

    /// <summary>Largest request body the gateway routes accept (prompts with images are large).</summary>
    public long MaxRequestBodyBytes { get; init; } = 32L << 20;

    /// <summary>Largest non-streaming upstream response body the gateway will relay.</summary>
    public long MaxResponseBodyBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Alternatives per model id, tried in order on connect failure, 5xx or timeout before any byte reached the
    /// client, e.g. <c>Fallbacks:openai/gpt-4o: ["azure/gpt-4o"]</c>.
    /// </summary>
    public Dictionary<string, string[]> Fallbacks { get; init; } = new(StringComparer.Ordinal);

    /// <summary>
    /// On SIGTERM: how long calls in flight (streams included) may run on while the server refuses new connections;
    /// calls still running then are cancelled and charged for what they delivered. Sets the host's shutdown timeout.
    /// </summary>
    public int ShutdownGraceSeconds { get; init; } = 30;
}

public enum ProviderKind { OpenAi, Anthropic, Demo }

/// <summary>One upstream, configured as <c>Tollgate:Providers:&lt;name&gt;</c>; the name is the model id's prefix.</summary>
public sealed record ProviderOptions
{
    public const string Section = "Tollgate:Providers";

    /// <summary><c>openai</c> (any OpenAI-compatible base URL), <c>anthropic</c> (Messages API) or <c>demo</c> (built in).</summary>
    public string Kind { get; init; } = "openai";

    /// <summary>OpenAI kind: the base including <c>/v1</c> (requests go to <c>{BaseUrl}/chat/completions</c>);
    /// Anthropic kind: the host (requests go to <c>{BaseUrl}/v1/messages</c>).</summary>
    public string? BaseUrl { get; init; }

    public string? ApiKey { get; init; }

    /// <summary>Name of an environment variable holding the key, used when <see cref="ApiKey"/> is empty.</summary>
    public string? ApiKeyEnv { get; init; }

    /// <summary>Extra headers sent with every upstream request (e.g. <c>anthropic-version</c>, an org id).</summary>
    public Dictionary<string, string> Headers { get; init; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Total time allowed for one upstream call, streaming included.</summary>
    public int TimeoutSeconds { get; init; } = 600;

    /// <summary>Time allowed until the upstream answers with headers; past it the call is a timeout (504) and may fall back.</summary>
    public int FirstByteTimeoutSeconds { get; init; } = 120;

    public int ConnectTimeoutSeconds { get; init; } = 10;

    /// <summary>Set false to list the provider without routing to it.</summary>
    public bool Enabled { get; init; } = true;

    internal static bool TryParseKind(string? text, out ProviderKind kind)
    {
        switch (text?.ToLowerInvariant())
        {
            case "openai": kind = ProviderKind.OpenAi; return true;
            case "anthropic": kind = ProviderKind.Anthropic; return true;
            case "demo": kind = ProviderKind.Demo; return true;
            default: kind = default; return false;
        }
    }
}

internal sealed class GatewayOptionsValidator : IValidateOptions<GatewayOptions>
{
    public ValidateOptionsResult Validate(string? name, GatewayOptions o)
    {
        var errors = new List<string>();
        if (o.DefaultMaxOutputTokens is < 1 or > 1_000_000) errors.Add("Tollgate:Gateway:DefaultMaxOutputTokens must be 1–1,000,000.");
        if (o.MinClampedOutputTokens is < 1 or > 1_000_000) errors.Add("Tollgate:Gateway:MinClampedOutputTokens must be 1–1,000,000.");
        if (o.MaxRequestBodyBytes < 1024) errors.Add("Tollgate:Gateway:MaxRequestBodyBytes must be at least 1024.");
        if (o.ShutdownGraceSeconds is < 0 or > 3600) errors.Add("Tollgate:Gateway:ShutdownGraceSeconds must be 0–3600.");
        if (o.MaxResponseBodyBytes < 1024) errors.Add("Tollgate:Gateway:MaxResponseBodyBytes must be at least 1024.");
        foreach (var (model, alternatives) in o.Fallbacks)
        {
            if (!model.Contains('/')) errors.Add($"Tollgate:Gateway:Fallbacks:{model}: use 'provider/model' ids.");
            foreach (var a in alternatives)
                if (!a.Contains('/')) errors.Add($"Tollgate:Gateway:Fallbacks:{model}: '{a}' is not a 'provider/model' id.");
        }
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
