using System.Text.Json;
using Dapper;
using Microsoft.Extensions.Options;
using Tollgate.Features.Ledger;
using Tollgate.Features.Statements;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Marketplace;

public sealed class MarketplaceOptions
{
    public const string Section = "Tollgate:Marketplace";

    /// <summary>The creator's share of every agent charge, in whole percent (the platform keeps the rest); fixed on each agent when it is published.</summary>
    public int CreatorSharePercent { get; set; } = 90;
}

public static class PricingModes
{
    public const string Free = "free";
    public const string Monthly = "monthly";
    public const string OneTime = "one_time";
    public const string PerToken = "per_token";
    public static readonly string[] All = [Free, Monthly, OneTime, PerToken];
}

/// <summary>A published agent. <see cref="PriceMicros"/> for monthly/one_time; <see cref="MarkupBps"/> (1/100 %) for per_token.</summary>
public sealed record Agent(string Id, string CreatorAccountId, string Name, string PricingMode, long PriceMicros, long MarkupBps, int CreatorSharePercent,
    DateTimeOffset CreatedAt)
{
    /// <summary>The agent's markup on a base (model) price: floor(base × bps / 10,000); 0 unless per_token.</summary>
    public long MarkupOn(long baseMicros) => PricingMode == PricingModes.PerToken && baseMicros > 0
        ? checked((long)((Int128)baseMicros * MarkupBps / 10_000))
        : 0;

    /// <summary>What the user pays for a call whose model price is <paramref name="baseMicros"/>.</summary>
    public long UserPrice(long baseMicros) => checked(baseMicros + MarkupOn(baseMicros));

    /// <summary>Whether calls through the agent need a purchase (monthly: of the current month).</summary>
    public bool NeedsPurchase => PricingMode is PricingModes.Monthly or PricingModes.OneTime;
}

/// <summary>How an agent charge splits: the creator gets floor(charge × percent / 100), the platform the remainder.</summary>
public readonly record struct RevenueSplit(long ChargeMicros, long CreatorMicros, long PlatformMicros)
{
    public static RevenueSplit Of(long chargeMicros, int creatorSharePercent)
    {
        var creator = checked((long)((Int128)chargeMicros * creatorSharePercent / 100));
        return new(chargeMicros, creator, chargeMicros - creator);
    }
}

/// <summary>
/// The marketplace: agents published by creators, purchases paid from credits, the creator's earnings ledger account
/// (kind creator_earnings, key <c>creator:{account}:earnings</c>) and payouts from it.
/// </summary>
public sealed class MarketplaceService(Database db, LedgerService ledger, SystemAccounts system, IOptions<MarketplaceOptions> options, TimeProvider time)
{
    public const string PurchaseCode = "agent_purchase";
    /// <summary>The creator's share of per-token usage, moved from revenue to the creator in the settlement's own atomic batch.</summary>
    public const string ShareCode = "agent_share";
    public const string PayoutCode = "creator_payout";
    public const string PayoutsClearing = "system:payouts:creators";

    public int DefaultSharePercent => options.Value.CreatorSharePercent;

    public static string EarningsKey(string accountId) => $"creator:{accountId}:earnings";

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _earningsAccounts = new(StringComparer.Ordinal);

    /// <summary>The creator's earnings ledger account; it may never pay out more than it earned.</summary>
    public async Task<long> EarningsAccountAsync(string accountId, CancellationToken ct)
    {
        if (_earningsAccounts.TryGetValue(accountId, out var id)) return id;
        var account = await ledger.EnsureAccountAsync(new NewLedgerAccount(LedgerAccountKinds.CreatorEarnings, EarningsKey(accountId),
            Flags: LedgerAccountFlags.DebitsMustNotExceedCredits), ct);
        return _earningsAccounts.GetOrAdd(accountId, account.Id);
    }

    private sealed record Row(string id, string creator_account_id, string name, string pricing_mode, long price_micros, long markup_bps,
        long creator_share_percent, long created_at)
    {
        public Agent ToAgent() => new(id, creator_account_id, name, pricing_mode, price_micros, markup_bps, (int)creator_share_percent,
            UnixMicros.ToDateTimeOffset(created_at));
    }

