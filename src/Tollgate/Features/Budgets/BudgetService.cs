using System.Collections.Concurrent;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;

namespace Tollgate.Features.Budgets;

/// <summary>A cap as it applies to one call: the cap, the ledger account counting its current window, and when that window ends.</summary>
public sealed record CapLeg(SpendCap Cap, long LedgerAccountId, CapPeriod Period)
{
    /// <summary>"the key's daily spend cap" and the like, for error messages.</summary>
    public string Describe() => $"the {CapNames.Of(Cap.Scope)}'s {(Cap.Window switch { CapWindow.Day => "daily", CapWindow.Month => "monthly", _ => "total" })} spend cap";

    /// <summary>The cap as error responses name it.</summary>
    public Dictionary<string, object?> Details() => new()
    {
        ["scope"] = CapNames.Of(Cap.Scope), ["window"] = CapNames.Of(Cap.Window), ["limit_micros"] = Cap.LimitMicros, ["resets_at"] = Period.ResetsAt,
    };

    /// <summary>The subject alerts about this cap are filed under: <c>cap:{scope}:{subject}:{window}</c>.</summary>
    public string AlertSubject => $"cap:{CapNames.Of(Cap.Scope)}:{Cap.SubjectId}:{CapNames.Of(Cap.Window)}";

    /// <summary>"it resets at …" or "it does not reset".</summary>
    public string ResetText() => Period.ResetsAt is { } resets ? $"it resets at {resets:O}" : "it does not reset";
}

/// <summary>What limits a call beyond the balance: the caps in force, and whether its end customer is blocked.</summary>
public sealed record CallBudget(IReadOnlyList<CapLeg> Legs, bool CustomerBlocked)
{
    public static readonly CallBudget None = new([], false);
}

/// <summary>Spending against a cap in its current window.</summary>
public sealed record CapStatus(SpendCap Cap, CapPeriod Period, long SpentMicros, long HeldMicros)
{
    public long RemainingMicros => Math.Max(0, Cap.LimitMicros - SpentMicros - HeldMicros);
}

/// <summary>
/// Spend caps, exact under any concurrency and across processes because the ledger counts them: each cap and window
/// is a ledger account of kind <c>spend_cap</c> whose credit limit is the cap and which may not go below zero. A
/// charge under caps is an atomic group — the customer's hold plus one hold of the same amount on each cap account
/// (against a sink account) — so the ledger refuses it if the balance or any cap cannot cover it, settles them
/// together and lets them expire together. Caps and end customers are read through a one-second cache, so a change
/// applies everywhere within a second (at once in the process that made it).
/// </summary>
internal sealed class BudgetService(LedgerService ledger, SystemAccounts system, SpendCapStore caps, EndCustomerStore customers)
{
    public const string CapAccountKind = "spend_cap";
    public const string SinkKind = "spend_cap_sink";
    public const string SinkKey = "system:spend_caps";
    public const string CapHoldCode = "spend_cap_hold";
    public static readonly TimeSpan CacheTtl = TimeSpan.FromSeconds(1);
    private const int MaxCacheEntries = 100_000;

    private sealed record Entry(IReadOnlyList<SpendCap> Caps, bool CustomerBlocked);

    private readonly SingleFlightCache<(string Account, string? Key, string? Customer), Entry> _cache = new(CacheTtl, MaxCacheEntries);
    /// <summary>Ledger account per cap window, with the cap this process last set as its limit.</summary>
    private readonly ConcurrentDictionary<string, (long Id, long Limit)> _accounts = new(StringComparer.Ordinal);

    public ValueTask<long> SinkAsync(CancellationToken ct) => system.GetIdAsync(SinkKey, SinkKind, ct);

    /// <summary>The caps that apply to a call by <paramref name="caller"/> for <paramref name="customerId"/> at <paramref name="now"/>.</summary>
    public async ValueTask<CallBudget> ForCallAsync(Caller caller, string? customerId, DateTimeOffset now, CancellationToken ct)
    {
        // A session (no key) has no key caps; a key without a stored lineage is its own.
        var lineage = caller.Role is null ? caller.KeyLineageId ?? caller.KeyId : null;
        var cacheKey = (caller.AccountId, lineage, customerId);
        // The cache's clock is the machine's, not the injected one: it bounds staleness in real time, as in every process.
        var entry = await _cache.GetAsync(cacheKey, DateTimeOffset.UtcNow, (Caps: caps, Customers: customers), static async (k, s) =>
        {
            var found = await s.Caps.ForCallAsync(k.Account, k.Key, k.Customer, CancellationToken.None);
            var blocked = false;
            if (k.Customer is not null)
            {
                if (await s.Customers.GetAsync(k.Account, k.Customer, CancellationToken.None) is { } customer) blocked = customer.Blocked;
                else await s.Customers.EnsureAsync(k.Account, k.Customer, CancellationToken.None);
            }
            return new Entry(found, blocked);
        }, ct);
        if (entry.Caps.Count == 0) return entry.CustomerBlocked ? new CallBudget([], true) : CallBudget.None;
        var legs = new CapLeg[entry.Caps.Count];
        for (var i = 0; i < legs.Length; i++)
        {
            var cap = entry.Caps[i];
            var period = CapPeriod.Of(cap.Window, now);
            legs[i] = new CapLeg(cap, await CapAccountAsync(caller.AccountId, cap, period, ct), period);
        }
        return new CallBudget(legs, entry.CustomerBlocked);
    }

