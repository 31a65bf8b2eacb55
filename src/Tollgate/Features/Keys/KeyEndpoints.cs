using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Accounts;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Keys;

/// <summary>A key as listed: never the key itself (it exists only in the creation response).</summary>
public sealed record KeyResponse(
    string Id, string AccountId, string? Name, string Prefix, string Type, DateTimeOffset CreatedAt, DateTimeOffset? LastUsedAt,
    DateTimeOffset? RevokedAt, IReadOnlyList<string>? AllowedModels, DateTimeOffset? ExpiresAt, int? RequestsPerMinute, long? TokensPerMinute,
    int? ConcurrentRequests, JsonElement? Metadata, string? RotatedFrom, string? CustomerId)
{
    public static KeyResponse From(ApiKeyRecord r) => new(r.Id, r.AccountId, r.Name, r.Prefix, r.Type, r.CreatedAt, r.LastUsedAt, r.RevokedAt,
        r.Settings.AllowedModels, r.Settings.ExpiresAt, r.Settings.RequestsPerMinute, r.Settings.TokensPerMinute, r.Settings.ConcurrentRequests,
        r.Settings.Metadata is { } m ? JsonDocument.Parse(m).RootElement.Clone() : null, r.RotatedFrom, r.Settings.CustomerId);
}

/// <summary>The creation (or rotation) response: the only time the full <see cref="Key"/> is shown.</summary>
public sealed record CreatedKeyResponse(
    string Id, string Key, string AccountId, string? Name, string Prefix, string Type, DateTimeOffset CreatedAt,
    IReadOnlyList<string>? AllowedModels, DateTimeOffset? ExpiresAt, int? RequestsPerMinute, long? TokensPerMinute, int? ConcurrentRequests,
    JsonElement? Metadata, string? RotatedFrom, string? CustomerId)
{
    public static CreatedKeyResponse From(CreatedKey k)
    {
        var r = KeyResponse.From(k.Record);
        return new(r.Id, k.Key, r.AccountId, r.Name, r.Prefix, r.Type, r.CreatedAt, r.AllowedModels, r.ExpiresAt, r.RequestsPerMinute,
            r.TokensPerMinute, r.ConcurrentRequests, r.Metadata, r.RotatedFrom, r.CustomerId);
    }
}

/// <summary>A new key's name, type (admin only) and restrictions; every field optional.</summary>
public sealed record NewKeyInput(
    string? Name = null, string? Type = null, IReadOnlyList<string>? AllowedModels = null, DateTimeOffset? ExpiresAt = null,
    int? RequestsPerMinute = null, long? TokensPerMinute = null, int? ConcurrentRequests = null, JsonElement? Metadata = null,
    string? CustomerId = null);

/// <summary>
/// Key management for the caller's own account (<c>/api/v1/keys</c>, authenticated by any of its keys) and, through
/// <see cref="MapAdminKeyRoutes"/>, for any account under <c>/admin/v1/accounts/{id}/keys</c>. A key of account A can
/// never see or change a key of account B: every lookup is scoped by the caller's account.
/// </summary>
internal static class KeyEndpoints
{
    public static RouteGroupBuilder MapKeys(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/keys").RequireApiKey().ManagersOnly().WithTags("Keys");
        group.MapGet("/", (HttpContext http, IApiKeyStore keys, CancellationToken ct) => List(http.GetCaller().AccountId, keys, ct));
        group.MapPost("/", (NewKeyInput? input, HttpContext http, AccountService accounts, TimeProvider time, CancellationToken ct) =>
            input?.Type is { } t && t != ApiKeyTypes.Standard
                ? Task.FromResult<Results<Created<CreatedKeyResponse>, ProblemHttpResult>>(Problems.Create(StatusCodes.Status403Forbidden, "forbidden",
                    "Only standard keys can be created with an API key; internal keys are the operator's (admin API)."))
                : Create(http.GetCaller().AccountId, input, accounts, time, "/api/v1/keys/", ct));
        group.MapPost("/{keyId}/rotate", (string keyId, HttpContext http, AccountService accounts, CancellationToken ct) =>
            Rotate(http.GetCaller().AccountId, keyId, accounts, "/api/v1/keys/", ct));
        group.MapDelete("/{keyId}", (string keyId, HttpContext http, IApiKeyStore keys, TimeProvider time, CancellationToken ct) =>
            Revoke(http.GetCaller().AccountId, keyId, keys, time, ct));
        return group;
    }

