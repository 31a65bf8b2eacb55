using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using Tollgate.Tests.Ledger;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Api;

/// <summary>
/// Failed password sign-ins and wrong admin keys are limited per IP and per email in 15-minute windows: past the limit
/// every attempt, right or wrong, gets 429 with Retry-After until the window ends.
/// </summary>
public sealed class SignInLimitTests
{
    private static readonly Dictionary<string, string?> Limits = new()
    {
        ["Tollgate:SignIn:MaxFailuresPerIp"] = "5",
        ["Tollgate:SignIn:MaxFailuresPerEmail"] = "3",
        ["Tollgate:SignIn:WindowSeconds"] = "900",
    };

    private static Task<HttpResponseMessage> SignInAsync(TestApp app, string email, string password) =>
        app.Anonymous.PostAsync("/api/v1/sessions", AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{password}}"}"""));

    [Fact]
    public async Task Failures_past_the_limit_get_429_with_retry_after_until_the_window_ends()
    {
        var clock = new ManualTimeProvider(DateTimeOffset.UtcNow);
        await using var app = await TestApp.StartAsync(TestDatabases.Sqlite, Limits, services: s => s.AddSingleton<TimeProvider>(clock));
        var accountId = await app.CreateAccountAsync("sign-in limits");
        foreach (var who in new[] { "alice", "bob" })
            Assert.Equal(HttpStatusCode.Created, (await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
                AdminApi.JsonBody($$"""{"email":"{{who}}@example.com","password":"{{who}}'s right password"}"""))).StatusCode);

        // Per email: three wrong passwords for alice, then even her right one waits.
        for (var i = 0; i < 3; i++) Assert.Equal(HttpStatusCode.Unauthorized, (await SignInAsync(app, "alice@example.com", "guess " + i)).StatusCode);
        var blocked = await SignInAsync(app, "Alice@Example.com", "alice's right password");
        Assert.Equal((HttpStatusCode)429, blocked.StatusCode);
        var retryAfter = long.Parse(blocked.Headers.GetValues("Retry-After").Single());
        Assert.InRange(retryAfter, 1, 900);
        Assert.Equal("too_many_attempts", (await MeteringApi.BodyAsync(blocked, (HttpStatusCode)429)).Str("code"));

        // Bob's own email is fine; a success clears nothing of alice's; two more failures fill the IP's five.
        Assert.Equal(HttpStatusCode.Created, (await SignInAsync(app, "bob@example.com", "bob's right password")).StatusCode);
        for (var i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.Unauthorized, (await SignInAsync(app, "bob@example.com", "guess " + i)).StatusCode);
        Assert.Equal((HttpStatusCode)429, (await SignInAsync(app, "bob@example.com", "bob's right password")).StatusCode);

        // Admin keys: wrong keys count per IP in their own window; then the right key waits too. No key at all is not a guess.
        using var guesser = new HttpClient { BaseAddress = app.BaseAddress };
        for (var i = 0; i < 5; i++)
        {
            guesser.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", $"tg_admin_guess_{i}_0123456789abcdefghijklmnopq");
            Assert.Equal(HttpStatusCode.Unauthorized, (await guesser.GetAsync("/admin/v1/audit")).StatusCode);
        }
        var adminBlocked = await app.Admin.GetAsync("/admin/v1/audit");
        Assert.Equal((HttpStatusCode)429, adminBlocked.StatusCode);
        Assert.True(adminBlocked.Headers.Contains("Retry-After"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/admin/v1/audit")).StatusCode);

        // The window ends: everyone may try again.
        clock.Advance(TimeSpan.FromSeconds(retryAfter + 1));
        Assert.Equal(HttpStatusCode.OK, (await app.Admin.GetAsync("/admin/v1/audit")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await SignInAsync(app, "alice@example.com", "alice's right password")).StatusCode);
    }
}
