using Microsoft.Extensions.DependencyInjection;
using Tollgate.Features.Pricing;
using Tollgate.Tests.Api;

namespace Tollgate.Tests.Pricing;

/// <summary>One app per engine for the class; every test uses its own model ids, since overrides are global.</summary>
public sealed class PriceOverridesFixture : IAsyncLifetime
{
    private readonly Dictionary<string, Task<TestApp>> _apps = new();

    public static Dictionary<string, string?> Settings() => new()
    {
        ["Tollgate:Pricing:CatalogFile"] = Path.Combine(Path.GetTempPath(), $"tollgate-no-catalog-{Guid.NewGuid():N}.json"),
        ["Tollgate:Pricing:OverridesReloadSeconds"] = "1",
        // Configuration overrides for the precedence test: a markup, and a list price.
        ["Tollgate:Pricing:Models:openai/gpt-4o-mini:Markup"] = "3",
    };

    public Task<TestApp> AppAsync(string engine)
    {
        lock (_apps)
        {
            if (!_apps.TryGetValue(engine, out var app)) _apps[engine] = app = TestApp.StartAsync(engine, Settings());
            return app;
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var app in _apps.Values) await (await app).DisposeAsync();
    }
}

public sealed class PriceOverridesApiTests(PriceOverridesFixture fixture) : IClassFixture<PriceOverridesFixture>
{
    private static Task<HttpResponseMessage> Put(TestApp app, string model, string json) =>
        app.Admin.PutAsync($"/admin/v1/pricing/models/{model}", AdminApi.JsonBody(json));

