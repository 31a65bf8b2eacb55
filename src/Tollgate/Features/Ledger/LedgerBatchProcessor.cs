namespace Tollgate.Features.Ledger;

/// <summary>Mutable counters of one account while a batch is applied; loaded locked, written back if dirty.</summary>
internal sealed class AccountState
{
    public required long Id { get; init; }
    public required string Currency { get; init; }
    public required long CreditLimit { get; init; }
    public required LedgerAccountFlags Flags { get; init; }
    public long DebitsPending;
    public long DebitsPosted;
    public long CreditsPending;
    public long CreditsPosted;
    public long Version;
    public bool Dirty;

    public long Balance => CreditsPosted - DebitsPosted;

    internal (long, long, long, long, long, bool) Save() => (DebitsPending, DebitsPosted, CreditsPending, CreditsPosted, Version, Dirty);

    internal void Restore((long, long, long, long, long, bool) s) =>
        (DebitsPending, DebitsPosted, CreditsPending, CreditsPosted, Version, Dirty) = s;
}

/// <summary>
/// One unit of work for the ledger: a single transfer, or several applied all-or-nothing.
/// </summary>
internal sealed class LedgerCommand(IReadOnlyList<TransferRequest> transfers, bool atomic, LedgerCommit? commit = null)
{
    public IReadOnlyList<TransferRequest> Transfers { get; } = transfers;
    public bool Atomic { get; } = atomic;
    public LedgerCommit Commit { get; } = commit ?? LedgerCommit.Durable;
    public TransferResult[] Results { get; } = new TransferResult[transfers.Count];

    /// <summary>
    /// Set by <see cref="LedgerService"/>: hands the caller its results. Called once the batch committed
    /// (<see cref="Acknowledge"/>), or earlier, when the results can no longer change short of losing the batch
    /// (<see cref="AcknowledgeEarly"/>, see PostgresLedgerStore, "Exclusive writer"). Only a
    /// <see cref="LedgerCommit.Relaxed"/> command that places holds is acknowledged early. A release (void) or any other
    /// command is acknowledged after its commit, so whoever hears back from its caller reads the ledger with it applied.
    /// </summary>
    public Action<TransferResult[]>? Acknowledgement { get; set; }

    /// <summary>Set by <see cref="LedgerService"/>: tells the caller its batch could not be written.</summary>
    public Action<Exception>? Failure { get; set; }

    /// <summary>Whether the caller already has its results (a later failure of the batch no longer reaches it).</summary>
    public bool AcknowledgedEarly { get; private set; }

    /// <summary>Acknowledges a relaxed command now, with a copy of its results (a retry of the batch may overwrite them).</summary>
    public void AcknowledgeEarly()
    {
        if (AcknowledgedEarly || !Commit.Relaxed || Acknowledgement is not { } acknowledge) return;
        foreach (var t in Transfers) if (t.Kind != TransferKind.Pending) return;
        AcknowledgedEarly = true;
        acknowledge((TransferResult[])Results.Clone());
    }

    /// <summary>Hands the caller its results after the batch committed (nothing more if it has them already).</summary>
    public void Acknowledge()
    {
        if (!AcknowledgedEarly) Acknowledgement?.Invoke(Results);
    }

    /// <summary>Hands the caller the batch's failure (it changes nothing for a caller acknowledged early).</summary>
    public void Fail(Exception e) => Failure?.Invoke(e);

    /// <summary>Usage records to write with a batch: those of commands whose transfers all succeeded (replays included, the insert ignores known keys).</summary>
    public static List<Metering.UsageRecord> RecordsToWrite(IReadOnlyList<LedgerCommand> batch)
    {
        var records = new List<Metering.UsageRecord>();
        var seen = new HashSet<(string, string)>();
        foreach (var c in batch)
            if (c.Commit.Records is { Count: > 0 } rs && c.Results.All(r => r.Succeeded))
                foreach (var r in rs)
                    if (seen.Add((r.AccountId, r.Id))) records.Add(r);
        return records;
    }

    /// <summary>Side writes of commands whose transfers all succeeded, in order.</summary>
    public static List<LedgerSideWrite> SideWritesToRun(IReadOnlyList<LedgerCommand> batch)
    {
        var writes = new List<LedgerSideWrite>();
        foreach (var c in batch)
            if (c.Commit.SideWrites is { Count: > 0 } ws && c.Results.All(r => r.Succeeded)) writes.AddRange(ws);
        return writes;
    }

