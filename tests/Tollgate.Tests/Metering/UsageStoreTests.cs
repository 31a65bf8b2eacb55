using Tollgate.Features.Accounts;
using Tollgate.Features.Metering;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Tests.Metering;

/// <summary>The usage_records table through <see cref="IUsageStore"/>, on every engine.</summary>
public sealed class UsageStoreTests(MeteringFixture fixture) : IClassFixture<MeteringFixture>
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 1, 12, 0, 0, TimeSpan.Zero);

    private static UsageRecord Record(string accountId, string id, DateTimeOffset occurredAt, long input = 10) => new(
        id, accountId, null, "gpt-x", "openai", input, 20, 3, 4, 5, 1_234, "0.001234000001", 2_000, UsageBillingStatus.Billed,
        "req_1", """{"route":"chat"}""", "auth:x:y:capture", T0.AddMinutes(30), occurredAt);

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Insert_NewRecord_RoundTripsEveryColumn(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        var record = Record(account, "evt-1", T0.AddTicks(123_450)) with
        {
            InputTokens = 4_000_000_000_000, BillingStatus = UsageBillingStatus.NeedsReview, KeyId = "key_abc",
        };

        Assert.True(await store.InsertAsync(record, CancellationToken.None));

        Assert.Equal(record, await store.GetAsync(account, "evt-1", CancellationToken.None));
        var sparse = Record(account, "evt-2", T0) with
        {
            Provider = null, ProviderCostMicros = null, ProviderCostUsd = null, UserPriceMicros = null, RequestId = null, Metadata = null,
            TransferId = null, BillingStatus = UsageBillingStatus.Byok,
        };
        Assert.True(await store.InsertAsync(sparse, CancellationToken.None));
        Assert.Equal(sparse, await store.GetAsync(account, "evt-2", CancellationToken.None));
        Assert.Null(await store.GetAsync(account, "evt-3", CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task InsertMany_ConcurrentBatchesWithSharedKeys_EachKeyStoredOnceAndOneBatchWinsIt(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        // 24 batches of 50: batch b holds keys b*25 … b*25+49, so each key but the first and last 25 is in two batches.
        // On SQLite concurrent batches are grouped into shared transactions; the answers must not change.
        var batches = Enumerable.Range(0, 24).Select(b => Enumerable.Range(b * 25, 50).Select(k => Record(account, $"k{k}", T0, input: b)).ToArray()).ToArray();

        var results = await Task.WhenAll(batches.Select(b => Task.Run(() => store.InsertManyAsync(b, CancellationToken.None))));

        var winners = new Dictionary<string, int>();
        for (var b = 0; b < batches.Length; b++)
        {
            Assert.Equal(batches[b].Length, results[b].Length);
            for (var i = 0; i < batches[b].Length; i++)
                if (results[b][i]) { Assert.False(winners.ContainsKey(batches[b][i].Id), batches[b][i].Id); winners[batches[b][i].Id] = b; }
        }
        Assert.Equal(24 * 25 + 25, winners.Count);
        foreach (var (id, b) in winners) Assert.Equal(b, (await store.GetAsync(account, id, CancellationToken.None))!.InputTokens);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task InsertMany_OneBatchViolatesConstraint_OnlyThatBatchFails(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        var good = Enumerable.Range(0, 8).Select(b => new[] { Record(account, $"g{b}-1", T0), Record(account, $"g{b}-2", T0) }).ToArray();
        // Negative token counts: the schema's check refuses them, on either engine.
        var bad = new[] { Record(account, "bad-1", T0), Record(account, "bad-2", T0, input: -1) };

        var goodTasks = good.Select(g => Task.Run(() => store.InsertManyAsync(g, CancellationToken.None))).ToArray();
        var badTask = Task.Run(() => store.InsertManyAsync(bad, CancellationToken.None));

        await Assert.ThrowsAnyAsync<System.Data.Common.DbException>(() => badTask);
        foreach (var t in goodTasks)
        {
            var inserted = await t;
            Assert.Equal(new[] { true, true }, inserted);
        }
        Assert.Null(await store.GetAsync(account, "bad-1", CancellationToken.None));
        Assert.NotNull(await store.GetAsync(account, "g7-2", CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Insert_SameIdTwice_KeepsFirstAndReturnsFalse(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        var other = await app.CreateAccountAsync();
        var first = Record(account, "dup", T0, input: 1);

        Assert.True(await store.InsertAsync(first, CancellationToken.None));
        Assert.False(await store.InsertAsync(first with { InputTokens = 999 }, CancellationToken.None));
        // Concurrent deliveries of one event: exactly one insert wins.
        var racers = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => store.InsertAsync(Record(account, "race", T0), CancellationToken.None)));
        Assert.Single(racers, inserted => inserted);

        Assert.Equal(1, (await store.GetAsync(account, "dup", CancellationToken.None))!.InputTokens);
        // Event ids are scoped by account.
        Assert.True(await store.InsertAsync(Record(other, "dup", T0), CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task List_ManyRecords_NewestFirstWithCursorAndNoOtherAccounts(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        var other = await app.CreateAccountAsync();
        // Two records share each timestamp, so the cursor must break ties by id.
        for (var i = 0; i < 10; i++) Assert.True(await store.InsertAsync(Record(account, $"e{i:D2}", T0.AddSeconds(i / 2)), CancellationToken.None));
        await store.InsertAsync(Record(other, "foreign", T0.AddDays(1)), CancellationToken.None);

        var seen = new List<string>();
        UsageCursor? cursor = null;
        while (true)
        {
            var page = await store.ListAsync(account, cursor, 3, CancellationToken.None);
            seen.AddRange(page.Select(r => r.Id));
            if (page.Count < 3) break;
            cursor = new UsageCursor(page[^1].OccurredAt, page[^1].Id);
        }

        Assert.Equal(Enumerable.Range(0, 10).Reverse().Select(i => $"e{i:D2}"), seen);
        Assert.Empty(await store.ListAsync(await app.CreateAccountAsync(), null, 10, CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Insert_BadStatusOrNegativeTokens_IsRefusedByTheSchema(string engine)
    {
        // (Unknown accounts are refused by the callers, which authenticate them: PostgreSQL has no foreign key here
        // since migration 0031, because of its cost inside the ledger's writer transaction.)
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        await using var connection = await app.Get<Database>().OpenAsync(CancellationToken.None);
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = $"""
            INSERT INTO usage_records (account_id, id, model, billing_status, created_at, occurred_at)
            VALUES ('{account}', 'bad', 'm', 'free', 0, 0)
            """;
        await Assert.ThrowsAnyAsync<Exception>(() => cmd.ExecuteNonQueryAsync());
        cmd.CommandText = $"""
            INSERT INTO usage_records (account_id, id, model, billing_status, input_tokens, created_at, occurred_at)
            VALUES ('{account}', 'neg', 'm', 'billed', -1, 0, 0)
            """;
        await Assert.ThrowsAnyAsync<Exception>(() => cmd.ExecuteNonQueryAsync());
        Assert.Empty(await store.ListAsync(account, null, 10, CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task InsertMany_SomeExisting_InsertsRestAndGetManyFindsAll(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        var other = await app.CreateAccountAsync();
        Assert.True(await store.InsertAsync(Record(account, "m-1", T0), CancellationToken.None));
        Assert.True(await store.InsertAsync(Record(other, "m-2", T0), CancellationToken.None));
        var batch = Enumerable.Range(0, 1_200).Select(i => Record(account, $"m-{i}", T0.AddSeconds(i), input: 7)).ToArray();

        var inserted = await store.InsertManyAsync(batch, CancellationToken.None);

        Assert.False(inserted[1]);
        Assert.Equal(1_199, inserted.Count(b => b));
        var found = await store.GetManyAsync(account, [.. batch.Select(r => r.Id), "absent"], CancellationToken.None);
        Assert.Equal(1_200, found.Count);
        Assert.Equal(10, found["m-1"].InputTokens); // the first insert stays
        Assert.Equal(batch[2], found["m-2"]);
        Assert.Empty(await store.GetManyAsync(account, [], CancellationToken.None));
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task InsertMany_KeyRepeatedInCall_FirstInsertedSecondNot(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Get<IUsageStore>();
        var account = await app.CreateAccountAsync();
        UsageRecord[] batch = [Record(account, "r-1", T0, input: 1), Record(account, "r-2", T0), Record(account, "r-1", T0, input: 2)];

        var inserted = await store.InsertManyAsync(batch, CancellationToken.None);

        Assert.Equal([true, true, false], inserted);
        Assert.Equal(1, (await store.GetManyAsync(account, ["r-1"], CancellationToken.None))["r-1"].InputTokens);
    }
}
