using Dapper;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Tollgate.Features.Metering;
using Tollgate.Tests.Api;
using Tollgate.Tests.Metering;
using static Tollgate.Tests.Api.AdminApi;
using static Tollgate.Tests.Metering.MeteringApi;

namespace Tollgate.Tests.Analytics;

/// <summary>One app per engine: a priced model, unknown models recorded for review, and the demo provider.</summary>
public sealed class AnalyticsFixture() : SharedEngineApps(new Dictionary<string, string?>
{
    ["Tollgate:Pricing:Models:acme/meter-1:InputMtok"] = "3",
    ["Tollgate:Pricing:Models:acme/meter-1:OutputMtok"] = "15",
    ["Tollgate:Metering:UnknownModelPolicy"] = MeteringOptions.AllowAndReview,
});

/// <summary>
/// Usage listings, summaries, exports, the account ledger and operator reports, checked against the records themselves
/// (read through the operator listing, which shows every field).
/// </summary>
public sealed class AnalyticsTests(AnalyticsFixture fixture) : IClassFixture<AnalyticsFixture>
{
    public static TheoryData<string> Engines => TestDatabases.Engines;

    /// <summary>Midnight UTC, five days ago: events are spread over three days from there.</summary>
    private static readonly DateTimeOffset Base = new(DateTimeOffset.UtcNow.UtcDateTime.Date.AddDays(-5), TimeSpan.Zero);

