using Tollgate.Features.Ledger;
using static Tollgate.Tests.Ledger.LedgerRequests;

namespace Tollgate.Tests.Ledger;

/// <summary>Builders for the transfer requests the ledger tests send.</summary>
internal static class LedgerRequests
{
    public static TransferRequest Posted(string id, long debit, long credit, long? amount, string code = "usage") =>
        new() { Id = id, Kind = TransferKind.Posted, DebitAccountId = debit, CreditAccountId = credit, Amount = amount, Code = code };

    public static TransferRequest Hold(string id, long debit, long credit, long amount, int timeoutSeconds = 0) =>
        new() { Id = id, Kind = TransferKind.Pending, DebitAccountId = debit, CreditAccountId = credit, Amount = amount, TimeoutSeconds = timeoutSeconds, Code = "hold" };

    public static TransferRequest Post(string id, string pendingId, long? amount = null) =>
        new() { Id = id, Kind = TransferKind.PostPending, PendingId = pendingId, Amount = amount, Code = "usage" };

    public static TransferRequest Void(string id, string pendingId, long? amount = null) =>
        new() { Id = id, Kind = TransferKind.VoidPending, PendingId = pendingId, Amount = amount, Code = "release" };

    /// <summary>One durable, non-atomic command per transfer: what a store's <c>Apply</c> takes.</summary>
    internal static List<LedgerCommand> Batch(params TransferRequest[] transfers) =>
        transfers.Select(t => new LedgerCommand([t], atomic: false)).ToList();
}

