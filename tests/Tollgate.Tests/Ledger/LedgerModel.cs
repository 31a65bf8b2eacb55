using Tollgate.Features.Ledger;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// A deliberately naive reference model of the ledger's documented rules (see <see cref="TransferRequest"/>,
/// <see cref="TransferKind"/>, <see cref="LedgerAccountFlags"/>, <see cref="TransferResultCode"/>), written for the
/// property test without looking at how the real engine batches, undoes or stores anything. Atomic groups work by
/// copying the whole state and putting the copy back on failure.
/// </summary>
internal sealed class LedgerModel
{
    private sealed class Account
    {
        public required string Currency { get; init; }
        public required LedgerAccountFlags Flags { get; init; }
        public required long Limit { get; init; }
        public long DebitsPending, DebitsPosted, CreditsPending, CreditsPosted, Version;
        public long Balance => CreditsPosted - DebitsPosted;
        public Account Copy() => (Account)MemberwiseClone();
    }

    private Dictionary<long, Account> _accounts = new();
    private Dictionary<string, Transfer> _transfers = new(StringComparer.Ordinal);

    public void AddAccount(long id, string currency, LedgerAccountFlags flags, long creditLimit) =>
        _accounts.Add(id, new Account { Currency = currency, Flags = flags, Limit = creditLimit });

    public (long DebitsPending, long DebitsPosted, long CreditsPending, long CreditsPosted, long Version) Counters(long id)
    {
        var a = _accounts[id];
        return (a.DebitsPending, a.DebitsPosted, a.CreditsPending, a.CreditsPosted, a.Version);
    }

    /// <summary>Every hold the model stored, with its current status.</summary>
    public IEnumerable<Transfer> Holds => _transfers.Values.Where(t => t.Kind == TransferKind.Pending);

    public TransferResult Apply(TransferRequest r, long now)
    {
        if (_transfers.TryGetValue(r.Id, out var stored))
            return IsSameRequest(r, stored) ? new(TransferResultCode.Replayed, stored) : Fail(TransferResultCode.IdempotencyConflict);
        return r.Kind is TransferKind.Posted or TransferKind.Pending ? Create(r, now) : Settle(r, now);
    }

    public TransferResult[] ApplyAtomic(IReadOnlyList<TransferRequest> requests, long now)
    {
        var savedAccounts = _accounts.ToDictionary(kv => kv.Key, kv => kv.Value.Copy());
        var savedTransfers = new Dictionary<string, Transfer>(_transfers, StringComparer.Ordinal);
        var results = new TransferResult[requests.Count];
        var failed = -1;
        var replays = 0;
        for (var i = 0; i < requests.Count && failed < 0; i++)
        {
            results[i] = Apply(requests[i], now);
            if (results[i].Code == TransferResultCode.Replayed) replays++;
            else if (results[i].Code != TransferResultCode.Ok) failed = i;
        }
        // Only a whole group can be a replay; a mix of stored and new members means the group was changed.
        if (failed < 0 && replays > 0 && replays < requests.Count)
        {
            failed = Array.FindIndex(results, x => x.Code == TransferResultCode.Replayed);
            results[failed] = Fail(TransferResultCode.IdempotencyConflict);
        }
        if (failed < 0) return results;
        _accounts = savedAccounts;
        _transfers = savedTransfers;
        for (var i = 0; i < results.Length; i++)
            if (i != failed) results[i] = Fail(TransferResultCode.LinkedTransferFailed);
        return results;
    }

    /// <summary>Expires every open hold whose deadline is at or before <paramref name="now"/>; returns how many.</summary>
    public int Expire(long now)
    {
        var due = _transfers.Values
            .Where(t => t.Kind == TransferKind.Pending && t.Status == TransferStatus.Pending && t.ExpiresAtMicros <= now)
            .ToList();
        foreach (var hold in due)
        {
            var debit = _accounts[hold.DebitAccountId];
            var credit = _accounts[hold.CreditAccountId];
            debit.DebitsPending -= hold.Amount;
            credit.CreditsPending -= hold.Amount;
            debit.Version++;
            credit.Version++;
            _transfers[hold.Id] = hold with { Status = TransferStatus.Expired };
        }
        return due.Count;
    }

