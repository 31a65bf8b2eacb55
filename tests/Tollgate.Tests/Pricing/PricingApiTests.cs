using System.Text;
using Microsoft.Extensions.Options;

namespace Tollgate.Tests.Pricing;

/// <summary>The public pricing endpoints through the real app on Kestrel (SQLite; pricing does not touch the database).</summary>
public sealed class PricingApiTests : IAsyncLifetime
{
    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["Tollgate:Pricing:CatalogFile"] = Path.Combine(Path.GetTempPath(), $"tollgate-no-catalog-{Guid.NewGuid():N}.json"),
        ["Tollgate:Pricing:Models:acme/ft-1:InputMtok"] = "15",
        ["Tollgate:Pricing:Models:acme/ft-1:OutputMtok"] = "45",
        ["Tollgate:Pricing:Models:acme/ft-1:Name"] = "Acme fine-tune",
        // A negotiated discount that starts in the future: listed as a scheduled change.
        ["Tollgate:Pricing:Models:openai/gpt-4o:InputMtok"] = "2",
        ["Tollgate:Pricing:Models:openai/gpt-4o:EffectiveFrom"] = "2999-01-01",
    };

    private TestApp _app = null!;

    public async Task InitializeAsync() => _app = await TestApp.StartAsync("sqlite", Settings);

    public async Task DisposeAsync() => await _app.DisposeAsync();

    private Task<HttpResponseMessage> PostJson(string json) =>
        _app.Anonymous.PostAsync("/api/v1/pricing/quote", new StringContent(json, Encoding.UTF8, "application/json"));

    [Fact]
    public async Task Quote_ConfiguredModel_ExactCostAndRoundedUpPrices()
    {
        var response = await _app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = "acme/ft-1", input_tokens = 6548, output_tokens = 108 });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("acme/ft-1", body.GetProperty("model").GetString());
        Assert.Equal("0.10308", body.GetProperty("provider_cost_usd").GetString());
        Assert.Equal(103_080, body.GetProperty("provider_cost_micros").GetInt64());
        Assert.Equal("up", body.GetProperty("rounding").GetString());
        Assert.Equal(206_160, body.GetProperty("user_price_micros").GetInt64());
        Assert.Equal("206.16", body.GetProperty("user_price_credits").GetString());
        Assert.Equal("2", body.GetProperty("markup").GetString());
        var lines = body.GetProperty("lines").EnumerateArray().ToList();
        Assert.Equal(2, lines.Count);
        Assert.Equal("input", lines[0].GetProperty("kind").GetString());
        Assert.Equal(6548, lines[0].GetProperty("units").GetInt64());
        Assert.Equal("15", lines[0].GetProperty("usd_per_unit").GetString());
        Assert.Equal("0.09822", lines[0].GetProperty("cost_usd").GetString());
        Assert.Equal("0.00486", lines[1].GetProperty("cost_usd").GetString());
    }

    [Fact]
    public async Task Quote_WithTimestamp_UsesPriceInForceThen()
    {
        var before = await _app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote",
            new { model = "anthropic/claude-sonnet-5", input_tokens = 1_000_000, timestamp = "2026-08-31T23:59:59.999Z" });
        var after = await _app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote",
            new { model = "anthropic/claude-sonnet-5", input_tokens = 1_000_000, timestamp = "2026-09-01T00:00:00Z" });

        var b = await before.Content.ReadFromJsonAsync<JsonElement>();
        var a = await after.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("2", b.GetProperty("provider_cost_usd").GetString());
        Assert.Equal(JsonValueKind.Null, b.GetProperty("price_effective_from").ValueKind);
        Assert.Equal("3", a.GetProperty("provider_cost_usd").GetString());
        Assert.Equal("2026-09-01", a.GetProperty("price_effective_from").GetString());
    }

    [Fact]
    public async Task Quote_UnknownModel_404ModelNotFound()
    {
        var response = await _app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = "nope/nothing", input_tokens = 1 });

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("model_not_found", body.GetProperty("code").GetString());
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Quote_AmbiguousBareName_400WithCandidates()
    {
        var response = await _app.Anonymous.PostAsJsonAsync("/api/v1/pricing/quote", new { model = "claude-3-5-sonnet-20241022", input_tokens = 1 });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("model_ambiguous", body.GetProperty("code").GetString());
        Assert.Contains("anthropic/claude-3-5-sonnet", body.GetProperty("candidates").EnumerateArray().Select(c => c.GetString()));
    }

    [Theory]
    [InlineData("""{"model":"acme/ft-1","input_tokens":-1}""", "invalid_request")]
    [InlineData("""{"model":"acme/ft-1","output_tokens":10000001}""", "invalid_request")]
    [InlineData("""{"model":"acme/ft-1","input_tokens":10,"cache_read_tokens":11}""", "invalid_request")]
    [InlineData("""{"model":"acme/ft-1","input_tokens":"10"}""", "invalid_json")]
    [InlineData("""{"model":"acme/ft-1","input_tokens":1.5}""", "invalid_json")]
    [InlineData("""{"model":"acme/ft-1","input_tokens":10,"prompt_tokens":3}""", "invalid_json")]
    [InlineData("""{"model":42}""", "invalid_json")]
    [InlineData("""{"input_tokens":10}""", "invalid_request")]
    [InlineData("""{"model":"acme/ft-1","timestamp":"yesterday"}""", "invalid_json")]
    public async Task Quote_BadInput_400Problem(string json, string code)
    {
        var response = await PostJson(json);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(code, body.GetProperty("code").GetString());
    }

    [Fact]
    public async Task List_EveryModelWithProviderAndUserPrices()
    {
        var response = await _app.Anonymous.GetAsync("/api/v1/pricing");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("MIT", body.GetProperty("catalog_license").GetString());
        var models = body.GetProperty("models").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!);
        Assert.True(models.Count > 1_000, $"{models.Count} models");

        var ft = models["acme/ft-1"];
        Assert.Equal("Acme fine-tune", ft.GetProperty("name").GetString());
        var plan = ft.GetProperty("plans")[0];
        Assert.Equal("default", plan.GetProperty("plan").GetString());
        var input = plan.GetProperty("rates")[0];
        Assert.Equal("input", input.GetProperty("kind").GetString());
        Assert.Equal("15", input.GetProperty("provider_usd").GetString());
        Assert.Equal(15_000_000m, input.GetProperty("provider_micros").GetDecimal());
        Assert.Equal(30_000_000m, input.GetProperty("user_micros").GetDecimal());
        Assert.Equal("30000000", input.GetProperty("user_micros").GetRawText()); // no "30000000.0"
        Assert.Equal("30000", input.GetProperty("user_credits").GetString());

        var gpt4o = models["openai/gpt-4o"];
        Assert.Equal("2.5", gpt4o.GetProperty("plans")[0].GetProperty("rates")[0].GetProperty("provider_usd").GetString());
        var change = Assert.Single(gpt4o.GetProperty("scheduled_changes").EnumerateArray());
        Assert.Equal("2999-01-01", change.GetProperty("effective_from").GetString());
        Assert.Equal("input 2, cache_read 1.25, output 10 USD/Mtok", change.GetProperty("provider_prices").GetString());

        // A per-request fee: perplexity sonar, $12 per thousand requests = 12,000 micro-USD per request.
        var fee = models["perplexity/sonar"].GetProperty("plans")[0].GetProperty("rates").EnumerateArray().Single(r => r.GetProperty("kind").GetString() == "request");
        Assert.Equal("0.012", fee.GetProperty("provider_usd").GetString());
        Assert.Equal("12000", fee.GetProperty("provider_micros").GetRawText());
        Assert.Equal("24000", fee.GetProperty("user_micros").GetRawText());
        Assert.Equal("24", fee.GetProperty("user_credits").GetString());

        // Tiers are listed with their thresholds.
        var sonnet = models["anthropic/claude-sonnet-4-5"].GetProperty("plans")[0].GetProperty("rates")[0];
        var tier = sonnet.GetProperty("tiers")[0];
        Assert.Equal(200_000, tier.GetProperty("above_input_tokens").GetInt64());
        Assert.Equal("6", tier.GetProperty("provider_usd").GetString());
        Assert.Equal(12_000_000m, tier.GetProperty("user_micros").GetDecimal());
    }

    [Fact]
    public async Task Start_MarkupBelowOne_FailsWithClearMessage()
    {
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => TestApp.StartAsync("sqlite", new Dictionary<string, string?>
        {
            ["Tollgate:Pricing:DefaultMarkup"] = "0.9",
            ["Tollgate:Pricing:Providers:openai:Markup"] = "0.5",
        }));

        Assert.Contains("Tollgate:Pricing:DefaultMarkup is 0.9: a markup below 1 would charge users less than the provider cost", e.Message);
        Assert.Contains("Tollgate:Pricing:Providers:openai:Markup is 0.5", e.Message);
    }
}
