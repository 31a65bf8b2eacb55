using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Tollgate.Tests.Alerts;

/// <summary>One request as the receiver saw it.</summary>
internal sealed record ReceivedWebhook(byte[] Body, string? Signature, string? EventId, string? EventType, string? ContentType, DateTimeOffset At)
{
    public string Text => Encoding.UTF8.GetString(Body);
    public JsonElement Json => JsonDocument.Parse(Body).RootElement.Clone();
}

/// <summary>
/// A customer's webhook endpoint on real Kestrel at 127.0.0.1: records every POST to <c>/hook</c> and answers with the
/// queued status codes (<see cref="RespondWith"/>), then 200.
/// </summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<int> _responses = new();
    private readonly List<ReceivedWebhook> _received = [];

    private WebhookReceiver(WebApplication app) => _app = app;

    public string Url { get; private set; } = "";

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var receiver = new WebhookReceiver(app);
        app.MapPost("/hook", async (HttpContext http) =>
        {
            using var buffer = new MemoryStream();
            await http.Request.Body.CopyToAsync(buffer);
            var h = http.Request.Headers;
            lock (receiver._received)
                receiver._received.Add(new ReceivedWebhook(buffer.ToArray(), h["Tollgate-Signature"].FirstOrDefault(), h["Tollgate-Event-Id"].FirstOrDefault(),
                    h["Tollgate-Event-Type"].FirstOrDefault(), http.Request.ContentType, DateTimeOffset.UtcNow));
            return Results.StatusCode(receiver._responses.TryDequeue(out var code) ? code : 200);
        });
        await app.StartAsync();
        receiver.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/hook";
        return receiver;
    }

    /// <summary>The next requests get these status codes, in order; after them, 200.</summary>
    public void RespondWith(params int[] codes)
    {
        foreach (var c in codes) _responses.Enqueue(c);
    }

    public IReadOnlyList<ReceivedWebhook> Received
    {
        get { lock (_received) return _received.ToList(); }
    }

    /// <summary>Waits until at least <paramref name="count"/> requests arrived (fails after <paramref name="seconds"/>).</summary>
    public async Task<IReadOnlyList<ReceivedWebhook>> WaitForAsync(int count, int seconds = 20)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (Received.Count < count)
        {
            Assert.True(DateTime.UtcNow < until, $"expected {count} webhook requests within {seconds} s, got {Received.Count}");
            await Task.Delay(25);
        }
        return Received;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>
/// How a customer verifies a Tollgate webhook, written from the documentation and independently of the server's code:
/// parse <c>t=…,v1=…</c>, HMAC-SHA256 over "{t}.{body}" keyed with the secret's UTF-8 bytes, constant-time compare,
/// and reject timestamps outside the tolerance.
/// </summary>
internal static class ReceiverSignature
{
    public static bool Verify(string? header, byte[] body, string secret, TimeSpan tolerance, DateTimeOffset now)
    {
        if (header is null) return false;
        string? t = null;
        var signatures = new List<string>();
        foreach (var part in header.Split(','))
        {
            var eq = part.IndexOf('=');
            if (eq <= 0) return false;
            var (k, v) = (part[..eq].Trim(), part[(eq + 1)..].Trim());
            if (k == "t") t = v;
            else if (k == "v1") signatures.Add(v);
        }
        if (t is null || signatures.Count == 0 || !long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds)) return false;
        if (Math.Abs((now - DateTimeOffset.FromUnixTimeSeconds(seconds)).TotalSeconds) > tolerance.TotalSeconds) return false;

        using var hmac = new HMACSHA256(Encoding.UTF8.GetBytes(secret));
        var signed = Encoding.ASCII.GetBytes(t + ".").Concat(body).ToArray();
        var expected = hmac.ComputeHash(signed);
        return signatures.Any(s => s.Length == expected.Length * 2 && IsHex(s)
                                   && CryptographicOperations.FixedTimeEquals(Convert.FromHexString(s), expected));
    }

    private static bool IsHex(string s) => s.All(Uri.IsHexDigit);
}
