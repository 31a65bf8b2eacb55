using System.Text;
using Tollgate.Features.Ledger;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// Random operation sequences applied to the real ledger and to <see cref="LedgerModel"/>; every result (code and
/// transfer) and, at the end, every account's counters and every hold's status must agree. A failure names its seed
/// and the last operations; rerun one seed on both engines with <c>--filter 'FullyQualifiedName~LedgerPropertyTests&amp;DisplayName~seed: 7\)'</c>.
///
/// Some steps are bursts: several single transfers and atomic groups submitted without awaiting in between. They are
/// queued in call order and the writer applies them in that order (often in one database batch), so their outcomes
/// are as deterministic as sequential calls, and the model applies them in the same order.
/// </summary>
public sealed class LedgerPropertyTests(ITestOutputHelper output)
{
    private const int Seeds = 30;
    private const int StepsPerSeed = 200;

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var engine in new[] { TestDatabases.Sqlite, TestDatabases.Postgres })
            for (var seed = 1; seed <= Seeds; seed++)
                data.Add(engine, seed);
        return data;
    }

    private abstract record Op;
    private sealed record SingleOp(TransferRequest Request) : Op;
    private sealed record GroupOp(TransferRequest[] Requests) : Op;
    private sealed record ExpireOp(int AdvanceSeconds, bool Sweep) : Op;

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task LedgerService_RandomOperationSequences_MatchReferenceModelOnEveryResultAndCounter(string engine, int seed)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var model = new LedgerModel();
        var log = new List<string>();
        var codes = new Dictionary<TransferResultCode, int>();
        try
        {
            var accounts = await CreateAccountsAsync(h, model);
            var generator = new Generator(new Random(seed), accounts);
            var step = 0;
            while (step < StepsPerSeed)
            {
                var ops = generator.NextStep();
                step += ops.Count;
                if (ops is [ExpireOp expire])
                {
                    await ExpireAsync(h, model, expire, log);
                    continue;
                }
                // Submit in order without awaiting, then compare in the same order.
                var now = h.Clock.NowMicros;
                var pending = ops.Select(op => Submit(h.Ledger, op)).ToArray();
                var results = await Task.WhenAll(pending);
                for (var i = 0; i < ops.Count; i++)
                {
                    Compare(ops[i], results[i], Expected(model, ops[i], now), log, ops.Count > 1);
                    foreach (var r in results[i]) codes[r.Code] = codes.GetValueOrDefault(r.Code) + 1;
                }
            }

            foreach (var id in accounts.All)
            {
                var a = await h.AccountAsync(id);
                var actual = (a.DebitsPending, a.DebitsPosted, a.CreditsPending, a.CreditsPosted, a.Version);
                if (actual != model.Counters(id))
                    throw new XunitException($"account {id}: ledger counters {actual}, model {model.Counters(id)}");
            }
            foreach (var hold in model.Holds)
            {
                var stored = await h.Ledger.GetTransferAsync(hold.Id);
                if (stored?.Status != hold.Status)
                    throw new XunitException($"hold {hold.Id}: ledger status {stored?.Status.ToString() ?? "missing"}, model {hold.Status}");
            }
            var audit = await h.Ledger.AuditAsync();
            if (!audit.Healthy) throw new XunitException("audit: " + string.Join("; ", audit.Violations));
            // What the run covered, so a generator that drifts into trivia shows up in the test output.
            output.WriteLine(string.Join(", ", codes.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}={kv.Value}")));
        }
        catch (Exception e)
        {
            var tail = string.Join("\n  ", log.TakeLast(25));
            var what = e is XunitException ? e.Message : e.ToString();
            throw new XunitException($"seed {seed} on {engine}: {what}\nlast operations (oldest first):\n  {tail}");
        }
    }

    private static Task<TransferResult[]> Submit(LedgerService ledger, Op op) => op switch
    {
        SingleOp s => One(ledger.TransferAsync(s.Request)),
        GroupOp g => ledger.TransferAtomicAsync(g.Requests),
        _ => throw new InvalidOperationException(op.ToString()),
    };

    private static async Task<TransferResult[]> One(Task<TransferResult> result) => [await result];

    private static TransferResult[] Expected(LedgerModel model, Op op, long now) => op switch
    {
        SingleOp s => [model.Apply(s.Request, now)],
        GroupOp g => model.ApplyAtomic(g.Requests, now),
        _ => throw new InvalidOperationException(op.ToString()),
    };

    private static void Compare(Op op, TransferResult[] actual, TransferResult[] expected, List<string> log, bool inBurst)
    {
        var requests = op switch { SingleOp s => [s.Request], GroupOp g => g.Requests, _ => Array.Empty<TransferRequest>() };
        log.Add($"{(inBurst ? "burst " : "")}{(op is GroupOp ? "atomic " : "")}[{string.Join(", ", requests.Select(Describe))}] → "
            + $"ledger [{string.Join(", ", actual.Select(r => r.Code))}], model [{string.Join(", ", expected.Select(r => r.Code))}]");
        if (actual.Length != expected.Length) throw new XunitException($"{actual.Length} results, model {expected.Length}");
        for (var i = 0; i < actual.Length; i++)
        {
            if (actual[i].Code != expected[i].Code)
                throw new XunitException($"{requests[i].Id}: ledger {actual[i].Code}, model {expected[i].Code}");
            if (!Equals(actual[i].Transfer, expected[i].Transfer))
                throw new XunitException($"{requests[i].Id}: ledger transfer {actual[i].Transfer}, model {expected[i].Transfer}");
        }
    }

    private static async Task ExpireAsync(LedgerHarness h, LedgerModel model, ExpireOp op, List<string> log)
    {
        h.Clock.Advance(TimeSpan.FromSeconds(op.AdvanceSeconds));
        if (!op.Sweep)
        {
            log.Add($"clock +{op.AdvanceSeconds}s");
            return;
        }
        var actual = await h.Ledger.ExpireDueHoldsAsync();
        var expected = model.Expire(h.Clock.NowMicros);
        log.Add($"clock +{op.AdvanceSeconds}s, sweep → ledger {actual}, model {expected}");
        if (actual != expected) throw new XunitException($"expired {actual} holds, model {expected}");
    }

    private static string Describe(TransferRequest r)
    {
        var sb = new StringBuilder($"{r.Id}:{r.Kind}");
        if (r.PendingId is not null) sb.Append($" of {r.PendingId}");
        if (r.DebitAccountId != 0 || r.CreditAccountId != 0) sb.Append($" {r.DebitAccountId}→{r.CreditAccountId}");
        sb.Append($" amount={r.Amount?.ToString() ?? "null"}");
        if (r.TimeoutSeconds != 0) sb.Append($" timeout={r.TimeoutSeconds}");
        sb.Append($" code={r.Code}");
        if (r.Metadata is not null) sb.Append($" meta={r.Metadata}");
        if (r.Reference is not null) sb.Append($" ref={r.Reference}");
        return sb.ToString();
    }

    private sealed record Accounts(long Promotions, long Prepaid, long Postpaid, long Revenue, long Refunds, long Euro)
    {
        public long[] All => [Promotions, Prepaid, Postpaid, Revenue, Refunds, Euro];
        public long[] Customers => [Prepaid, Postpaid];
    }

    private static async Task<Accounts> CreateAccountsAsync(LedgerHarness h, LedgerModel model)
    {
        async Task<long> Create(string kind, LedgerAccountFlags flags, long limit, string currency = "USD")
        {
            var id = await h.CreateAccountAsync(flags, limit, kind, currency);
            model.AddAccount(id, currency, flags, limit);
            return id;
        }
        return new Accounts(
            await Create(LedgerAccountKinds.Promotions, LedgerAccountFlags.None, 0),
            await Create(LedgerAccountKinds.Customer, LedgerAccountFlags.DebitsMustNotExceedCredits, 0),
            await Create(LedgerAccountKinds.Customer, LedgerAccountFlags.DebitsMustNotExceedCredits, 2_000),
            await Create(LedgerAccountKinds.Revenue, LedgerAccountFlags.None, 0),
            await Create(LedgerAccountKinds.Adjustments, LedgerAccountFlags.CreditsMustNotExceedDebits, 0),
            await Create(LedgerAccountKinds.Customer, LedgerAccountFlags.None, 0, "EUR"));
    }

    /// <summary>Draws operations from a seeded <see cref="Random"/>; it never looks at outcomes, so a seed fixes the whole run.</summary>
    private sealed class Generator(Random rng, Accounts accounts)
    {
        private const long UnknownAccount = 999_999;
        private readonly List<TransferRequest> _sent = new();
        private readonly List<TransferRequest[]> _groups = new();
        private readonly List<(string Id, long Amount)> _holds = new();
        private int _next;

        public List<Op> NextStep()
        {
            var roll = rng.Next(100);
            if (roll < 10) return [new ExpireOp(rng.Next(1, 91), Sweep: rng.Next(10) < 7)];
            if (roll < 25) return Enumerable.Range(0, rng.Next(2, 7)).Select(_ => NextTransferOp()).ToList();
            return [NextTransferOp()];
        }

        private Op NextTransferOp()
        {
            var roll = rng.Next(100);
            if (roll < 14) return NextGroup();
            return new SingleOp(roll switch
            {
                < 40 => NextPosted(),
                < 62 => NextHold(),
                < 78 => NextPost(),
                < 86 => NextVoid(),
                _ => NextReplay(),
            });
        }

        private string NewId() => $"t{++_next}";
        private T Pick<T>(IReadOnlyList<T> items) => items[rng.Next(items.Count)];
        private long Customer() => Pick(accounts.Customers);

        private TransferRequest Remember(TransferRequest r)
        {
            _sent.Add(r);
            if (r.Kind == TransferKind.Pending && r.Amount is { } a) _holds.Add((r.Id, a));
            return r;
        }

        private TransferRequest Decorate(TransferRequest r) => r with
        {
            Code = Pick(new[] { "usage", "grant", "adjustment", "refund" }),
            Metadata = rng.Next(10) < 3 ? $"{{\"n\":{rng.Next(1000)}}}" : null,
            Reference = rng.Next(10) < 2 ? $"ref-{rng.Next(1000)}" : null,
            Description = rng.Next(10) < 1 ? "described" : null,
        };

        private TransferRequest NextPosted()
        {
            var roll = rng.Next(100);
            (long Debit, long Credit, long Amount) pick = roll switch
            {
                < 33 => (accounts.Promotions, Customer(), (long)rng.Next(200, 2_500)),
                < 70 => (Customer(), accounts.Revenue, rng.Next(1, 1_500)),
                < 78 => (accounts.Refunds, accounts.Promotions, rng.Next(1, 400)),     // gives the refunds account debits
                < 86 => (accounts.Revenue, accounts.Refunds, rng.Next(1, 600)),        // credits it, limited by those debits
                < 94 => (Pick(accounts.All), Pick(accounts.All), rng.Next(1, 1_000)),  // any pair, same account or EUR included
                < 97 => rng.Next(2) == 0 ? (UnknownAccount, accounts.Revenue, 5L) : (accounts.Promotions, UnknownAccount, 5L),
                _ => (Customer(), accounts.Revenue, -rng.Next(0, 2)),                   // 0 or −1
            };
            var r = Decorate(LedgerRequests.Posted(NewId(), pick.Debit, pick.Credit, pick.Amount));
            if (rng.Next(100) < 3) r = r with { TimeoutSeconds = 5 };
            return Remember(r);
        }

        private TransferRequest NextHold()
        {
            var (debit, credit) = rng.Next(100) < 80 ? (Customer(), accounts.Revenue) : (Pick(accounts.All), Pick(accounts.All));
            var timeout = rng.Next(100) < 2 ? -1 : Pick(new[] { 0, 0, 0, 5, 20, 60, 300 });
            return Remember(Decorate(LedgerRequests.Hold(NewId(), debit, credit, rng.Next(1, 1_200), timeout)));
        }

        /// <summary>A hold id to settle: usually one asked for earlier (held, settled or never created), sometimes not a hold at all.</summary>
        private (string Id, long Amount) PendingTarget()
        {
            var roll = rng.Next(100);
            if (roll < 90 && _holds.Count > 0) return Pick(_holds);
            if (roll < 95 && _sent.Count > 0) return (Pick(_sent).Id, 1);
            return ($"missing-{rng.Next(1000)}", 1);
        }

        private TransferRequest NextPost()
        {
            var (pendingId, held) = PendingTarget();
            long? amount = rng.Next(100) switch
            {
                < 25 => null,
                < 50 => held,
                < 82 => held > 1 ? rng.NextInt64(1, held) : held,
                < 95 => held + rng.Next(1, 100),
                _ => -1,
            };
            var r = Decorate(LedgerRequests.Post(NewId(), pendingId, amount));
            if (rng.Next(100) < 8) r = r with { DebitAccountId = Pick(accounts.All) };
            return Remember(r);
        }

        private TransferRequest NextVoid()
        {
            var (pendingId, held) = PendingTarget();
            long? amount = rng.Next(100) switch { < 80 => null, < 90 => held, _ => held + 1 };
            var r = Decorate(LedgerRequests.Void(NewId(), pendingId, amount));
            if (rng.Next(100) < 5) r = r with { CreditAccountId = Pick(accounts.All) };
            return Remember(r);
        }

        /// <summary>An earlier request again: usually identical (a client retry), otherwise with one field changed.</summary>
        private TransferRequest NextReplay()
        {
            if (_sent.Count == 0) return NextPosted();
            var original = Pick(_sent);
            return rng.Next(100) < 60 ? original with { } : Mutate(original);
        }

        private TransferRequest Mutate(TransferRequest r) => rng.Next(4) switch
        {
            0 => r with { Amount = (r.Amount ?? 0) + 1 },
            1 => r with { Code = r.Code + "-changed" },
            2 => r with { Metadata = r.Metadata is null ? """{"changed":true}""" : null },
            _ => r with { Reference = "ref-changed" },
        };

        private GroupOp NextGroup()
        {
            var roll = rng.Next(100);
            if (roll < 15 && _groups.Count > 0)
            {
                var earlier = Pick(_groups);
                if (rng.Next(100) < 70) return new GroupOp(earlier.Select(r => r with { }).ToArray());
                var changed = earlier.ToArray();
                var i = rng.Next(changed.Length);
                changed[i] = Mutate(changed[i]);
                return new GroupOp(changed);
            }
            TransferRequest[] members;
            if (roll < 55)
            {
                // Hold, settle it inside the group, then a fee that may or may not fit.
                var customer = Customer();
                var hold = Remember(Decorate(LedgerRequests.Hold(NewId(), customer, accounts.Revenue, rng.Next(1, 800), Pick(new[] { 0, 30 }))));
                var settle = rng.Next(4) == 0
                    ? Remember(LedgerRequests.Void(NewId(), hold.Id))
                    : Remember(LedgerRequests.Post(NewId(), hold.Id, rng.Next(2) == 0 ? null : rng.NextInt64(1, hold.Amount!.Value + 1)));
                var fee = Remember(Decorate(LedgerRequests.Posted(NewId(), customer, accounts.Revenue, rng.Next(1, 2_000))));
                members = [hold, settle, fee];
            }
            else
            {
                members = Enumerable.Range(0, rng.Next(1, 4)).Select(_ => rng.Next(4) switch
                {
                    0 => NextHold(),
                    1 => NextPost(),
                    2 => NextVoid(),
                    _ => NextPosted(),
                }).ToArray();
            }
            _groups.Add(members);
            return new GroupOp(members);
        }
    }
}
