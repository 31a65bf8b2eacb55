using Tollgate.Infrastructure;
using System.Text.Json;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Ledger;

/// <summary>A transfer over HTTP (snake_case). Amounts are micro-USD.</summary>
public sealed record TransferResponse(
    string Id,
    TransferKind Kind,
    long DebitAccountId,
    long CreditAccountId,
    long AmountMicros,
    string Amount,
    string? PendingId,
    int TimeoutSeconds,
    DateTimeOffset? ExpiresAt,
    TransferStatus Status,
    string Code,
    string? Reference,
    string? Description,
    JsonElement? Metadata,
    DateTimeOffset Timestamp)
{
    public static TransferResponse From(Transfer t) => new(t.Id, t.Kind, t.DebitAccountId, t.CreditAccountId, t.Amount,
        Money.FormatMicros(t.Amount), t.PendingId, t.TimeoutSeconds, t.ExpiresAt, t.Status, t.Code, t.Reference, t.Description,
        t.Metadata is null ? null : JsonDocument.Parse(t.Metadata).RootElement.Clone(), t.Timestamp);
}

/// <summary>One statement line: how a transfer changed this account, and the balance after it.</summary>
public sealed record StatementLineResponse(
    long Sequence,
    string TransferId,
    TransferKind Kind,
    string Code,
    string? Description,
    string? Reference,
    string? PendingId,
    string Direction,
    long AmountMicros,
    long HeldChangeMicros,
    long BalanceAfterMicros,
    long HeldAfterMicros,
    DateTimeOffset Timestamp)
{
    public static StatementLineResponse From(StatementLine line)
    {
        var (e, t) = (line.Entry, line.Transfer);
        var sign = e.IsDebit ? -1 : 1;
        return new(e.Version, t.Id, t.Kind, t.Code, t.Description, t.Reference, t.PendingId, e.IsDebit ? "debit" : "credit",
            sign * e.PostedDelta, e.IsDebit ? e.PendingDelta : 0, e.BalanceAfter, e.DebitsPendingAfter,
            UnixMicros.ToDateTimeOffset(e.TimestampMicros));
    }
}

public sealed record Page<T>(IReadOnlyList<T> Data, bool HasMore, string? NextCursor);

public sealed record LedgerAccountResponse(
    long Id, string Kind, string? Key, string Currency, long CreditLimitMicros, IReadOnlyList<string> Flags,
    long DebitsPendingMicros, long DebitsPostedMicros, long CreditsPendingMicros, long CreditsPostedMicros,
    long BalanceMicros, long AvailableMicros, long HeldMicros, DateTimeOffset CreatedAt)
{
    public static LedgerAccountResponse From(LedgerAccount a) => new(a.Id, a.Kind, a.Key, a.Currency, a.CreditLimitMicros, FlagNames(a.Flags),
        a.DebitsPending, a.DebitsPosted, a.CreditsPending, a.CreditsPosted, a.BalanceMicros, a.AvailableMicros, a.HeldMicros, a.CreatedAt);

    internal static IReadOnlyList<string> FlagNames(LedgerAccountFlags flags)
    {
        var names = new List<string>();
        if ((flags & LedgerAccountFlags.DebitsMustNotExceedCredits) != 0) names.Add("debits_must_not_exceed_credits");
        if ((flags & LedgerAccountFlags.CreditsMustNotExceedDebits) != 0) names.Add("credits_must_not_exceed_debits");
        return names;
    }
}

/// <summary>A transfer request over HTTP; see <see cref="TransferRequest"/> for the meaning of each field.</summary>
public sealed record TransferInput(
    string? Id,
    TransferKind? Kind,
    long? DebitAccountId,
    long? CreditAccountId,
    long? AmountMicros,
    string? PendingId,
    int? TimeoutSeconds,
    string? Code,
    string? Reference,
    string? Description,
    JsonElement? Metadata);

public sealed record TransfersInput(IReadOnlyList<TransferInput>? Transfers, bool? Atomic);

public sealed record TransferOutcome(string? Id, TransferResultCode Result, TransferResponse? Transfer);

public sealed record NewLedgerAccountInput(string? Kind, string? Key, long? CreditLimitMicros, IReadOnlyList<string>? Flags);
