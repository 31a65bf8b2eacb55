using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing.Patterns;
using Tollgate.Features.Accounts;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Audit;

/// <summary>Who made an audited change: <c>admin</c>, <c>key</c> or <c>member</c>, and their id.</summary>
public readonly record struct AuditActor(string Type, string Id)
{
    public static AuditActor For(Caller caller) => caller.UserId is { } user ? new("member", user) : new("key", caller.KeyId);
}

/// <summary>
/// The audit endpoint filter, put on the admin route groups (every POST/PUT/PATCH/DELETE) and on the account-admin
/// groups of <c>/api/v1</c> (those marked <c>ManagersOnly</c>): data-plane writes (usage events, holds, entitlement
/// checks) are not admin actions and are not audited.
/// <list type="number">
/// <item>Before the handler: the target (last route parameter, e.g. <c>keys/{keyId}</c>) and, for accounts, keys and
/// subscriptions, a snapshot of it (<c>before</c>).</item>
/// <item>After the handler: the outcome status from its result; <c>after</c> is the response value with secrets
/// removed, or a fresh snapshot when there is no body (a revoke's 204).</item>
/// <item>The entry is committed (<see cref="AuditLog"/>, group commit) before the result is returned for writing, so
/// no response acknowledges a change whose audit row is missing.</item>
/// </list>
/// Refused attempts (4xx) are recorded too, with their status and no <c>after</c>: who tried what matters.
/// </summary>
internal static class AuditFilter
{
    /// <summary>Largest before/after JSON kept per entry; bigger values (bulk transfers) are replaced by a marker.</summary>
    public const int MaxSnapshotChars = 16_384;

    public static bool IsMutation(string method) =>
        HttpMethods.IsPost(method) || HttpMethods.IsPut(method) || HttpMethods.IsPatch(method) || HttpMethods.IsDelete(method);

