using static Tollgate.Tests.Api.AdminApi;

namespace Tollgate.Tests.Api;

/// <summary>Amounts and credit limits are bounded (10^15 micro-USD) so no counter or available balance can overflow.</summary>
public sealed class AmountLimitTests(AdminApiFixture fixture) : IClassFixture<AdminApiFixture>
{
    private const long Max = 1_000_000_000_000_000;

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_AboveMaximumEitherSign_Returns400AndChangesNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        await app.GrantAsync(id, 10);
        var before = await SnapshotAsync(app, id);

        foreach (var amount in new[] { Max + 1, -(Max + 1), long.MaxValue, long.MinValue })
        {
            var response = await app.Admin.PostAsJsonAsync($"/admin/v1/accounts/{id}/credits",
                new { amount_micros = amount, idempotency_key = "too-big-" + (amount > 0 ? "p" : "n") + amount.ToString().Length });
            var problem = await AssertProblemAsync(response, HttpStatusCode.BadRequest, "invalid_request");
            Assert.Equal("amount_micros", problem.GetProperty("param").GetString());
        }

        Assert.Equal(before, await SnapshotAsync(app, id));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Grant_AtMaximum_SucceedsAndLaterGrantsStillWork(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var big = await app.CreateAccountAsync();
        Assert.Equal(Max, await app.GrantAsync(big, Max));
        var other = await app.CreateAccountAsync();
        Assert.Equal(5, await app.GrantAsync(other, 5));
        await AssertAuditHealthyAsync(app.Admin);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreateAccount_CreditLimitAboveMaximum_Returns400(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var response = await app.Admin.PostAsJsonAsync("/admin/v1/accounts", new { name = "huge", credit_limit_micros = long.MaxValue });
        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "invalid_request");

        var atMax = await app.Admin.PostAsJsonAsync("/admin/v1/accounts", new { name = "max", credit_limit_micros = Max });
        Assert.Equal(HttpStatusCode.Created, atMax.StatusCode);
        var account = await atMax.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(Max, account.GetProperty("available_micros").GetInt64());
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Transfers_AmountAboveMaximum_ReportsAmountTooLargeAndStoresNothing(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var id = await app.CreateAccountAsync();
        var ledgerId = (await app.Admin.GetFromJsonAsync<JsonElement>($"/admin/v1/accounts/{id}")).GetProperty("ledger_account_id").GetInt64();
        var transferId = "huge-" + Guid.NewGuid().ToString("N");
        var response = await app.Admin.PostAsJsonAsync("/admin/v1/transfers", new
        {
            transfers = new[] { new { id = transferId, kind = "posted", debit_account_id = 2L, credit_account_id = ledgerId, amount_micros = Max + 1 } },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var results = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("amount_too_large", results[0].GetProperty("result").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.GetAsync($"/admin/v1/transfers/{transferId}")).StatusCode);
    }
}