    private static string Iso(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private sealed record Mixed(Customer Customer, string SecondKeyId, string UnpricedModel);

    /// <summary>
    /// 60 events over three days (two keys, a priced and an unpriced model, end customers, team tags) and two gateway
    /// calls through the demo provider.
    /// </summary>
    private static async Task<Mixed> MixedUsageAsync(TestApp app)
    {
        var c = await app.CustomerAsync(50_000_000);
        var second = await BodyAsync(await app.Admin.PostAsync($"/admin/v1/accounts/{c.AccountId}/keys", JsonBody("{}")), HttpStatusCode.Created);
        using var secondClient = new HttpClient { BaseAddress = app.BaseAddress };
        secondClient.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", second.Str("key"));
        var unpriced = $"acme/unpriced-{Guid.NewGuid():N}";
        var events = new List<string>();
        for (var i = 0; i < 60; i++)
        {
            var at = Base.AddDays(i % 3).AddHours(i * 7 % 24).AddMinutes(i);
            var model = i % 4 == 3 ? unpriced : "acme/meter-1";
            var customer = (i % 3) switch { 0 => ""","customer_id":"cust-a" """, 1 => ""","customer_id":"cust-b" """, _ => "" };
            var metadata = (i % 5) switch
            {
                0 => ""","metadata":{"team":"alpha","note":"a, \"quoted\"\nline"}""",
                1 => ""","metadata":{"team":"beta"}""",
                2 => ""","metadata":{"team":7}""",
                _ => "",
            };
            events.Add($$"""{"id":"e{{i}}","model":"{{model}}","input_tokens":{{1000 + i}},"output_tokens":{{100 + 3 * i}},"cache_read_tokens":{{i}},"timestamp":"{{Iso(at)}}"{{customer}}{{metadata}}}""");
        }
        for (var half = 0; half < 2; half++)
        {
            var client = half == 0 ? c.Client : secondClient;
            var body = await BodyAsync(await client.PostAsync("/api/v1/usage/events",
                new StringContent($$"""{"events":[{{string.Join(",", events.Skip(half * 30).Take(30))}}]}""", Encoding.UTF8, "application/json")), HttpStatusCode.OK);
            Assert.Equal(30, body.GetProperty("accepted").GetInt32());
        }
        foreach (var text in new[] { "first call", "second, longer call to the demo provider" })
        {
            var response = await c.Client.PostAsync("/v1/chat/completions",
                JsonBody($$"""{"model":"demo/echo","messages":[{"role":"user","content":"{{text}}"}]}"""));
            await BodyAsync(response, HttpStatusCode.OK);
        }
        return new Mixed(c, second.Str("id")!, unpriced);
    }

    /// <summary>Every record of the account, through the operator listing's pages.</summary>
    private static async Task<List<JsonElement>> AllRecordsAsync(TestApp app, string accountId)
    {
        var all = new List<JsonElement>();
        string? cursor = null;
        do
        {
            var page = await BodyAsync(await app.Admin.GetAsync($"/admin/v1/usage?account_id={accountId}&limit=7" +
                (cursor is null ? "" : "&cursor=" + Uri.EscapeDataString(cursor))), HttpStatusCode.OK);
            all.AddRange(page.GetProperty("data").EnumerateArray());
            cursor = page.GetProperty("has_more").GetBoolean() ? page.Str("next_cursor") : null;
        } while (cursor is not null);
        return all;
    }

    private static DateTimeOffset At(JsonElement r) => r.GetProperty("occurred_at").GetDateTimeOffset();
    private static long? OptLong(JsonElement r, string name) => r.GetProperty(name).ValueKind == JsonValueKind.Null ? null : r.GetProperty(name).GetInt64();
    private static string? OptStr(JsonElement r, string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string? Team(JsonElement r) =>
        r.GetProperty("metadata") is { ValueKind: JsonValueKind.Object } m && m.TryGetProperty("team", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;

    private static readonly Dictionary<string, Func<JsonElement, string?>> Groupings = new()
    {
        ["day"] = r => At(r).UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
        ["model"] = r => r.Str("model"),
        ["provider"] = r => OptStr(r, "provider"),
        ["key"] = r => OptStr(r, "key_id"),
        ["customer"] = r => OptStr(r, "customer_id"),
        ["tag"] = Team,
    };

    [Theory, MemberData(nameof(Engines))]
    public async Task Summary_totals_equal_the_sums_of_the_records_for_every_group_by(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var mixed = await MixedUsageAsync(app);
        using var c = mixed.Customer;
        var records = await AllRecordsAsync(app, c.AccountId);
        Assert.Equal(62, records.Count);
        Assert.Contains(records, r => r.Str("billing_status") == "needs_review");
        Assert.Contains(records, r => OptStr(r, "provider") == "demo" && OptLong(r, "latency_ms") is >= 0);

        // Partial days at both ends: long ends are whole days from rollups minus the records of the rest of the day,
        // short ends are records; whole days in between come from rollups.
        var to = DateTimeOffset.UtcNow.AddMinutes(1);
        foreach (var (from, until) in new[] { (Base.AddHours(3), to), (Base.AddHours(20), Base.AddDays(2).AddHours(2)), (Base.AddHours(13), Base.AddHours(23)) })
        {
            var inRange = records.Where(r => At(r) >= from && At(r) < until).ToList();
            Assert.NotEmpty(inRange);
            foreach (var (groupBy, keyOf) in Groupings)
            {
                var url = $"/api/v1/usage/summary?group_by={groupBy}&from={Iso(from)}&to={Uri.EscapeDataString(until.ToString("O"))}" + (groupBy == "tag" ? "&tag_key=team" : "");
                var summary = await BodyAsync(await c.Client.GetAsync(url), HttpStatusCode.OK);
                var expected = inRange.GroupBy(keyOf).OrderBy(g => g.Key ?? "", StringComparer.Ordinal)
                    .Select(g => (g.Key, (long)g.Count(), g.Sum(r => r.Long("input_tokens")), g.Sum(r => r.Long("output_tokens")),
                        g.Sum(r => r.Long("cache_read_tokens")), g.Sum(r => OptLong(r, "user_price_micros") ?? 0)))
                    .ToList();
                var actual = summary.GetProperty("data").EnumerateArray()
                    .Select(g => (OptStr(g, "key"), g.Long("requests"), g.Long("input_tokens"), g.Long("output_tokens"), g.Long("cache_read_tokens"), g.Long("user_price_micros")))
                    .OrderBy(g => g.Item1 ?? "", StringComparer.Ordinal).ToList();
                Assert.True(expected.SequenceEqual(actual), $"{url}: expected {string.Join("; ", expected)} got {string.Join("; ", actual)}");
                Assert.Equal(inRange.Count, summary.GetProperty("totals").Long("requests"));
            }
        }

        // Operator margin for this account, in whole days (covers every record).
        var margin = await BodyAsync(await app.Admin.GetAsync($"/admin/v1/reports/margin?group_by=model&account_id={c.AccountId}&from={Iso(Base)}&to={Iso(to)}"), HttpStatusCode.OK);
        foreach (var g in margin.GetProperty("data").EnumerateArray())
        {
            var of = records.Where(r => r.Str("model") == g.Str("key")).ToList();
            var revenue = of.Where(r => r.Str("billing_status") == "billed").Sum(r => OptLong(r, "user_price_micros") ?? 0);
            var cost = of.Where(r => r.Str("billing_status") is "billed" or "internal").Sum(r => OptLong(r, "provider_cost_micros") ?? 0);
            Assert.Equal((of.Count, revenue, cost, revenue - cost), (g.GetProperty("requests").GetInt32(), g.Long("revenue_micros"), g.Long("provider_cost_micros"), g.Long("margin_micros")));
        }
        Assert.Equal(records.Count, margin.GetProperty("totals").Long("requests"));
        var top = await BodyAsync(await app.Admin.GetAsync($"/admin/v1/reports/top-accounts?from={Iso(Base)}&to={Iso(to)}&limit=100"), HttpStatusCode.OK);
        var mine = top.GetProperty("data").EnumerateArray().Single(a => a.Str("key") == c.AccountId);
        Assert.Equal(records.Count, mine.Long("requests"));
        var revenues = top.GetProperty("data").EnumerateArray().Select(a => a.Long("revenue_micros")).ToList();
        Assert.Equal(revenues.OrderDescending(), revenues);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Each_filter_lists_exactly_the_matching_records(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var mixed = await MixedUsageAsync(app);
        using var c = mixed.Customer;
        var records = await AllRecordsAsync(app, c.AccountId);
        var filters = new (string Query, Func<JsonElement, bool> Match)[]
        {
            ("model=acme/meter-1", r => r.Str("model") == "acme/meter-1"),
            ("provider=demo", r => OptStr(r, "provider") == "demo"),
            ($"key_id={mixed.SecondKeyId}", r => OptStr(r, "key_id") == mixed.SecondKeyId),
            ("customer_id=cust-b", r => OptStr(r, "customer_id") == "cust-b"),
            ("tag=team:alpha", r => Team(r) == "alpha"),
            ("tag=team:7", r => false), // numbers are not tags
            ("billing_status=needs_review", r => r.Str("billing_status") == "needs_review"),
            ($"from={Iso(Base.AddDays(1))}&to={Iso(Base.AddDays(2).AddHours(12))}", r => At(r) >= Base.AddDays(1) && At(r) < Base.AddDays(2).AddHours(12)),
            ($"model=acme/meter-1&customer_id=cust-b&from={Iso(Base.AddDays(1))}", r => r.Str("model") == "acme/meter-1" && OptStr(r, "customer_id") == "cust-b" && At(r) >= Base.AddDays(1)),
        };
        foreach (var (query, match) in filters)
        {
            var expected = records.Where(match).Select(r => r.Str("id")!).ToList();
            var listed = new List<string>();
            string? cursor = null;
            do
            {
                var page = await BodyAsync(await c.Client.GetAsync($"/api/v1/usage?{query}&limit=5" + (cursor is null ? "" : "&cursor=" + Uri.EscapeDataString(cursor))), HttpStatusCode.OK);
                foreach (var row in page.GetProperty("data").EnumerateArray())
                {
                    Assert.False(row.TryGetProperty("provider_cost_micros", out _), "the account's view has no provider cost");
                    listed.Add(row.Str("id")!);
                }
                cursor = page.GetProperty("has_more").GetBoolean() ? page.Str("next_cursor") : null;
            } while (cursor is not null);
            Assert.True(expected.SequenceEqual(listed), $"{query}: expected {string.Join(",", expected)} got {string.Join(",", listed)}");
            if (query != "tag=team:7") Assert.True(listed.Count > 0, query);
            // The summary agrees with the listing under the same filter.
            var summary = await BodyAsync(await c.Client.GetAsync($"/api/v1/usage/summary?group_by=model&{(query.Contains("from=") ? query : $"{query}&from={Iso(Base)}")}"), HttpStatusCode.OK);
            Assert.Equal(expected.Count, summary.GetProperty("totals").Long("requests"));
        }
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Rollups_follow_a_rerate(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var mixed = await MixedUsageAsync(app);
        using var c = mixed.Customer;
        var url = $"/api/v1/usage/summary?group_by=model&from={Iso(Base)}";
        var before = await BodyAsync(await c.Client.GetAsync(url), HttpStatusCode.OK);
        var waiting = before.GetProperty("data").EnumerateArray().Single(g => g.Str("key") == mixed.UnpricedModel);
        Assert.Equal((15L, 0L), (waiting.Long("requests"), waiting.Long("user_price_micros")));

        await BodyAsync(await app.Admin.PutAsync($"/admin/v1/pricing/models/{mixed.UnpricedModel}", JsonBody("""{"input_mtok":3,"output_mtok":15}""")), HttpStatusCode.OK);
        var report = await BodyAsync(await app.Admin.PostAsync("/admin/v1/usage/rerate", JsonBody($$"""{"account_id":"{{c.AccountId}}"}""")), HttpStatusCode.OK);
        Assert.Equal(15, report.GetProperty("billed").GetInt32());

        var records = await AllRecordsAsync(app, c.AccountId);
        var after = await BodyAsync(await c.Client.GetAsync(url), HttpStatusCode.OK);
        foreach (var g in after.GetProperty("data").EnumerateArray())
        {
            var of = records.Where(r => r.Str("model") == g.Str("key")).ToList();
            Assert.Equal((of.Count, of.Sum(r => OptLong(r, "user_price_micros") ?? 0)), (g.GetProperty("requests").GetInt32(), g.Long("user_price_micros")));
        }
        Assert.Equal(report.Long("billed_micros"), after.GetProperty("data").EnumerateArray().Single(g => g.Str("key") == mixed.UnpricedModel).Long("user_price_micros"));
        var byStatus = await BodyAsync(await c.Client.GetAsync(url + "&billing_status=needs_review"), HttpStatusCode.OK);
        Assert.Equal(0, byStatus.GetProperty("totals").Long("requests"));
    }

    /// <summary>PostgreSQL folds records into the rollups in the background; this waits until every record of the account is in.</summary>
    private static async Task FoldAccountAsync(TestApp app, string accountId)
    {
        var folder = app.Get<Tollgate.Features.Analytics.UsageRollupFolder>();
        await using var connection = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenPostgresAsync(default);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            await folder.FoldOnceAsync(default);
            var left = await connection.ExecuteScalarAsync<long>(
                "SELECT count(*) FROM usage_records WHERE account_id = @a AND fold_xid >= (SELECT horizon FROM usage_rollup_cursor)", new { a = accountId });
            if (left == 0) return;
            Assert.True(DateTime.UtcNow < deadline, $"{left} record(s) still not folded after 30 s");
            await Task.Delay(50);
        }
    }

    /// <summary>The account's rollup rows against a GROUP BY over its records: equal once everything is folded.</summary>
    private static async Task AssertRollupsMatchRecordsAsync(TestApp app, string accountId)
    {
        const string Group = """
            SELECT day, model, provider, key_id, customer_id, billing_status, requests, input_tokens, output_tokens, cache_read_tokens,
                   cache_write_tokens, reasoning_tokens, user_price_micros, provider_cost_micros FROM ({0}) x
            ORDER BY day, model, provider, key_id, customer_id, billing_status
            """;
        var fromRecords = string.Format(CultureInfo.InvariantCulture, Group, """
            SELECT occurred_at / 86400000000 AS day, model, coalesce(provider, '') AS provider, coalesce(key_id, '') AS key_id,
                   coalesce(customer_id, '') AS customer_id, billing_status, count(*) AS requests, sum(input_tokens) AS input_tokens,
                   sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                   sum(reasoning_tokens) AS reasoning_tokens, sum(coalesce(user_price_micros, 0)) AS user_price_micros,
                   sum(coalesce(provider_cost_micros, 0)) AS provider_cost_micros
            FROM usage_records WHERE account_id = @a GROUP BY 1, 2, 3, 4, 5, 6
            """);
        var fromRollups = string.Format(CultureInfo.InvariantCulture, Group, "SELECT * FROM usage_rollups WHERE account_id = @a AND requests <> 0");
        await using var connection = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenPostgresAsync(default);
        var expected = (await connection.QueryAsync(fromRecords, new { a = accountId })).Select(r => string.Join("|", ((IDictionary<string, object>)r).Values)).ToList();
        var actual = (await connection.QueryAsync(fromRollups, new { a = accountId })).Select(r => string.Join("|", ((IDictionary<string, object>)r).Values)).ToList();
        Assert.NotEmpty(expected);
        Assert.Equal(expected, actual);
    }

    /// <summary>
    /// PostgreSQL keeps the rollups up in the background (UsageRollupFolder): summaries must be exact with nothing folded,
    /// everything folded, and a re-rate that changes folded and unfolded records alike, and once all is folded the rollup
    /// rows are exactly the records grouped.
    /// </summary>
    [Fact]
    public async Task Postgres_rollups_fold_in_the_background_and_summaries_stay_exact_throughout()
    {
        var app = await fixture.AppAsync("postgres");
        var mixed = await MixedUsageAsync(app);
        using var c = mixed.Customer;
        var url = $"/api/v1/usage/summary?group_by=model&from={Iso(Base)}";
        async Task AssertSummaryMatchesRecordsAsync()
        {
            var records = await AllRecordsAsync(app, c.AccountId);
            var summary = await BodyAsync(await c.Client.GetAsync(url), HttpStatusCode.OK);
            var expected = records.GroupBy(r => r.Str("model")).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => (g.Key, (long)g.Count(), g.Sum(r => r.Long("input_tokens")), g.Sum(r => OptLong(r, "user_price_micros") ?? 0))).ToList();
            var actual = summary.GetProperty("data").EnumerateArray()
                .Select(g => (g.Str("key"), g.Long("requests"), g.Long("input_tokens"), g.Long("user_price_micros"))).OrderBy(g => g.Item1, StringComparer.Ordinal).ToList();
            Assert.Equal(expected, actual);
        }
        await AssertSummaryMatchesRecordsAsync();
        await FoldAccountAsync(app, c.AccountId);
        await AssertRollupsMatchRecordsAsync(app, c.AccountId);
        await AssertSummaryMatchesRecordsAsync();

        // More unpriced records that are not folded yet, then a re-rate that prices the folded and the new ones together.
        var late = string.Join(",", Enumerable.Range(0, 6).Select(i =>
            $$"""{"id":"late{{i}}","model":"{{mixed.UnpricedModel}}","input_tokens":{{500 + i}},"output_tokens":7,"timestamp":"{{Iso(Base.AddDays(1).AddHours(i))}}"}"""));
        await BodyAsync(await c.Client.PostAsync("/api/v1/usage/events", new StringContent($$"""{"events":[{{late}}]}""", Encoding.UTF8, "application/json")), HttpStatusCode.OK);
        await BodyAsync(await app.Admin.PutAsync($"/admin/v1/pricing/models/{mixed.UnpricedModel}", JsonBody("""{"input_mtok":3,"output_mtok":15}""")), HttpStatusCode.OK);
        var report = await BodyAsync(await app.Admin.PostAsync("/admin/v1/usage/rerate", JsonBody($$"""{"account_id":"{{c.AccountId}}"}""")), HttpStatusCode.OK);
        Assert.Equal(21, report.GetProperty("billed").GetInt32());
        await AssertSummaryMatchesRecordsAsync();
        await FoldAccountAsync(app, c.AccountId);
        await AssertRollupsMatchRecordsAsync(app, c.AccountId);
        await AssertSummaryMatchesRecordsAsync();
    }

    /// <summary>Records inserted by many concurrent writers while folds run all the time end up in the rollups exactly once.</summary>
    [Fact]
    public async Task Postgres_folds_racing_concurrent_inserts_count_every_record_once()
    {
        var app = await fixture.AppAsync("postgres");
        using var c = await app.CustomerAsync(50_000_000);
        var folder = app.Get<Tollgate.Features.Analytics.UsageRollupFolder>();
        using var stop = new CancellationTokenSource();
        var folding = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested) await folder.FoldOnceAsync(default);
        });
        await Task.WhenAll(Enumerable.Range(0, 40).Select(async w =>
        {
            for (var b = 0; b < 5; b++)
            {
                var events = string.Join(",", Enumerable.Range(0, 4).Select(i =>
                    $$"""{"id":"w{{w}}-{{b}}-{{i}}","model":"acme/meter-1","input_tokens":{{100 + i}},"output_tokens":{{w}},"timestamp":"{{Iso(Base.AddHours(w % 30))}}"}"""));
                var body = await BodyAsync(await c.Client.PostAsync("/api/v1/usage/events",
                    new StringContent($$"""{"events":[{{events}}]}""", Encoding.UTF8, "application/json")), HttpStatusCode.OK);
                Assert.Equal(4, body.GetProperty("accepted").GetInt32());
            }
        }));
        await stop.CancelAsync();
        await folding;
        await FoldAccountAsync(app, c.AccountId);
        await AssertRollupsMatchRecordsAsync(app, c.AccountId);
        await using var connection = await app.Get<Tollgate.Infrastructure.Data.Database>().OpenPostgresAsync(default);
        Assert.Equal(800L, await connection.ExecuteScalarAsync<long>("SELECT sum(requests) FROM usage_rollups WHERE account_id = @a", new { a = c.AccountId }));
    }

