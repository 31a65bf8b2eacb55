using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Tollgate.Tests.Payments.Stripe;

/// <summary>One request the fake received: method, path, the Idempotency-Key, and the form fields as sent.</summary>
public sealed record StripeCall(string Method, string Path, string? IdempotencyKey, string? StripeVersion, IReadOnlyList<KeyValuePair<string, string>> Form)
{
    public string Query { get; init; } = "";

    public string? Field(string name) => Form.FirstOrDefault(f => f.Key == name).Value;
}

/// <summary>
/// A fake Stripe API on real Kestrel (127.0.0.1) speaking Stripe's wire format: <c>Authorization: Bearer sk_test_…</c>,
/// form-encoded bodies with bracket nesting, JSON answers, Stripe's error object, and its idempotency rule (the
/// first result stored per <c>Idempotency-Key</c> and replayed, other parameters with the same key →
/// <c>idempotency_error</c>; a key still in use by a concurrent request → 409 <c>idempotency_key_in_use</c>). Implements <c>POST /v1/customers</c>, <c>POST /v1/checkout/sessions</c> and
/// <c>POST /v1/billing_portal/sessions</c>, <c>GET /v1/customers/search</c> (by metadata; immediately consistent, unlike
/// Stripe's), and <c>GET /v1/charges/{id}</c> for charges set with <see cref="SetCharge"/>. <see cref="FailNext"/> makes the next requests fail with 500 before they
/// execute (so, like Stripe, the key is not consumed).
/// </summary>
public sealed class FakeStripe : IAsyncDisposable
{
    public const string SecretKey = "sk_test_fake_0123456789";

    private readonly WebApplication _app;
    private readonly object _gate = new();
    private readonly List<StripeCall> _calls = [];
    private readonly Dictionary<string, (string Fingerprint, int Status, string Body)> _idempotent = new(StringComparer.Ordinal);
    private readonly HashSet<string> _inProgress = new(StringComparer.Ordinal);
    private int _failNext;
    private long _sequence;

    private FakeStripe(WebApplication app, Uri baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    public Uri BaseUrl { get; }

    public IReadOnlyList<StripeCall> Calls { get { lock (_gate) return _calls.ToList(); } }

    /// <summary>How long each request with a new idempotency key takes to execute (widens the window of concurrent use).</summary>
    public TimeSpan ExecuteDelay { get; set; }

    /// <summary>The next <paramref name="count"/> requests answer 500 <c>api_error</c>.</summary>
    public void FailNext(int count) { lock (_gate) _failNext = count; }

    /// <summary>Sessions created, by id: what a real webhook's <c>data.object</c> would describe.</summary>
    public Dictionary<string, StripeCall> Sessions { get; } = new(StringComparer.Ordinal);

    private readonly Dictionary<string, (long Created, string PaymentStatus, long? AmountTotal)> _sessionState = new(StringComparer.Ordinal);

    /// <summary>The buyer paid: the session lists as complete and paid with this total (cents).</summary>
    public void MarkPaid(string sessionId, long amountTotal)
    {
        lock (_gate) _sessionState[sessionId] = (_sessionState[sessionId].Created, "paid", amountTotal);
    }

    public static async Task<FakeStripe> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        FakeStripe? fake = null;
        app.Run(context => fake!.HandleAsync(context));
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        fake = new FakeStripe(app, new Uri(address));
        return fake;
    }

    private async Task HandleAsync(HttpContext http)
    {
        var form = new List<KeyValuePair<string, string>>();
        if (http.Request.HasFormContentType)
            foreach (var (k, v) in await http.Request.ReadFormAsync())
                foreach (var value in v) form.Add(new(k, value ?? ""));
        var key = http.Request.Headers["Idempotency-Key"].FirstOrDefault();
        var call = new StripeCall(http.Request.Method, http.Request.Path, key, http.Request.Headers["Stripe-Version"].FirstOrDefault(), form)
        {
            Query = http.Request.QueryString.Value ?? "",
        };
        lock (_gate) _calls.Add(call);

        if (http.Request.Headers.Authorization.ToString() != "Bearer " + SecretKey)
        {
            await WriteAsync(http, 401, Error("invalid_request_error", null, "Invalid API Key provided."));
            return;
        }
        lock (_gate)
        {
            if (_failNext > 0)
            {
                _failNext--;
                goto fail;
            }
        }
        var fingerprint = string.Join("&", form.Select(f => f.Key + "=" + f.Value)) + "|" + call.Path;
        (int Status, string Body)? answer = null;
        if (key is not null)
        {
            lock (_gate)
            {
                if (_idempotent.TryGetValue(key, out var stored))
                    answer = stored.Fingerprint == fingerprint
                        ? (stored.Status, stored.Body)
                        : (400, Error("idempotency_error", null, "Keys for idempotent requests can only be used with the same parameters they were first used with."));
            }
            if (answer is not null) http.Response.Headers["Idempotent-Replayed"] = "true";
        }
        if (answer is null && key is not null)
        {
            lock (_gate)
                // Like Stripe: a request whose key another request is still executing with gets 409 and nothing is saved for it.
                if (!_inProgress.Add(key))
                    answer = (409, Error("idempotency_error", "idempotency_key_in_use",
                        "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later."));
            if (answer is null)
            {
                try
                {
                    if (ExecuteDelay > TimeSpan.Zero) await Task.Delay(ExecuteDelay);
                    answer = Execute(call);
                    lock (_gate) _idempotent[key] = (fingerprint, answer.Value.Status, answer.Value.Body);
                }
                finally
                {
                    lock (_gate) _inProgress.Remove(key);
                }
            }
        }
        answer ??= Execute(call);
        await WriteAsync(http, answer.Value.Status, answer.Value.Body);
        return;

    fail:
        await WriteAsync(http, 500, Error("api_error", null, "Something went wrong on Stripe's end."));
    }

