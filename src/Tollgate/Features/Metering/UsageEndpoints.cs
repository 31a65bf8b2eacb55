using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Metering;

/// <summary>Answer of <c>POST /api/v1/usage/events</c>: one result per event, in request order, and the counts.</summary>
public sealed record UsageEventsResponse(IReadOnlyList<UsageEventResult> Data, int Accepted, int Duplicates, int Rejected);

/// <summary>
/// <c>POST /api/v1/usage/events</c>, authenticated by API key. The body is one event object, or
/// <c>{"events":[…]}</c> with 1–1,000 events. A body that parses answers 200 with a result per event (accepted,
/// duplicate, or rejected with a code); only a request-level problem (malformed JSON, no events, too many) is a
/// 400 ProblemDetails. Events are parsed one by one, so a wrongly typed field rejects that event only.
/// </summary>
internal static class UsageEndpoints
{
    /// <summary>Body limit of this route (bytes): a full batch of events with metadata is larger than the default 1 MiB.</summary>
    public const long MaxBodyBytes = 16 << 20;

    private static readonly HashSet<string> Fields =
    [
        "id", "model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
        "timestamp", "request_id", "metadata", "customer_id", "agent_id",
    ];

    public static RouteGroupBuilder MapUsage(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/usage").RequireApiKey().WithTags("Metering");
        group.MapPost("/events", PostEvents);
        return group;
    }

    private static async Task<Results<Ok<UsageEventsResponse>, ProblemHttpResult>> PostEvents(
        HttpContext http, UsageEventService usage, CancellationToken ct)
    {
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = MaxBodyBytes;
        JsonDocument doc;
        try
        {
            doc = await JsonDocument.ParseAsync(http.Request.Body, new JsonDocumentOptions { MaxDepth = 64 }, ct);
        }
        catch (JsonException e)
        {
            return Problems.BadRequest("invalid_json", $"The request body is not valid JSON: {e.Message}");
        }
        using var _ = doc;
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            return Problems.BadRequest("invalid_request", "The body must be one event object or {\"events\": [ … ]}.");

        List<JsonElement> raw;
        if (root.TryGetProperty("events", out var events))
        {
            if (events.ValueKind != JsonValueKind.Array)
                return Problems.BadRequest("invalid_request", "'events' must be an array of event objects.", "events");
            if (root.EnumerateObject().Any(p => p.Name != "events"))
                return Problems.BadRequest("invalid_request", "A batch body has only the 'events' field.", "events");
            raw = events.EnumerateArray().ToList();
            if (raw.Count is 0 or > UsageEventService.MaxBatchEvents)
                return Problems.BadRequest("invalid_request", $"'events' must hold 1–{UsageEventService.MaxBatchEvents} events.", "events");
        }
        else
        {
            raw = [root];
        }

        var parsed = raw.Select(Parse).ToArray();
        var results = await usage.ProcessAsync(http.GetCaller(), parsed, ct);
        return TypedResults.Ok(new UsageEventsResponse(results,
            results.Count(r => r.Status == UsageEventStatus.Accepted),
            results.Count(r => r.Status == UsageEventStatus.Duplicate),
            results.Count(r => r.Status == UsageEventStatus.Rejected)));
    }

    /// <summary>One event, or the reason it is not one. Field by field, so one bad field names itself.</summary>
    internal static (UsageEvent? Event, UsageEventResult? Rejection) Parse(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) return Bad(null, "invalid_event", "Each event must be a JSON object.");
        var id = e.TryGetProperty("id", out var idEl) && idEl.ValueKind == JsonValueKind.String ? idEl.GetString() : null;
        foreach (var p in e.EnumerateObject())
            if (!Fields.Contains(p.Name)) return Bad(id, "invalid_event", $"Unknown field '{p.Name}'.", p.Name);
        if (!AuthorizationService.IsValidClientId(id))
            return Bad(id, "invalid_event", $"'id' is required: 1–{AuthorizationService.MaxIdLength} characters of letters, digits and _-.:@+.", "id");

