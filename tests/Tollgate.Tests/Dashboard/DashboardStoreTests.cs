using Tollgate.Features.Dashboard;
using Tollgate.Features.Metering;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Dashboard;

/// <summary>The dashboard's aggregates over usage_records, on every engine: per UTC day, per model, filters, account scope.</summary>
public sealed class DashboardStoreTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    private static readonly DateTimeOffset Day0 = new(2026, 10, 1, 0, 0, 0, TimeSpan.Zero);

    private static UsageRecord Record(string accountId, string id, DateTimeOffset at, string model, long price, UsageBillingStatus status = UsageBillingStatus.Billed) =>
        new(id, accountId, "key_1", model, "openai", 100, 50, 0, 0, 0, price / 2, null, price, status, null, null, null, at, at);

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Aggregates_GroupByUtcDayAndModel_OnlyForTheAccountAndWindow(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var dashboard = app.Get<DashboardStore>();
        var account = await app.CreateAccountAsync();
        var other = await app.CreateAccountAsync();

        Assert.Equal((0, 0), ((await dashboard.AggregatesAsync(account, Day0, CancellationToken.None)).Days.Count, (await dashboard.AggregatesAsync(account, Day0, CancellationToken.None)).Models.Count));
        Assert.Empty(await dashboard.RecentAsync(account, null, null, 10, CancellationToken.None));

        foreach (var r in new[]
                 {
                     Record(account, "a", Day0.AddHours(1), "m1", 1_000),
                     Record(account, "b", Day0.AddHours(23).AddMinutes(59), "m2", 3_000),
                     Record(account, "c", Day0.AddDays(1), "m1", 500), // midnight belongs to the next day
                     Record(account, "d", Day0.AddDays(2).AddHours(5), "m1", 0, UsageBillingStatus.NeedsReview) with { UserPriceMicros = null },
                     Record(account, "old", Day0.AddTicks(-10), "m1", 7_777), // before the window
                     Record(other, "x", Day0.AddHours(2), "m1", 9_999),
                 })
            Assert.True(await store.InsertAsync(r, CancellationToken.None));

        var (days, models) = await dashboard.AggregatesAsync(account, Day0, CancellationToken.None);
        Assert.Equal(new[] { (Day0, 2L, 300L, 4_000L), (Day0.AddDays(1), 1L, 150L, 500L), (Day0.AddDays(2), 1L, 150L, 0L) },
            days.Select(d => (d.Day, d.Requests, d.Tokens, d.PriceMicros)));
        Assert.Equal(new[] { ("m2", 1L, 3_000L), ("m1", 3L, 1_500L) }, models.Select(m => (m.Model, m.Requests, m.PriceMicros)));

        Assert.Equal(new[] { "d", "c", "b", "a", "old" }, (await dashboard.RecentAsync(account, null, null, 10, CancellationToken.None)).Select(r => r.Id));
        Assert.Equal(new[] { "d", "c", "a" }, (await dashboard.RecentAsync(account, "m1", null, 3, CancellationToken.None)).Select(r => r.Id));
        Assert.Equal(new[] { "d" }, (await dashboard.RecentAsync(account, null, "needs_review", 10, CancellationToken.None)).Select(r => r.Id));
        Assert.Null((await dashboard.RecentAsync(account, null, "needs_review", 10, CancellationToken.None))[0].PriceMicros);

        var listed = await dashboard.AccountsAsync(500, CancellationToken.None);
        Assert.Contains(listed, a => a.Id == account && a.BalanceMicros == 0);
    }
}
