using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Admin;

/// <summary>An operator key as listed: never the key; <see cref="Actor"/> is how logs and the audit name it.</summary>
public sealed record AdminKeyView(string Id, string Actor, string Source, DateTimeOffset? CreatedAt);

/// <summary>The body of a creation: empty or <c>{}</c> (read, so an oversized or malformed body is refused like anywhere else).</summary>
public sealed record NewAdminKeyInput;

/// <summary>The creation response: the only time the full key (<c>tg_admin_…</c>) is shown.</summary>
public sealed record CreatedAdminKeyView(string Id, string Key, string Actor, DateTimeOffset CreatedAt);

/// <summary>
/// The operator's own keys (type <c>admin</c>): <c>GET /admin/v1/admin-keys</c>, <c>POST</c> (201, the key shown once,
/// only its SHA-256 stored), <c>DELETE /admin/v1/admin-keys/{id}</c>. A deleted key stops working in every process
/// within <see cref="AdminKeys.RefreshInterval"/> (at once in this one). The configured key (<c>TOLLGATE_ADMIN_KEY</c>)
/// is listed but changed only in configuration; the last stored key cannot be deleted when none is configured, so
/// the operator is never locked out.
/// </summary>
internal static class AdminKeyEndpoints
{
    public const string ConfiguredId = "configured";

    public static void MapAdminKeys(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1/admin-keys").RequireAdminKey().WithTags("Admin: admin keys");
        group.MapGet("/", List);
        group.MapPost("/", Create);
        group.MapDelete("/{id}", Delete);
    }

    private static async Task<Ok<Dictionary<string, object>>> List(AdminKeys keys, IApiKeyStore store, CancellationToken ct)
    {
        var list = new List<AdminKeyView>();
        if (keys.ConfiguredKey is { } configured) list.Add(new AdminKeyView(ConfiguredId, AdminKeys.ActorOf(Secrets.Hash(configured)), "configuration", null));
        list.AddRange((await store.ListAdminKeysAsync(ct)).Select(k => new AdminKeyView(k.Id, AdminKeys.ActorOf(k.Hash), "database", k.CreatedAt)));
        return TypedResults.Ok(new Dictionary<string, object> { ["data"] = list });
    }

    private static async Task<Created<CreatedAdminKeyView>> Create(NewAdminKeyInput? input, AdminKeys keys, IApiKeyStore store, CancellationToken ct)
    {
        var generated = ApiKeyFormat.Generate("admin");
        var stored = await store.CreateAdminKeyAsync(generated.Hash, ct);
        await keys.ReloadAsync(ct);
        return TypedResults.Created($"/admin/v1/admin-keys/{stored.Id}", new CreatedAdminKeyView(stored.Id, generated.Key, AdminKeys.ActorOf(stored.Hash), stored.CreatedAt));
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> Delete(string id, AdminKeys keys, IApiKeyStore store, CancellationToken ct)
    {
        if (id == ConfiguredId)
            return Problems.Conflict("admin_key_configured", "The configured admin key (TOLLGATE_ADMIN_KEY or Tollgate:AdminKey) is changed in configuration, not here.");
        var (found, deleted) = await store.DeleteAdminKeyAsync(id, keepLast: keys.ConfiguredKey is null, ct);
        if (!found) return Problems.NotFound("admin key", id);
        if (!deleted) return Problems.Conflict("last_admin_key", "This is the last admin key: create another one first, or configure TOLLGATE_ADMIN_KEY.");
        await keys.ReloadAsync(ct);
        return TypedResults.NoContent();
    }
}
