using Microsoft.Extensions.Logging.Abstractions;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Bench;

/// <summary>
/// The real ledger: <see cref="LedgerService"/> (group commit) over the engine's store, wrapped in
/// <see cref="TimedLedgerStore"/> to see batch sizes and commit times. Customers are created with zero balance and
/// funded through ledger transfers from a promotions account, so the audit afterwards must come out healthy.
/// </summary>
internal sealed class LedgerTarget : ITransferTarget
{
    private readonly Database _db;
    private readonly LedgerService _ledger;
    private readonly long[] _customers;
    private readonly long _revenue;

    private LedgerTarget(Database db, LedgerService ledger, TimedLedgerStore store, long[] customers, long revenue)
    {
        _db = db;
        _ledger = ledger;
        Store = store;
        _customers = customers;
        _revenue = revenue;
    }

    public TimedLedgerStore Store { get; }
    public LedgerService Ledger => _ledger;

    public static async Task<LedgerTarget> CreateAsync(Database db, BenchOptions o, int customers)
    {
        var store = new TimedLedgerStore(LedgerRegistration.CreateStore(db, TimeProvider.System));
        var ledger = new LedgerService(store, TimeProvider.System, new LedgerOptions { MaxBatchTransfers = o.MaxBatch },
            NullLogger<LedgerService>.Instance);
        await BenchDatabases.InsertHistoryAsync(db, o.History);
        var ids = await BenchDatabases.InsertCustomersAsync(db, customers, creditsPosted: 0);
        var revenue = (await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Revenue))).Id;
        var promotions = (await ledger.CreateAccountAsync(new NewLedgerAccount(LedgerAccountKinds.Promotions))).Id;

        // Enough for every transfer the run can make: 10^15 micro-USD in total, split over the customers.
        var funding = 1_000_000_000_000_000L / customers;
        var grants = ids.Select((id, i) => ledger.TransferAsync(new TransferRequest
        {
            Id = $"grant.{i}", DebitAccountId = promotions, CreditAccountId = id, Amount = funding, Code = "grant",
        }));
        foreach (var r in await Task.WhenAll(grants))
            if (r.Code != TransferResultCode.Ok) throw new InvalidOperationException($"Funding failed: {r.Code}");
        await BenchDatabases.AnalyzeAsync(db);
        return new LedgerTarget(db, ledger, store, ids, revenue);
    }

    public async Task<bool> TransferAsync(string id, int customer)
    {
        var r = await _ledger.TransferAsync(new TransferRequest
        {
            Id = id, DebitAccountId = _customers[customer], CreditAccountId = _revenue, Amount = Workloads.Amount, Code = "usage",
        });
        return r.Code == TransferResultCode.Ok;
    }

    public async ValueTask DisposeAsync()
    {
        await _ledger.DisposeAsync();
        await _db.DisposeAsync();
    }
}
