using System.Text.Json;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;

namespace Tollgate.Features.Metering;

/// <summary>What happened to an authorization, as the API reports it.</summary>
public enum AuthorizationStatus { Pending, Captured, Voided, Expired }

/// <summary>
/// An authorization (hold) and, once captured, how it was settled. Amounts in micro-USD.
/// <see cref="ExcessMicros"/> is what a capture asked for above the hold; <see cref="ExcessChargedMicros"/> the part of
/// it the balance could pay (never more than was available).
/// </summary>
public sealed record AuthorizationView(
    string Id,
    AuthorizationStatus Status,
    long AmountMicros,
    DateTimeOffset? ExpiresAt,
    DateTimeOffset CreatedAt,
    string? Metadata,
    long? RequestedMicros = null,
    long? CapturedMicros = null,
    long? ReleasedMicros = null,
    long ExcessMicros = 0,
    long ExcessChargedMicros = 0);

public enum AuthorizationOutcome
{
    Created,
    Replayed,
    /// <summary>A capture or void that changed state now.</summary>
    Done,
    NotFound,
    IdempotencyConflict,
    InsufficientCredits,
    /// <summary>A spend cap cannot cover the hold (see <see cref="AuthorizationResult.ExceededCap"/>).</summary>
    BudgetExceeded,
    /// <summary>The end customer named is blocked by the account.</summary>
    CustomerBlocked,
    Expired,
    AlreadyCaptured,
    AlreadyVoided,
}

public sealed record AuthorizationResult(AuthorizationOutcome Outcome, AuthorizationView? Authorization = null, long AvailableMicros = 0)
{
    public Budgets.CapLeg? ExceededCap { get; init; }
}