        if (!e.TryGetProperty("model", out var modelEl) || modelEl.ValueKind != JsonValueKind.String
            || modelEl.GetString() is not { Length: > 0 and <= UsageEventService.MaxModelLength } model || string.IsNullOrWhiteSpace(model) || model.Contains('\0'))
            return Bad(id, "invalid_event", $"'model' is required: a string of 1–{UsageEventService.MaxModelLength} characters, e.g. \"openai/gpt-4o\".", "model");

        var counts = new long[5];
        string[] names = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"];
        for (var i = 0; i < names.Length; i++)
        {
            if (!e.TryGetProperty(names[i], out var n) || n.ValueKind == JsonValueKind.Null) continue;
            if (n.ValueKind != JsonValueKind.Number || !n.TryGetInt64(out counts[i]))
                return Bad(id, "invalid_event", $"'{names[i]}' must be an integer.", names[i]);
        }
        var tokens = new TokenUsage(counts[0], counts[1], counts[2], counts[3], counts[4]);
        if (tokens.Validate() is { } invalid) return Bad(id, "invalid_tokens", $"'{invalid.Field}': {invalid.Message}.", invalid.Field);

        DateTimeOffset? timestamp = null;
        if (e.TryGetProperty("timestamp", out var tsEl) && tsEl.ValueKind != JsonValueKind.Null)
        {
            if (tsEl.ValueKind != JsonValueKind.String || !tsEl.TryGetDateTimeOffset(out var ts))
                return Bad(id, "invalid_event", "'timestamp' must be an ISO 8601 date-time with offset, e.g. \"2026-01-31T12:00:00Z\".", "timestamp");
            // Stored to the micro-second, so compare replays at that precision too.
            timestamp = UnixMicros.ToDateTimeOffset(UnixMicros.From(ts));
        }

        string? requestId = null;
        if (e.TryGetProperty("request_id", out var reqEl) && reqEl.ValueKind != JsonValueKind.Null)
        {
            if (reqEl.ValueKind != JsonValueKind.String || reqEl.GetString() is not { Length: > 0 and <= LedgerService.MaxReferenceLength } r || r.Contains('\0'))
                return Bad(id, "invalid_event", $"'request_id' must be a string of 1–{LedgerService.MaxReferenceLength} characters.", "request_id");
            requestId = r;
        }

        string? metadata = null;
        if (e.TryGetProperty("metadata", out var m) && m.ValueKind != JsonValueKind.Null)
        {
            if (m.ValueKind != JsonValueKind.Object) return Bad(id, "invalid_event", "'metadata' must be a JSON object.", "metadata");
            metadata = JsonSerializer.Serialize(m);
            if (metadata.Length > LedgerService.MaxMetadataLength)
                return Bad(id, "invalid_event", $"'metadata' is longer than {LedgerService.MaxMetadataLength} characters.", "metadata");
        }
        string? customerId = null;
        if (e.TryGetProperty("customer_id", out var cu) && cu.ValueKind != JsonValueKind.Null)
        {
            if (cu.ValueKind != JsonValueKind.String || !Budgets.EndCustomerIds.IsValid(cu.GetString()))
                return Bad(id, "invalid_event", $"'customer_id' {Budgets.EndCustomerIds.Rule}.", "customer_id");
            customerId = cu.GetString();
        }
        string? agentId = null;
        if (e.TryGetProperty("agent_id", out var ag) && ag.ValueKind != JsonValueKind.Null)
        {
            if (ag.ValueKind != JsonValueKind.String || ag.GetString() is not { Length: > 0 and <= 64 } named)
                return Bad(id, "invalid_event", "'agent_id' must be a marketplace agent id (agt_…).", "agent_id");
            agentId = named;
        }
        return (new UsageEvent(id!, model, tokens, timestamp, requestId, metadata) { CustomerId = customerId, AgentId = agentId }, null);
    }

    private static (UsageEvent?, UsageEventResult?) Bad(string? id, string code, string message, string? param = null) =>
        (null, UsageEventResult.Rejected(id, code, message, param));
}
