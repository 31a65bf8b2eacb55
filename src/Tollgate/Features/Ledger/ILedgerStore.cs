namespace Tollgate.Features.Ledger;

/// <summary>Result of checking the ledger's invariants; <see cref="Violations"/> is empty when all hold.</summary>
public sealed record LedgerAudit(
    long Accounts,
    long Transfers,
    long Entries,
    long SumDebitsPosted,
    long SumCreditsPosted,
    long SumDebitsPending,
    long SumCreditsPending,
    IReadOnlyList<string> Violations)
{
    public bool Healthy => Violations.Count == 0;
}

/// <summary>Storage for the ledger; one implementation per engine, identical behaviour.</summary>
internal interface ILedgerStore
{
    Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount account, CancellationToken ct);

    /// <summary>Returns the account with <see cref="NewLedgerAccount.Key"/>, creating it if missing (race-safe).</summary>
    Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount account, CancellationToken ct);

    Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct);

    /// <summary>
    /// Sets an account's credit limit, but never below what it already uses (debits pending and posted beyond its
    /// credits), so the limit invariant keeps holding: a lowered limit only stops new debits.
    /// </summary>
    Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct);

    Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct);

    Task<Transfer?> GetTransferAsync(string id, CancellationToken ct);

    /// <summary>Entries of one account, newest first, strictly older than <paramref name="beforeVersion"/> when given.</summary>
    Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct);

    /// <summary>Ids of pending transfers whose timeout passed at <paramref name="nowMicros"/>.</summary>
    Task<IReadOnlyList<string>> GetExpiredPendingAsync(long nowMicros, int limit, CancellationToken ct);

    /// <summary>
    /// Applies a batch in one database transaction, filling each command's results. Throws on database errors;
    /// then nothing of the batch was written. Synchronous: only the ledger's own writer thread calls it, see
    /// <see cref="LedgerService"/>. When <paramref name="next"/> is given the store may begin that batch (lock and read
    /// what it needs) in the same round trip as this one's commit; the caller's next call must then be for exactly
    /// that batch, or the begun transaction is dropped.
    /// </summary>
    void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next);

    /// <summary>Whether <see cref="Apply"/> can begin the next batch early (so the writer should hand it over).</summary>
    bool BeginsNextBatchEarly { get; }

    /// <summary>Whether the last <see cref="Apply"/> began <paramref name="batch"/> (so it must be handed over unchanged).</summary>
    bool HasBegun(IReadOnlyList<LedgerCommand> batch) => false;

    /// <summary>
    /// Applies <paramref name="batch"/> to the writer's own state and leaves its write to the store's background, when
    /// the store may (PostgreSQL under the writer claim); the store then acknowledges each command
    /// (<see cref="LedgerCommand.Acknowledge"/>) once its write committed. False: nothing was done, use <see cref="Apply"/>
    /// (after <see cref="DrainDeferred"/>).
    /// </summary>
    bool TryDefer(IReadOnlyList<LedgerCommand> batch, long nowMicros) => false;

    /// <summary>
    /// Waits until no deferred write is pending. Returns the batches whose deferred write failed, in order: nothing of
    /// them was written, and the writer applies them again with <see cref="Apply"/> before anything else.
    /// </summary>
    IReadOnlyList<IReadOnlyList<LedgerCommand>> DrainDeferred() => [];

    /// <summary>Like <see cref="DrainDeferred"/> when a deferred write failed; empty at once otherwise.</summary>
    IReadOnlyList<IReadOnlyList<LedgerCommand>> TakeFailedDeferred() => [];

    /// <summary>Registers what the store calls (from another thread) when a deferred write failed, to wake the writer.</summary>
    void OnDeferredFailure(Action wakeWriter) { }

    Task<LedgerAudit> AuditAsync(CancellationToken ct);
}
