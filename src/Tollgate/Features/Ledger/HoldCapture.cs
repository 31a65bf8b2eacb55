namespace Tollgate.Features.Ledger;

/// <summary>
/// Settling a hold for an amount that may exceed it — the shared mechanism of authorization captures and gateway
/// settlements. The hold is posted for min(amount, held) (the rest released) and, when the amount is larger, an
/// excess transfer charges the difference only up to what the account has available, atomically with the post.
/// Posting a hold leaves "available" unchanged (held → posted), so what is available just before can pay the excess;
/// if the balance moves in between (insufficient funds), it is read again, and the last attempt charges no excess at
/// all, so the hold itself is never lost to a balance that keeps moving. Nothing ever overdraws.
/// </summary>
internal static class HoldCapture
{
    public const int MaxAttempts = 4;

    /// <summary>A hold that moves together with the main one (a spend cap's): posted for the same amount, charged the same excess.</summary>
    public sealed record Companion(Transfer Hold, string CaptureId, Func<long, TransferRequest> Excess);

    /// <param name="capture">The post-pending transfer (its amount is set here).</param>
    /// <param name="excess">The excess transfer for a given amount (debit the hold's debtor, credit its creditor).</param>
    /// <param name="commit">How the group commits, given the total it charges (e.g. with a usage record of that amount).</param>
    /// <returns>The results of the last attempt: the post alone, or the post and the excess.</returns>
    public static async Task<TransferResult[]> CaptureAsync(
        LedgerService ledger, Transfer hold, long amount, TransferRequest capture, Func<long, TransferRequest> excess,
        Func<long, LedgerCommit>? commit, CancellationToken ct) =>
        (await CaptureAsync(ledger, hold, amount, capture, excess, [], commit, ct)).Main;

    /// <summary>
    /// As above, with <paramref name="companions"/> posted and charged in the same atomic group: the excess is limited
    /// by what each of their accounts has available too. Returns the main results and the companions' apart.
    /// <paramref name="extra"/>, given the total charged, may add one more transfer to the same atomic group (a
    /// marketplace creator's share of the charge); its result is not returned (it only ever fails with the group).
    /// </summary>
    public static async Task<(TransferResult[] Main, TransferResult[] Companions)> CaptureAsync(
        LedgerService ledger, Transfer hold, long amount, TransferRequest capture, Func<long, TransferRequest> excess,
        IReadOnlyList<Companion> companions, Func<long, LedgerCommit>? commit, CancellationToken ct, Func<long, TransferRequest?>? extra = null)
    {
        for (var attempt = 1; ; attempt++)
        {
            var posted = Math.Min(amount, hold.Amount);
            var post = capture with { Kind = TransferKind.PostPending, PendingId = hold.Id, Amount = posted };
            var over = amount - hold.Amount;
            var charge = over > 0 && attempt < MaxAttempts ? Math.Min(over, await AvailableAsync(ledger, hold, companions, ct)) : 0;
            var group = new List<TransferRequest>(2 + 2 * companions.Count) { post };
            if (charge > 0) group.Add(excess(charge));
            var mainCount = group.Count;
            foreach (var c in companions)
                group.Add(new TransferRequest { Id = c.CaptureId, Kind = TransferKind.PostPending, PendingId = c.Hold.Id, Amount = Math.Min(posted, c.Hold.Amount), Code = capture.Code, Reference = capture.Reference });
            if (charge > 0) foreach (var c in companions) group.Add(c.Excess(charge));
            var extraCount = 0;
            if (extra?.Invoke(posted + charge) is { } more) { group.Add(more); extraCount = 1; }
            var how = commit?.Invoke(posted + charge) ?? LedgerCommit.Durable;
            var results = group.Count == 1
                ? [await ledger.TransferAsync(post, how, ct)]
                : await ledger.TransferAtomicAsync(group, how, ct);
            if (results.Any(r => r.Code == TransferResultCode.InsufficientFunds) && attempt < MaxAttempts) continue;
            return (results[..mainCount], results[mainCount..^extraCount]);
        }
    }

    private static async Task<long> AvailableAsync(LedgerService ledger, Transfer hold, IReadOnlyList<Companion> companions, CancellationToken ct)
    {
        if (companions.Count == 0) return Math.Max(0, (await ledger.GetAccountAsync(hold.DebitAccountId, ct))?.AvailableMicros ?? 0);
        var accounts = await ledger.GetAccountsAsync([hold.DebitAccountId, .. companions.Select(c => c.Hold.DebitAccountId)], ct);
        return accounts.Count == 0 ? 0 : Math.Max(0, accounts.Min(a => a.AvailableMicros));
    }
}
