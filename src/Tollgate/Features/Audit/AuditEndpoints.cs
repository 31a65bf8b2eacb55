using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Audit;

public sealed record AuditEntryView(
    string Id, DateTimeOffset At, string ActorType, string ActorId, string? AccountId, string Action, string? TargetType, string? TargetId,
    int Status, JsonElement? Before, JsonElement? After, string RequestId, string? SourceIp)
{
    public static AuditEntryView From(AuditEntry e) => new(e.Id, e.At, e.ActorType, e.ActorId, e.AccountId, e.Action, e.TargetType, e.TargetId,
        e.Status, Parse(e.BeforeJson), Parse(e.AfterJson), e.RequestId, e.SourceIp);

    private static JsonElement? Parse(string? json) => json is null ? null : JsonDocument.Parse(json).RootElement.Clone();
}

public sealed record AuditPage(IReadOnlyList<AuditEntryView> Data, string? NextCursor);

/// <summary>
/// <c>GET /admin/v1/audit</c> (operators: every entry) and <c>GET /api/v1/audit</c> (an account's owners and admins:
/// the entries of their own account, whoever made them). Newest first; <c>cursor</c> is the previous page's
/// <c>next_cursor</c>. Filters: <c>actor</c> (actor id), <c>action</c> (exact, e.g. <c>DELETE /api/v1/keys/{keyId}</c>),
/// <c>target</c> (<c>type:id</c>, or an id), <c>from</c>/<c>to</c> (ISO 8601, <c>to</c> exclusive), <c>limit</c> (1–500, default 50).
/// </summary>
internal static class AuditEndpoints
{
    public const int DefaultLimit = 50, MaxLimit = 500;

    public static void AddAudit(IServiceCollection services)
    {
        services.AddSingleton<AuditStore>();
        services.AddSingleton<AuditLog>();
        services.AddSingleton<AuditSnapshots>();
    }

    public static void MapAudit(IEndpointRouteBuilder routes)
    {
        routes.MapGroup("/admin/v1/audit").RequireAdminKey().WithTags("Admin: audit")
            .MapGet("/", (HttpContext http, AuditStore store, CancellationToken ct) => QueryAsync(http.Request.Query, null, store, ct));
        routes.MapGroup("/api/v1/audit").RequireApiKey().ManagersOnly().WithTags("Audit")
            .MapGet("/", (HttpContext http, AuditStore store, CancellationToken ct) =>
                // Reading who changed what is an owner's or admin's business, like changing it.
                http.GetCaller().CanManage
                    ? QueryAsync(http.Request.Query, http.GetCaller().AccountId, store, ct)
                    : Task.FromResult<Results<Ok<AuditPage>, ProblemHttpResult>>(
                        Problems.Create(StatusCodes.Status403Forbidden, "forbidden", $"Your role '{http.GetCaller().Role}' cannot read the audit log; an owner or admin can.")));
    }

    private static async Task<Results<Ok<AuditPage>, ProblemHttpResult>> QueryAsync(IQueryCollection query, string? accountId, AuditStore store, CancellationToken ct)
    {
        var limit = DefaultLimit;
        if (query["limit"].ToString() is { Length: > 0 } l && (!int.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxLimit))
            return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxLimit}.", "limit");
        long? cursor = null;
        if (query["cursor"].ToString() is { Length: > 0 } c)
        {
            if (!long.TryParse(c, NumberStyles.None, CultureInfo.InvariantCulture, out var seq) || seq < 1)
                return Problems.BadRequest("invalid_request", "'cursor' is not a cursor from this API.", "cursor");
            cursor = seq;
        }
        DateTimeOffset? from = null, to = null;
        foreach (var (name, set) in new (string, Action<DateTimeOffset>)[] { ("from", v => from = v), ("to", v => to = v) })
        {
            if (query[name].ToString() is not { Length: > 0 } text) continue;
            if (!DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at))
                return Problems.BadRequest("invalid_request", $"'{name}' must be an ISO 8601 timestamp.", name);
            set(at);
        }
        string? targetType = null, targetId = null;
        if (query["target"].ToString() is { Length: > 0 } target)
        {
            var colon = target.IndexOf(':');
            if (colon > 0) { targetType = target[..colon]; targetId = target[(colon + 1)..]; }
            else targetId = target;
        }
        static string? Text(IQueryCollection q, string name) => q[name].ToString() is { Length: > 0 and <= 500 } v ? v : null;
        var rows = await store.QueryAsync(new AuditQuery(accountId, Text(query, "actor"), Text(query, "action"), targetType, targetId, from, to, cursor, limit + 1), ct);
        var page = rows.Take(limit).Select(AuditEntryView.From).ToList();
        var next = rows.Count > limit ? rows[limit - 1].Seq.ToString(CultureInfo.InvariantCulture) : null;
        return TypedResults.Ok(new AuditPage(page, next));
    }
}