    public static async ValueTask<object?> AroundAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next, AuditActor actor, string? callerAccountId)
    {
        var http = context.HttpContext;
        var services = http.RequestServices;
        var pattern = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern;
        var template = http.RouteTemplate() ?? http.Request.Path.Value ?? "";
        var (targetType, targetId) = Target(pattern, http.Request.RouteValues);
        var accountId = callerAccountId ?? AccountFromRoute(template, http.Request.RouteValues);
        var snapshots = services.GetRequiredService<AuditSnapshots>();
        var before = await snapshots.TakeAsync(targetType, targetId, accountId, template, http.RequestAborted);

        var result = await next(context);

        var status = StatusOf(result, http);
        string? after = null;
        // 2xx, or the dashboard's redirect after a successful form post.
        if (status is >= 200 and < 400)
        {
            var value = ValueOf(result);
            var node = value is null ? null : JsonSerializer.SerializeToNode(value, value.GetType(), TollgateApp.Json);
            if (node is JsonObject created && targetId is null && created["id"] is JsonValue idValue && idValue.TryGetValue<string>(out var newId))
            {
                targetId = newId;
                if (targetType == "accounts") accountId ??= newId;
            }
            if (node is JsonObject body && accountId is null && body["account_id"] is JsonValue accountValue && accountValue.TryGetValue<string>(out var bodyAccount))
                accountId = bodyAccount;
            after = node is not null ? Bounded(Redact(node)) : Bounded(await snapshots.TakeAsync(targetType, targetId, accountId, template, CancellationToken.None));
        }
        var entry = new AuditEntry("aud_" + Guid.CreateVersion7().ToString("N"), services.GetRequiredService<TimeProvider>().GetUtcNow(),
            actor.Type, actor.Id, accountId, $"{http.Request.Method} {template}", targetType, targetId, status, Bounded(before), after,
            http.GetRequestId().Value, http.Connection.RemoteIpAddress?.ToString());
        // Committed before the response goes out; not cancelled by a client that went away (the change itself was made).
        await services.GetRequiredService<AuditLog>().AppendAsync(entry);
        return result;
    }

    /// <summary>
    /// For the dashboard's account-changing form posts (keys, billing): audited like their <c>/api/v1</c> twins when a
    /// member who may manage the account is signed in (anyone else's post changes nothing and is answered by the page).
    /// </summary>
    public static async ValueTask<object?> DashboardAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.Request.Cookies[Dashboard.DashboardAuth.SessionCookie] is { } token && Members.MemberService.IsSessionToken(token)
            && await http.RequestServices.GetRequiredService<Members.MemberService>().AuthenticateAsync(token, http.RequestAborted) is { CanManage: true } member)
            return await AroundAsync(context, next, AuditActor.For(member), member.AccountId);
        return await next(context);
    }

    /// <summary>The resource named by the last route parameter, as (the literal segment before it, its value).</summary>
    internal static (string? Type, string? Id) Target(RoutePattern? pattern, RouteValueDictionary values)
    {
        if (pattern is null) return (null, null);
        string? lastLiteral = null, type = null, id = null;
        // Parameters that follow each other (pricing's {provider}/{**model}) name one resource together.
        var run = new List<string?>();
        foreach (var segment in pattern.PathSegments)
        {
            foreach (var part in segment.Parts)
            {
                if (part is RoutePatternLiteralPart literal)
                {
                    lastLiteral = literal.Content;
                    run.Clear();
                }
                else if (part is RoutePatternParameterPart parameter)
                {
                    run.Add(Convert.ToString(values[parameter.Name], System.Globalization.CultureInfo.InvariantCulture));
                    type = lastLiteral;
                    id = string.Join('/', run);
                }
            }
        }
        // No parameter: the collection the route acts on (its id, if it creates one, comes from the response).
        return id is null ? (lastLiteral, null) : (type, id);
    }

    /// <summary>The account an admin route acts on: <c>/admin/v1/accounts/{id}/…</c> or <c>/admin/v1/creators/{account}/…</c>.</summary>
    private static string? AccountFromRoute(string template, RouteValueDictionary values) =>
        template.StartsWith("/admin/v1/accounts/{id}", StringComparison.Ordinal) ? values["id"] as string
        : template.StartsWith("/admin/v1/creators/{account}", StringComparison.Ordinal) ? values["account"] as string
        : null;

    private static int StatusOf(object? result, HttpContext http)
    {
        for (var r = result; r is not null;)
        {
            if (r is IStatusCodeHttpResult { StatusCode: { } code }) return code;
            if (r is RedirectHttpResult redirect)
                return (redirect.Permanent, redirect.PreserveMethod) switch { (true, true) => 308, (true, false) => 301, (false, true) => 307, _ => 302 };
            r = r is INestedHttpResult nested ? nested.Result : null;
        }
        return result is IResult ? StatusCodes.Status200OK : http.Response.StatusCode;
    }

    private static object? ValueOf(object? result)
    {
        for (var r = result; r is not null;)
        {
            if (r is IValueHttpResult value) return value.Value;
            if (r is INestedHttpResult nested) r = nested.Result;
            else return r is IResult ? null : r;
        }
        return null;
    }

    private static readonly string[] SecretNameParts = ["secret", "password", "token", "authorization", "credential", "private"];
    private static readonly HashSet<string> SecretNames = new(StringComparer.OrdinalIgnoreCase)
        { "key", "api_key", "hash", "key_hash", "plaintext", "signature", "session" };

    /// <summary>
    /// Removes secrets from a JSON value in place: string values of fields whose names say secret (key, secret,
    /// password, token, …) and any string that looks like a credential (an API or admin key, a session token, a
    /// webhook or Stripe secret, a provider key), wherever it is.
    /// </summary>
    internal static JsonNode Redact(JsonNode node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (name, value) in o.ToList())
                {
                    if (value is null) continue;
                    if (value is JsonValue v && v.TryGetValue<string>(out _) && IsSecretName(name)) o[name] = "[redacted]";
                    else o[name] = Redact(value.DeepClone());
                }
                return o;
            case JsonArray a:
                for (var i = 0; i < a.Count; i++)
                    if (a[i] is { } item) a[i] = Redact(item.DeepClone());
                return a;
            case JsonValue s when s.TryGetValue<string>(out var text) && LooksLikeCredential(text):
                return JsonValue.Create("[redacted]");
            default:
                return node;
        }
    }

    private static bool IsSecretName(string name) =>
        SecretNames.Contains(name) || SecretNameParts.Any(p => name.Contains(p, StringComparison.OrdinalIgnoreCase));

    /// <summary>Credential shapes: Tollgate keys and sessions (<c>tg_…</c> beyond a listing prefix), <c>whsec_…</c>, <c>sk-…</c>/<c>sk_…</c>, <c>rk_…</c>.</summary>
    internal static bool LooksLikeCredential(string text) =>
        (text.StartsWith("tg_", StringComparison.Ordinal) && text.Length > 24)
        || (text.Length > 16 && (text.StartsWith("whsec_", StringComparison.Ordinal) || text.StartsWith("sk-", StringComparison.Ordinal)
            || text.StartsWith("sk_", StringComparison.Ordinal) || text.StartsWith("rk_", StringComparison.Ordinal)));

    private static string? Bounded(JsonNode? node)
    {
        if (node is null) return null;
        var json = node.ToJsonString();
        return json.Length <= MaxSnapshotChars ? json : new JsonObject { ["truncated"] = true, ["chars"] = json.Length }.ToJsonString();
    }
}

/// <summary>Before/after snapshots of the targets whose state matters most: accounts (balance, credit limit, plan), keys, subscriptions.</summary>
internal sealed class AuditSnapshots(AccountService accounts, IApiKeyStore keys)
{
    public async Task<JsonNode?> TakeAsync(string? targetType, string? targetId, string? accountId, string template, CancellationToken ct)
    {
        switch (targetType)
        {
            case "accounts" when targetId is not null:
                return await AccountAsync(targetId, ct);
            case "keys" when targetId is not null && accountId is not null:
                return await keys.GetAsync(accountId, targetId, ct) is { } k
                    ? JsonSerializer.SerializeToNode(new { k.Id, k.AccountId, k.Name, k.Prefix, k.Type, k.CreatedAt, k.RevokedAt, k.RotatedFrom }, TollgateApp.Json)
                    : null;
            // The self-service subscription and plan routes change the caller's account.
            case "subscription" or "cancel" or "resume" when accountId is not null
                && (template.StartsWith("/api/v1/subscription", StringComparison.Ordinal) || template.StartsWith("/billing/subscription", StringComparison.Ordinal)):
                return await AccountAsync(accountId, ct);
            default:
                return null;
        }
    }

    private async Task<JsonNode?> AccountAsync(string id, CancellationToken ct) =>
        await accounts.GetAsync(id, ct) is { } a
            ? JsonSerializer.SerializeToNode(new
            {
                a.Account.Id, a.Account.Name, Plan = a.Account.PlanId, a.Account.PlanVersion, a.Ledger.BalanceMicros, a.Ledger.AvailableMicros,
                a.Ledger.HeldMicros, a.Ledger.CreditLimitMicros,
            }, TollgateApp.Json)
            : null;
}
