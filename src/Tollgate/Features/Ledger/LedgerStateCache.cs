namespace Tollgate.Features.Ledger;

/// <summary>
/// The ledger state a PostgreSQL writer last committed or read: accounts (counters, version, credit limit) and recent
/// transfers. A batch that names only cached accounts and cached pending transfers can be applied speculatively to
/// this state and sent in one round trip with a check (<c>ledger_expect_state</c>, migration 0026) that the accounts
/// are exactly as cached (version, credit limit and counters: everything the batch's checks read) and that its new
/// transfer ids do not exist; if the check fails, nothing is written and the batch is
/// applied the ordinary way. The cache is therefore never trusted, only checked: a stale entry costs a round trip, never
/// a wrong result. Used by the writer thread only.
/// </summary>
internal sealed class LedgerStateCache(int maxAccounts = 100_000, int maxTransfers = 100_000)
{
    private readonly record struct CachedAccount(string Currency, long CreditLimit, LedgerAccountFlags Flags,
        long DebitsPending, long DebitsPosted, long CreditsPending, long CreditsPosted, long Version);

    private readonly Dictionary<long, CachedAccount> _accounts = new();
    private readonly Dictionary<string, Transfer> _transfers = new(StringComparer.Ordinal);
    private readonly Queue<string> _transferOrder = new();

    /// <summary>What a speculative batch starts from and what the database must still hold for it to commit.</summary>
    public sealed record Snapshot(Dictionary<long, AccountState> Accounts, Dictionary<string, Transfer> Known, StateCheck Check);

    /// <summary>The arguments of <c>ledger_expect_state</c>: each account as the batch found it, and the transfer ids it takes as new.</summary>
    public sealed record StateCheck(long[] AccountIds, long[] Versions, long[] CreditLimits, long[] DebitsPending, long[] DebitsPosted,
        long[] CreditsPending, long[] CreditsPosted, string[] AbsentTransferIds)
    {
        /// <summary>
        /// The check for batches applied one after another and written as one: each account as the first of them to touch
        /// it found it (the later ones found it as the earlier left it), and every id taken as new.
        /// </summary>
        public static StateCheck Merge(IReadOnlyList<StateCheck> inOrder)
        {
            var at = new Dictionary<long, (StateCheck Check, int Index)>();
            var absent = new HashSet<string>(StringComparer.Ordinal);
            foreach (var check in inOrder)
            {
                for (var i = 0; i < check.AccountIds.Length; i++) at.TryAdd(check.AccountIds[i], (check, i));
                absent.UnionWith(check.AbsentTransferIds);
            }
            var n = at.Count;
            var ids = new long[n]; var versions = new long[n]; var limits = new long[n];
            var dp = new long[n]; var dpo = new long[n]; var cp = new long[n]; var cpo = new long[n];
            var k = 0;
            foreach (var (id, (c, i)) in at)
            {
                ids[k] = id; versions[k] = c.Versions[i]; limits[k] = c.CreditLimits[i];
                dp[k] = c.DebitsPending[i]; dpo[k] = c.DebitsPosted[i]; cp[k] = c.CreditsPending[i]; cpo[k] = c.CreditsPosted[i];
                k++;
            }
            return new StateCheck(ids, versions, limits, dp, dpo, cp, cpo, absent.ToArray());
        }
    }

