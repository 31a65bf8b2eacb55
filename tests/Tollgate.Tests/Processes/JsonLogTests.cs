namespace Tollgate.Tests.Processes;

/// <summary><c>tollgate serve</c> logs JSON lines by default, each request's lines carrying its request id.</summary>
[Collection(ChildProcessCollection.Name)]
public sealed class JsonLogTests
{
    [Fact]
    public async Task Serve_WritesJsonLinesWithTheRequestIdInScope()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        await using var server = await TollgateServer.StartAsync(database, new Dictionary<string, string?> { ["Logging__LogLevel__Default"] = "Information" });
        using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/audit");
        request.Headers.Add("x-request-id", "json-log-test-1");
        var response = await server.Admin.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("json-log-test-1", response.Headers.GetValues("x-request-id").Single());

        JsonElement? access = null;
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (access is null && DateTime.UtcNow < deadline)
        {
            foreach (var line in server.Output.Split('\n').Where(l => l.Contains("json-log-test-1", StringComparison.Ordinal)))
            {
                var json = JsonDocument.Parse(line).RootElement.Clone();
                if (json.GetProperty("Category").GetString() == "Tollgate.Access") access = json;
            }
            if (access is null) await Task.Delay(50);
        }
        Assert.True(access is not null, server.Output);
        var entry = access.Value;
        Assert.Equal("Information", entry.GetProperty("LogLevel").GetString());
        Assert.Equal("/admin/v1/audit", entry.GetProperty("State").GetProperty("Route").GetString());
        Assert.Equal(200, entry.GetProperty("State").GetProperty("Status").GetInt32());
        Assert.Contains(entry.GetProperty("Scopes").EnumerateArray(),
            s => s.ValueKind == JsonValueKind.Object && s.TryGetProperty("request_id", out var id) && id.GetString() == "json-log-test-1");
        Assert.DoesNotContain(TollgateServer.AdminKey, server.Output);
    }
}
