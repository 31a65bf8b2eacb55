using System.Text;

namespace Tollgate.Tests.Processes;

/// <summary>Tests that run <c>tollgate serve</c> child processes under load: one at a time, so they neither starve nor disturb the rest.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ChildProcessCollection
{
    public const string Name = "Child processes";
}

/// <summary>Small admin API calls the process tests share.</summary>
internal static class ServerApi
{
    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    /// <summary>Creates a prepaid account funded with <paramref name="grantMicros"/> and a revenue ledger account.</summary>
    public static async Task<(string AccountId, long CustomerLedgerId, long RevenueLedgerId)> CreateFundedAccountAsync(HttpClient admin, long grantMicros)
    {
        var account = await ReadOkAsync(await admin.PostAsync("/admin/v1/accounts", Json("""{"name":"load customer"}""")), HttpStatusCode.Created);
        var accountId = account.GetProperty("id").GetString()!;
        await ReadOkAsync(await admin.PostAsync($"/admin/v1/accounts/{accountId}/credits",
            Json($$"""{"amount_micros":{{grantMicros}},"idempotency_key":"seed","reason":"seed"}""")));
        var revenue = await ReadOkAsync(await admin.PostAsync("/admin/v1/ledger/accounts", Json("""{"kind":"revenue"}""")), HttpStatusCode.Created);
        return (accountId, account.GetProperty("ledger_account_id").GetInt64(), revenue.GetProperty("id").GetInt64());
    }

    public static async Task<JsonElement> ReadOkAsync(HttpResponseMessage response, HttpStatusCode expected = HttpStatusCode.OK)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"{response.RequestMessage?.RequestUri}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    public static async Task<JsonElement> AuditAsync(HttpClient admin)
    {
        var audit = await ReadOkAsync(await admin.GetAsync("/admin/v1/ledger/audit"));
        Assert.True(audit.GetProperty("violations").GetArrayLength() == 0, "audit violations: " + audit.GetProperty("violations"));
        return audit;
    }

    /// <summary>Every statement line of an account, newest first, following the cursor.</summary>
    public static async Task<List<JsonElement>> StatementAsync(HttpClient admin, string accountId)
    {
        var lines = new List<JsonElement>();
        string? cursor = null;
        for (var page = 0; page < 1_000; page++)
        {
            var body = await ReadOkAsync(await admin.GetAsync($"/admin/v1/accounts/{accountId}/ledger?limit=500" + (cursor is null ? "" : "&cursor=" + cursor)));
            lines.AddRange(body.GetProperty("data").EnumerateArray());
            cursor = body.GetProperty("next_cursor").GetString();
            if (cursor is null) return lines;
        }
        throw new InvalidOperationException("statement did not end");
    }
}