    /// <summary>Forgets cached caps of an account, after a change made in this process.</summary>
    public void Invalidate(string accountId)
    {
        _cache.RemoveWhere(key => key.Account == accountId);
    }

    /// <summary>Spending against each of a subject's caps in its current window.</summary>
    public async Task<IReadOnlyList<CapStatus>> StatusAsync(string accountId, CapScope scope, string subjectId, DateTimeOffset now, CancellationToken ct)
    {
        var list = new List<CapStatus>();
        foreach (var cap in await caps.ListAsync(accountId, scope, subjectId, ct))
        {
            var period = CapPeriod.Of(cap.Window, now);
            var account = await ledger.GetAccountAsync(await CapAccountAsync(accountId, cap, period, ct), ct);
            list.Add(new CapStatus(cap, period, account?.DebitsPosted ?? 0, account?.DebitsPending ?? 0));
        }
        return list;
    }

    public async Task SetAsync(string accountId, CapScope scope, string subjectId, IReadOnlyDictionary<CapWindow, long?> limits, CancellationToken ct)
    {
        await caps.SetAsync(accountId, scope, subjectId, limits, ct);
        Invalidate(accountId);
    }

    private static string LedgerKey(string accountId, SpendCap cap, CapPeriod period) =>
        $"cap:{CapNames.Of(cap.Scope)}:{accountId}:{cap.SubjectId}:{CapNames.Of(cap.Window)}:{period.Key}";

    /// <summary>
    /// The alert subject (<see cref="CapLeg.AlertSubject"/>) and period key of the cap a ledger account of
    /// <paramref name="accountId"/> counts, read back from its ledger key; null for any other account. For paths that
    /// only have the cap holds (a capture), not the caps.
    /// </summary>
    public static (string Subject, string PeriodKey)? AlertOf(string accountId, LedgerAccount capAccount)
    {
        if (capAccount.Kind != CapAccountKind || capAccount.Key is not { } key) return null;
        // cap:{scope}:{account}:{subject}:{window}:{period}; a subject (an end customer id) may itself contain ':'.
        var parts = key.Split(':');
        if (parts.Length < 6 || parts[0] != "cap" || parts[2] != accountId) return null;
        var subject = string.Join(':', parts[3..^2]);
        return ($"cap:{parts[1]}:{subject}:{parts[^2]}", parts[^1]);
    }

    /// <summary>The ledger account counting <paramref name="cap"/> in <paramref name="period"/>, created on first use, its limit kept equal to the cap.</summary>
    private async ValueTask<long> CapAccountAsync(string accountId, SpendCap cap, CapPeriod period, CancellationToken ct)
    {
        var key = LedgerKey(accountId, cap, period);
        if (_accounts.TryGetValue(key, out var known) && known.Limit == cap.LimitMicros) return known.Id;
        long id;
        if (known.Id != 0) id = known.Id;
        else
        {
            var account = await ledger.EnsureAccountAsync(new NewLedgerAccount(CapAccountKind, key, CreditLimitMicros: cap.LimitMicros,
                Flags: LedgerAccountFlags.DebitsMustNotExceedCredits), ct);
            id = account.Id;
            if (account.CreditLimitMicros == cap.LimitMicros) { Remember(key, id, cap.LimitMicros); return id; }
        }
        await ledger.SetCreditLimitAsync(id, cap.LimitMicros, ct);
        Remember(key, id, cap.LimitMicros);
        return id;
    }

    private void Remember(string key, long id, long limit)
    {
        if (_accounts.Count >= MaxCacheEntries) _accounts.Clear();
        _accounts[key] = (id, limit);
    }
}

/// <summary>
/// The ledger side of caps, shared by every path that charges: a transfer under caps travels as an atomic group with
/// one twin per cap (<c>{id}:cap{i}</c>: same kind and amount, debiting the cap's account, crediting the sink).
/// </summary>
internal static class CapTransfers
{
    /// <summary>At most this many caps apply to one charge (three scopes × three windows).</summary>
    public const int MaxCaps = 9;

    public static string Id(string transferId, int cap) => $"{transferId}:cap{cap}";

    /// <summary><paramref name="main"/> followed by its cap twins.</summary>
    public static TransferRequest[] Group(TransferRequest main, IReadOnlyList<CapLeg> legs, long sink)
    {
        var group = new TransferRequest[legs.Count + 1];
        group[0] = main;
        for (var i = 0; i < legs.Count; i++)
            group[i + 1] = main with { Id = Id(main.Id, i), DebitAccountId = legs[i].LedgerAccountId, CreditAccountId = sink, Code = BudgetService.CapHoldCode, Metadata = null };
        return group;
    }

    /// <summary>The cap whose twin the ledger refused for lack of room, or null (the main transfer's own account refused, or nothing did).</summary>
    public static CapLeg? Refused(IReadOnlyList<TransferResult> results, IReadOnlyList<CapLeg> legs)
    {
        for (var i = 1; i < results.Count && i <= legs.Count; i++)
            if (results[i].Code == TransferResultCode.InsufficientFunds) return legs[i - 1];
        return null;
    }

    /// <summary>The cap twins stored for a hold, in order.</summary>
    public static async Task<IReadOnlyList<Transfer>> FindAsync(LedgerService ledger, string holdId, CancellationToken ct)
    {
        var found = new List<Transfer>();
        for (var i = 0; i < MaxCaps && await ledger.GetTransferAsync(Id(holdId, i), ct) is { } twin; i++) found.Add(twin);
        return found;
    }
}