    private const string Columns = "id, creator_account_id, name, pricing_mode, price_micros, markup_bps, creator_share_percent, created_at";

    public async Task<Agent> CreateAsync(string creatorAccountId, string name, string mode, long priceMicros, long markupBps, CancellationToken ct)
    {
        // The earnings account exists from the start, so a first sale never races to create it.
        await EarningsAccountAsync(creatorAccountId, ct);
        var row = new Row(Secrets.RandomId("agt_"), creatorAccountId, name, mode, priceMicros, markupBps, DefaultSharePercent, time.GetUtcNowMicros());
        await using var c = await db.OpenAsync(ct);
        await c.ExecuteAsync(new CommandDefinition($"INSERT INTO marketplace_agents ({Columns}) VALUES (@id, @creator_account_id, @name, @pricing_mode, @price_micros, @markup_bps, @creator_share_percent, @created_at)",
            row, cancellationToken: ct));
        return row.ToAgent();
    }

    public async Task<Agent?> GetAsync(string id, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition($"SELECT {Columns} FROM marketplace_agents WHERE id = @id", new { id }, cancellationToken: ct)))?.ToAgent();
    }

    public async Task<IReadOnlyList<Agent>> ListAsync(string? creatorAccountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<Row>(new CommandDefinition(
            $"SELECT {Columns} FROM marketplace_agents WHERE @creator IS NULL OR creator_account_id = @creator ORDER BY created_at, id LIMIT 1000",
            new { creator = creatorAccountId }, cancellationToken: ct))).Select(r => r.ToAgent()).ToList();
    }

    public static string PurchasePeriod(Agent agent, DateTimeOffset at) => agent.PricingMode == PricingModes.Monthly ? StatementPeriod.Of(at).ToString() : "once";

    public async Task<bool> HasAccessAsync(string accountId, Agent agent, CancellationToken ct)
    {
        if (!agent.NeedsPurchase || agent.CreatorAccountId == accountId) return true;
        await using var c = await db.OpenAsync(ct);
        return await c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT count(*) FROM marketplace_purchases WHERE account_id = @accountId AND agent_id = @agentId AND period = @period",
            new { accountId, agentId = agent.Id, period = PurchasePeriod(agent, time.GetUtcNow()) }, cancellationToken: ct)) > 0;
    }

    public enum PurchaseOutcome { Bought, AlreadyOwned, InsufficientCredits, NotForSale }

    public sealed record PurchaseResult(PurchaseOutcome Outcome, string Period, RevenueSplit Split, IReadOnlyList<string> TransferIds);

    /// <summary>
    /// Buys the agent for the current period ("once" for one_time, the calendar month for monthly): the buyer pays the
    /// creator's share to the creator's earnings and the rest to revenue in one atomic ledger batch whose ids are derived
    /// from (agent, buyer, period), so a retry or a concurrent second click charges once.
    /// </summary>
    public async Task<PurchaseResult> PurchaseAsync(string buyerAccountId, long buyerLedgerAccountId, Agent agent, CancellationToken ct)
    {
        var period = PurchasePeriod(agent, time.GetUtcNow());
        if (!agent.NeedsPurchase) return new(PurchaseOutcome.NotForSale, period, default, []);
        var split = RevenueSplit.Of(agent.PriceMicros, agent.CreatorSharePercent);
        var baseId = $"agent:{agent.Id}:{buyerAccountId}:{period}";
        var metadata = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["agent_id"] = agent.Id, ["period"] = period, ["charge_micros"] = split.ChargeMicros, ["creator_micros"] = split.CreatorMicros,
            ["platform_micros"] = split.PlatformMicros,
        });
        var group = new List<TransferRequest>(2);
        if (split.CreatorMicros > 0)
            group.Add(new TransferRequest
            {
                Id = baseId + ":creator", DebitAccountId = buyerLedgerAccountId, CreditAccountId = await EarningsAccountAsync(agent.CreatorAccountId, ct),
                Amount = split.CreatorMicros, Code = PurchaseCode, Reference = agent.Id, Description = $"Agent '{agent.Name}' ({period}): creator share", Metadata = metadata,
            });
        if (split.PlatformMicros > 0)
            group.Add(new TransferRequest
            {
                Id = baseId + ":platform", DebitAccountId = buyerLedgerAccountId, CreditAccountId = await system.RevenueAsync(ct),
                Amount = split.PlatformMicros, Code = PurchaseCode, Reference = agent.Id, Description = $"Agent '{agent.Name}' ({period}): platform share", Metadata = metadata,
            });
        var outcome = PurchaseOutcome.Bought;
        if (group.Count > 0)
        {
            var results = await ledger.TransferAtomicAsync(group, ct);
            if (results.Any(r => r.Code == TransferResultCode.InsufficientFunds)) return new(PurchaseOutcome.InsufficientCredits, period, split, []);
            if (!results.All(r => r.Succeeded)) throw new InvalidOperationException($"The ledger refused agent purchase {baseId}: {string.Join(", ", results.Select(r => r.Code))}.");
            if (results.All(r => r.Code == TransferResultCode.Replayed)) outcome = PurchaseOutcome.AlreadyOwned;
        }
        await using var c = await db.OpenAsync(CancellationToken.None);
        // The ledger decides who bought (the request whose transfers were new); the access row may be written by a concurrent twin.
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO marketplace_purchases (account_id, agent_id, period, amount_micros, created_at) VALUES (@buyerAccountId, @agentId, @period, @amount, @now)
            ON CONFLICT (account_id, agent_id, period) DO NOTHING
            """, new { buyerAccountId, agentId = agent.Id, period, amount = split.ChargeMicros, now = time.GetUtcNowMicros() }, cancellationToken: CancellationToken.None));
        return new(outcome, period, split, group.Select(g => g.Id).ToList());
    }

    /// <summary>
    /// The transfer that moves the creator's share of a usage charge from revenue to the creator, for the settlement's
    /// atomic batch; null when there is nothing to move. <paramref name="chargedMicros"/> is what the user was charged in
    /// total; the agent's part is what exceeds the model price (the model price is recovered first).
    /// </summary>
    public static TransferRequest? ShareTransfer(AgentCharge agent, string id, long chargedMicros, long revenueAccountId, string? reference)
    {
        var agentPart = Math.Max(0, chargedMicros - Math.Min(chargedMicros, agent.BasePriceMicros));
        var split = RevenueSplit.Of(agentPart, agent.Agent.CreatorSharePercent);
        if (split.CreatorMicros <= 0) return null;
        return new TransferRequest
        {
            Id = id, DebitAccountId = revenueAccountId, CreditAccountId = agent.EarningsAccountId, Amount = split.CreatorMicros, Code = ShareCode,
            Reference = agent.Agent.Id, Description = reference is null ? null : $"Usage {reference}",
            Metadata = JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["agent_id"] = agent.Agent.Id, ["buyer_account_id"] = agent.BuyerAccountId, ["charge_micros"] = chargedMicros, ["agent_charge_micros"] = agentPart,
                ["creator_micros"] = split.CreatorMicros, ["platform_micros"] = chargedMicros - split.CreatorMicros, ["provider_cost_micros"] = agent.ProviderCostMicros,
                ["reference"] = reference,
            }),
        };
    }

    public sealed record EarningRow(string AgentId, string Period, string Code, long Count, long AmountMicros);

    /// <summary>The creator's earnings (credits to the earnings account), grouped by agent, period (UTC month) and code.</summary>
    public async Task<IReadOnlyList<EarningRow>> EarningsAsync(string creatorAccountId, CancellationToken ct)
    {
        var account = await EarningsAccountAsync(creatorAccountId, ct);
        await using var c = await db.OpenAsync(ct);
        var rows = await c.QueryAsync<(string reference, string code, long amount, long ts)>(new CommandDefinition("""
            SELECT t.reference, t.code, e.posted_delta, e.ts
            FROM ledger_entries e JOIN ledger_transfers t ON t.id = e.transfer_id
            WHERE e.account_id = @account AND t.code IN ('agent_purchase', 'agent_share') AND e.posted_delta > 0
            """, new { account }, cancellationToken: ct));
        return rows.GroupBy(r => (r.reference, Period: StatementPeriod.Of(UnixMicros.ToDateTimeOffset(r.ts)).ToString(), r.code))
            .Select(g => new EarningRow(g.Key.reference, g.Key.Period, g.Key.code, g.LongCount(), g.Aggregate(0L, (s, r) => checked(s + r.amount))))
            .OrderBy(r => r.Period, StringComparer.Ordinal).ThenBy(r => r.AgentId, StringComparer.Ordinal).ThenBy(r => r.Code, StringComparer.Ordinal)
            .ToList();
    }

    public sealed record Payout(string Id, string CreatorAccountId, long AmountMicros, string TransferId, DateTimeOffset CreatedAt, bool Replayed);

    public enum PayoutOutcome { Paid, Replayed, Conflict, InsufficientEarnings, NothingToPay }

    /// <summary>
    /// Moves earnings to the payouts clearing account (where money leaves the platform for the creator). The ledger
    /// transfer id <c>payout:{account}:{id}</c> is the idempotency key; <paramref name="amountMicros"/> null = everything available.
    /// </summary>
    public async Task<(PayoutOutcome Outcome, Payout? Payout)> PayoutAsync(string creatorAccountId, string id, long? amountMicros, CancellationToken ct)
    {
        await using (var c = await db.OpenAsync(ct))
        {
            var existing = await c.QuerySingleOrDefaultAsync<(long amount, string transfer, long at)?>(new CommandDefinition(
                "SELECT amount_micros, transfer_id, created_at FROM marketplace_payouts WHERE creator_account_id = @creatorAccountId AND id = @id",
                new { creatorAccountId, id }, cancellationToken: ct));
            if (existing is { } e)
                return amountMicros is null || amountMicros == e.amount
                    ? (PayoutOutcome.Replayed, new Payout(id, creatorAccountId, e.amount, e.transfer, UnixMicros.ToDateTimeOffset(e.at), true))
                    : (PayoutOutcome.Conflict, null);
        }
        var earnings = await EarningsAccountAsync(creatorAccountId, ct);
        var amount = amountMicros ?? Math.Max(0, (await ledger.GetAccountAsync(earnings, ct))?.BalanceMicros ?? 0);
        if (amount <= 0) return (PayoutOutcome.NothingToPay, null);
        var transferId = $"payout:{creatorAccountId}:{id}";
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = transferId, DebitAccountId = earnings, CreditAccountId = await system.GetIdAsync(PayoutsClearing, LedgerAccountKinds.PaymentsClearing, ct),
            Amount = amount, Code = PayoutCode, Reference = id,
        }, ct);
        if (result.Code is TransferResultCode.InsufficientFunds) return (PayoutOutcome.InsufficientEarnings, null);
        if (result.Code is TransferResultCode.IdempotencyConflict) return (PayoutOutcome.Conflict, null);
        if (!result.Succeeded) throw new InvalidOperationException($"The ledger refused payout {transferId}: {result.Code}.");
        var now = time.GetUtcNowMicros();
        await using (var c = await db.OpenAsync(CancellationToken.None))
            await c.ExecuteAsync(new CommandDefinition("""
                INSERT INTO marketplace_payouts (creator_account_id, id, amount_micros, transfer_id, created_at) VALUES (@creatorAccountId, @id, @amount, @transferId, @now)
                ON CONFLICT (creator_account_id, id) DO NOTHING
                """, new { creatorAccountId, id, amount, transferId, now }, cancellationToken: CancellationToken.None));
        return (result.Code == TransferResultCode.Replayed ? PayoutOutcome.Replayed : PayoutOutcome.Paid,
            new Payout(id, creatorAccountId, amount, transferId, UnixMicros.ToDateTimeOffset(now), result.Code == TransferResultCode.Replayed));
    }
}

/// <summary>A call made through an agent: who earns from it and the model price the markup sits on.</summary>
public sealed record AgentCharge(Agent Agent, long EarningsAccountId, string BuyerAccountId, long BasePriceMicros, long? ProviderCostMicros);
