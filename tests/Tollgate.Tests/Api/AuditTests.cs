using Tollgate.Infrastructure.Data;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Api;

/// <summary>The audit log: admin and account-admin changes with actor, target, before/after; scoped, paged and append-only.</summary>
public sealed class AuditTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static async Task<List<JsonElement>> EntriesAsync(HttpClient client, string url)
    {
        var page = await MeteringApi.BodyAsync(await client.GetAsync(url), HttpStatusCode.OK);
        return page.GetProperty("data").EnumerateArray().ToList();
    }

    [Theory]
    [InlineData("/admin/v1/accounts/{id}/keys/{keyId}", "keys", "key_2")]
    [InlineData("/admin/v1/accounts/{id}/credits", "accounts", "acct_1")]
    [InlineData("/admin/v1/pricing/models/{provider}/{**model}", "models", "openai/gpt-x/mini")]
    [InlineData("/api/v1/keys", "keys", null)]
    public void The_target_is_what_the_last_route_parameters_name(string template, string type, string? id)
    {
        var values = new Microsoft.AspNetCore.Routing.RouteValueDictionary
        {
            ["id"] = "acct_1", ["keyId"] = "key_2", ["provider"] = "openai", ["model"] = "gpt-x/mini",
        };
        Assert.Equal((type, id), Tollgate.Features.Audit.AuditFilter.Target(Microsoft.AspNetCore.Routing.Patterns.RoutePatternFactory.Parse(template), values));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Admin_and_account_changes_are_recorded_with_actor_target_and_before_after(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);

        var grant = await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/credits",
            AdminApi.JsonBody("""{"amount_micros":2500000,"idempotency_key":"audit-grant","reason":"welcome"}"""));
        Assert.Equal(HttpStatusCode.OK, grant.StatusCode);
        var grantRequestId = grant.Headers.GetValues("x-request-id").Single();

        // The account's own key creates and revokes a key.
        var created = await MeteringApi.BodyAsync(await c.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"ci"}""")), HttpStatusCode.Created);
        var newKey = created.Str("key")!;
        var newKeyId = created.Str("id")!;
        Assert.Equal(HttpStatusCode.NoContent, (await c.Client.DeleteAsync($"/api/v1/keys/{newKeyId}")).StatusCode);
        // Reads and refused attempts of strangers are not changes by this account.
        Assert.Equal(HttpStatusCode.OK, (await c.Client.GetAsync("/api/v1/keys")).StatusCode);

        var entries = await EntriesAsync(app.Admin, $"/admin/v1/audit?target=accounts:{c.AccountId}&action=" +
            Uri.EscapeDataString("POST /admin/v1/accounts/{id}/credits"));
        var grantEntry = Assert.Single(entries);
        Assert.Equal("admin", grantEntry.Str("actor_type"));
        Assert.StartsWith("adm_", grantEntry.Str("actor_id"));
        Assert.Equal(c.AccountId, grantEntry.Str("account_id"));
        Assert.Equal(200, grantEntry.GetProperty("status").GetInt32());
        Assert.Equal(grantRequestId, grantEntry.Str("request_id"));
        Assert.Equal("127.0.0.1", grantEntry.Str("source_ip"));
        Assert.Equal(0, grantEntry.GetProperty("before").GetProperty("balance_micros").GetInt64());
        Assert.Equal(2_500_000, grantEntry.GetProperty("after").GetProperty("balance_micros").GetInt64());

        var revoke = Assert.Single(await EntriesAsync(app.Admin, $"/admin/v1/audit?target=keys:{newKeyId}&action=" +
            Uri.EscapeDataString("DELETE /api/v1/keys/{keyId}")));
        Assert.Equal("key", revoke.Str("actor_type"));
        Assert.Equal(c.KeyId, revoke.Str("actor_id"));
        Assert.Equal(204, revoke.GetProperty("status").GetInt32());
        Assert.Equal(JsonValueKind.Null, revoke.GetProperty("before").GetProperty("revoked_at").ValueKind);
        Assert.Equal(JsonValueKind.String, revoke.GetProperty("after").GetProperty("revoked_at").ValueKind);

        var create = Assert.Single(await EntriesAsync(app.Admin, $"/admin/v1/audit?actor={c.KeyId}&action=" + Uri.EscapeDataString("POST /api/v1/keys")));
        Assert.Equal(newKeyId, create.Str("target_id"));
        Assert.Equal("ci", create.GetProperty("after").Str("name"));
        // The key itself is shown once to its creator and never kept in the audit.
        Assert.Equal("[redacted]", create.GetProperty("after").Str("key"));
        var all = await app.Admin.GetStringAsync($"/admin/v1/audit?limit=500");
        Assert.DoesNotContain(newKey, all);
        Assert.DoesNotContain(c.Key, all);
        Assert.DoesNotContain(TestApp.AdminKey, all);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_plan_definition_and_an_accounts_plan_change_are_recorded_with_the_plan_before_and_after(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        var planId = "audit" + Guid.NewGuid().ToString("N")[..10];
        Assert.Equal(HttpStatusCode.Created, (await app.Admin.PutAsync($"/admin/v1/plans/{planId}",
            AdminApi.JsonBody("""{"name":"Audited","monthly_price_cents":500}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody($$"""{"plan":"{{planId}}"}"""))).StatusCode);
        // A refused change is recorded as an attempt, with nothing after it.
        Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.PutAsync($"/admin/v1/accounts/{c.AccountId}/plan", AdminApi.JsonBody("""{"plan":"no-such-plan"}"""))).StatusCode);

        var definition = Assert.Single(await EntriesAsync(app.Admin, $"/admin/v1/audit?target=plans:{planId}"));
        Assert.Equal(("PUT /admin/v1/plans/{id}", 201), (definition.Str("action"), definition.GetProperty("status").GetInt32()));
        Assert.Equal("Audited", definition.GetProperty("after").GetProperty("definition").Str("name"));

        var changes = await EntriesAsync(app.Admin, $"/admin/v1/audit?target=accounts:{c.AccountId}&action=" + Uri.EscapeDataString("PUT /admin/v1/accounts/{id}/plan"));
        Assert.Equal([400, 200], changes.Select(e => e.GetProperty("status").GetInt32()));
        Assert.Equal(JsonValueKind.Null, changes[0].GetProperty("after").ValueKind);
        Assert.Equal(planId, changes[0].GetProperty("before").Str("plan"));
        Assert.Equal(("default", planId), (changes[1].GetProperty("before").Str("plan"), changes[1].GetProperty("after").Str("plan")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task An_account_sees_only_its_own_entries_newest_first_in_pages(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var a = await app.CustomerAsync(1_000);
        using var b = await app.CustomerAsync(1_000);
        for (var i = 0; i < 3; i++)
            Assert.Equal(HttpStatusCode.Created, (await a.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody($$"""{"name":"a{{i}}"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await b.Client.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"b0"}"""))).StatusCode);

        var mine = await EntriesAsync(a.Client, "/api/v1/audit?limit=500");
        Assert.All(mine, e => Assert.Equal(a.AccountId, e.Str("account_id")));
        // A's three key creations; the operator's creation of A, grant and key for A.
        Assert.Equal(6, mine.Count);
        Assert.Contains(mine, e => e.Str("action") == "POST /admin/v1/accounts" && e.Str("target_id") == a.AccountId);
        Assert.Equal(["a2", "a1", "a0"], mine.Where(e => e.Str("actor_type") == "key").Select(e => e.GetProperty("after").Str("name")));
        Assert.Contains(mine, e => e.Str("actor_type") == "admin" && e.Str("action") == "POST /admin/v1/accounts/{id}/credits");

        var first = await MeteringApi.BodyAsync(await a.Client.GetAsync("/api/v1/audit?limit=2"), HttpStatusCode.OK);
        var cursor = first.Str("next_cursor")!;
        var second = await MeteringApi.BodyAsync(await a.Client.GetAsync($"/api/v1/audit?limit=2&cursor={cursor}"), HttpStatusCode.OK);
        var third = await MeteringApi.BodyAsync(await a.Client.GetAsync($"/api/v1/audit?limit=2&cursor={second.Str("next_cursor")}"), HttpStatusCode.OK);
        Assert.Equal(JsonValueKind.Null, third.GetProperty("next_cursor").ValueKind);
        var paged = new[] { first, second, third }.SelectMany(p => p.GetProperty("data").EnumerateArray()).Select(e => e.Str("id")).ToList();
        Assert.Equal(mine.Select(e => e.Str("id")), paged);

        // B cannot reach A's entries by filter, and bad cursors or limits are refused.
        Assert.Empty(await EntriesAsync(b.Client, $"/api/v1/audit?actor={a.KeyId}"));
        Assert.Equal(HttpStatusCode.BadRequest, (await a.Client.GetAsync("/api/v1/audit?cursor=abc")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await a.Client.GetAsync("/api/v1/audit?limit=0")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await a.Client.GetAsync("/admin/v1/audit")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_audit_table_refuses_updates_and_deletes(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000);
        var entry = (await EntriesAsync(app.Admin, $"/admin/v1/audit?target=accounts:{c.AccountId}&limit=1")).Single();
        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);
        foreach (var sql in new[] { "UPDATE audit_log SET status = 500 WHERE id = @id", "DELETE FROM audit_log WHERE id = @id" })
        {
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            var p = command.CreateParameter();
            p.ParameterName = "id";
            p.Value = entry.Str("id");
            command.Parameters.Add(p);
            var e = await Assert.ThrowsAnyAsync<System.Data.Common.DbException>(() => command.ExecuteNonQueryAsync());
            Assert.Contains("append-only", e.Message);
        }
        var again = (await EntriesAsync(app.Admin, $"/admin/v1/audit?target=accounts:{c.AccountId}&limit=1")).Single();
        Assert.Equal(entry.GetRawText(), again.GetRawText());
    }
}
