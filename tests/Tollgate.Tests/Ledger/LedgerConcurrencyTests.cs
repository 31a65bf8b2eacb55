using System.Threading.Channels;
using Tollgate.Features.Ledger;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>
/// Many callers at once. Each test runs two <see cref="LedgerService"/> instances on one database (each with its own
/// store and writer loop), so callers meet both in one service's group commit and across services in the database's
/// locks (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite).
/// </summary>
public sealed class LedgerConcurrencyTests
{
    private sealed record WriterOutcome(int Writer, TransferResultCode Hold, TransferKind? Settle, TransferResultCode? SettleCode, long Posted);

    /// <summary>Starts every task at once and waits for all, so they really overlap.</summary>
    private static async Task<T[]> RunTogetherAsync<T>(int count, Func<int, Task<T>> body)
    {
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tasks = Enumerable.Range(0, count).Select(i => Task.Run(async () =>
        {
            await start.Task;
            return await body(i);
        })).ToArray();
        start.SetResult();
        return await Task.WhenAll(tasks);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_ManyConcurrentHoldThenSettleWritersOnOnePrepaidAccount_NeverOverspend(string engine)
    {
        const int writers = 96;
        const long amount = 100_000;
        const long grant = 2_000_000;   // affords 20 holds at a time, while 96 writers want one each
        await using var h = await LedgerHarness.StartAsync(engine);
        LedgerService[] services = [h.Ledger, h.AddService(new LedgerOptions { MaxBatchTransfers = 8 })];
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        await h.GrantAsync(promotions, customer, grant);

        var outcomes = await RunTogetherAsync(writers, async i =>
        {
            var hold = await services[i % 2].TransferAsync(Hold($"h{i}", customer, revenue, amount, timeoutSeconds: 3_600));
            if (hold.Code != TransferResultCode.Ok) return new WriterOutcome(i, hold.Code, null, null, 0);
            await Task.Yield();
            // Every fourth writer gives its hold back; a third of the others use only half of it.
            var settle = i % 4 == 3 ? Void($"s{i}", $"h{i}") : Post($"s{i}", $"h{i}", i % 3 == 0 ? amount / 2 : null);
            var result = await services[(i / 2) % 2].TransferAsync(settle);
            return new WriterOutcome(i, hold.Code, settle.Kind, result.Code,
                result.Code == TransferResultCode.Ok && settle.Kind == TransferKind.PostPending ? result.Transfer!.Amount : 0);
        });

        Assert.All(outcomes, o => Assert.True(o.Hold is TransferResultCode.Ok or TransferResultCode.InsufficientFunds, $"writer {o.Writer}: hold {o.Hold}"));
        var succeeded = outcomes.Where(o => o.Hold == TransferResultCode.Ok).ToArray();
        Assert.All(succeeded, o => Assert.Equal(TransferResultCode.Ok, o.SettleCode));
        Assert.NotEmpty(succeeded);
        Assert.Contains(outcomes, o => o.Hold == TransferResultCode.InsufficientFunds);   // the account really ran dry
        var posted = outcomes.Sum(o => o.Posted);
        Assert.InRange(posted, amount / 2, grant);

        var c = await h.AccountAsync(customer);
        Assert.Equal((0L, posted, 0L, grant), (c.DebitsPending, c.DebitsPosted, c.CreditsPending, c.CreditsPosted));
        Assert.Equal(grant - posted, c.BalanceMicros);
        Assert.True(c.BalanceMicros >= 0);
        Assert.Equal(1 + 2 * succeeded.Length, c.Version);
        var r = await h.AccountAsync(revenue);
        Assert.Equal((0L, 0L, 0L, posted), (r.DebitsPending, r.DebitsPosted, r.CreditsPending, r.CreditsPosted));

        // At no committed point did open holds plus spending exceed the grant.
        var history = await h.Ledger.GetStatementAsync(customer, null, 10_000);
        Assert.Equal(Enumerable.Range(1, (int)c.Version).Reverse().Select(v => (long)v), history.Select(l => l.Entry.Version));
        Assert.All(history, l => Assert.True(l.Entry.BalanceAfter - l.Entry.DebitsPendingAfter >= 0,
            $"version {l.Entry.Version}: balance {l.Entry.BalanceAfter} with {l.Entry.DebitsPendingAfter} held"));
        Assert.True(history.Max(l => l.Entry.DebitsPendingAfter) <= grant);

        foreach (var o in outcomes)
        {
            var hold = await h.Ledger.GetTransferAsync($"h{o.Writer}");
            if (o.Hold != TransferResultCode.Ok) { Assert.Null(hold); continue; }
            Assert.Equal(o.Settle == TransferKind.VoidPending ? TransferStatus.Voided : TransferStatus.Posted, hold!.Status);
        }
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_SameIdSubmittedConcurrently_HasExactlyOneEffect(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        LedgerService[] services = [h.Ledger, h.AddService()];
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        var grant = Posted("grant-once", promotions, customer, 1_000_000, "grant");

        var grants = await RunTogetherAsync(64, i => services[i % 2].TransferAsync(grant with { }));

        Assert.Single(grants, g => g.Code == TransferResultCode.Ok);
        Assert.Equal(63, grants.Count(g => g.Code == TransferResultCode.Replayed));
        var stored = await h.Ledger.GetTransferAsync("grant-once");
        Assert.All(grants, g => Assert.Equal(stored, g.Transfer));
        var c = await h.AccountAsync(customer);
        Assert.Equal((1_000_000L, 1L), (c.CreditsPosted, c.Version));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_ConcurrentSettlesOfOneHold_ExactlyOneWins(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        LedgerService[] services = [h.Ledger, h.AddService()];
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        await h.GrantAsync(promotions, customer, 1_000_000);
        await h.Ledger.TransferAsync(Hold("hold-posts", customer, revenue, 300_000));
        await h.Ledger.TransferAsync(Hold("hold-mixed", customer, revenue, 200_000));

        // Distinct ids, so these are rivals rather than replays.
        var posts = await RunTogetherAsync(48, i => services[i % 2].TransferAsync(Post($"post-{i}", "hold-posts")));
        var mixed = await RunTogetherAsync(32, i => services[i % 2].TransferAsync(
            i % 2 == 0 ? Post($"mixed-post-{i}", "hold-mixed") : Void($"mixed-void-{i}", "hold-mixed")));

        Assert.Single(posts, p => p.Code == TransferResultCode.Ok);
        Assert.Equal(47, posts.Count(p => p.Code == TransferResultCode.PendingTransferAlreadyPosted));
        var winner = Assert.Single(mixed, m => m.Code == TransferResultCode.Ok).Transfer!;
        var loserCode = winner.Kind == TransferKind.PostPending
            ? TransferResultCode.PendingTransferAlreadyPosted : TransferResultCode.PendingTransferAlreadyVoided;
        Assert.Equal(31, mixed.Count(m => m.Code == loserCode));

        var spent = 300_000 + (winner.Kind == TransferKind.PostPending ? 200_000 : 0);
        var c = await h.AccountAsync(customer);
        Assert.Equal((0L, (long)spent), (c.DebitsPending, c.DebitsPosted));
        Assert.Equal(5, c.Version);   // grant, two holds, two settles
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAtomicAsync_SameGroupSubmittedConcurrently_AppliesOnce(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        LedgerService[] services = [h.Ledger, h.AddService()];
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        await h.GrantAsync(promotions, customer, 1_000_000);
        TransferRequest[] group = [Hold("g-hold", customer, revenue, 300_000), Post("g-post", "g-hold", 250_000), Posted("g-fee", customer, revenue, 10_000)];

        var results = await RunTogetherAsync(32, i => services[i % 2].TransferAtomicAsync(group));

        Assert.Single(results, r => r.All(x => x.Code == TransferResultCode.Ok));
        Assert.Equal(31, results.Count(r => r.All(x => x.Code == TransferResultCode.Replayed)));
        var c = await h.AccountAsync(customer);
        Assert.Equal((0L, 260_000L, 4L), (c.DebitsPending, c.DebitsPosted, c.Version));
        await h.AssertAuditHealthyAsync();
    }

    /// <summary>
    /// Lets a test decide which commands share one database batch: every Apply announces its size and then
    /// waits for a permit, so whatever the test submits meanwhile queues up as the next batch.
    /// </summary>
    private sealed class GatedLedgerStore(ILedgerStore inner) : ILedgerStore, IAsyncDisposable
    {
        private readonly SemaphoreSlim _permits = new(0);
        private readonly Channel<int> _entered = Channel.CreateUnbounded<int>();

        public Task<int> NextBatchAsync() => _entered.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        public void Permit() => _permits.Release();

        // The test alone decides what each batch holds, so none is taken early.
        public bool BeginsNextBatchEarly => false;

        public void Apply(IReadOnlyList<LedgerCommand> batch, long nowMicros, IReadOnlyList<LedgerCommand>? next)
        {
            _entered.Writer.TryWrite(batch.Count);
            _permits.Wait();
            inner.Apply(batch, nowMicros, next);
        }

        public Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount account, CancellationToken ct) => inner.CreateAccountAsync(account, ct);
        public Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount account, CancellationToken ct) => inner.EnsureAccountAsync(account, ct);
        public Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct) => inner.GetAccountAsync(id, ct);
        public Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct) => inner.SetCreditLimitAsync(id, creditLimitMicros, ct);
        public Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct) => inner.GetAccountsAsync(ids, ct);
        public Task<Transfer?> GetTransferAsync(string id, CancellationToken ct) => inner.GetTransferAsync(id, ct);
        public Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct) =>
            inner.GetStatementAsync(accountId, beforeVersion, limit, ct);
        public Task<IReadOnlyList<string>> GetExpiredPendingAsync(long nowMicros, int limit, CancellationToken ct) => inner.GetExpiredPendingAsync(nowMicros, limit, ct);
        public Task<LedgerAudit> AuditAsync(CancellationToken ct) => inner.AuditAsync(ct);

        public async ValueTask DisposeAsync()
        {
            _permits.Release(1_000);
            if (inner is IAsyncDisposable d) await d.DisposeAsync();
        }
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAtomicAsync_FailedGroupWithHoldAndPost_LeavesNoTraceForLaterCommandsInSameBatch(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var gated = new GatedLedgerStore(LedgerRegistration.CreateStore(h.Database, h.Clock));
        var ledger = h.AddService(gated);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        await h.GrantAsync(promotions, customer, 2_000_000);
        // An unrelated open hold, so a wrongly released phantom hold would not trip the non-negative CHECK and hide.
        await h.Ledger.TransferAsync(Hold("keep", customer, revenue, 500_000));
        TransferRequest[] Group(string p) =>
            [Hold($"{p}-hold", customer, revenue, 300_000), Post($"{p}-post", $"{p}-hold", 200_000), Posted($"{p}-fee", customer, revenue, 5_000_000)];

        var blocker = ledger.TransferAsync(Posted("blocker", promotions, revenue, 1));
        Assert.Equal(1, await gated.NextBatchAsync());
        // Batch 2: the failing group, then the client retrying only the hold.
        var groupA = ledger.TransferAtomicAsync(Group("a"));
        var retryHold = ledger.TransferAsync(Hold("a-hold", customer, revenue, 300_000));
        gated.Permit();
        Assert.Equal(2, await gated.NextBatchAsync());
        // Batch 3: another failing group, then a post of the hold that group never created.
        var groupB = ledger.TransferAtomicAsync(Group("b"));
        var postMissing = ledger.TransferAsync(Post("b-late", "b-hold"));
        gated.Permit();
        Assert.Equal(2, await gated.NextBatchAsync());
        gated.Permit();

        Assert.Equal(TransferResultCode.Ok, (await blocker).Code);
        TransferResultCode[] groupFailed = [TransferResultCode.LinkedTransferFailed, TransferResultCode.LinkedTransferFailed, TransferResultCode.InsufficientFunds];
        Assert.Equal(groupFailed, (await groupA).Select(r => r.Code));
        Assert.Equal(groupFailed, (await groupB).Select(r => r.Code));
        // The rolled-back hold does not exist, so the retry creates it rather than "replaying" a phantom.
        var retried = await retryHold;
        Assert.Equal(TransferResultCode.Ok, retried.Code);
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("a-hold"))?.Status);
        Assert.Equal(TransferResultCode.PendingTransferNotFound, (await postMissing).Code);
        Assert.Null(await h.Ledger.GetTransferAsync("b-hold"));
        Assert.Null(await h.Ledger.GetTransferAsync("b-late"));

        var c = await h.AccountAsync(customer);
        Assert.Equal((800_000L, 0L, 2_000_000L), (c.DebitsPending, c.DebitsPosted, c.CreditsPosted));
        await h.AssertAuditHealthyAsync();
    }
}
