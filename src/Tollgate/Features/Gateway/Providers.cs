using System.Net;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Gateway;

/// <summary>
/// A configured upstream ready to call: where, with which key and headers, through which pooled client.
/// <see cref="Available"/> is false (with <see cref="UnavailableReason"/>) when it has no key or is disabled; its
/// models are then listed as unavailable and calls to them answer 503, instead of start-up failing.
/// </summary>
internal sealed class UpstreamProvider
{
    public required string Name { get; init; }
    public required ProviderKind Kind { get; init; }
    public required Uri BaseUrl { get; init; }
    public string? ApiKey { get; init; }
    public required IReadOnlyDictionary<string, string> Headers { get; init; }
    public required HttpClient Client { get; init; }
    public required TimeSpan Timeout { get; init; }
    public required TimeSpan FirstByteTimeout { get; init; }
    public string? UnavailableReason { get; init; }
    public bool Available => UnavailableReason is null;

    /// <summary>The OpenAI chat completions endpoint (OpenAI kind) or the Messages endpoint (Anthropic kind).</summary>
    public Uri ChatEndpoint => Kind switch
    {
        ProviderKind.Anthropic => new Uri(BaseUrl, "v1/messages"),
        _ => new Uri(BaseUrl, "chat/completions"),
    };

    public Uri MessagesEndpoint => new(BaseUrl, "v1/messages");
}

/// <summary>Every configured provider by name; built once at start-up from <c>Tollgate:Providers</c>.</summary>
internal sealed class ProviderRegistry : IDisposable
{
    private readonly Dictionary<string, UpstreamProvider> _providers = new(StringComparer.Ordinal);

    public ProviderRegistry(IOptions<Dictionary<string, ProviderOptions>> options, Func<string, string?> environment)
    {
        foreach (var (name, o) in options.Value.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            ProviderOptions.TryParseKind(o.Kind, out var kind);
            var key = string.IsNullOrEmpty(o.ApiKey) && !string.IsNullOrEmpty(o.ApiKeyEnv) ? environment(o.ApiKeyEnv) : o.ApiKey;
            string? unavailable = null;
            if (!o.Enabled) unavailable = "disabled in configuration";
            else if (kind != ProviderKind.Demo && string.IsNullOrEmpty(key))
                unavailable = o.ApiKeyEnv is { Length: > 0 } env
                    ? $"no API key: set Tollgate:Providers:{name}:ApiKey or the environment variable {env}"
                    : $"no API key: set Tollgate:Providers:{name}:ApiKey";
            var baseUrl = kind == ProviderKind.Demo ? new Uri("http://demo.invalid/v1/") : WithTrailingSlash(o.BaseUrl!);
            HttpMessageHandler handler = kind == ProviderKind.Demo
                ? new DemoProviderHandler()
                : new SocketsHttpHandler
                {
                    ConnectTimeout = TimeSpan.FromSeconds(o.ConnectTimeoutSeconds),
                    PooledConnectionLifetime = TimeSpan.FromMinutes(5),
                    PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
                    AutomaticDecompression = DecompressionMethods.None,
                    UseCookies = false,
                    AllowAutoRedirect = false,
                    EnableMultipleHttp2Connections = true,
                    // A provider gets the request and its key, not this process's trace context: by default HttpClient
                    // adds a traceparent header to every call (a fresh trace id when the caller sent none), through a
                    // diagnostics handler that also costs an Activity per call.
                    ActivityHeadersPropagator = null,
                };
            _providers[name] = new UpstreamProvider
            {
                Name = name,
                Kind = kind,
                BaseUrl = baseUrl,
                ApiKey = key,
                Headers = new Dictionary<string, string>(o.Headers, StringComparer.OrdinalIgnoreCase),
                // Timeouts are ours (first byte, total), applied per call through cancellation.
                Client = new HttpClient(handler) { Timeout = System.Threading.Timeout.InfiniteTimeSpan },
                Timeout = TimeSpan.FromSeconds(o.TimeoutSeconds),
                FirstByteTimeout = TimeSpan.FromSeconds(o.FirstByteTimeoutSeconds),
                UnavailableReason = unavailable,
            };
        }
    }

    public IReadOnlyCollection<UpstreamProvider> All => _providers.Values;

    public UpstreamProvider? Find(string name) => _providers.GetValueOrDefault(name);

    private static Uri WithTrailingSlash(string url) => new(url.EndsWith('/') ? url : url + "/");

    public void Dispose()
    {
        foreach (var p in _providers.Values) p.Client.Dispose();
    }

    /// <summary>Binds <c>Tollgate:Providers</c> and validates every entry at start-up.</summary>
    public static void Register(IServiceCollection services)
    {
        services.AddOptions<Dictionary<string, ProviderOptions>>()
            .Configure<IConfiguration>((d, config) =>
            {
                foreach (var section in config.GetSection(ProviderOptions.Section).GetChildren())
                    d[section.Key] = section.Get<ProviderOptions>() ?? new ProviderOptions();
            })
            .Validate(Validate).ValidateOnStart();
        services.AddSingleton(sp => new ProviderRegistry(sp.GetRequiredService<IOptions<Dictionary<string, ProviderOptions>>>(),
            Environment.GetEnvironmentVariable));
    }

    private static bool Validate(Dictionary<string, ProviderOptions> providers)
    {
        var errors = new List<string>();
        foreach (var (name, o) in providers)
        {
            var at = $"{ProviderOptions.Section}:{name}";
            if (name.Length == 0 || name.Contains('/') || name.Any(char.IsWhiteSpace)) errors.Add($"{at}: provider names have no '/' or spaces.");
            if (!ProviderOptions.TryParseKind(o.Kind, out var kind)) { errors.Add($"{at}:Kind must be openai, anthropic or demo (is '{o.Kind}')."); continue; }
            if (kind != ProviderKind.Demo
                && (!Uri.TryCreate(o.BaseUrl, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https")))
                errors.Add($"{at}:BaseUrl must be an absolute http(s) URL (is '{o.BaseUrl}').");
            if (o.TimeoutSeconds is < 1 or > 86_400) errors.Add($"{at}:TimeoutSeconds must be 1–86400.");
            if (o.FirstByteTimeoutSeconds is < 1 or > 86_400) errors.Add($"{at}:FirstByteTimeoutSeconds must be 1–86400.");
            if (o.ConnectTimeoutSeconds is < 1 or > 600) errors.Add($"{at}:ConnectTimeoutSeconds must be 1–600.");
        }
        if (errors.Count > 0) throw new OptionsValidationException(ProviderOptions.Section, typeof(ProviderOptions), errors);
        return true;
    }
}
