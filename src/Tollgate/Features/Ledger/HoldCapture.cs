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

    /// <param name="capture">The post-pending transfer (its amount is set here).</param>
    /// <param name="excess">The excess transfer for a given amount (debit the hold's debtor, credit its creditor).</param>
    /// <param name="commit">How the group commits, given the total it charges (e.g. with a usage record of that amount).</param>
    /// <returns>The results of the last attempt: the post alone, or the post and the excess.</returns>
    public static async Task<TransferResult[]> CaptureAsync(
        LedgerService ledger, Transfer hold, long amount, TransferRequest capture, Func<long, TransferRequest> excess,
        Func<long, LedgerCommit>? commit, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            var post = capture with { Kind = TransferKind.PostPending, PendingId = hold.Id, Amount = Math.Min(amount, hold.Amount) };
            var over = amount - hold.Amount;
            var charge = over > 0 && attempt < MaxAttempts
                ? Math.Min(over, Math.Max(0, (await ledger.GetAccountAsync(hold.DebitAccountId, ct))?.AvailableMicros ?? 0))
                : 0;
            TransferRequest[] group = charge > 0 ? [post, excess(charge)] : [post];
            var how = commit?.Invoke(post.Amount!.Value + charge) ?? LedgerCommit.Durable;
            var results = group.Length == 1
                ? [await ledger.TransferAsync(post, how, ct)]
                : await ledger.TransferAtomicAsync(group, how, ct);
            if (results.Any(r => r.Code == TransferResultCode.InsufficientFunds) && attempt < MaxAttempts) continue;
            return results;
        }
    }
}