/// <summary>
/// Authorizations are two-phase ledger transfers from the caller's customer account to <c>system:revenue</c>.
/// Every ledger id is scoped by account, so one account can never name (or see) another's authorization:
///
///   POST /authorizations        pending     auth:{account}:{id}           (hold, expires after ttl)
///   POST /{id}/capture  ≤ held  post        auth:{account}:{id}:capture   (rest released)
///                       > held  post whole hold + posted auth:{account}:{id}:excess, min(excess, available), atomically
///   POST /{id}/void             void        auth:{account}:{id}:void
///   (sweeper)                   expiry void ~expire:auth:{account}:{id}
///
/// Under spend caps the hold carries a twin per cap (<c>…:cap{i}</c>, see <see cref="Budgets.CapTransfers"/>),
/// captured, charged the excess and voided with it.
///
/// Each ledger id doubles as the idempotency key: a repeated request with the same content returns the stored
/// result; with other content it is a conflict. The capture stores the requested amount in its metadata so a replay
/// of an above-hold capture is recognised even though the excess charged depended on the balance at the time.
/// </summary>
internal sealed class AuthorizationService(LedgerService ledger, SystemAccounts system, Budgets.BudgetService budgets, TimeProvider time,
    Alerts.AlertService alerts)
{
    /// <summary>Client ids: 1–80 characters of letters, digits and <c>_-.:@+</c>, so every derived ledger id fits in 128.</summary>
    public const int MaxIdLength = 80;
    public const int DefaultTtlSeconds = 600;
    public const int MaxTtlSeconds = 86_400;
    public const string HoldCode = "authorization";
    public const string CaptureCode = "authorization_capture";
    public const string ExcessCode = "authorization_excess";
    public const string VoidCode = "authorization_void";

    public static bool IsValidClientId(string? id) => id is { Length: > 0 and <= MaxIdLength } && LedgerService.IsValidId(id);

    private static string HoldId(Caller c, string id) => $"auth:{c.AccountId}:{id}";
    private static string CaptureId(Caller c, string id) => $"auth:{c.AccountId}:{id}:capture";
    private static string ExcessId(Caller c, string id) => $"auth:{c.AccountId}:{id}:excess";
    private static string VoidId(Caller c, string id) => $"auth:{c.AccountId}:{id}:void";

    /// <param name="metadata">Compact JSON object text, or null.</param>
    /// <param name="customerId">The end customer the hold is for (caps and blocking apply), or null.</param>
    public async Task<AuthorizationResult> CreateAsync(Caller caller, string id, long amountMicros, int ttlSeconds, string? metadata, string? customerId, CancellationToken ct)
    {
        var budget = await budgets.ForCallAsync(caller, customerId ?? caller.Settings.CustomerId, time.GetUtcNow(), ct);
        if (budget.CustomerBlocked) return new(AuthorizationOutcome.CustomerBlocked);
        var revenue = await system.RevenueAsync(ct);
        var hold = new TransferRequest
        {
            Id = HoldId(caller, id),
            Kind = TransferKind.Pending,
            DebitAccountId = caller.LedgerAccountId,
            CreditAccountId = revenue,
            Amount = amountMicros,
            TimeoutSeconds = ttlSeconds,
            Code = HoldCode,
            Metadata = metadata,
        };
        var results = budget.Legs.Count == 0
            ? [await ledger.TransferAsync(hold, ct)]
            : await ledger.TransferAtomicAsync(Budgets.CapTransfers.Group(hold, budget.Legs, await budgets.SinkAsync(ct)), ct);
        var available = await AvailableAsync(caller, ct);
        if (Budgets.CapTransfers.Refused(results, budget.Legs) is { } cap)
            return new(AuthorizationOutcome.BudgetExceeded, AvailableMicros: available) { ExceededCap = cap };
        var result = results[0];
        if (result.Succeeded && results.Any(r => r.Code == TransferResultCode.Ok)) result = result with { Code = TransferResultCode.Ok };
        if (results.Any(r => r.Code == TransferResultCode.IdempotencyConflict)) result = result with { Code = TransferResultCode.IdempotencyConflict };
        return result.Code switch
        {
            TransferResultCode.Ok => new(AuthorizationOutcome.Created, await ViewAsync(caller, id, result.Transfer!, ct), available),
            TransferResultCode.Replayed => new(AuthorizationOutcome.Replayed, await ViewAsync(caller, id, result.Transfer!, ct), available),
            TransferResultCode.IdempotencyConflict => new(AuthorizationOutcome.IdempotencyConflict, AvailableMicros: available),
            TransferResultCode.InsufficientFunds => new(AuthorizationOutcome.InsufficientCredits, AvailableMicros: available),
            var other => throw new InvalidOperationException($"Unexpected ledger result {other} for an authorization."),
        };
    }

    public async Task<AuthorizationResult> GetAsync(Caller caller, string id, CancellationToken ct)
    {
        var hold = await FindHoldAsync(caller, id, ct);
        if (hold is null) return new(AuthorizationOutcome.NotFound);
        return new(AuthorizationOutcome.Done, await ViewAsync(caller, id, hold, ct), await AvailableAsync(caller, ct));
    }

    /// <summary>Charges <paramref name="amountMicros"/> (≥ 0) against the hold; see the class summary for amounts above it.</summary>
    public async Task<AuthorizationResult> CaptureAsync(Caller caller, string id, long amountMicros, CancellationToken ct)
    {
        var hold = await FindHoldAsync(caller, id, ct);
        if (hold is null) return new(AuthorizationOutcome.NotFound);
        var metadata = JsonSerializer.Serialize(new Dictionary<string, long> { ["requested_micros"] = amountMicros });
        if (await ReplayedCaptureAsync(caller, id, hold, metadata, ct) is { } replay) return replay;

        var twins = await Budgets.CapTransfers.FindAsync(ledger, hold.Id, ct);
        var companions = twins.Select((t, i) => new HoldCapture.Companion(t, Budgets.CapTransfers.Id(CaptureId(caller, id), i), charge => new TransferRequest
        {
            Id = Budgets.CapTransfers.Id(ExcessId(caller, id), i), DebitAccountId = t.DebitAccountId, CreditAccountId = t.CreditAccountId, Amount = charge,
            Code = Budgets.BudgetService.CapHoldCode,
        })).ToArray();
        var (results, twinResults) = await HoldCapture.CaptureAsync(ledger, hold, amountMicros,
            new TransferRequest { Id = CaptureId(caller, id), Code = CaptureCode, Metadata = metadata },
            charge => new TransferRequest
            {
                Id = ExcessId(caller, id), DebitAccountId = caller.LedgerAccountId, CreditAccountId = hold.CreditAccountId, Amount = charge,
                Code = ExcessCode, Metadata = metadata,
            }, companions, null, ct);
        var codes = results.Concat(twinResults).Select(r => r.Code).Where(c => c != TransferResultCode.LinkedTransferFailed).DefaultIfEmpty(TransferResultCode.LinkedTransferFailed).ToArray();
        results = [.. results, .. twinResults];
        if (results.All(r => r.Succeeded))
        {
            var replayed = results.All(r => r.Code == TransferResultCode.Replayed);
            if (!replayed) await ObserveCaptureAsync(caller, twins, ct);
            return new(replayed ? AuthorizationOutcome.Replayed : AuthorizationOutcome.Done,
                await ViewAsync(caller, id, hold with { Status = TransferStatus.Posted }, ct), await AvailableAsync(caller, ct));
        }
        if (codes.Contains(TransferResultCode.IdempotencyConflict))
        {
            // A concurrent identical capture won the race with another excess amount: report what it stored.
            return await ReplayedCaptureAsync(caller, id, hold, metadata, ct) ?? new(AuthorizationOutcome.IdempotencyConflict);
        }
        return SettleFailure(codes[0], await AvailableAsync(caller, ct));
    }

    /// <summary>Reports the balance and each cap's spending after a capture to the alerts engine, as the gateway does after a call.</summary>
    private async Task ObserveCaptureAsync(Caller caller, IReadOnlyList<Transfer> twins, CancellationToken ct)
    {
        var accounts = await ledger.GetAccountsAsync([caller.LedgerAccountId, .. twins.Select(t => t.DebitAccountId)], ct);
        foreach (var account in accounts)
        {
            if (account.Id == caller.LedgerAccountId) alerts.PostBalance(caller.AccountId, account.BalanceMicros);
            else if (Budgets.BudgetService.AlertOf(caller.AccountId, account) is { } cap)
                alerts.PostUsage(caller.AccountId, cap.Subject, cap.PeriodKey, account.DebitsPosted, account.CreditLimitMicros);
        }
    }

    public async Task<AuthorizationResult> VoidAsync(Caller caller, string id, CancellationToken ct)
    {
        var hold = await FindHoldAsync(caller, id, ct);
        if (hold is null) return new(AuthorizationOutcome.NotFound);
        var voidId = VoidId(caller, id);
        // A void after the timeout would release the same funds as the sweeper, but report it as what it is.
        if (hold.Status == TransferStatus.Pending && IsPastExpiry(hold) && await ledger.GetTransferAsync(voidId, ct) is null)
            return new(AuthorizationOutcome.Expired, await ViewAsync(caller, id, hold, ct));
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = voidId, Kind = TransferKind.VoidPending, PendingId = hold.Id, Code = VoidCode,
        }, ct);
        // Cap twins are released with it (an expired or already released twin is the same outcome).
        var twins = await Budgets.CapTransfers.FindAsync(ledger, hold.Id, ct);
        for (var i = 0; i < twins.Count; i++)
            await ledger.TransferAsync(new TransferRequest { Id = Budgets.CapTransfers.Id(voidId, i), Kind = TransferKind.VoidPending, PendingId = twins[i].Id, Code = VoidCode }, ct);
        var available = await AvailableAsync(caller, ct);
        return result.Code switch
        {
            TransferResultCode.Ok => new(AuthorizationOutcome.Done, await ViewAsync(caller, id, hold with { Status = TransferStatus.Voided }, ct), available),
            TransferResultCode.Replayed => new(AuthorizationOutcome.Replayed, await ViewAsync(caller, id, hold with { Status = TransferStatus.Voided }, ct), available),
            var code => SettleFailure(code, available),
        };
    }

    private static AuthorizationResult SettleFailure(TransferResultCode code, long available) => code switch
    {
        TransferResultCode.PendingTransferExpired => new(AuthorizationOutcome.Expired, AvailableMicros: available),
        TransferResultCode.PendingTransferAlreadyPosted => new(AuthorizationOutcome.AlreadyCaptured, AvailableMicros: available),
        TransferResultCode.PendingTransferAlreadyVoided => new(AuthorizationOutcome.AlreadyVoided, AvailableMicros: available),
        TransferResultCode.IdempotencyConflict => new(AuthorizationOutcome.IdempotencyConflict, AvailableMicros: available),
        TransferResultCode.InsufficientFunds => new(AuthorizationOutcome.InsufficientCredits, AvailableMicros: available),
        _ => throw new InvalidOperationException($"Unexpected ledger result {code} for an authorization settlement."),
    };

    /// <summary>The stored result of an earlier capture: a replay if it asked for the same amount, else a conflict; null if none.</summary>
    private async Task<AuthorizationResult?> ReplayedCaptureAsync(Caller caller, string id, Transfer hold, string metadata, CancellationToken ct)
    {
        if (await ledger.GetTransferAsync(CaptureId(caller, id), ct) is not { } stored) return null;
        if (!string.Equals(stored.Metadata, metadata, StringComparison.Ordinal)) return new(AuthorizationOutcome.IdempotencyConflict);
        return new(AuthorizationOutcome.Replayed, await ViewAsync(caller, id, hold with { Status = TransferStatus.Posted }, ct), await AvailableAsync(caller, ct));
    }

    private async Task<Transfer?> FindHoldAsync(Caller caller, string id, CancellationToken ct)
    {
        var hold = await ledger.GetTransferAsync(HoldId(caller, id), ct);
        // The id is scoped by account already; checking the debited account as well costs nothing.
        return hold is { Kind: TransferKind.Pending } && hold.DebitAccountId == caller.LedgerAccountId ? hold : null;
    }

    private bool IsPastExpiry(Transfer hold) => hold.ExpiresAt is { } e && e <= time.GetUtcNow();

    private async Task<long> AvailableAsync(Caller caller, CancellationToken ct) =>
        (await ledger.GetAccountAsync(caller.LedgerAccountId, ct))?.AvailableMicros ?? 0;

    private async Task<AuthorizationView> ViewAsync(Caller caller, string id, Transfer hold, CancellationToken ct)
    {
        var view = new AuthorizationView(id, AuthorizationStatus.Pending, hold.Amount, hold.ExpiresAt, hold.Timestamp, hold.Metadata);
        switch (hold.Status)
        {
            case TransferStatus.Posted:
                var capture = await ledger.GetTransferAsync(CaptureId(caller, id), ct);
                var excess = await ledger.GetTransferAsync(ExcessId(caller, id), ct);
                var requested = capture?.Metadata is { } m ? JsonDocument.Parse(m).RootElement.GetProperty("requested_micros").GetInt64() : capture?.Amount ?? hold.Amount;
                var posted = capture?.Amount ?? hold.Amount;
                var charged = excess?.Amount ?? 0;
                return view with
                {
                    Status = AuthorizationStatus.Captured,
                    RequestedMicros = requested,
                    CapturedMicros = checked(posted + charged),
                    ReleasedMicros = hold.Amount - posted,
                    ExcessMicros = Math.Max(0, requested - hold.Amount),
                    ExcessChargedMicros = charged,
                };
            case TransferStatus.Voided:
                return view with { Status = AuthorizationStatus.Voided, ReleasedMicros = hold.Amount };
            case TransferStatus.Expired:
                return view with { Status = AuthorizationStatus.Expired, ReleasedMicros = hold.Amount };
            default:
                // Past its timeout a hold can no longer be captured, even if the sweeper has not voided it yet.
                return IsPastExpiry(hold) ? view with { Status = AuthorizationStatus.Expired } : view;
        }
    }
}
