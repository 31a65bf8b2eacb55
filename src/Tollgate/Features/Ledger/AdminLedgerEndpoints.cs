using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Ledger;

/// <summary>Raw ledger access for operators: any account, any transfer phase, atomic batches, and an invariant audit.</summary>
internal static class AdminLedgerEndpoints
{
    public const int MaxTransfersPerRequest = 1_000;

    public static RouteGroupBuilder MapAdminLedger(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/admin/v1").RequireAdminKey().WithTags("Admin: ledger");
        group.MapPost("/transfers", CreateTransfers);
        group.MapGet("/transfers/{id}", GetTransfer);
        group.MapPost("/ledger/accounts", CreateLedgerAccount);
        group.MapGet("/ledger/accounts/{id:long}", GetLedgerAccount);
        group.MapGet("/ledger/audit", Audit);
        return group;
    }

    private static async Task<Results<Ok<IReadOnlyList<TransferOutcome>>, ProblemHttpResult>> CreateTransfers(
        TransfersInput input, LedgerService ledger, CancellationToken ct)
    {
        if (input.Transfers is not { Count: > 0 } items) return Problems.BadRequest("invalid_request", "'transfers' must be a non-empty array.", "transfers");
        if (items.Count > MaxTransfersPerRequest) return Problems.BadRequest("invalid_request", $"At most {MaxTransfersPerRequest} transfers per request.", "transfers");
        var requests = new TransferRequest[items.Count];
        for (var i = 0; i < items.Count; i++)
        {
            var (request, problem) = ToRequest(items[i], $"transfers[{i}]");
            if (problem is not null) return problem;
            requests[i] = request!;
        }
        TransferResult[] results;
        if (input.Atomic == true) results = await ledger.TransferAtomicAsync(requests, ct);
        else results = await Task.WhenAll(requests.Select(r => ledger.TransferAsync(r, ct)));
        IReadOnlyList<TransferOutcome> outcomes = results
            .Select((r, i) => new TransferOutcome(requests[i].Id, r.Code, r.Transfer is { } t ? TransferResponse.From(t) : null))
            .ToList();
        return TypedResults.Ok(outcomes);
    }

    internal static (TransferRequest? Request, ProblemHttpResult? Problem) ToRequest(TransferInput t, string path)
    {
        if (!LedgerService.IsValidId(t.Id))
            return (null, Problems.BadRequest("invalid_request", $"{path}.id must be 1–{LedgerService.MaxIdLength} characters of letters, digits and _-.:@+.", $"{path}.id"));
        if (t.Code is { Length: 0 or > LedgerService.MaxCodeLength })
            return (null, Problems.BadRequest("invalid_request", $"{path}.code must be 1–{LedgerService.MaxCodeLength} characters.", $"{path}.code"));
        if (t.Reference?.Length > LedgerService.MaxReferenceLength)
            return (null, Problems.BadRequest("invalid_request", $"{path}.reference is longer than {LedgerService.MaxReferenceLength}.", $"{path}.reference"));
        if (t.Description?.Length > LedgerService.MaxDescriptionLength)
            return (null, Problems.BadRequest("invalid_request", $"{path}.description is longer than {LedgerService.MaxDescriptionLength}.", $"{path}.description"));
        if (t.TimeoutSeconds is < 0) return (null, Problems.BadRequest("invalid_request", $"{path}.timeout_seconds must be ≥ 0.", $"{path}.timeout_seconds"));
        string? metadata = null;
        if (t.Metadata is { } m && m.ValueKind != JsonValueKind.Null)
        {
            if (m.ValueKind != JsonValueKind.Object) return (null, Problems.BadRequest("invalid_request", $"{path}.metadata must be a JSON object.", $"{path}.metadata"));
            metadata = JsonSerializer.Serialize(m);
            if (metadata.Length > LedgerService.MaxMetadataLength)
                return (null, Problems.BadRequest("invalid_request", $"{path}.metadata is larger than {LedgerService.MaxMetadataLength} characters.", $"{path}.metadata"));
        }
        return (new TransferRequest
        {
            Id = t.Id!,
            Kind = t.Kind ?? TransferKind.Posted,
            DebitAccountId = t.DebitAccountId ?? 0,
            CreditAccountId = t.CreditAccountId ?? 0,
            Amount = t.AmountMicros,
            PendingId = t.PendingId,
            TimeoutSeconds = t.TimeoutSeconds ?? 0,
            Code = t.Code ?? "transfer",
            Reference = t.Reference,
            Description = t.Description,
            Metadata = metadata,
        }, null);
    }

    private static async Task<Results<Ok<TransferResponse>, ProblemHttpResult>> GetTransfer(string id, LedgerService ledger, CancellationToken ct) =>
        await ledger.GetTransferAsync(id, ct) is { } t ? TypedResults.Ok(TransferResponse.From(t)) : Problems.NotFound("transfer", id);

    private static async Task<Results<Created<LedgerAccountResponse>, ProblemHttpResult>> CreateLedgerAccount(
        NewLedgerAccountInput input, LedgerService ledger, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(input.Kind) || input.Kind.Length > 64)
            return Problems.BadRequest("invalid_request", "'kind' is required (1–64 characters).", "kind");
        if (input.CreditLimitMicros is < 0 or > LedgerService.MaxAmountMicros)
            return Problems.BadRequest("invalid_request", $"'credit_limit_micros' must be 0–{LedgerService.MaxAmountMicros} (0 = prepaid).", "credit_limit_micros");
        var flags = LedgerAccountFlags.None;
        foreach (var f in input.Flags ?? [])
        {
            flags |= f switch
            {
                "debits_must_not_exceed_credits" => LedgerAccountFlags.DebitsMustNotExceedCredits,
                "credits_must_not_exceed_debits" => LedgerAccountFlags.CreditsMustNotExceedDebits,
                _ => (LedgerAccountFlags)(-1),
            };
            if (flags < 0) return Problems.BadRequest("invalid_request", $"Unknown flag '{f}'.", "flags");
        }
        try
        {
            var account = await ledger.CreateAccountAsync(new NewLedgerAccount(input.Kind, input.Key, CreditLimitMicros: input.CreditLimitMicros ?? 0, Flags: flags), ct);
            return TypedResults.Created($"/admin/v1/ledger/accounts/{account.Id}", LedgerAccountResponse.From(account));
        }
        catch (Exception e) when (DbErrors.IsUniqueViolation(e))
        {
            return Problems.Conflict("duplicate_key", $"A ledger account with key '{input.Key}' already exists.");
        }
    }

    private static async Task<Results<Ok<LedgerAccountResponse>, ProblemHttpResult>> GetLedgerAccount(long id, LedgerService ledger, CancellationToken ct) =>
        await ledger.GetAccountAsync(id, ct) is { } a ? TypedResults.Ok(LedgerAccountResponse.From(a)) : Problems.NotFound("ledger account", id.ToString());

    private static async Task<Ok<LedgerAudit>> Audit(LedgerService ledger, CancellationToken ct) => TypedResults.Ok(await ledger.AuditAsync(ct));
}
