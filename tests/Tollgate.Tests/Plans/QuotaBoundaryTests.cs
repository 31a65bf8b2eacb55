using Microsoft.Extensions.DependencyInjection;
using Tollgate.Features.Plans;
using Tollgate.Tests.Api;
using Tollgate.Tests.Gateway.Fakes;
using Tollgate.Tests.Ledger;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Plans;

/// <summary>
/// A call in flight when its plan period ends: it counts once, in the period it started (its request and its tokens),
/// and the new period starts with nothing used. The app's clock is manual; the upstream is the fake provider, held
/// mid-call while the clock crosses the boundary.
/// </summary>
public sealed class QuotaBoundaryTests
{
    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task A_call_straddling_the_period_boundary_counts_once_in_the_period_it_started(string engine)
    {
        await using var fake = await FakeUpstream.StartAsync();
        var clock = new ManualTimeProvider(Start);
        await using var app = await TestApp.StartAsync(engine, new Dictionary<string, string?>
        {
            ["Tollgate:Providers:openai:BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
            ["Tollgate:Providers:openai:ApiKey"] = "sk-fake",
            ["Tollgate:Plans:two:IncludedRequests"] = "2",
            ["Tollgate:Plans:two:IncludedTokens"] = "1000000",
        }, services: s => s.AddSingleton<TimeProvider>(clock));
        using var c = await app.CustomerAsync(10_000_000);
        await MeteringApi.BodyAsync(await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"two"}""")), HttpStatusCode.OK);
        clock.Advance(TimeSpan.FromSeconds(2)); // past the key cache, which holds the plan
        var january = Start;
        var february = Start.AddMonths(1);
        HttpContent Chat(string text) => AdminApi.JsonBody($$"""{"model":"openai/gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"{{text}}"}]}""");
        static long Tokens(JsonElement body) => body.GetProperty("usage").Long("prompt_tokens") + body.GetProperty("usage").Long("completion_tokens");

        var first = await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat("first call")), HttpStatusCode.OK);

        // The second call reaches the provider one second before the period ends; the provider answers after it ended.
        clock.Advance(february.AddSeconds(-1) - clock.GetUtcNow());
        using var arrived = new SemaphoreSlim(0);
        using var release = new SemaphoreSlim(0);
        fake.Script = _ =>
        {
            arrived.Release();
            Assert.True(release.Wait(TimeSpan.FromSeconds(20)), "the test never released the call");
            return new FakeReply();
        };
        var straddling = c.Client.PostAsync("/v1/chat/completions", Chat("the straddling call"));
        Assert.True(await arrived.WaitAsync(TimeSpan.FromSeconds(20)), "the call never reached the provider");
        clock.Advance(TimeSpan.FromSeconds(2));
        release.Release();
        var second = await MeteringApi.BodyAsync(await straddling, HttpStatusCode.OK);
        fake.Script = null;

        var quotas = app.Get<QuotaStore>();
        // Tokens are added when the call settles, which may finish just after the client has its answer.
        var until = DateTime.UtcNow.AddSeconds(10);
        while (await quotas.UsedAsync(c.AccountId, QuotaStore.Tokens, january, CancellationToken.None) < Tokens(first) + Tokens(second) && DateTime.UtcNow < until)
            await Task.Delay(20);
        Assert.Equal(2, await quotas.UsedAsync(c.AccountId, QuotaStore.Requests, january, CancellationToken.None));
        Assert.Equal(Tokens(first) + Tokens(second), await quotas.UsedAsync(c.AccountId, QuotaStore.Tokens, january, CancellationToken.None));
        Assert.Equal(0, await quotas.UsedAsync(c.AccountId, QuotaStore.Requests, february, CancellationToken.None));
        Assert.Equal(0, await quotas.UsedAsync(c.AccountId, QuotaStore.Tokens, february, CancellationToken.None));
        var plan = await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/plan");
        Assert.Equal(february, plan.GetProperty("period_start").GetDateTimeOffset());
        Assert.All(plan.GetProperty("quotas").EnumerateArray(), q => Assert.Equal(0, q.Long("used")));

        // February has its two requests whole: the straddling call took none of them.
        for (var i = 0; i < 2; i++) Assert.Equal(HttpStatusCode.OK, (await c.Client.PostAsync("/v1/chat/completions", Chat($"february {i}"))).StatusCode);
        var refused = await MeteringApi.BodyAsync(await c.Client.PostAsync("/v1/chat/completions", Chat("one too many")), HttpStatusCode.TooManyRequests);
        Assert.Equal(("quota_exceeded", "requests"), (refused.GetProperty("error").Str("code"), refused.GetProperty("error").Str("kind")));
    }
}
