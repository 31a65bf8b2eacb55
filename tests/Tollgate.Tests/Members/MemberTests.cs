using System.Net;
using System.Net.Http.Headers;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;

namespace Tollgate.Tests.Members;

/// <summary>Members, roles and dashboard sessions on the self-service API.</summary>
public sealed class MemberTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    private static HttpClient Session(TestApp app, string token)
    {
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    private static async Task<string> SignInAsync(TestApp app, string email, string password)
    {
        var session = await MeteringApi.BodyAsync(await app.Anonymous.PostAsync("/api/v1/sessions",
            AdminApi.JsonBody($$"""{"email":"{{email}}","password":"{{password}}"}""")), HttpStatusCode.Created);
        Assert.StartsWith("tg_sess_", session.Str("token"));
        return session.Str("token")!;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Roles_decide_who_may_change_the_account_and_sessions_sign_in_and_out(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("members");
        var owner = $"owner-{Guid.NewGuid():N}@example.com";
        var viewer = $"viewer-{Guid.NewGuid():N}@example.com";
        await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody($$"""{"email":"{{owner}}","password":"correct horse battery","role":"owner"}""")), HttpStatusCode.Created);

        using var ownerSession = Session(app, await SignInAsync(app, owner, "correct horse battery"));
        Assert.Equal(accountId, (await ownerSession.GetFromJsonAsync<JsonElement>("/api/v1/account")).Str("id"));
        await MeteringApi.BodyAsync(await ownerSession.PostAsync("/api/v1/members",
            AdminApi.JsonBody($$"""{"email":"{{viewer}}","password":"viewer password 1","role":"viewer"}""")), HttpStatusCode.Created);
        Assert.Equal(HttpStatusCode.Created, (await ownerSession.PostAsync("/api/v1/keys", AdminApi.JsonBody("""{"name":"from the dashboard"}"""))).StatusCode);

        using var viewerSession = Session(app, await SignInAsync(app, viewer, "viewer password 1"));
        var keys = await viewerSession.GetFromJsonAsync<JsonElement>("/api/v1/keys");
        Assert.Equal(1, keys.GetProperty("data").GetArrayLength());
        Assert.Equal(2, (await viewerSession.GetFromJsonAsync<JsonElement>("/api/v1/members")).GetProperty("data").GetArrayLength());
        foreach (var response in new[]
                 {
                     await viewerSession.PostAsync("/api/v1/keys", AdminApi.JsonBody("{}")),
                     await viewerSession.PostAsync("/api/v1/members", AdminApi.JsonBody("""{"email":"x@example.com","password":"0123456789"}""")),
                     await viewerSession.PutAsync("/api/v1/provider-keys/openai", AdminApi.JsonBody("""{"api_key":"sk-x"}""")),
                 })
            Assert.Equal("forbidden", (await MeteringApi.BodyAsync(response, HttpStatusCode.Forbidden)).Str("code"));

        // The last owner stays.
        var members = (await ownerSession.GetFromJsonAsync<JsonElement>("/api/v1/members")).GetProperty("data");
        var ownerId = members.EnumerateArray().Single(m => m.Str("role") == "owner").Str("user_id");
        Assert.Equal(HttpStatusCode.NotFound, (await ownerSession.DeleteAsync($"/api/v1/members/{ownerId}")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await viewerSession.DeleteAsync("/api/v1/sessions/current")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await viewerSession.GetAsync("/api/v1/account")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_member_uses_the_account_and_a_viewer_only_reads(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("roles");
        await app.GrantAsync(accountId, 1_000_000);
        var sessions = new Dictionary<string, HttpClient>();
        foreach (var role in new[] { "member", "viewer" })
        {
            var email = $"{role}-{Guid.NewGuid():N}@example.com";
            await MeteringApi.BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
                AdminApi.JsonBody($$"""{"email":"{{email}}","password":"a long password","role":"{{role}}"}""")), HttpStatusCode.Created);
            sessions[role] = Session(app, await SignInAsync(app, email, "a long password"));
        }
        using var member = sessions["member"];
        using var viewer = sessions["viewer"];
        HttpContent Hold(string id) => AdminApi.JsonBody($$"""{"id":"{{id}}","amount_micros":1000}""");
        HttpContent Usage(string id) => AdminApi.JsonBody($$"""{"id":"{{id}}","model":"demo/echo","input_tokens":10,"output_tokens":10}""");

        // A viewer's session can spend nothing and record nothing: every write is 403, and nothing changed.
        foreach (var response in new[]
                 {
                     await viewer.PostAsync("/api/v1/authorizations", Hold("viewer-hold")),
                     await viewer.PostAsync("/api/v1/usage/events", Usage("viewer-event")),
                     await viewer.PostAsync("/api/v1/entitlements/projects/usage", AdminApi.JsonBody("""{"id":"viewer-project"}""")),
                 })
            Assert.Equal("forbidden", (await MeteringApi.BodyAsync(response, HttpStatusCode.Forbidden)).Str("code"));
        Assert.Equal(HttpStatusCode.NotFound, (await viewer.GetAsync("/api/v1/authorizations/viewer-hold")).StatusCode);
        Assert.Equal(0, (await viewer.GetFromJsonAsync<JsonElement>("/api/v1/usage")).GetProperty("data").GetArrayLength());
        Assert.Equal(1_000_000, (await viewer.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros"));
        // Asking is reading.
        Assert.Equal(HttpStatusCode.OK, (await viewer.PostAsync("/api/v1/entitlements/check", AdminApi.JsonBody("""{"feature":"tools"}"""))).StatusCode);

        // A member uses the account (holds, usage) but manages nothing.
        Assert.Equal(HttpStatusCode.Created, (await member.PostAsync("/api/v1/authorizations", Hold("member-hold"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await member.PostAsync("/api/v1/usage/events", Usage("member-event"))).StatusCode);
        Assert.Equal("forbidden", (await MeteringApi.BodyAsync(await member.PostAsync("/api/v1/keys", AdminApi.JsonBody("{}")), HttpStatusCode.Forbidden)).Str("code"));
        Assert.True((await viewer.GetFromJsonAsync<JsonElement>("/api/v1/account")).Long("balance_micros") < 1_000_000);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_failed_sign_in_never_tells_whether_the_email_exists(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var accountId = await app.CreateAccountAsync("members");
        var email = $"someone-{Guid.NewGuid():N}@example.com";
        await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members", AdminApi.JsonBody($$"""{"email":"{{email}}","password":"the right password"}"""));

        var wrongPassword = await app.Anonymous.PostAsync("/api/v1/sessions", AdminApi.JsonBody($$"""{"email":"{{email}}","password":"the wrong password"}"""));
        var unknownEmail = await app.Anonymous.PostAsync("/api/v1/sessions", AdminApi.JsonBody("""{"email":"nobody@example.com","password":"the wrong password"}"""));

        var a = await MeteringApi.BodyAsync(wrongPassword, HttpStatusCode.Unauthorized);
        var b = await MeteringApi.BodyAsync(unknownEmail, HttpStatusCode.Unauthorized);
        Assert.Equal(a.Str("detail"), b.Str("detail"));
        Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody("""{"email":"not-an-email","password":"0123456789"}"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/members",
            AdminApi.JsonBody("""{"email":"short@example.com","password":"short"}"""))).StatusCode);
    }
}