    /// <summary>True when no command of the batch needs its commit to be durable before it is acknowledged.</summary>
    public static bool AllRelaxed(IReadOnlyList<LedgerCommand> batch)
    {
        foreach (var c in batch) if (!c.Commit.Relaxed) return false;
        return true;
    }
}

/// <summary>What a store must write after a batch was applied in memory.</summary>
internal sealed class LedgerBatchWrites
{
    public List<Transfer> NewTransfers { get; } = new();
    public List<LedgerEntry> Entries { get; } = new();
    /// <summary>Pending transfers whose status changed (id → new status), in order.</summary>
    public Dictionary<string, TransferStatus> PendingStatusChanges { get; } = new(StringComparer.Ordinal);
    public List<AccountState> DirtyAccounts { get; } = new();

    /// <summary>
    /// The writes of batches applied one after another, as one: every row inserted, and each account and pending
    /// status as the last of them left it.
    /// </summary>
    public static LedgerBatchWrites Merge(IEnumerable<LedgerBatchWrites> inOrder)
    {
        var merged = new LedgerBatchWrites();
        var accounts = new Dictionary<long, AccountState>();
        foreach (var w in inOrder)
        {
            merged.NewTransfers.AddRange(w.NewTransfers);
            merged.Entries.AddRange(w.Entries);
            foreach (var (id, status) in w.PendingStatusChanges) merged.PendingStatusChanges[id] = status;
            foreach (var a in w.DirtyAccounts) accounts[a.Id] = a;
        }
        merged.DirtyAccounts.AddRange(accounts.Values);
        merged.FoldSettlementsIntoInserts();
        return merged;
    }

    /// <summary>
    /// A hold placed and settled by the same writes is inserted with its final status, instead of inserted pending and
    /// then updated: one row version instead of two. The update cannot be a HOT update (status is in the open-holds
    /// index's predicate), so on PostgreSQL it cost a new heap tuple, a primary-key index entry and their WAL.
    /// </summary>
    public void FoldSettlementsIntoInserts()
    {
        if (PendingStatusChanges.Count == 0) return;
        for (var i = 0; i < NewTransfers.Count; i++)
        {
            var t = NewTransfers[i];
            if (t.Kind == TransferKind.Pending && PendingStatusChanges.Remove(t.Id, out var status))
                NewTransfers[i] = t with { Status = status };
        }
    }
}

/// <summary>
/// Applies a batch of ledger commands to account state that the store has loaded and locked. Engine-neutral,
/// so SQLite and PostgreSQL behave identically. Steps per transfer:
/// 1. replay check against stored and earlier-in-batch transfers (same fields → Replayed, else IdempotencyConflict);
/// 2. validation (accounts, amounts, pending state, expiry);
/// 3. balance limits (DebitsMustNotExceedCredits / CreditsMustNotExceedDebits) with checked arithmetic;
/// 4. counters and two entries (debit side, credit side) with balance after.
/// Atomic commands keep an undo log and roll back every member if one fails.
/// </summary>
internal sealed class LedgerBatchProcessor
{
    private readonly Dictionary<long, AccountState> _accounts;
    private readonly Dictionary<string, Transfer> _transfers;
    private readonly long _nowMicros;
    private readonly LedgerBatchWrites _writes = new();
    private readonly HashSet<long> _dirty = new();

    public LedgerBatchProcessor(Dictionary<long, AccountState> accounts, Dictionary<string, Transfer> knownTransfers, long nowMicros)
    {
        _accounts = accounts;
        _transfers = knownTransfers;
        _nowMicros = nowMicros;
    }