    /// <summary>RFC 4180 parsing: quoted fields may hold commas, doubled quotes and line breaks.</summary>
    private static List<List<string>> ParseCsv(string text)
    {
        var rows = new List<List<string>>();
        var row = new List<string>();
        var field = new StringBuilder();
        var i = 0;
        while (i < text.Length)
        {
            if (text[i] == '"')
            {
                i++;
                while (true)
                {
                    if (text[i] == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i += 2; }
                    else if (text[i] == '"') { i++; break; }
                    else field.Append(text[i++]);
                }
            }
            else if (text[i] == ',') { row.Add(field.ToString()); field.Clear(); i++; }
            else if (text[i] == '\r' && text[i + 1] == '\n') { row.Add(field.ToString()); field.Clear(); rows.Add(row); row = []; i += 2; }
            else field.Append(text[i++]);
        }
        Assert.Empty(row);
        return rows;
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Exports_are_rfc4180_csv_and_jsonl_with_the_listing_filters(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var mixed = await MixedUsageAsync(app);
        using var c = mixed.Customer;
        var records = await AllRecordsAsync(app, c.AccountId);

        var response = await c.Client.GetAsync("/api/v1/usage/export?format=csv");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/csv", response.Content.Headers.ContentType!.MediaType);
        Assert.Equal("attachment", response.Content.Headers.ContentDisposition!.DispositionType);
        Assert.EndsWith(".csv", response.Content.Headers.ContentDisposition.FileNameStar ?? response.Content.Headers.ContentDisposition.FileName);
        var rows = ParseCsv(await response.Content.ReadAsStringAsync());
        var header = rows[0];
        Assert.Equal("id", header[0]);
        Assert.Equal(records.Count, rows.Count - 1);
        Assert.All(rows, r => Assert.Equal(header.Count, r.Count));
        var byId = records.ToDictionary(r => r.Str("id")!);
        foreach (var row in rows.Skip(1))
        {
            var record = byId[row[0]];
            Assert.Equal(record.Long("input_tokens").ToString(CultureInfo.InvariantCulture), row[header.IndexOf("input_tokens")]);
            var metadata = row[header.IndexOf("metadata")];
            if (record.GetProperty("metadata").ValueKind == JsonValueKind.Null) Assert.Equal("", metadata);
            else Assert.True(JsonElement.DeepEquals(record.GetProperty("metadata"), JsonDocument.Parse(metadata).RootElement), metadata);
        }
        Assert.Contains(rows.Skip(1), r => r[header.IndexOf("metadata")] is { Length: > 0 } m
            && JsonDocument.Parse(m).RootElement.TryGetProperty("note", out var note) && note.GetString() == "a, \"quoted\"\nline");

        var jsonl = await c.Client.GetAsync($"/api/v1/usage/export?format=jsonl&model=acme/meter-1&from={Iso(Base.AddDays(1))}");
        Assert.Equal(HttpStatusCode.OK, jsonl.StatusCode);
        var lines = (await jsonl.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var expected = records.Where(r => r.Str("model") == "acme/meter-1" && At(r) >= Base.AddDays(1)).Select(r => r.Str("id")).ToList();
        Assert.Equal(expected, lines.Select(l => l.Str("id")).ToList());
        Assert.All(lines, l => Assert.False(l.TryGetProperty("provider_cost_micros", out _)));

        var ledger = await c.Client.GetAsync("/api/v1/ledger/export?format=csv");
        var ledgerRows = ParseCsv(await ledger.Content.ReadAsStringAsync());
        var listed = await BodyAsync(await c.Client.GetAsync("/api/v1/ledger?limit=200"), HttpStatusCode.OK);
        Assert.Equal(listed.GetProperty("data").EnumerateArray().Select(l => l.Str("transfer_id")!).ToList(), ledgerRows.Skip(1).Select(r => r[2]).ToList());
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task A_large_export_is_streamed_as_it_is_read(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        const int Count = 50_000;
        var store = app.Get<IUsageStore>();
        var now = DateTimeOffset.UtcNow;
        for (var chunk = 0; chunk < Count / 5_000; chunk++)
        {
            var batch = Enumerable.Range(chunk * 5_000, 5_000).Select(i => new UsageRecord($"big-{i:D6}", c.AccountId, c.KeyId, "acme/meter-1", "acme",
                10, 20, 0, 0, 0, 1, "0.000001", 2, UsageBillingStatus.Billed, null, """{"team":"alpha","note":"x,y"}""", null, now, now.AddSeconds(-i))).ToList();
            Assert.All(await store.InsertManyAsync(batch, CancellationToken.None), Assert.True);
        }

        using var response = await c.Client.GetAsync("/api/v1/usage/export?format=csv", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // No length up front: the body is written while the rows are read, not built first.
        Assert.Null(response.Content.Headers.ContentLength);
        Assert.True(response.Headers.TransferEncodingChunked);
        await using var body = await response.Content.ReadAsStreamAsync();
        using var reader = new StreamReader(body);
        var lines = 0;
        string? first = null, last = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            lines++;
            if (lines == 2) first = line;
            last = line;
        }
        Assert.Equal(Count + 1, lines);
        Assert.StartsWith("big-000000,", first);
        Assert.StartsWith($"big-{Count - 1:D6},", last);

        var summary = await BodyAsync(await c.Client.GetAsync($"/api/v1/usage/summary?group_by=day&from={Iso(now.AddDays(-1))}&to={Uri.EscapeDataString(now.AddMinutes(1).ToString("O"))}"), HttpStatusCode.OK);
        Assert.Equal((Count, 2L * Count), (summary.GetProperty("totals").GetProperty("requests").GetInt32(), summary.GetProperty("totals").Long("user_price_micros")));
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task Bad_input_is_a_400_naming_the_parameter(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(0);
        var cases = new (string Url, string Param)[]
        {
            ("/api/v1/usage?from=yesterday", "from"),
            ("/api/v1/usage?to=2026-13-45", "to"),
            ("/api/v1/usage?from=2024-01-01&to=2025-06-01", "to"),
            ("/api/v1/usage?from=2025-02-01&to=2025-01-01", "from"),
            ("/api/v1/usage?limit=201", "limit"),
            ("/api/v1/usage?limit=0", "limit"),
            ("/api/v1/usage?billing_status=free", "billing_status"),
            ("/api/v1/usage?tag=team", "tag"),
            ("/api/v1/usage?tag=te%20am:x", "tag"),
            ("/api/v1/usage/summary?group_by=week", "group_by"),
            ("/api/v1/usage/summary?group_by=tag", "tag_key"),
            ("/api/v1/usage/summary?from=2024-01-01&to=2025-06-01", "to"),
            ("/api/v1/usage/export?format=xlsx", "format"),
            ("/api/v1/usage/export?format=csv&from=nope", "from"),
            ("/api/v1/ledger?limit=500", "limit"),
            ("/api/v1/ledger/export?format=csv&to=31/01/2026", "to"),
        };
        foreach (var (url, param) in cases)
        {
            var response = await c.Client.GetAsync(url);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{url}: {(int)response.StatusCode} {body}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType!.MediaType);
            Assert.Equal(param, JsonDocument.Parse(body).RootElement.Str("param"));
        }
        foreach (var url in new[] { "/admin/v1/reports/margin?group_by=key", "/admin/v1/reports/top-accounts?limit=101", "/admin/v1/usage" })
            Assert.Equal(HttpStatusCode.BadRequest, (await app.Admin.GetAsync(url)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await c.Client.GetAsync("/admin/v1/reports/margin")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await app.Anonymous.GetAsync("/api/v1/usage/summary")).StatusCode);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task One_accounts_data_never_appears_in_anothers_pages_summaries_or_exports(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var a = await MixedUsageAsync(app);
        using var other = await app.CustomerAsync(1_000_000);
        await BodyAsync(await other.Client.PostAsync("/api/v1/usage/events",
            JsonBody("""{"id":"e0","model":"acme/meter-1","input_tokens":5,"output_tokens":5,"customer_id":"cust-a","metadata":{"team":"alpha"}}""")), HttpStatusCode.OK);
        using var c = a.Customer;

        var usage = await BodyAsync(await other.Client.GetAsync($"/api/v1/usage?limit=200&key_id={a.Customer.KeyId}"), HttpStatusCode.OK);
        Assert.Empty(usage.GetProperty("data").EnumerateArray());
        var all = await BodyAsync(await other.Client.GetAsync("/api/v1/usage?limit=200"), HttpStatusCode.OK);
        Assert.Equal(["e0"], all.GetProperty("data").EnumerateArray().Select(r => r.Str("id")!).ToArray());
        var summary = await BodyAsync(await other.Client.GetAsync($"/api/v1/usage/summary?group_by=customer&from={Iso(Base)}"), HttpStatusCode.OK);
        Assert.Equal(1, summary.GetProperty("totals").Long("requests"));
        var tags = await BodyAsync(await other.Client.GetAsync($"/api/v1/usage/summary?group_by=tag&tag_key=team&from={Iso(Base)}"), HttpStatusCode.OK);
        Assert.Equal(1, tags.GetProperty("totals").Long("requests"));
        var export = await other.Client.GetStringAsync("/api/v1/usage/export?format=jsonl&tag=team:alpha");
        Assert.Single(export.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var ledger = await BodyAsync(await other.Client.GetAsync("/api/v1/ledger?limit=200"), HttpStatusCode.OK);
        var mine = await BodyAsync(await c.Client.GetAsync("/api/v1/ledger?limit=200"), HttpStatusCode.OK);
        var theirs = ledger.GetProperty("data").EnumerateArray().Select(l => l.Str("transfer_id")).ToHashSet();
        Assert.DoesNotContain(mine.GetProperty("data").EnumerateArray(), l => theirs.Contains(l.Str("transfer_id")));
        var ledgerExport = await other.Client.GetStringAsync("/api/v1/ledger/export?format=jsonl");
        Assert.Equal(theirs.Count, ledgerExport.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Theory, MemberData(nameof(Engines))]
    public async Task The_ledger_lists_every_transfer_with_the_balance_after_it_newest_first(string engine)
    {
        var app = await fixture.AppAsync(engine);
        using var c = await app.CustomerAsync(1_000_000);
        await app.GrantAsync(c.AccountId, 500_000);
        for (var i = 0; i < 3; i++)
            await BodyAsync(await c.Client.PostAsync("/api/v1/usage/events",
                JsonBody($$"""{"id":"l{{i}}","model":"acme/meter-1","input_tokens":1000,"output_tokens":1000}""")), HttpStatusCode.OK);

        var lines = new List<JsonElement>();
        string? cursor = null;
        do
        {
            var page = await BodyAsync(await c.Client.GetAsync("/api/v1/ledger?limit=2" + (cursor is null ? "" : "&cursor=" + cursor)), HttpStatusCode.OK);
            lines.AddRange(page.GetProperty("data").EnumerateArray());
            cursor = page.GetProperty("has_more").GetBoolean() ? page.Str("next_cursor") : null;
        } while (cursor is not null);

        Assert.Equal(5, lines.Count);
        Assert.Equal((await c.AccountAsync()).Long("balance_micros"), lines[0].Long("balance_after_micros"));
        Assert.Equal(lines.Select(l => l.Long("sequence")).OrderDescending(), lines.Select(l => l.Long("sequence")));
        // Each balance is the one before it plus the signed amount: credits add, debits subtract.
        for (var i = 0; i < lines.Count - 1; i++)
            Assert.Equal(lines[i + 1].Long("balance_after_micros") + lines[i].Long("amount_micros"), lines[i].Long("balance_after_micros"));
        Assert.Equal(1_000_000, lines[^1].Long("balance_after_micros"));
        Assert.Equal(3, lines.Count(l => l.Str("direction") == "debit"));
    }
}
