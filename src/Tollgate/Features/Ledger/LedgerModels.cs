using Tollgate.Infrastructure;
namespace Tollgate.Features.Ledger;

/// <summary>What a ledger account represents. Stored as text so later features can add kinds without a migration.</summary>
public static class LedgerAccountKinds
{
    public const string Customer = "customer";
    public const string Revenue = "revenue";
    public const string PaymentsClearing = "payments_clearing";
    public const string ProviderCost = "provider_cost";
    public const string CreatorEarnings = "creator_earnings";
    public const string Promotions = "promotions";
    public const string Adjustments = "adjustments";
}

[Flags]
public enum LedgerAccountFlags
{
    None = 0,
    /// <summary>debits_pending + debits_posted may never exceed credits_posted + credit_limit (prepaid customers).</summary>
    DebitsMustNotExceedCredits = 1,
    /// <summary>credits_pending + credits_posted may never exceed debits_posted.</summary>
    CreditsMustNotExceedDebits = 2,
}

/// <summary>A ledger account with its four counters, all in micro-USD.</summary>
public sealed record LedgerAccount(
    long Id,
    string Kind,
    string? Key,
    string Currency,
    long CreditLimitMicros,
    LedgerAccountFlags Flags,
    long DebitsPending,
    long DebitsPosted,
    long CreditsPending,
    long CreditsPosted,
    long Version,
    DateTimeOffset CreatedAt)
{
    /// <summary>credits_posted − debits_posted.</summary>
    public long BalanceMicros => CreditsPosted - DebitsPosted;

    /// <summary>Balance − debits_pending + credit limit: what a new debit may use.</summary>
    public long AvailableMicros => BalanceMicros - DebitsPending + CreditLimitMicros;

    /// <summary>Funds reserved by open holds (debits_pending).</summary>
    public long HeldMicros => DebitsPending;
}

public sealed record NewLedgerAccount(
    string Kind,
    string? Key = null,
    string Currency = "USD",
    long CreditLimitMicros = 0,
    LedgerAccountFlags Flags = LedgerAccountFlags.None);

/// <summary>The phase a transfer request asks for (TigerBeetle's pending/post_pending/void_pending flags).</summary>
public enum TransferKind : byte
{
    /// <summary>Moves money at once.</summary>
    Posted = 0,
    /// <summary>Reserves money (a hold) until posted, voided or expired.</summary>
    Pending = 1,
    /// <summary>Settles a pending transfer for an amount ≤ the held amount; the rest is released.</summary>
    PostPending = 2,
    /// <summary>Releases a pending transfer entirely.</summary>
    VoidPending = 3,
}

/// <summary>State of a stored transfer. Only pending transfers move beyond <see cref="Final"/>.</summary>
public enum TransferStatus : byte
{
    /// <summary>A posted, post-pending or void-pending transfer; immutable.</summary>
    Final = 0,
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

/// <summary>
/// A request to move money. <see cref="Id"/> is chosen by the client and is the idempotency key: submitting
/// the same id with the same fields returns the original result; with other fields it is a conflict.
/// </summary>
public sealed record TransferRequest
{
    public required string Id { get; init; }
    public TransferKind Kind { get; init; } = TransferKind.Posted;
    /// <summary>Required for posted and pending; optional for post/void (then must match the pending transfer).</summary>
    public long DebitAccountId { get; init; }
    public long CreditAccountId { get; init; }
    /// <summary>Micro-USD, &gt; 0 for posted and pending. For post: null = the whole held amount. For void: null or the held amount.</summary>
    public long? Amount { get; init; }
    /// <summary>The pending transfer a post or void refers to.</summary>
    public string? PendingId { get; init; }
    /// <summary>Seconds until a pending transfer expires and is voided automatically; 0 = never.</summary>
    public int TimeoutSeconds { get; init; }
    /// <summary>Why money moved: "grant", "adjustment", "usage", "topup", …</summary>
    public string Code { get; init; } = "transfer";
    /// <summary>External reference (request id, payment id).</summary>
    public string? Reference { get; init; }
    public string? Description { get; init; }
    /// <summary>Compact JSON object text, or null.</summary>
    public string? Metadata { get; init; }