    /// <summary>Ids of every transfer the store must load: the requests' own ids and the pending ids they name.</summary>
    public static HashSet<string> TransferIdsToLoad(IEnumerable<LedgerCommand> commands)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var c in commands)
            foreach (var t in c.Transfers)
            {
                ids.Add(t.Id);
                if (t.PendingId is not null) ids.Add(t.PendingId);
            }
        return ids;
    }

    /// <summary>Account ids named directly by the requests (pending transfers' accounts come from the store).</summary>
    public static HashSet<long> AccountIdsToLoad(IEnumerable<LedgerCommand> commands)
    {
        var ids = new HashSet<long>();
        foreach (var c in commands)
            foreach (var t in c.Transfers)
            {
                if (t.DebitAccountId != 0) ids.Add(t.DebitAccountId);
                if (t.CreditAccountId != 0) ids.Add(t.CreditAccountId);
            }
        return ids;
    }

    public LedgerBatchWrites Apply(IEnumerable<LedgerCommand> commands)
    {
        foreach (var command in commands)
        {
            if (command.Transfers.Count == 1 && !command.Atomic) command.Results[0] = ApplyOne(command.Transfers[0], null);
            else ApplyAtomic(command);
        }
        foreach (var id in _dirty) _writes.DirtyAccounts.Add(_accounts[id]);
        _writes.FoldSettlementsIntoInserts();
        return _writes;
    }

    private void ApplyAtomic(LedgerCommand command)
    {
        var undo = new UndoLog(_writes.NewTransfers.Count, _writes.Entries.Count);
        var failedAt = -1;
        var replays = 0;
        for (var i = 0; i < command.Transfers.Count; i++)
        {
            var result = ApplyOne(command.Transfers[i], undo);
            command.Results[i] = result;
            if (result.Code == TransferResultCode.Replayed) replays++;
            else if (!result.Succeeded) { failedAt = i; break; }
        }

        // A group is replayed only as a whole; part-new, part-stored means the client changed the group.
        if (failedAt < 0 && replays > 0 && replays < command.Transfers.Count)
        {
            for (var i = 0; i < command.Transfers.Count; i++)
                if (command.Results[i].Code == TransferResultCode.Replayed) { failedAt = i; command.Results[i] = new(TransferResultCode.IdempotencyConflict, null); break; }
        }
        if (failedAt < 0) return;

        undo.Rollback(this);
        for (var i = 0; i < command.Transfers.Count; i++)
            if (i != failedAt) command.Results[i] = new(TransferResultCode.LinkedTransferFailed, null);
    }

    private TransferResult ApplyOne(TransferRequest request, UndoLog? undo)
    {
        if (string.IsNullOrEmpty(request.Id)) return Fail(TransferResultCode.InvalidId);
        if (_transfers.TryGetValue(request.Id, out var existing))
            return SameFields(request, existing)
                ? new(TransferResultCode.Replayed, existing)
                : Fail(TransferResultCode.IdempotencyConflict);

        try
        {
            return request.Kind switch
            {
                TransferKind.Posted or TransferKind.Pending => ApplyNew(request, undo),
                TransferKind.PostPending or TransferKind.VoidPending => ApplySettle(request, undo),
                _ => Fail(TransferResultCode.InvalidId),
            };
        }
        catch (OverflowException)
        {
            // Validation happens before mutation, and counters only grow by checked sums computed first.
            return Fail(TransferResultCode.Overflow);
        }
    }

    private TransferResult ApplyNew(TransferRequest r, UndoLog? undo)
    {
        if (r.PendingId is not null) return Fail(TransferResultCode.PendingIdNotAllowed);
        if (r.DebitAccountId == r.CreditAccountId) return Fail(TransferResultCode.AccountsMustBeDifferent);
        if (r.Amount is not > 0) return Fail(TransferResultCode.AmountMustBePositive);
        if (r.Kind == TransferKind.Posted && r.TimeoutSeconds != 0) return Fail(TransferResultCode.TimeoutNotAllowed);
        if (r.TimeoutSeconds < 0) return Fail(TransferResultCode.InvalidTimeout);
        if (!_accounts.TryGetValue(r.DebitAccountId, out var dr)) return Fail(TransferResultCode.DebitAccountNotFound);
        if (!_accounts.TryGetValue(r.CreditAccountId, out var cr)) return Fail(TransferResultCode.CreditAccountNotFound);
        if (!string.Equals(dr.Currency, cr.Currency, StringComparison.Ordinal)) return Fail(TransferResultCode.CurrencyMismatch);

        var amount = r.Amount.Value;
        var pending = r.Kind == TransferKind.Pending;

        // Compute every new counter first (checked), so a failure leaves state untouched.
        var drDebitsPending = pending ? checked(dr.DebitsPending + amount) : dr.DebitsPending;
        var drDebitsPosted = pending ? dr.DebitsPosted : checked(dr.DebitsPosted + amount);
        var crCreditsPending = pending ? checked(cr.CreditsPending + amount) : cr.CreditsPending;
        var crCreditsPosted = pending ? cr.CreditsPosted : checked(cr.CreditsPosted + amount);

        if ((dr.Flags & LedgerAccountFlags.DebitsMustNotExceedCredits) != 0
            && checked(drDebitsPending + drDebitsPosted) > checked(dr.CreditsPosted + dr.CreditLimit))
            return new(TransferResultCode.InsufficientFunds, null, dr.CreditsPosted + dr.CreditLimit - dr.DebitsPending - dr.DebitsPosted);
        if ((cr.Flags & LedgerAccountFlags.CreditsMustNotExceedDebits) != 0
            && checked(crCreditsPending + crCreditsPosted) > cr.DebitsPosted)
            return Fail(TransferResultCode.ExceedsDebits);

        long? expiresAt = pending && r.TimeoutSeconds > 0 ? checked(_nowMicros + r.TimeoutSeconds * 1_000_000L) : null;

        undo?.Touch(dr);
        undo?.Touch(cr);
        dr.DebitsPending = drDebitsPending;
        dr.DebitsPosted = drDebitsPosted;
        cr.CreditsPending = crCreditsPending;
        cr.CreditsPosted = crCreditsPosted;

        var transfer = new Transfer(r.Id, r.Kind, dr.Id, cr.Id, amount, null, r.TimeoutSeconds, expiresAt,
            pending ? TransferStatus.Pending : TransferStatus.Final, r.Code, r.Reference, r.Description, r.Metadata,
            _nowMicros, dr.Balance, cr.Balance);
        Record(transfer, dr, cr, pending ? amount : 0, pending ? 0 : amount, undo);
        return new(TransferResultCode.Ok, transfer);
    }

    private TransferResult ApplySettle(TransferRequest r, UndoLog? undo)
    {
        if (r.PendingId is null) return Fail(TransferResultCode.PendingIdRequired);
        if (r.TimeoutSeconds != 0) return Fail(TransferResultCode.TimeoutNotAllowed);
        if (!_transfers.TryGetValue(r.PendingId, out var p)) return Fail(TransferResultCode.PendingTransferNotFound);
        // The store locks a hold's accounts by looking the hold up first. A hold committed by another process after
        // that lookup (so before its creator was acknowledged) has unlocked accounts here: treat it as not yet there.
        if (!_accounts.TryGetValue(p.DebitAccountId, out var dr) || !_accounts.TryGetValue(p.CreditAccountId, out var cr))
            return Fail(TransferResultCode.PendingTransferNotFound);
        if (p.Kind != TransferKind.Pending) return Fail(TransferResultCode.PendingTransferNotPending);
        if ((r.DebitAccountId != 0 && r.DebitAccountId != p.DebitAccountId)
            || (r.CreditAccountId != 0 && r.CreditAccountId != p.CreditAccountId))
            return Fail(TransferResultCode.PendingAccountMismatch);
        switch (p.Status)
        {
            case TransferStatus.Posted: return Fail(TransferResultCode.PendingTransferAlreadyPosted);
            case TransferStatus.Voided: return Fail(TransferResultCode.PendingTransferAlreadyVoided);
            case TransferStatus.Expired: return Fail(TransferResultCode.PendingTransferExpired);
        }
        var post = r.Kind == TransferKind.PostPending;
        var expired = p.ExpiresAtMicros is { } exp && exp <= _nowMicros;
        // A post after the timeout fails even before the sweeper ran; a void is still allowed (same effect).
        if (post && expired) return Fail(TransferResultCode.PendingTransferExpired);

        var held = p.Amount;
        long amount;
        if (post)
        {
            amount = r.Amount ?? held;
            if (amount < 0) return Fail(TransferResultCode.AmountMustBePositive);
            if (amount > held) return Fail(TransferResultCode.PostAmountExceedsPending);
        }
        else
        {
            if (r.Amount is { } a && a != held) return Fail(TransferResultCode.VoidAmountMismatch);
            amount = held;
        }

        var posted = post ? amount : 0;
        var drDebitsPending = checked(dr.DebitsPending - held);
        var drDebitsPosted = checked(dr.DebitsPosted + posted);
        var crCreditsPending = checked(cr.CreditsPending - held);
        var crCreditsPosted = checked(cr.CreditsPosted + posted);

        undo?.Touch(dr);
        undo?.Touch(cr);
        undo?.TouchPending(p);
        dr.DebitsPending = drDebitsPending;
        dr.DebitsPosted = drDebitsPosted;
        cr.CreditsPending = crCreditsPending;
        cr.CreditsPosted = crCreditsPosted;

        var newStatus = post ? TransferStatus.Posted : r.IsExpiry ? TransferStatus.Expired : TransferStatus.Voided;
        var updatedPending = p with { Status = newStatus };
        _transfers[p.Id] = updatedPending;
        _writes.PendingStatusChanges[p.Id] = newStatus;

        var transfer = new Transfer(r.Id, r.Kind, dr.Id, cr.Id, amount, p.Id, 0, null, TransferStatus.Final,
            r.Code, r.Reference, r.Description, r.Metadata, _nowMicros, dr.Balance, cr.Balance);
        Record(transfer, dr, cr, -held, posted, undo);
        return new(TransferResultCode.Ok, transfer);
    }

    private void Record(Transfer t, AccountState dr, AccountState cr, long pendingDelta, long postedDelta, UndoLog? undo)
    {
        dr.Version++;
        cr.Version++;
        dr.Dirty = cr.Dirty = true;
        _dirty.Add(dr.Id);
        _dirty.Add(cr.Id);
        _writes.NewTransfers.Add(t);
        _writes.Entries.Add(new LedgerEntry(dr.Id, dr.Version, t.Id, true, pendingDelta, postedDelta, dr.Balance, dr.DebitsPending, dr.CreditsPending, t.TimestampMicros));
        _writes.Entries.Add(new LedgerEntry(cr.Id, cr.Version, t.Id, false, pendingDelta, postedDelta, cr.Balance, cr.DebitsPending, cr.CreditsPending, t.TimestampMicros));
        _transfers[t.Id] = t;
        undo?.Added(t.Id);
    }

    /// <summary>
    /// Whether a replayed request carries the same content as the stored transfer. Fields the server fills in
    /// (timestamp, balances, a post's defaulted amount or accounts) match when the request left them unset.
    /// </summary>
    internal static bool SameFields(TransferRequest r, Transfer t)
    {
        if (r.Kind != t.Kind) return false;
        if (!string.Equals(r.PendingId, t.PendingId, StringComparison.Ordinal)) return false;
        var settle = r.Kind is TransferKind.PostPending or TransferKind.VoidPending;
        if (settle)
        {
            if (r.DebitAccountId != 0 && r.DebitAccountId != t.DebitAccountId) return false;
            if (r.CreditAccountId != 0 && r.CreditAccountId != t.CreditAccountId) return false;
            if (r.Amount is { } a && a != t.Amount) return false;
        }
        else if (r.DebitAccountId != t.DebitAccountId || r.CreditAccountId != t.CreditAccountId || r.Amount != t.Amount)
        {
            return false;
        }
        return r.TimeoutSeconds == t.TimeoutSeconds
            && string.Equals(r.Code, t.Code, StringComparison.Ordinal)
            && string.Equals(r.Reference, t.Reference, StringComparison.Ordinal)
            && string.Equals(r.Description, t.Description, StringComparison.Ordinal)
            && string.Equals(r.Metadata, t.Metadata, StringComparison.Ordinal);
    }

    private static TransferResult Fail(TransferResultCode code) => new(code, null);

    /// <summary>Restores accounts, pending statuses and outputs touched by a failed atomic command.</summary>
    private sealed class UndoLog(int transferMark, int entryMark)
    {
        private readonly Dictionary<long, (AccountState Account, (long, long, long, long, long, bool) Saved)> _accounts = new();
        private readonly Dictionary<string, Transfer> _pending = new(StringComparer.Ordinal);
        private readonly List<string> _added = new();

        public void Touch(AccountState a) => _accounts.TryAdd(a.Id, (a, a.Save()));

        public void TouchPending(Transfer p) => _pending.TryAdd(p.Id, p);

        public void Added(string id) => _added.Add(id);

        public void Rollback(LedgerBatchProcessor processor)
        {
            foreach (var (account, saved) in _accounts.Values)
            {
                account.Restore(saved);
                // Dirty stays set if an earlier command in the batch changed it; writing unchanged counters is harmless.
            }
            // A group can only settle a transfer that was still pending, so undoing means "no change".
            foreach (var (id, original) in _pending)
            {
                processor._transfers[id] = original;
                processor._writes.PendingStatusChanges.Remove(id);
            }
            // After the restore above: a hold the group created and then settled must disappear, not come back as pending.
            foreach (var id in _added) processor._transfers.Remove(id);
            processor._writes.NewTransfers.RemoveRange(transferMark, processor._writes.NewTransfers.Count - transferMark);
            processor._writes.Entries.RemoveRange(entryMark, processor._writes.Entries.Count - entryMark);
        }
    }
}
