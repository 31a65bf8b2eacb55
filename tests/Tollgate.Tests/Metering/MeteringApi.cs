using System.Net.Http.Headers;
using Tollgate.Tests.Api;

namespace Tollgate.Tests.Metering;

/// <summary>One running app per engine, shared by the tests of one class; every test makes its own accounts.</summary>
public sealed class MeteringFixture() : SharedEngineApps();

/// <summary>An account with credits and an API key, and a client that sends the key.</summary>
internal sealed record Customer(string AccountId, string KeyId, string Key, HttpClient Client) : IDisposable
{
    public void Dispose() => Client.Dispose();
}

internal static class MeteringApi
{
    /// <summary>Creates an account, grants <paramref name="micros"/> (if any) and creates an API key for it.</summary>
    public static async Task<Customer> CustomerAsync(this TestApp app, long micros)
    {
        var accountId = await app.CreateAccountAsync("metering");
        if (micros > 0) await app.GrantAsync(accountId, micros);
        var response = await app.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", AdminApi.JsonBody("{}"));
        response.EnsureSuccessStatusCode();
        var key = await response.Content.ReadFromJsonAsync<JsonElement>();
        var client = new HttpClient { BaseAddress = app.BaseAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key.GetProperty("key").GetString());
        return new Customer(accountId, key.GetProperty("id").GetString()!, key.GetProperty("key").GetString()!, client);
    }

    public static Task<HttpResponseMessage> AuthorizeAsync(this Customer c, string id, long micros, int? ttlSeconds = null, string? metadataJson = null)
    {
        var ttl = ttlSeconds is { } t ? $""","ttl_seconds":{t}""" : "";
        var metadata = metadataJson is null ? "" : $""","metadata":{metadataJson}""";
        return c.Client.PostAsync("/api/v1/authorizations", AdminApi.JsonBody($$"""{"id":"{{id}}","amount_micros":{{micros}}{{ttl}}{{metadata}}}"""));
    }

    public static Task<HttpResponseMessage> CaptureAsync(this Customer c, string id, long micros) =>
        c.Client.PostAsync($"/api/v1/authorizations/{id}/capture", AdminApi.JsonBody($$"""{"amount_micros":{{micros}}}"""));

    public static Task<HttpResponseMessage> VoidAsync(this Customer c, string id) =>
        c.Client.PostAsync($"/api/v1/authorizations/{id}/void", null);

    public static async Task<JsonElement> AccountAsync(this Customer c) => await c.Client.GetFromJsonAsync<JsonElement>("/api/v1/account");

    public static async Task<JsonElement> BodyAsync(HttpResponseMessage response, HttpStatusCode expected)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    public static long Long(this JsonElement e, string name) => e.GetProperty(name).GetInt64();
    public static string? Str(this JsonElement e, string name) => e.GetProperty(name).GetString();
}