    private static async Task<JsonElement> QuoteAsync(TestApp app, string model, long input, long output, HttpStatusCode expected = HttpStatusCode.OK)
    {
        var response = await app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model, input_tokens = input, output_tokens = output });
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private static async Task<JsonElement?> ListedAsync(TestApp app, string provider, string id)
    {
        var list = await app.Anonymous.GetFromJsonAsync<JsonElement>($"/api/v1/pricing?provider={provider}");
        foreach (var m in list.GetProperty("models").EnumerateArray())
            if (m.GetProperty("id").GetString() == id) return m;
        return null;
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_NewModel_PricedAtOnceInQuoteListAndAdminList(string engine)
    {
        var app = await fixture.AppAsync(engine);
        await QuoteAsync(app, "acme/ft-new", 1, 1, HttpStatusCode.NotFound);

        var put = await Put(app, "acme/ft-new", """{"name":"Acme fine-tune","input_mtok":15,"output_mtok":45,"markup":3}""");

        var saved = await MeteringApiBody(put, HttpStatusCode.OK);
        Assert.Equal("acme/ft-new", saved.GetProperty("model").GetString());
        Assert.False(saved.GetProperty("in_catalog").GetBoolean());
        Assert.True(saved.GetProperty("applied").GetBoolean());
        Assert.Equal(15m, saved.GetProperty("override").GetProperty("input_mtok").GetDecimal());
        // 6,548 × $15/M + 108 × $45/M = $0.10308 exactly; × 3 = 309,240 micro-USD.
        var quote = await QuoteAsync(app, "acme/ft-new", 6548, 108);
        Assert.Equal("0.10308", quote.GetProperty("provider_cost_usd").GetString());
        Assert.Equal(309_240, quote.GetProperty("user_price_micros").GetInt64());
        Assert.Equal("3", quote.GetProperty("markup").GetString());
        Assert.Equal("admin", quote.GetProperty("price_source").GetString());
        var listed = await ListedAsync(app, "acme", "acme/ft-new");
        Assert.NotNull(listed);
        Assert.Equal("admin", listed.Value.GetProperty("price_source").GetString());
        Assert.Equal("Acme fine-tune", listed.Value.GetProperty("name").GetString());
        var admin = await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/pricing/models");
        Assert.Contains(admin.GetProperty("data").EnumerateArray(), o => o.GetProperty("model").GetString() == "acme/ft-new");
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_CatalogModelPartialRates_KeepsOtherCatalogRates(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var before = await QuoteAsync(app, "openai/gpt-4o", 1_000_000, 1_000_000);
        var catalogOutput = before.GetProperty("lines")[1].GetProperty("usd_per_unit").GetString();

        var put = await Put(app, "openai/gpt-4o", """{"input_mtok":1.25}""");

        var saved = await MeteringApiBody(put, HttpStatusCode.OK);
        Assert.True(saved.GetProperty("in_catalog").GetBoolean());
        var after = await QuoteAsync(app, "openai/gpt-4o", 1_000_000, 1_000_000);
        Assert.Equal("1.25", after.GetProperty("lines")[0].GetProperty("usd_per_unit").GetString());
        Assert.Equal(catalogOutput, after.GetProperty("lines")[1].GetProperty("usd_per_unit").GetString());
        Assert.Equal("admin", after.GetProperty("price_source").GetString());
        Assert.Equal(HttpStatusCode.NoContent, (await app.Admin.DeleteAsync("/admin/v1/pricing/models/openai/gpt-4o")).StatusCode);
        var reverted = await QuoteAsync(app, "openai/gpt-4o", 1_000_000, 1_000_000);
        Assert.Equal(before.GetProperty("provider_cost_usd").GetString(), reverted.GetProperty("provider_cost_usd").GetString());
        Assert.Equal("catalog", reverted.GetProperty("price_source").GetString());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_EffectiveFrom_EarlierCallsKeepCatalogPriceAndChangeIsScheduled(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var catalog = await QuoteAsync(app, "openai/gpt-4.1", 1_000_000, 0);

        (await Put(app, "openai/gpt-4.1", """{"input_mtok":0.5,"effective_from":"2999-01-01"}""")).EnsureSuccessStatusCode();

        var now = await QuoteAsync(app, "openai/gpt-4.1", 1_000_000, 0);
        var response = await app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote",
            new { model = "openai/gpt-4.1", input_tokens = 1_000_000, timestamp = "2999-01-01T00:00:00Z" });
        var later = await MeteringApiBody(response, HttpStatusCode.OK);
        Assert.Equal(catalog.GetProperty("provider_cost_usd").GetString(), now.GetProperty("provider_cost_usd").GetString());
        Assert.Equal("0.5", later.GetProperty("provider_cost_usd").GetString());
        Assert.Equal("2999-01-01", later.GetProperty("price_effective_from").GetString());
        var listed = await ListedAsync(app, "openai", "openai/gpt-4.1");
        Assert.Contains(listed!.Value.GetProperty("scheduled_changes").EnumerateArray(), c => c.GetProperty("effective_from").GetString() == "2999-01-01");
        (await app.Admin.DeleteAsync("/admin/v1/pricing/models/openai/gpt-4.1")).EnsureSuccessStatusCode();
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_MarkupBelowOne_400AndNothingStored(string engine)
    {
        var app = await fixture.AppAsync(engine);

        var put = await Put(app, "acme/ft-cheap", """{"input_mtok":1,"output_mtok":2,"markup":0.9}""");

        var problem = await AdminApi.AssertProblemAsync(put, HttpStatusCode.BadRequest, "invalid_price_override");
        Assert.Contains("markup below 1", problem.GetProperty("detail").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.GetAsync("/admin/v1/pricing/models/acme/ft-cheap")).StatusCode);
        await QuoteAsync(app, "acme/ft-cheap", 1, 1, HttpStatusCode.NotFound);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_ListPriceBelowProviderCost_400AndPricesUnchanged(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var before = await QuoteAsync(app, "anthropic/claude-3-haiku", 1000, 1000);

        var put = await Put(app, "anthropic/claude-3-haiku", """{"list_price":{"input_mtok":0.01,"output_mtok":100}}""");

        var problem = await AdminApi.AssertProblemAsync(put, HttpStatusCode.BadRequest, "invalid_price_override");
        Assert.Contains(problem.GetProperty("errors").EnumerateArray(), e => e.GetString()!.Contains("ListPrice:InputMtok must be at least"));
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.GetAsync("/admin/v1/pricing/models/anthropic/claude-3-haiku")).StatusCode);
        var after = await QuoteAsync(app, "anthropic/claude-3-haiku", 1000, 1000);
        Assert.Equal(before.GetProperty("user_price_micros").GetInt64(), after.GetProperty("user_price_micros").GetInt64());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_NewModelWithoutOutputRate_400(string engine)
    {
        var app = await fixture.AppAsync(engine);

        var put = await Put(app, "acme/ft-half", """{"input_mtok":1}""");

        var problem = await AdminApi.AssertProblemAsync(put, HttpStatusCode.BadRequest, "invalid_price_override");
        Assert.Contains("InputMtok and OutputMtok are required", problem.GetProperty("detail").GetString());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Put_UnknownFieldOrNoAdminKey_Refused(string engine)
    {
        var app = await fixture.AppAsync(engine);

        var unknownField = await Put(app, "acme/ft-typo", """{"input_mtok":1,"output_mtok":1,"markupp":2}""");
        var anonymous = await app.Anonymous.PutAsync("/admin/v1/pricing/models/acme/ft-anon", AdminApi.JsonBody("""{"input_mtok":1,"output_mtok":1}"""));

        await AdminApi.AssertProblemAsync(unknownField, HttpStatusCode.BadRequest, "invalid_json");
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        await QuoteAsync(app, "acme/ft-typo", 1, 1, HttpStatusCode.NotFound);
        await QuoteAsync(app, "acme/ft-anon", 1, 1, HttpStatusCode.NotFound);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Precedence_DatabaseOverConfigurationOverCatalog(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var configured = await QuoteAsync(app, "openai/gpt-4o-mini", 1_000_000, 0);
        Assert.Equal("config", configured.GetProperty("price_source").GetString());
        Assert.Equal("3", configured.GetProperty("markup").GetString());

        (await Put(app, "openai/gpt-4o-mini", """{"markup":1.5}""")).EnsureSuccessStatusCode();
        var overridden = await QuoteAsync(app, "openai/gpt-4o-mini", 1_000_000, 0);
        Assert.Equal("admin", overridden.GetProperty("price_source").GetString());
        Assert.Equal("1.5", overridden.GetProperty("markup").GetString());
        Assert.Equal(configured.GetProperty("provider_cost_micros").GetInt64() * 3 / 2, overridden.GetProperty("user_price_micros").GetInt64());

        Assert.Equal(HttpStatusCode.NoContent, (await app.Admin.DeleteAsync("/admin/v1/pricing/models/openai/gpt-4o-mini")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await app.Admin.DeleteAsync("/admin/v1/pricing/models/openai/gpt-4o-mini")).StatusCode);
        var back = await QuoteAsync(app, "openai/gpt-4o-mini", 1_000_000, 0);
        Assert.Equal("config", back.GetProperty("price_source").GetString());
        Assert.Equal("3", back.GetProperty("markup").GetString());
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task SecondProcess_LoadsOverridesAtStartAndFollowsChanges(string engine)
    {
        var settings = PriceOverridesFixture.Settings();
        await using var first = await TestApp.StartAsync(engine, settings);
        (await Put(first, "acme/shared", """{"input_mtok":10,"output_mtok":10}""")).EnsureSuccessStatusCode();

        await using var second = await TestApp.StartAsync(engine, settings, first.DatabaseConnection);
        Assert.Equal("10", (await QuoteAsync(second, "acme/shared", 1_000_000, 0)).GetProperty("provider_cost_usd").GetString());

        (await Put(first, "acme/shared", """{"input_mtok":20,"output_mtok":10}""")).EnsureSuccessStatusCode();
        await EventuallyAsync(async () => (await QuoteAsync(second, "acme/shared", 1_000_000, 0)).GetProperty("provider_cost_usd").GetString() == "20");

        (await first.Admin.DeleteAsync("/admin/v1/pricing/models/acme/shared")).EnsureSuccessStatusCode();
        await EventuallyAsync(async () =>
            (await second.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = "acme/shared", input_tokens = 1 })).StatusCode == HttpStatusCode.NotFound);
    }

    [Theory, MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Reload_StoredOverrideThatNoLongerValidates_SkippedOthersApplied(string engine)
    {
        var app = await fixture.AppAsync(engine);
        var store = app.Services.GetRequiredService<IPriceOverrideStore>();
        // Written past the API's validation, as an override made before a catalog import raised the provider price.
        await store.UpsertAsync("anthropic/claude-3-opus-latest", new ModelPricingOptions { ListPrice = new RateOptions { InputMtok = 0.001m, OutputMtok = 0.001m } }, default);
        await store.UpsertAsync("acme/ft-valid", new ModelPricingOptions { InputMtok = 1, OutputMtok = 2 }, default);

        await app.Services.GetRequiredService<PriceOverrideService>().ReloadAsync(force: true, default);

        Assert.Equal("2", (await QuoteAsync(app, "acme/ft-valid", 0, 1_000_000)).GetProperty("provider_cost_usd").GetString());
        var opus = await QuoteAsync(app, "anthropic/claude-3-opus-latest", 1000, 0);
        Assert.NotEqual("admin", opus.GetProperty("price_source").GetString());
        var stored = await app.Admin.GetFromJsonAsync<JsonElement>("/admin/v1/pricing/models/anthropic/claude-3-opus-latest");
        Assert.False(stored.GetProperty("applied").GetBoolean());
        (await app.Admin.DeleteAsync("/admin/v1/pricing/models/anthropic/claude-3-opus-latest")).EnsureSuccessStatusCode();
    }

    private static async Task EventuallyAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the second process did not pick up the change within 15 s");
            await Task.Delay(100);
        }
    }

    private static async Task<JsonElement> MeteringApiBody(HttpResponseMessage response, HttpStatusCode expected)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }
}