    /// <summary>
    /// Fresh, mutable copies of everything <paramref name="batch"/> needs, or null when something is not cached (an
    /// account, or a pending transfer the batch settles).
    /// </summary>
    public Snapshot? TryTake(IReadOnlyList<LedgerCommand> batch)
    {
        var accounts = new Dictionary<long, AccountState>();
        var known = new Dictionary<string, Transfer>(StringComparer.Ordinal);
        var absent = new HashSet<string>(StringComparer.Ordinal);
        foreach (var command in batch)
            foreach (var t in command.Transfers)
                if (!string.IsNullOrEmpty(t.Id))
                {
                    if (_transfers.TryGetValue(t.Id, out var seen)) known[t.Id] = seen;
                    else absent.Add(t.Id);
                }
        if (!Covers(batch, id => _transfers.TryGetValue(id, out var pending) ? known[id] = pending : null, Take) || accounts.Count == 0) return null;

        var n = accounts.Count;
        var ids = new long[n]; var versions = new long[n]; var limits = new long[n];
        var dp = new long[n]; var dpo = new long[n]; var cp = new long[n]; var cpo = new long[n];
        var i = 0;
        foreach (var a in accounts.Values)
        {
            ids[i] = a.Id; versions[i] = a.Version; limits[i] = a.CreditLimit;
            dp[i] = a.DebitsPending; dpo[i] = a.DebitsPosted; cp[i] = a.CreditsPending; cpo[i] = a.CreditsPosted;
            i++;
        }
        return new Snapshot(accounts, known, new StateCheck(ids, versions, limits, dp, dpo, cp, cpo, absent.ToArray()));

        bool Take(long id)
        {
            if (accounts.ContainsKey(id)) return true;
            if (!_accounts.TryGetValue(id, out var c)) return false;
            accounts[id] = new AccountState
            {
                Id = id, Currency = c.Currency, CreditLimit = c.CreditLimit, Flags = c.Flags,
                DebitsPending = c.DebitsPending, DebitsPosted = c.DebitsPosted,
                CreditsPending = c.CreditsPending, CreditsPosted = c.CreditsPosted, Version = c.Version,
            };
            return true;
        }
    }

    /// <summary>
    /// Whether <see cref="TryTake"/> would cover <paramref name="batch"/> once a batch that read or wrote these accounts
    /// and transfers has committed (they are remembered only then).
    /// </summary>
    public bool WouldCover(IReadOnlyList<LedgerCommand> batch, Dictionary<long, AccountState> alsoAccounts, Dictionary<string, Transfer> alsoTransfers) =>
        Covers(batch,
            id => alsoTransfers.TryGetValue(id, out var pending) || _transfers.TryGetValue(id, out pending) ? pending : null,
            id => alsoAccounts.ContainsKey(id) || _accounts.ContainsKey(id));

    /// <summary>
    /// Whether everything <paramref name="batch"/> reads can be found: each hold it settles (<paramref name="hold"/>) with
    /// that hold's two accounts, and every account it names (<paramref name="account"/>).
    /// </summary>
    private static bool Covers(IReadOnlyList<LedgerCommand> batch, Func<string, Transfer?> hold, Func<long, bool> account)
    {
        foreach (var command in batch)
            foreach (var t in command.Transfers)
            {
                if (t.PendingId is { } pendingId
                    && (hold(pendingId) is not { } pending || !account(pending.DebitAccountId) || !account(pending.CreditAccountId)))
                    return false;
                if (t.DebitAccountId != 0 && !account(t.DebitAccountId)) return false;
                if (t.CreditAccountId != 0 && !account(t.CreditAccountId)) return false;
            }
        return true;
    }

    /// <summary>Records the state a committed batch left: its accounts' counters and every transfer it read or wrote.</summary>
    public void Remember(Dictionary<long, AccountState> accounts, Dictionary<string, Transfer> transfers)
    {
        if (_accounts.Count + accounts.Count > maxAccounts) _accounts.Clear();
        foreach (var a in accounts.Values)
            _accounts[a.Id] = new CachedAccount(a.Currency, a.CreditLimit, a.Flags, a.DebitsPending, a.DebitsPosted,
                a.CreditsPending, a.CreditsPosted, a.Version);
        foreach (var (id, t) in transfers)
        {
            if (_transfers.TryAdd(id, t)) _transferOrder.Enqueue(id);
            else _transfers[id] = t;
        }
        while (_transfers.Count > maxTransfers && _transferOrder.TryDequeue(out var oldest)) _transfers.Remove(oldest);
    }

    /// <summary>Drops these accounts, whose cached state turned out stale; the next batch naming them reads them afresh.</summary>
    public void Forget(IEnumerable<long> accountIds)
    {
        foreach (var id in accountIds) _accounts.Remove(id);
    }

    public void Clear()
    {
        _accounts.Clear();
        _transfers.Clear();
        _transferOrder.Clear();
    }
}