public sealed class LedgerServiceTests
{
    private static void AssertCounters(LedgerAccount a, long debitsPending, long debitsPosted, long creditsPending, long creditsPosted)
    {
        Assert.Equal(
            (debitsPending, debitsPosted, creditsPending, creditsPosted),
            (a.DebitsPending, a.DebitsPosted, a.CreditsPending, a.CreditsPosted));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_SideWrites_CommitWithTheTransferAndOnlyIfItSucceeds(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (_, customer, revenue) = await h.FundedCustomerAsync(100);
        static LedgerSideWrite Mark(string id) => new(
            "INSERT INTO stripe_events (id, type, created, account_id, outcome, received_at) VALUES (@id, 'test', 0, NULL, 'done', 0) ON CONFLICT (id) DO NOTHING",
            new Dictionary<string, object?> { ["id"] = id });

        var ok = await h.Ledger.TransferAsync(Posted("side-ok", customer, revenue, 60), new LedgerCommit { SideWrites = [Mark("evt-ok")] });
        var refused = await h.Ledger.TransferAsync(Posted("side-refused", customer, revenue, 60), new LedgerCommit { SideWrites = [Mark("evt-refused")] });
        var replay = await h.Ledger.TransferAsync(Posted("side-ok", customer, revenue, 60), new LedgerCommit { SideWrites = [Mark("evt-ok")] });

        Assert.Equal((TransferResultCode.Ok, TransferResultCode.InsufficientFunds, TransferResultCode.Replayed), (ok.Code, refused.Code, replay.Code));
        await using var c = await h.Database.OpenAsync(CancellationToken.None);
        async Task<long> Rows(string id) => await Dapper.SqlMapper.ExecuteScalarAsync<long>(c, "SELECT COUNT(*) FROM stripe_events WHERE id = @id", new { id });
        Assert.Equal((1L, 0L), (await Rows("evt-ok"), await Rows("evt-refused")));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostedTransfer_MovesFundsAndStoresTransfer(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();

        var result = await h.Ledger.TransferAsync(new TransferRequest
        {
            Id = "grant-1", DebitAccountId = promotions, CreditAccountId = customer, Amount = 5_000_000, Code = "grant",
            Reference = "ref-1", Description = "welcome credit", Metadata = """{"campaign":"launch"}""",
        });

        Assert.Equal(TransferResultCode.Ok, result.Code);
        var expected = new Transfer("grant-1", TransferKind.Posted, promotions, customer, 5_000_000, null, 0, null, TransferStatus.Final,
            "grant", "ref-1", "welcome credit", """{"campaign":"launch"}""", h.Clock.NowMicros, -5_000_000, 5_000_000);
        Assert.Equal(expected, result.Transfer);
        Assert.Equal(expected, await h.Ledger.GetTransferAsync("grant-1"));

        var c = await h.AccountAsync(customer);
        AssertCounters(c, 0, 0, 0, 5_000_000);
        Assert.Equal((5_000_000L, 5_000_000L, 0L, 1L), (c.BalanceMicros, c.AvailableMicros, c.HeldMicros, c.Version));
        var p = await h.AccountAsync(promotions);
        AssertCounters(p, 0, 5_000_000, 0, 0);
        Assert.Equal(-5_000_000, p.BalanceMicros);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_HoldThenPartialPost_ChargesPostedAmountAndReleasesRest(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(10_000_000);

        var hold = await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 4_000_000));
        Assert.Equal(TransferResultCode.Ok, hold.Code);
        Assert.Equal((TransferKind.Pending, TransferStatus.Pending, (long?)null), (hold.Transfer!.Kind, hold.Transfer.Status, hold.Transfer.ExpiresAtMicros));
        Assert.Equal((10_000_000L, 0L), (hold.Transfer.DebitBalanceAfter, hold.Transfer.CreditBalanceAfter));
        var held = await h.AccountAsync(customer);
        AssertCounters(held, 4_000_000, 0, 0, 10_000_000);
        Assert.Equal((10_000_000L, 6_000_000L, 4_000_000L), (held.BalanceMicros, held.AvailableMicros, held.HeldMicros));
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 4_000_000, 0);

        var post = await h.Ledger.TransferAsync(Post("post-1", "hold-1", 2_500_000));

        Assert.Equal(TransferResultCode.Ok, post.Code);
        Assert.Equal(new Transfer("post-1", TransferKind.PostPending, customer, revenue, 2_500_000, "hold-1", 0, null, TransferStatus.Final,
            "usage", null, null, null, h.Clock.NowMicros, 7_500_000, 2_500_000), post.Transfer);
        Assert.Equal(TransferStatus.Posted, (await h.Ledger.GetTransferAsync("hold-1"))!.Status);
        var c = await h.AccountAsync(customer);
        AssertCounters(c, 0, 2_500_000, 0, 10_000_000);
        Assert.Equal((7_500_000L, 7_500_000L, 0L, 3L), (c.BalanceMicros, c.AvailableMicros, c.HeldMicros, c.Version));
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 0, 2_500_000);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostWithoutAmount_PostsWholeHold(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(3_000_000);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_250_000))).Code);

        var post = await h.Ledger.TransferAsync(Post("post-1", "hold-1"));

        Assert.Equal(TransferResultCode.Ok, post.Code);
        Assert.Equal(1_250_000, post.Transfer!.Amount);
        AssertCounters(await h.AccountAsync(customer), 0, 1_250_000, 0, 3_000_000);
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 0, 1_250_000);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_VoidHold_ReleasesEverythingAndMarksVoided(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(5_000_000);
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 2_000_000));

        var @void = await h.Ledger.TransferAsync(Void("void-1", "hold-1"));

        Assert.Equal(TransferResultCode.Ok, @void.Code);
        Assert.Equal((TransferKind.VoidPending, 2_000_000L, "hold-1", 5_000_000L, 0L),
            (@void.Transfer!.Kind, @void.Transfer.Amount, @void.Transfer.PendingId, @void.Transfer.DebitBalanceAfter, @void.Transfer.CreditBalanceAfter));
        Assert.Equal(TransferStatus.Voided, (await h.Ledger.GetTransferAsync("hold-1"))!.Status);
        var c = await h.AccountAsync(customer);
        AssertCounters(c, 0, 0, 0, 5_000_000);
        Assert.Equal((5_000_000L, 0L), (c.AvailableMicros, c.HeldMicros));
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 0, 0);

        // A voided hold cannot be settled again, in either direction.
        Assert.Equal(TransferResultCode.PendingTransferAlreadyVoided, (await h.Ledger.TransferAsync(Void("void-2", "hold-1"))).Code);
        Assert.Equal(TransferResultCode.PendingTransferAlreadyVoided, (await h.Ledger.TransferAsync(Post("post-1", "hold-1"))).Code);

        // A void names no amount or exactly the held one.
        await h.Ledger.TransferAsync(Hold("hold-2", customer, revenue, 700_000));
        Assert.Equal(TransferResultCode.VoidAmountMismatch, (await h.Ledger.TransferAsync(Void("void-3", "hold-2", 699_999))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Void("void-3", "hold-2", 700_000))).Code);
        AssertCounters(await h.AccountAsync(customer), 0, 0, 0, 5_000_000);
        Assert.Null(await h.Ledger.GetTransferAsync("void-2"));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_SecondPostOfSameHold_ReturnsPendingTransferAlreadyPosted(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(5_000_000);
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_000_000));
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Post("post-1", "hold-1", 600_000))).Code);

        Assert.Equal(TransferResultCode.PendingTransferAlreadyPosted, (await h.Ledger.TransferAsync(Post("post-2", "hold-1", 400_000))).Code);
        Assert.Equal(TransferResultCode.PendingTransferAlreadyPosted, (await h.Ledger.TransferAsync(Void("void-1", "hold-1"))).Code);

        Assert.Null(await h.Ledger.GetTransferAsync("post-2"));
        Assert.Null(await h.Ledger.GetTransferAsync("void-1"));
        AssertCounters(await h.AccountAsync(customer), 0, 600_000, 0, 5_000_000);
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 0, 600_000);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostMoreThanHeld_ReturnsPostAmountExceedsPendingAndKeepsHold(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(5_000_000);
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_000_000));

        var over = await h.Ledger.TransferAsync(Post("post-1", "hold-1", 1_000_001));

        Assert.Equal(TransferResultCode.PostAmountExceedsPending, over.Code);
        Assert.Null(over.Transfer);
        Assert.Null(await h.Ledger.GetTransferAsync("post-1"));
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("hold-1"))!.Status);
        AssertCounters(await h.AccountAsync(customer), 1_000_000, 0, 0, 5_000_000);

        // A failed request stores nothing, so its id is still free for a corrected attempt.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Post("post-1", "hold-1", 1_000_000))).Code);
        AssertCounters(await h.AccountAsync(customer), 0, 1_000_000, 0, 5_000_000);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_DebitBeyondPrepaidBalance_ReturnsInsufficientFunds(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(1_000_000);

        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Posted("spend-1", customer, revenue, 1_000_001))).Code);
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_000_001))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 600_000))).Code);
        // Open holds count against what a new debit may use; a refusal says what was available.
        Assert.Equal(new TransferResult(TransferResultCode.InsufficientFunds, null, 400_000),
            await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 400_001)));
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 400_000))).Code);

        var c = await h.AccountAsync(customer);
        AssertCounters(c, 600_000, 400_000, 0, 1_000_000);
        Assert.Equal((600_000L, 0L), (c.BalanceMicros, c.AvailableMicros));
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Posted("spend-3", customer, revenue, 1))).Code);

        // Releasing the hold makes its funds usable again.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Void("void-1", "hold-1"))).Code);
        Assert.Equal(600_000, (await h.AccountAsync(customer)).AvailableMicros);
        // Accounts without the flag (the operator's) may go negative: that is where grants come from.
        Assert.Equal(-1_000_000, (await h.AccountAsync(promotions)).BalanceMicros);
        Assert.Null(await h.Ledger.GetTransferAsync("spend-3"));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostpaidCreditLimit_AllowsBalanceDownToMinusLimitOnly(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync(creditLimit: 3_000_000);
        var revenue = await h.CreateRevenueAsync();
        var fresh = await h.AccountAsync(customer);
        Assert.Equal((0L, 3_000_000L), (fresh.BalanceMicros, fresh.AvailableMicros));

        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("spend-1", customer, revenue, 2_000_000))).Code);
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_000_001))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 1_000_000))).Code);
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 1))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Post("post-1", "hold-1"))).Code);

        var c = await h.AccountAsync(customer);
        AssertCounters(c, 0, 3_000_000, 0, 0);
        Assert.Equal((-3_000_000L, 0L), (c.BalanceMicros, c.AvailableMicros));
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 1))).Code);

        // Paying part of the debt frees exactly that much.
        await h.GrantAsync(promotions, customer, 500_000);
        var paid = await h.AccountAsync(customer);
        Assert.Equal((-2_500_000L, 500_000L), (paid.BalanceMicros, paid.AvailableMicros));
        Assert.Equal(TransferResultCode.InsufficientFunds, (await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 500_001))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("spend-2", customer, revenue, 500_000))).Code);
        Assert.Equal(-3_000_000, (await h.AccountAsync(customer)).BalanceMicros);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_ReplaySameRequest_ReturnsOriginalTransferAndChangesNothing(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        var grant = new TransferRequest
        {
            Id = "grant-1", DebitAccountId = promotions, CreditAccountId = customer, Amount = 2_000_000, Code = "grant",
            Reference = "pi_123", Description = "top-up", Metadata = """{"k":1}""",
        };
        var original = (await h.Ledger.TransferAsync(grant)).Transfer!;
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 800_000));
        var post = (await h.Ledger.TransferAsync(Post("post-1", "hold-1"))).Transfer!;
        var before = await h.AccountAsync(customer);
        h.Clock.Advance(TimeSpan.FromSeconds(5));

        var replay = await h.Ledger.TransferAsync(grant with { });

        Assert.Equal(TransferResultCode.Replayed, replay.Code);
        Assert.Equal(original, replay.Transfer);   // same timestamp and balances-after, not recomputed now
        Assert.NotEqual(h.Clock.NowMicros, replay.Transfer!.TimestampMicros);

        // A settle replayed without the amount, or with the amount the server filled in, is the same request.
        Assert.Equal(post, (await h.Ledger.TransferAsync(Post("post-1", "hold-1"))).Transfer);
        var explicitAmount = await h.Ledger.TransferAsync(Post("post-1", "hold-1", 800_000));
        Assert.Equal((TransferResultCode.Replayed, post), (explicitAmount.Code, explicitAmount.Transfer));
        // Replaying the hold returns it as it is now (posted), and still does nothing.
        var holdReplay = await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 800_000));
        Assert.Equal(TransferResultCode.Replayed, holdReplay.Code);
        Assert.Equal(TransferStatus.Posted, holdReplay.Transfer!.Status);

        Assert.Equal(before, await h.AccountAsync(customer));
        var audit = await h.Ledger.AuditAsync();
        Assert.Equal(3, audit.Transfers);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_ReplayWithChangedField_ReturnsIdempotencyConflict(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var other = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        var grant = new TransferRequest
        {
            Id = "grant-1", DebitAccountId = promotions, CreditAccountId = customer, Amount = 1_000_000, Code = "grant",
            Reference = "r", Description = "d", Metadata = """{"a":1}""",
        };
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(grant)).Code);
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 500_000));
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Post("post-1", "hold-1", 400_000))).Code);
        var before = await h.AccountAsync(customer);

        TransferRequest[] changed =
        [
            grant with { Amount = 1_000_001 },
            grant with { Code = "adjustment" },
            grant with { Metadata = """{"a":2}""" },
            grant with { Metadata = null },
            grant with { Reference = "r2" },
            grant with { Description = null },
            grant with { CreditAccountId = other },
            grant with { Kind = TransferKind.Pending },
            Post("post-1", "hold-1", 500_000),
            Void("post-1", "hold-1") with { Code = "usage" },
            Post("post-1", "hold-1", 400_000) with { DebitAccountId = other },
        ];
        foreach (var request in changed)
        {
            var result = await h.Ledger.TransferAsync(request);
            Assert.Equal(TransferResultCode.IdempotencyConflict, result.Code);
            Assert.Null(result.Transfer);
        }

        Assert.Equal(before, await h.AccountAsync(customer));
        Assert.Equal(0, (await h.AccountAsync(other)).Version);
        Assert.Equal(1_000_000, (await h.Ledger.GetTransferAsync("grant-1"))!.Amount);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAtomicAsync_OneTransferFails_AppliesNone(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        var before = await h.AccountAsync(customer);

        var secondFails = await h.Ledger.TransferAtomicAsync([Posted("a1", customer, revenue, 500_000), Posted("a2", customer, revenue, 600_000)]);
        Assert.Equal([TransferResultCode.LinkedTransferFailed, TransferResultCode.InsufficientFunds], secondFails.Select(r => r.Code));
        Assert.All(secondFails, r => Assert.Null(r.Transfer));

        var firstFails = await h.Ledger.TransferAtomicAsync([Posted("b1", customer, revenue, 0), Posted("b2", customer, revenue, 100_000)]);
        Assert.Equal([TransferResultCode.AmountMustBePositive, TransferResultCode.LinkedTransferFailed], firstFails.Select(r => r.Code));

        // A hold and its post inside a failing group vanish together.
        var inGroup = await h.Ledger.TransferAtomicAsync(
            [Hold("g-hold", customer, revenue, 300_000), Post("g-post", "g-hold", 200_000), Posted("g-fee", customer, revenue, 2_000_000)]);
        Assert.Equal([TransferResultCode.LinkedTransferFailed, TransferResultCode.LinkedTransferFailed, TransferResultCode.InsufficientFunds],
            inGroup.Select(r => r.Code));

        foreach (var id in new[] { "a1", "a2", "b1", "b2", "g-hold", "g-post", "g-fee" })
            Assert.Null(await h.Ledger.GetTransferAsync(id));
        Assert.Equal(before, await h.AccountAsync(customer));
        AssertCounters(await h.AccountAsync(revenue), 0, 0, 0, 0);
        Assert.Equal(TransferResultCode.PendingTransferNotFound, (await h.Ledger.TransferAsync(Post("late-post", "g-hold"))).Code);

        // The same group shape succeeds when it fits, including a post of a hold made earlier in the group.
        var ok = await h.Ledger.TransferAtomicAsync(
            [Hold("s-hold", customer, revenue, 300_000), Post("s-post", "s-hold", 200_000), Posted("s-fee", customer, revenue, 100_000)]);
        Assert.All(ok, r => Assert.Equal(TransferResultCode.Ok, r.Code));
        AssertCounters(await h.AccountAsync(customer), 0, 300_000, 0, 1_000_000);
        Assert.Equal(TransferStatus.Posted, (await h.Ledger.GetTransferAsync("s-hold"))!.Status);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAtomicAsync_ReplayOfWholeGroup_ReturnsReplayedAndPartialReplayConflicts(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        TransferRequest[] group = [Hold("s-hold", customer, revenue, 300_000), Post("s-post", "s-hold", 200_000), Posted("s-fee", customer, revenue, 100_000)];
        var first = await h.Ledger.TransferAtomicAsync(group);
        Assert.All(first, r => Assert.Equal(TransferResultCode.Ok, r.Code));
        var before = await h.AccountAsync(customer);
        h.Clock.Advance(TimeSpan.FromSeconds(30));

        var replay = await h.Ledger.TransferAtomicAsync(group);

        Assert.All(replay, r => Assert.Equal(TransferResultCode.Replayed, r.Code));
        Assert.Equal(first[0].Transfer! with { Status = TransferStatus.Posted }, replay[0].Transfer);
        Assert.Equal(first[1].Transfer, replay[1].Transfer);
        Assert.Equal(first[2].Transfer, replay[2].Transfer);

        // A group that is part stored, part new was changed by the client: conflict, and the new part is not applied.
        var storedThenNew = await h.Ledger.TransferAtomicAsync([group[2], Posted("n1", customer, revenue, 50_000)]);
        Assert.Equal([TransferResultCode.IdempotencyConflict, TransferResultCode.LinkedTransferFailed], storedThenNew.Select(r => r.Code));
        var newThenStored = await h.Ledger.TransferAtomicAsync([Posted("n2", customer, revenue, 50_000), group[2]]);
        Assert.Equal([TransferResultCode.LinkedTransferFailed, TransferResultCode.IdempotencyConflict], newThenStored.Select(r => r.Code));
        var changed = await h.Ledger.TransferAtomicAsync([group[2] with { Amount = 100_001 }]);
        Assert.Equal([TransferResultCode.IdempotencyConflict], changed.Select(r => r.Code));

        Assert.Null(await h.Ledger.GetTransferAsync("n1"));
        Assert.Null(await h.Ledger.GetTransferAsync("n2"));
        Assert.Equal(before, await h.AccountAsync(customer));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task ExpireDueHoldsAsync_AfterTimeout_ExpiresHoldAndPostFails(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        var created = h.Clock.NowMicros;
        var hold = (await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 400_000, timeoutSeconds: 60))).Transfer!;
        Assert.Equal(created + 60_000_000, hold.ExpiresAtMicros);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Hold("hold-forever", customer, revenue, 100_000))).Code);

        h.Clock.Advance(TimeSpan.FromSeconds(59));
        Assert.Equal(0, await h.Ledger.ExpireDueHoldsAsync());
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("hold-1"))!.Status);

        h.Clock.Advance(TimeSpan.FromSeconds(1));   // exactly at the deadline
        Assert.Equal(1, await h.Ledger.ExpireDueHoldsAsync());

        Assert.Equal(TransferStatus.Expired, (await h.Ledger.GetTransferAsync("hold-1"))!.Status);
        var c = await h.AccountAsync(customer);
        AssertCounters(c, 100_000, 0, 0, 1_000_000);
        Assert.Equal(900_000, c.AvailableMicros);
        var last = (await h.Ledger.GetStatementAsync(customer, null, 1)).Single();
        Assert.Equal((TransferKind.VoidPending, "hold-1", "hold_expired", -400_000L, 0L),
            (last.Transfer.Kind, last.Transfer.PendingId, last.Transfer.Code, last.Entry.PendingDelta, last.Entry.PostedDelta));

        Assert.Equal(TransferResultCode.PendingTransferExpired, (await h.Ledger.TransferAsync(Post("post-1", "hold-1"))).Code);
        Assert.Equal(TransferResultCode.PendingTransferExpired, (await h.Ledger.TransferAsync(Void("void-1", "hold-1"))).Code);
        Assert.Equal(0, await h.Ledger.ExpireDueHoldsAsync());
        h.Clock.Advance(TimeSpan.FromDays(1));
        Assert.Equal(0, await h.Ledger.ExpireDueHoldsAsync());   // a hold without timeout never expires
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("hold-forever"))!.Status);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_PostAtOrAfterTimeoutBeforeSweep_ReturnsPendingTransferExpired(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var (promotions, customer, revenue) = await h.FundedCustomerAsync(1_000_000);
        await h.Ledger.TransferAsync(Hold("early", customer, revenue, 200_000, timeoutSeconds: 10));
        await h.Ledger.TransferAsync(Hold("edge", customer, revenue, 100_000, timeoutSeconds: 10));
        await h.Ledger.TransferAsync(Hold("late", customer, revenue, 300_000, timeoutSeconds: 10));

        h.Clock.Advance(TimeSpan.FromSeconds(9));
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Post("post-early", "early"))).Code);
        h.Clock.Advance(TimeSpan.FromSeconds(1));   // exactly the deadline: already expired, as the sweeper sees it
        Assert.Equal(TransferResultCode.PendingTransferExpired, (await h.Ledger.TransferAsync(Post("post-edge", "edge"))).Code);
        h.Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(TransferResultCode.PendingTransferExpired, (await h.Ledger.TransferAsync(Post("post-late", "late"))).Code);
        Assert.Equal(TransferStatus.Pending, (await h.Ledger.GetTransferAsync("late"))!.Status);

        // The client may still release it itself (same effect as expiry); the sweeper then leaves it alone.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Void("void-late", "late"))).Code);
        Assert.Equal(TransferStatus.Voided, (await h.Ledger.GetTransferAsync("late"))!.Status);
        Assert.Equal(1, await h.Ledger.ExpireDueHoldsAsync());
        Assert.Equal(TransferStatus.Expired, (await h.Ledger.GetTransferAsync("edge"))!.Status);
        Assert.Null(await h.Ledger.GetTransferAsync("post-edge"));
        AssertCounters(await h.AccountAsync(customer), 0, 200_000, 0, 1_000_000);
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task GetStatementAsync_SeveralTransfers_ListsNewestFirstWithBalanceAfterAndPagesByVersion(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        async Task Step(TransferRequest r)
        {
            Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(r)).Code);
            h.Clock.Advance(TimeSpan.FromSeconds(1));
        }
        await Step(Posted("grant-1", promotions, customer, 10_000_000, "grant"));
        await Step(Hold("hold-1", customer, revenue, 3_000_000));
        await Step(Post("post-1", "hold-1", 1_000_000));
        await Step(Posted("spend-1", customer, revenue, 2_000_000));
        await Step(Posted("grant-2", promotions, customer, 1_000_000, "grant"));

        var all = await h.Ledger.GetStatementAsync(customer, null, 100);

        // (version, transfer, debit?, pending delta, posted delta, balance after, held after)
        (long, string, bool, long, long, long, long)[] expected =
        [
            (5, "grant-2", false, 0, 1_000_000, 8_000_000, 0),
            (4, "spend-1", true, 0, 2_000_000, 7_000_000, 0),
            (3, "post-1", true, -3_000_000, 1_000_000, 9_000_000, 0),
            (2, "hold-1", true, 3_000_000, 0, 10_000_000, 3_000_000),
            (1, "grant-1", false, 0, 10_000_000, 10_000_000, 0),
        ];
        Assert.Equal(expected, all.Select(l => (l.Entry.Version, l.Entry.TransferId, l.Entry.IsDebit, l.Entry.PendingDelta,
            l.Entry.PostedDelta, l.Entry.BalanceAfter, l.Entry.DebitsPendingAfter)));
        Assert.All(all, l => Assert.Equal((customer, l.Entry.TransferId), (l.Entry.AccountId, l.Transfer.Id)));
        Assert.Equal(all.Select(l => l.Entry.TimestampMicros).OrderByDescending(t => t), all.Select(l => l.Entry.TimestampMicros));
        Assert.Equal(5, all.Select(l => l.Entry.TimestampMicros).Distinct().Count());

        var pages = new List<long[]>();
        long? cursor = null;
        while (true)
        {
            var page = await h.Ledger.GetStatementAsync(customer, cursor, 2);
            if (page.Count == 0) break;
            pages.Add(page.Select(l => l.Entry.Version).ToArray());
            cursor = page[^1].Entry.Version;
        }
        Assert.Equal(new[] { new[] { 5L, 4L }, new[] { 3L, 2L }, new[] { 1L } }, pages);

        var revenueLines = await h.Ledger.GetStatementAsync(revenue, null, 100);
        Assert.Equal([(3L, "spend-1", 3_000_000L), (2L, "post-1", 1_000_000L), (1L, "hold-1", 0L)],
            revenueLines.Select(l => (l.Entry.Version, l.Entry.TransferId, l.Entry.BalanceAfter)));
        Assert.All(revenueLines, l => Assert.False(l.Entry.IsDebit));
        Assert.Empty(await h.Ledger.GetStatementAsync(customer, 1, 10));
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_InvalidRequests_ReturnSpecificCodesAndStoreNothing(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var promotions = await h.CreatePromotionsAsync();
        var customer = await h.CreateCustomerAsync();
        var revenue = await h.CreateRevenueAsync();
        var euros = await h.CreateAccountAsync(currency: "EUR");
        var refunds = await h.CreateAccountAsync(LedgerAccountFlags.CreditsMustNotExceedDebits, kind: LedgerAccountKinds.Adjustments);
        await h.GrantAsync(promotions, customer, 1_000_000, id: "grant-1");
        await h.Ledger.TransferAsync(Hold("hold-1", customer, revenue, 100_000));
        var before = await Task.WhenAll(new[] { promotions, customer, revenue, euros, refunds }.Select(h.AccountAsync));

        (TransferRequest Request, TransferResultCode Expected)[] cases =
        [
            (Posted("x1", customer, customer, 1), TransferResultCode.AccountsMustBeDifferent),
            (Posted("x2", customer, revenue, 0), TransferResultCode.AmountMustBePositive),
            (Posted("x3", customer, revenue, -5), TransferResultCode.AmountMustBePositive),
            (Posted("x4", customer, revenue, null), TransferResultCode.AmountMustBePositive),
            (Posted("x5", customer, revenue, 1) with { TimeoutSeconds = 5 }, TransferResultCode.TimeoutNotAllowed),
            (Hold("x6", customer, revenue, 1, timeoutSeconds: -1), TransferResultCode.InvalidTimeout),
            (Posted("x7", 999_999, revenue, 1), TransferResultCode.DebitAccountNotFound),
            (Posted("x8", customer, 999_999, 1), TransferResultCode.CreditAccountNotFound),
            (Posted("x9", promotions, euros, 1), TransferResultCode.CurrencyMismatch),
            (Posted("x10", customer, revenue, 1) with { PendingId = "hold-1" }, TransferResultCode.PendingIdNotAllowed),
            (Post("x11", "hold-1") with { PendingId = null }, TransferResultCode.PendingIdRequired),
            (Post("x12", "no-such-hold"), TransferResultCode.PendingTransferNotFound),
            (Post("x13", "grant-1"), TransferResultCode.PendingTransferNotPending),
            (Post("x14", "hold-1") with { DebitAccountId = promotions }, TransferResultCode.PendingAccountMismatch),
            (Post("x15", "hold-1") with { CreditAccountId = customer }, TransferResultCode.PendingAccountMismatch),
            (Post("x16", "hold-1") with { TimeoutSeconds = 3 }, TransferResultCode.TimeoutNotAllowed),
            (Post("x17", "hold-1", -1), TransferResultCode.AmountMustBePositive),
            (Void("x18", "hold-1", 1), TransferResultCode.VoidAmountMismatch),
            (Posted("x19", promotions, refunds, 1), TransferResultCode.ExceedsDebits),
            (Posted("bad id", customer, revenue, 1), TransferResultCode.InvalidId),
            (Posted("~expire:hold-1", customer, revenue, 1), TransferResultCode.InvalidId),
            (Posted(new string('a', LedgerService.MaxIdLength + 1), customer, revenue, 1), TransferResultCode.InvalidId),
            (Posted("x20", customer, revenue, 1, code: ""), TransferResultCode.InvalidId),
            (Posted("x21", customer, revenue, 1) with { Metadata = new string('m', LedgerService.MaxMetadataLength + 1) }, TransferResultCode.InvalidId),
            (Post("x22", "bad pending id"), TransferResultCode.InvalidId),
        ];
        foreach (var (request, expected) in cases)
        {
            var result = await h.Ledger.TransferAsync(request);
            Assert.True(expected == result.Code, $"{request.Id}: expected {expected}, got {result.Code}");
            Assert.Null(result.Transfer);
            Assert.Null(await h.Ledger.GetTransferAsync(request.Id));
        }

        // The refunds account accepts credits only up to what was debited from it.
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("y1", refunds, promotions, 300))).Code);
        Assert.Equal(TransferResultCode.ExceedsDebits, (await h.Ledger.TransferAsync(Posted("y2", promotions, refunds, 301))).Code);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("y2", promotions, refunds, 300))).Code);

        var after = await Task.WhenAll(new[] { customer, revenue, euros }.Select(h.AccountAsync));
        Assert.Equal(new[] { before[1], before[2], before[3] }, after);
        Assert.Equal(4, (await h.Ledger.AuditAsync()).Transfers);   // grant, hold and the two refund-account transfers
        await h.AssertAuditHealthyAsync();
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task TransferAsync_AmountAboveMaximum_ReturnsAmountTooLargeAndChangesNothing(string engine)
    {
        await using var h = await LedgerHarness.StartAsync(engine);
        var source = await h.CreatePromotionsAsync();
        var sink = await h.CreateAccountAsync(kind: LedgerAccountKinds.Adjustments);
        Assert.Equal(TransferResultCode.Ok, (await h.Ledger.TransferAsync(Posted("max", source, sink, LedgerService.MaxAmountMicros))).Code);

        Assert.Equal(TransferResultCode.AmountTooLarge, (await h.Ledger.TransferAsync(Posted("too-big", source, sink, LedgerService.MaxAmountMicros + 1))).Code);
        Assert.Equal(TransferResultCode.AmountTooLarge, (await h.Ledger.TransferAsync(Posted("way-too-big", source, sink, long.MaxValue))).Code);

        AssertCounters(await h.AccountAsync(source), 0, LedgerService.MaxAmountMicros, 0, 0);
        AssertCounters(await h.AccountAsync(sink), 0, 0, 0, LedgerService.MaxAmountMicros);
        Assert.Null(await h.Ledger.GetTransferAsync("too-big"));
        await h.AssertAuditHealthyAsync();
    }
}