    private TransferResult Create(TransferRequest r, long now)
    {
        if (r.PendingId is not null) return Fail(TransferResultCode.PendingIdNotAllowed);
        if (r.DebitAccountId == r.CreditAccountId) return Fail(TransferResultCode.AccountsMustBeDifferent);
        if (r.Amount is null || r.Amount <= 0) return Fail(TransferResultCode.AmountMustBePositive);
        var isHold = r.Kind == TransferKind.Pending;
        if (!isHold && r.TimeoutSeconds != 0) return Fail(TransferResultCode.TimeoutNotAllowed);
        if (r.TimeoutSeconds < 0) return Fail(TransferResultCode.InvalidTimeout);
        if (!_accounts.TryGetValue(r.DebitAccountId, out var debit)) return Fail(TransferResultCode.DebitAccountNotFound);
        if (!_accounts.TryGetValue(r.CreditAccountId, out var credit)) return Fail(TransferResultCode.CreditAccountNotFound);
        if (debit.Currency != credit.Currency) return Fail(TransferResultCode.CurrencyMismatch);
        var amount = r.Amount.Value;
        if (debit.Flags.HasFlag(LedgerAccountFlags.DebitsMustNotExceedCredits)
            && debit.DebitsPending + debit.DebitsPosted + amount > debit.CreditsPosted + debit.Limit)
            return Fail(TransferResultCode.InsufficientFunds);
        if (credit.Flags.HasFlag(LedgerAccountFlags.CreditsMustNotExceedDebits)
            && credit.CreditsPending + credit.CreditsPosted + amount > credit.DebitsPosted)
            return Fail(TransferResultCode.ExceedsDebits);

        if (isHold)
        {
            debit.DebitsPending += amount;
            credit.CreditsPending += amount;
        }
        else
        {
            debit.DebitsPosted += amount;
            credit.CreditsPosted += amount;
        }
        debit.Version++;
        credit.Version++;
        var transfer = new Transfer(r.Id, r.Kind, r.DebitAccountId, r.CreditAccountId, amount, null, r.TimeoutSeconds,
            isHold && r.TimeoutSeconds > 0 ? now + r.TimeoutSeconds * 1_000_000L : null,
            isHold ? TransferStatus.Pending : TransferStatus.Final,
            r.Code, r.Reference, r.Description, r.Metadata, now, debit.Balance, credit.Balance);
        _transfers[r.Id] = transfer;
        return new(TransferResultCode.Ok, transfer);
    }

    private TransferResult Settle(TransferRequest r, long now)
    {
        if (r.PendingId is null) return Fail(TransferResultCode.PendingIdRequired);
        if (r.TimeoutSeconds != 0) return Fail(TransferResultCode.TimeoutNotAllowed);
        if (!_transfers.TryGetValue(r.PendingId, out var hold)) return Fail(TransferResultCode.PendingTransferNotFound);
        if (hold.Kind != TransferKind.Pending) return Fail(TransferResultCode.PendingTransferNotPending);
        if ((r.DebitAccountId != 0 && r.DebitAccountId != hold.DebitAccountId) || (r.CreditAccountId != 0 && r.CreditAccountId != hold.CreditAccountId))
            return Fail(TransferResultCode.PendingAccountMismatch);
        if (hold.Status == TransferStatus.Posted) return Fail(TransferResultCode.PendingTransferAlreadyPosted);
        if (hold.Status == TransferStatus.Voided) return Fail(TransferResultCode.PendingTransferAlreadyVoided);
        if (hold.Status == TransferStatus.Expired) return Fail(TransferResultCode.PendingTransferExpired);
        var posting = r.Kind == TransferKind.PostPending;
        if (posting && hold.ExpiresAtMicros is { } deadline && deadline <= now) return Fail(TransferResultCode.PendingTransferExpired);

        long amount;
        if (posting)
        {
            amount = r.Amount ?? hold.Amount;
            if (amount < 0) return Fail(TransferResultCode.AmountMustBePositive);
            if (amount > hold.Amount) return Fail(TransferResultCode.PostAmountExceedsPending);
        }
        else
        {
            if (r.Amount is { } requested && requested != hold.Amount) return Fail(TransferResultCode.VoidAmountMismatch);
            amount = hold.Amount;
        }

        var debit = _accounts[hold.DebitAccountId];
        var credit = _accounts[hold.CreditAccountId];
        debit.DebitsPending -= hold.Amount;
        credit.CreditsPending -= hold.Amount;
        if (posting)
        {
            debit.DebitsPosted += amount;
            credit.CreditsPosted += amount;
        }
        debit.Version++;
        credit.Version++;
        _transfers[hold.Id] = hold with { Status = posting ? TransferStatus.Posted : TransferStatus.Voided };
        var transfer = new Transfer(r.Id, r.Kind, hold.DebitAccountId, hold.CreditAccountId, amount, hold.Id, 0, null, TransferStatus.Final,
            r.Code, r.Reference, r.Description, r.Metadata, now, debit.Balance, credit.Balance);
        _transfers[r.Id] = transfer;
        return new(TransferResultCode.Ok, transfer);
    }

    /// <summary>
    /// The documented replay rule: same kind, accounts, amount, pending id, timeout and descriptive fields. For a post or
    /// void, fields the request left unset (accounts, amount) were filled in by the ledger and match what it stored.
    /// </summary>
    private static bool IsSameRequest(TransferRequest r, Transfer t)
    {
        var settle = r.Kind is TransferKind.PostPending or TransferKind.VoidPending;
        bool Matches(long requested, long stored) => settle && requested == 0 || requested == stored;
        var amountMatches = settle && r.Amount is null || r.Amount == t.Amount;
        return r.Kind == t.Kind && r.PendingId == t.PendingId
            && Matches(r.DebitAccountId, t.DebitAccountId) && Matches(r.CreditAccountId, t.CreditAccountId) && amountMatches
            && r.TimeoutSeconds == t.TimeoutSeconds && r.Code == t.Code && r.Reference == t.Reference
            && r.Description == t.Description && r.Metadata == t.Metadata;
    }

    private static TransferResult Fail(TransferResultCode code) => new(code, null);
}