    /// <summary>The same operations for any account, on the admin group <c>/admin/v1/accounts</c>.</summary>
    public static void MapAdminKeyRoutes(RouteGroupBuilder accounts)
    {
        accounts.MapGet("/{id}/keys", async Task<Results<Ok<Dictionary<string, object>>, ProblemHttpResult>> (string id, AccountService service, IApiKeyStore keys, CancellationToken ct) =>
            await service.GetAsync(id, ct) is null ? Problems.NotFound("account", id) : await List(id, keys, ct));
        accounts.MapPost("/{id}/keys", (string id, NewKeyInput? input, AccountService service, TimeProvider time, CancellationToken ct) =>
            Create(id, input, service, time, $"/admin/v1/accounts/{id}/keys/", ct));
        accounts.MapPost("/{id}/keys/{keyId}/rotate", (string id, string keyId, AccountService service, CancellationToken ct) =>
            Rotate(id, keyId, service, $"/admin/v1/accounts/{id}/keys/", ct));
        accounts.MapDelete("/{id}/keys/{keyId}", (string id, string keyId, IApiKeyStore keys, TimeProvider time, CancellationToken ct) => Revoke(id, keyId, keys, time, ct));
    }

    private static async Task<Ok<Dictionary<string, object>>> List(string accountId, IApiKeyStore keys, CancellationToken ct) =>
        TypedResults.Ok(new Dictionary<string, object> { ["data"] = (await keys.ListAsync(accountId, ct)).Select(KeyResponse.From).ToList() });

    private static async Task<Results<Created<CreatedKeyResponse>, ProblemHttpResult>> Create(
        string accountId, NewKeyInput? input, AccountService accounts, TimeProvider time, string location, CancellationToken ct)
    {
        if (input?.Name?.Length > AccountService.MaxNameLength)
            return Problems.BadRequest("invalid_request", $"'name' is longer than {AccountService.MaxNameLength} characters.", "name");
        var type = input?.Type ?? ApiKeyTypes.Standard;
        if (!ApiKeyTypes.IsValid(type))
            return Problems.BadRequest("invalid_request", $"'type' must be '{ApiKeyTypes.Standard}' or '{ApiKeyTypes.Internal}'.", "type");
        if (input?.Metadata is { } m && m.ValueKind != JsonValueKind.Object)
            return Problems.BadRequest("invalid_request", "'metadata' must be a JSON object.", "metadata");
        var settings = input is null ? KeySettings.None : new KeySettings
        {
            AllowedModels = input.AllowedModels, ExpiresAt = input.ExpiresAt, RequestsPerMinute = input.RequestsPerMinute,
            TokensPerMinute = input.TokensPerMinute, ConcurrentRequests = input.ConcurrentRequests, Metadata = input.Metadata?.GetRawText(),
            CustomerId = input.CustomerId,
        };
        if (settings.Validate(time.GetUtcNow()) is { } problem)
            return Problems.BadRequest("invalid_request", $"'{problem.Field}' {problem.Message}.", problem.Field);
        var created = await accounts.CreateKeyAsync(accountId, input?.Name, type, settings, ct);
        if (created is null) return Problems.NotFound("account", accountId);
        return TypedResults.Created(location + created.Record.Id, CreatedKeyResponse.From(created));
    }

    private static async Task<Results<Created<CreatedKeyResponse>, ProblemHttpResult>> Rotate(
        string accountId, string keyId, AccountService accounts, string location, CancellationToken ct) =>
        await accounts.RotateKeyAsync(accountId, keyId, ct) is { } created
            ? TypedResults.Created(location + created.Record.Id, CreatedKeyResponse.From(created))
            : Problems.NotFound("live key", keyId);

    /// <summary>Revokes a key; the gateway and the API stop accepting it within the authenticator's cache time (1 s).</summary>
    private static async Task<Results<NoContent, ProblemHttpResult>> Revoke(string accountId, string keyId, IApiKeyStore keys, TimeProvider time, CancellationToken ct) =>
        await keys.RevokeAsync(accountId, keyId, time.GetUtcNow(), ct) ? TypedResults.NoContent() : Problems.NotFound("live key", keyId);
}
