using System.Collections.Concurrent;

namespace Tollgate.Features.Ledger;

/// <summary>
/// The operator's own ledger accounts (where grants come from, where adjustments go), created on first use and
/// cached by key. They carry no balance limits: they are the other side of every customer movement, so the sum
/// of all balances stays zero.
/// </summary>
public sealed class SystemAccounts(LedgerService ledger)
{
    public const string Promotions = "system:promotions";
    public const string Adjustments = "system:adjustments";
    /// <summary>Where captured authorizations (usage charges) go.</summary>
    public const string Revenue = "system:revenue";
    /// <summary>Where money paid through Stripe enters the ledger (credited top-ups come from here; refunds go back).</summary>
    public const string StripeClearing = "system:payments:stripe";
    /// <summary>Where USDC top-ups come from (kind payments_clearing): its balance is minus what was received on chain.</summary>
    public const string UsdcPayments = "system:payments:usdc";

    private readonly ConcurrentDictionary<string, long> _ids = new(StringComparer.Ordinal);

    public async ValueTask<long> GetIdAsync(string key, string kind, CancellationToken ct)
    {
        if (_ids.TryGetValue(key, out var id)) return id;
        var account = await ledger.EnsureAccountAsync(new NewLedgerAccount(kind, key), ct);
        return _ids.GetOrAdd(key, account.Id);
    }

    public ValueTask<long> PromotionsAsync(CancellationToken ct) => GetIdAsync(Promotions, LedgerAccountKinds.Promotions, ct);
    public ValueTask<long> AdjustmentsAsync(CancellationToken ct) => GetIdAsync(Adjustments, LedgerAccountKinds.Adjustments, ct);
    public ValueTask<long> RevenueAsync(CancellationToken ct) => GetIdAsync(Revenue, LedgerAccountKinds.Revenue, ct);
    public ValueTask<long> StripeClearingAsync(CancellationToken ct) => GetIdAsync(StripeClearing, LedgerAccountKinds.PaymentsClearing, ct);
}