    /// <summary>Set only by the expiry sweeper: a void that marks the pending transfer expired.</summary>
    internal bool IsExpiry { get; init; }
}

/// <summary>A transfer as stored; immutable apart from a pending transfer's <see cref="Status"/>.</summary>
public sealed record Transfer(
    string Id,
    TransferKind Kind,
    long DebitAccountId,
    long CreditAccountId,
    long Amount,
    string? PendingId,
    int TimeoutSeconds,
    long? ExpiresAtMicros,
    TransferStatus Status,
    string Code,
    string? Reference,
    string? Description,
    string? Metadata,
    long TimestampMicros,
    long DebitBalanceAfter,
    long CreditBalanceAfter)
{
    public DateTimeOffset Timestamp => UnixMicros.ToDateTimeOffset(TimestampMicros);
    public DateTimeOffset? ExpiresAt => ExpiresAtMicros is { } m ? UnixMicros.ToDateTimeOffset(m) : null;
}

/// <summary>One side of a transfer on one account, append-only.</summary>
public sealed record LedgerEntry(
    long AccountId,
    long Version,
    string TransferId,
    bool IsDebit,
    long PendingDelta,
    long PostedDelta,
    long BalanceAfter,
    long DebitsPendingAfter,
    long CreditsPendingAfter,
    long TimestampMicros);

/// <summary>An entry joined with its transfer, for statements.</summary>
public sealed record StatementLine(LedgerEntry Entry, Transfer Transfer);

public enum TransferResultCode
{
    Ok,
    /// <summary>Replay of an identical transfer: the original result, no new effect.</summary>
    Replayed,
    IdempotencyConflict,
    InvalidId,
    AccountsMustBeDifferent,
    AmountMustBePositive,
    DebitAccountNotFound,
    CreditAccountNotFound,
    CurrencyMismatch,
    InsufficientFunds,
    ExceedsDebits,
    TimeoutNotAllowed,
    InvalidTimeout,
    PendingIdRequired,
    PendingIdNotAllowed,
    PendingTransferNotFound,
    PendingTransferNotPending,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    PendingAccountMismatch,
    PostAmountExceedsPending,
    VoidAmountMismatch,
    Overflow,
    /// <summary>Another transfer in the same atomic batch failed, so this one was not applied.</summary>
    LinkedTransferFailed,
    /// <summary>The amount exceeds <see cref="LedgerService.MaxAmountMicros"/>.</summary>
    AmountTooLarge,
}

/// <summary>
/// The outcome of one transfer request. <see cref="Transfer"/> is set for Ok and Replayed. For InsufficientFunds,
/// <see cref="AvailableMicros"/> is what the debit account had available in the state the transfer was refused in (a
/// read of the account afterwards may not show a hold acknowledged before its write).
/// </summary>
public readonly record struct TransferResult(TransferResultCode Code, Transfer? Transfer, long? AvailableMicros = null)
{
    public bool Succeeded => Code is TransferResultCode.Ok or TransferResultCode.Replayed;
}

/// <summary>
/// How a ledger command commits, beyond its transfers.
/// <list type="bullet">
/// <item><see cref="Relaxed"/>: acknowledged once committed and visible to every process, before it is durable on disk
/// (PostgreSQL <c>synchronous_commit = off</c>, SQLite <c>synchronous = NORMAL</c>): a database crash in the next
/// moments may forget it. Only for transfers whose loss is harmless — a gateway hold (forgotten, the call's settlement
/// charges what is available instead; it never overdraws). A batch commits relaxed only if every command in it is.</item>
/// <item><see cref="Records"/>: usage records written in the same database transaction as the transfers, if they all
/// succeed — a charge and its record exist together or not at all, for the cost of one commit.</item>
/// </list>
/// </summary>
public sealed record LedgerCommit
{
    public static readonly LedgerCommit Durable = new();
    public static readonly LedgerCommit RelaxedCommit = new() { Relaxed = true };

    public bool Relaxed { get; init; }
    public IReadOnlyList<Metering.UsageRecord>? Records { get; init; }

    /// <summary>
    /// Rows another feature writes in the same database transaction as the transfers, if they all succeed (replays
    /// included), e.g. "this payment event was processed". Portable SQL with <c>@name</c> parameters; it must be
    /// idempotent (<c>ON CONFLICT DO NOTHING</c>), since a replayed command writes it again.
    /// </summary>
    public IReadOnlyList<LedgerSideWrite>? SideWrites { get; init; }
}

/// <summary>One statement of <see cref="LedgerCommit.SideWrites"/>.</summary>
public sealed record LedgerSideWrite(string Sql, IReadOnlyDictionary<string, object?> Parameters);
