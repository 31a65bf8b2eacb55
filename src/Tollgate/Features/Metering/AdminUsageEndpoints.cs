using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Tollgate.Features.Admin;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Metering;

/// <summary>A usage record waiting for an operator: its model has no price (recorded under <c>allow_and_review</c>).</summary>
public sealed record NeedsReviewItem(
    string AccountId, string Id, string? KeyId, string? KeyType, string Model, long InputTokens, long OutputTokens,
    long CacheReadTokens, long CacheWriteTokens, long ReasoningTokens, string? RequestId, string? Metadata,
    DateTimeOffset OccurredAt, DateTimeOffset CreatedAt);

/// <summary><c>POST /admin/v1/usage/rerate</c> body; every field optional.</summary>
/// <param name="Model">Only records stored under exactly this model name.</param>
/// <param name="AccountId">Only this account's records.</param>
/// <param name="Limit">At most this many records, oldest first: 1–1,000, default 100.</param>
public sealed record RerateInput(string? Model, string? AccountId, int? Limit);

/// <summary><c>/admin/v1/usage</c>: the needs-review queue and re-rating it.</summary>
internal static class AdminUsageEndpoints
{
    public const int MaxPageSize = 500;

    public static RouteGroupBuilder MapAdminUsage(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1/usage").RequireAdminKey().WithTags("Admin: usage");
        group.MapGet("/needs-review", NeedsReview);
        group.MapPost("/rerate", Rerate);
        return group;
    }

    private static async Task<Results<Ok<Page<NeedsReviewItem>>, ProblemHttpResult>> NeedsReview(
        IUsageStore store, string? model, [FromQuery(Name = "account_id")] string? accountId, string? cursor, int? limit, CancellationToken ct)
    {
        var size = limit ?? 100;
        if (size is < 1 or > MaxPageSize) return Problems.BadRequest("invalid_request", $"'limit' must be 1–{MaxPageSize}.", "limit");
        ReviewCursor? after = null;
        if (!string.IsNullOrEmpty(cursor) && (after = ParseCursor(cursor)) is null)
            return Problems.BadRequest("invalid_request", "'cursor' is not a cursor returned by this endpoint.", "cursor");
        var items = await store.ListNeedsReviewAsync(Blank(model), Blank(accountId), after, size + 1, ct);
        var hasMore = items.Count > size;
        var page = items.Take(size).ToList();
        var data = page.Select(i => new NeedsReviewItem(i.Record.AccountId, i.Record.Id, i.Record.KeyId, i.KeyType, i.Record.Model,
            i.Record.InputTokens, i.Record.OutputTokens, i.Record.CacheReadTokens, i.Record.CacheWriteTokens, i.Record.ReasoningTokens,
            i.Record.RequestId, i.Record.Metadata, i.Record.OccurredAt, i.Record.CreatedAt)).ToList();
        return TypedResults.Ok(new Page<NeedsReviewItem>(data, hasMore, hasMore ? FormatCursor(page[^1].Record) : null));
    }

    private static async Task<Results<Ok<RerateReport>, ProblemHttpResult>> Rerate(RerateInput? input, RerateService rerate, CancellationToken ct)
    {
        var limit = input?.Limit ?? RerateService.DefaultLimit;
        if (limit is < 1 or > RerateService.MaxLimit)
            return Problems.BadRequest("invalid_request", $"'limit' must be 1–{RerateService.MaxLimit} (default {RerateService.DefaultLimit}).", "limit");
        return TypedResults.Ok(await rerate.RerateAsync(Blank(input?.Model), Blank(input?.AccountId), limit, ct));
    }

    private static string? Blank(string? s) => string.IsNullOrEmpty(s) ? null : s;

    // Opaque to clients; event ids may contain ':' so the id is the last field and takes the rest.
    private static string FormatCursor(UsageRecord r) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes($"{UnixMicros.From(r.OccurredAt)}:{r.AccountId}:{r.Id}")).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static ReviewCursor? ParseCursor(string cursor)
    {
        try
        {
            var b64 = cursor.Replace('-', '+').Replace('_', '/');
            b64 = b64.PadRight(b64.Length + (4 - b64.Length % 4) % 4, '=');
            var parts = Encoding.UTF8.GetString(Convert.FromBase64String(b64)).Split(':', 3);
            if (parts.Length != 3 || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var micros)
                || parts[1].Length == 0 || parts[2].Length == 0) return null;
            return new ReviewCursor(UnixMicros.ToDateTimeOffset(micros), parts[1], parts[2]);
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            return null;
        }
    }
}