    private readonly List<(string Id, Dictionary<string, string> Metadata)> _customers = [];
    private readonly Dictionary<string, (long Amount, long Refunded, string PaymentIntent, string? Account)> _charges = new(StringComparer.Ordinal);

    /// <summary>A charge as <c>GET /v1/charges/{id}</c> describes it now: its amount and cumulative refunded amount (cents).</summary>
    public void SetCharge(string id, long amount, long amountRefunded, string paymentIntent, string? account = null)
    {
        lock (_gate) _charges[id] = (amount, amountRefunded, paymentIntent, account);
    }

    private (int, string) Execute(StripeCall call)
    {
        var n = Interlocked.Increment(ref _sequence);
        if (call.Method == "GET" && call.Path == "/v1/customers/search")
        {
            // Only the query Tollgate makes: metadata['key']:'value'.
            var query = System.Web.HttpUtility.ParseQueryString(call.Query)["query"] ?? "";
            var match = System.Text.RegularExpressions.Regex.Match(query, @"^metadata\['([^']+)'\]:'([^']*)'$");
            if (!match.Success) return (400, Error("invalid_request_error", "parameter_invalid", "The search query is not supported by this fake.", "query"));
            List<Dictionary<string, object?>> hits;
            lock (_gate)
                hits = _customers.Where(c => c.Metadata.TryGetValue(match.Groups[1].Value, out var v) && v == match.Groups[2].Value)
                    .Select(c => new Dictionary<string, object?> { ["id"] = c.Id, ["object"] = "customer", ["metadata"] = c.Metadata }).ToList();
            return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["object"] = "search_result", ["data"] = hits, ["has_more"] = false, ["next_page"] = null, ["url"] = "/v1/customers/search",
            }));
        }
        if (call.Method == "GET" && call.Path.StartsWith("/v1/charges/", StringComparison.Ordinal))
        {
            var id = call.Path["/v1/charges/".Length..];
            lock (_gate)
                return _charges.TryGetValue(id, out var c)
                    ? (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                    {
                        ["id"] = id, ["object"] = "charge", ["amount"] = c.Amount, ["amount_captured"] = c.Amount, ["amount_refunded"] = c.Refunded,
                        ["refunded"] = c.Refunded == c.Amount, ["currency"] = "usd", ["paid"] = true, ["status"] = "succeeded", ["payment_intent"] = c.PaymentIntent,
                        ["livemode"] = false, ["metadata"] = c.Account is null ? new Dictionary<string, string>() : new Dictionary<string, string> { ["tollgate_account"] = c.Account },
                    }))
                    : (404, Error("invalid_request_error", "resource_missing", $"No such charge: '{id}'", "id"));
        }
        switch (call.Method, call.Path)
        {
            case ("POST", "/v1/customers"):
                lock (_gate) _customers.Add(($"cus_fake{n}", Metadata(call)));
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = $"cus_fake{n}", ["object"] = "customer", ["livemode"] = false,
                    ["metadata"] = Metadata(call),
                }));
            case ("POST", "/v1/checkout/sessions"):
                if (call.Field("mode") is null || call.Field("success_url") is null)
                    return (400, Error("invalid_request_error", "parameter_missing", "Missing required param: mode.", "mode"));
                var id = $"cs_test_fake{n}";
                lock (_gate)
                {
                    Sessions[id] = call;
                    _sessionState[id] = (DateTimeOffset.UtcNow.ToUnixTimeSeconds(), "unpaid", null);
                }
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = id, ["object"] = "checkout.session", ["mode"] = call.Field("mode"), ["status"] = "open", ["payment_status"] = "unpaid",
                    ["customer"] = call.Field("customer"), ["client_reference_id"] = call.Field("client_reference_id"), ["metadata"] = Metadata(call),
                    ["url"] = $"https://checkout.stripe.com/c/pay/{id}", ["livemode"] = false,
                }));
            case ("POST", "/v1/billing_portal/sessions"):
                if (call.Field("customer") is null) return (400, Error("invalid_request_error", "parameter_missing", "Missing required param: customer.", "customer"));
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = $"bps_fake{n}", ["object"] = "billing_portal.session", ["customer"] = call.Field("customer"),
                    ["url"] = $"https://billing.stripe.com/p/session/fake{n}", ["return_url"] = call.Field("return_url"),
                }));
            case ("POST", "/v1/transfers"):
                if (call.Field("destination") is not { } destination || !destination.StartsWith("acct_", StringComparison.Ordinal))
                    return (400, Error("invalid_request_error", "parameter_missing", "Missing required param: destination.", "destination"));
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = $"tr_fake{n}", ["object"] = "transfer", ["amount"] = long.Parse(call.Field("amount")!), ["currency"] = call.Field("currency"),
                    ["destination"] = destination, ["transfer_group"] = call.Field("transfer_group"), ["metadata"] = Metadata(call),
                }));
            case ("POST", "/v1/invoiceitems"):
                if (call.Field("customer") is null || call.Field("amount") is null) return (400, Error("invalid_request_error", "parameter_missing", "Missing required param: customer.", "customer"));
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = $"ii_fake{n}", ["object"] = "invoiceitem", ["customer"] = call.Field("customer"), ["amount"] = long.Parse(call.Field("amount")!),
                    ["currency"] = call.Field("currency"), ["description"] = call.Field("description"), ["metadata"] = Metadata(call),
                }));
            case ("POST", "/v1/invoices"):
                return (200, JsonSerializer.Serialize(new Dictionary<string, object?>
                {
                    ["id"] = $"in_fake{n}", ["object"] = "invoice", ["customer"] = call.Field("customer"), ["status"] = "draft",
                    ["auto_advance"] = call.Field("auto_advance") == "true", ["metadata"] = Metadata(call),
                }));
            case ("GET", "/v1/checkout/sessions"):
                return (200, ListSessions(call));
            default:
                return (404, Error("invalid_request_error", "resource_missing", $"Unrecognized request URL ({call.Method}: {call.Path})."));
        }
    }

    /// <summary>Stripe's list shape, newest first, filtered by <c>created[gte]</c>/<c>created[lt]</c>, paged by <c>limit</c> and <c>starting_after</c>.</summary>
    private string ListSessions(StripeCall call)
    {
        var q = System.Web.HttpUtility.ParseQueryString(call.Query);
        long.TryParse(q["created[gte]"], out var gte);
        var lt = long.TryParse(q["created[lt]"], out var l) ? l : long.MaxValue;
        var limit = int.TryParse(q["limit"], out var n) ? n : 10;
        List<object> page;
        bool more;
        lock (_gate)
        {
            var all = Sessions.Where(s => _sessionState[s.Key].Created >= gte && _sessionState[s.Key].Created < lt)
                .OrderByDescending(s => _sessionState[s.Key].Created).ThenByDescending(s => s.Key, StringComparer.Ordinal).ToList();
            if (q["starting_after"] is { } after) all = all.SkipWhile(s => s.Key != after).Skip(1).ToList();
            more = all.Count > limit;
            page = all.Take(limit).Select(s =>
            {
                var state = _sessionState[s.Key];
                return (object)new Dictionary<string, object?>
                {
                    ["id"] = s.Key, ["object"] = "checkout.session", ["mode"] = s.Value.Field("mode"), ["created"] = state.Created,
                    ["status"] = state.PaymentStatus == "paid" ? "complete" : "open", ["payment_status"] = state.PaymentStatus, ["amount_total"] = state.AmountTotal,
                    ["currency"] = "usd", ["metadata"] = Metadata(s.Value),
                };
            }).ToList();
        }
        return JsonSerializer.Serialize(new Dictionary<string, object> { ["object"] = "list", ["data"] = page, ["has_more"] = more, ["url"] = "/v1/checkout/sessions" });
    }

    private static Dictionary<string, string> Metadata(StripeCall call) =>
        call.Form.Where(f => f.Key.StartsWith("metadata[", StringComparison.Ordinal)).ToDictionary(f => f.Key[9..^1], f => f.Value);

    private static string Error(string type, string? code, string message, string? param = null) =>
        JsonSerializer.Serialize(new { error = new { type, code, message, param } });

    private static async Task WriteAsync(HttpContext http, int status, string body)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        http.Response.Headers["Request-Id"] = "req_fake" + Guid.NewGuid().ToString("N")[..12];
        await http.Response.WriteAsync(body);
    }

    /// <summary>The settings that point an app at this fake, with <paramref name="webhookSecrets"/> configured in order.</summary>
    public Dictionary<string, string?> Settings(params string[] webhookSecrets)
    {
        var settings = new Dictionary<string, string?> { ["Tollgate:Stripe:SecretKey"] = SecretKey, ["Tollgate:Stripe:ApiBaseUrl"] = BaseUrl.ToString() };
        for (var i = 0; i < webhookSecrets.Length; i++) settings[$"Tollgate:Stripe:WebhookSecrets:{i}"] = webhookSecrets[i];
        return settings;
    }

    /// <summary>A <c>Stripe-Signature</c> header computed as Stripe does (independently of Tollgate's verifier).</summary>
    public static string Sign(string payload, string secret, long timestamp)
    {
        using var hmac = new HMACSHA256(Encoding.UTF8.GetBytes(secret));
        var hex = Convert.ToHexString(hmac.ComputeHash(Encoding.UTF8.GetBytes($"{timestamp}.{payload}"))).ToLowerInvariant();
        return $"t={timestamp},v1={hex}";
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
