using Microsoft.Extensions.Options;
using Tollgate.Features.Pricing;

namespace Tollgate.Tests.Pricing;

/// <summary>
/// Pure rating tests against the shipped catalog and configured models. Every expected amount is computed by hand
/// from the rates in genai-prices.json (quoted in each test) in the genai-prices usage shape: input_tokens is the
/// whole prompt, cache reads and writes included.
/// </summary>
public sealed class RatingTests
{
    private static readonly Lazy<PriceCatalog> Shipped = new(GenAiPricesParser.LoadEmbedded);

    internal static PricingCatalog Catalog(PricingOptions? options = null) => new(Shipped.Value, options ?? new PricingOptions());

    private static readonly DateTimeOffset Now = new(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);

    private static PricedModel Model(PricingCatalog catalog, string name)
    {
        var r = catalog.Resolve(name);
        Assert.Equal(ResolveOutcome.Found, r.Outcome);
        return r.Model!;
    }

    [Fact]
    public void Rate_ConfiguredModelAt15And45PerThousand_IsExactly0_10308()
    {
        // $0.015 / $0.045 per 1K tokens = $15 / $45 per million.
        var catalog = Catalog(new PricingOptions
        {
            Models = new() { ["acme/ft-1"] = new ModelPricingOptions { InputMtok = 15m, OutputMtok = 45m } },
        });

        var rating = Rater.Rate(Model(catalog, "acme/ft-1"), new TokenUsage(6_548, 108), Now);

        // 6,548 × 15 / 10^6 = 0.09822; 108 × 45 / 10^6 = 0.00486; sum 0.10308.
        Assert.Equal(0.09822m, rating.Input.CostUsd);
        Assert.Equal(0.00486m, rating.Output.CostUsd);
        Assert.Equal(0.10308m, rating.ProviderCostUsd);
        Assert.Equal(103_080, rating.ProviderCostMicros);
        Assert.Equal(0.20616m, rating.UserPriceUsd);
        Assert.Equal(206_160, rating.UserPriceMicros);
    }

    [Fact]
    public void Rate_AnthropicWithCacheReadAndWrite_PricesEachPartAtItsRate()
    {
        // claude-3-5-sonnet: input 3, cache_write 3.75, cache_read 0.3, output 15 USD/Mtok.
        // Anthropic reports input_tokens 1,200 (uncached), cache_read_input_tokens 8,000, cache_creation_input_tokens
        // 2,000; in Tollgate's shape input_tokens is their sum, 11,200.
        var rating = Rater.Rate(Model(Catalog(), "anthropic/claude-3-5-sonnet-20241022"),
            new TokenUsage(InputTokens: 11_200, OutputTokens: 450, CacheReadTokens: 8_000, CacheWriteTokens: 2_000), Now);

        // 1,200 × 3 = 3,600; 8,000 × 0.3 = 2,400; 2,000 × 3.75 = 7,500; 450 × 15 = 6,750 → 20,250 / 10^6.
        Assert.Equal(1_200, rating.Input.Units);
        Assert.Equal(0.0036m, rating.Input.CostUsd);
        Assert.Equal(0.0024m, rating.CacheRead.CostUsd);
        Assert.Equal(0.0075m, rating.CacheWrite.CostUsd);
        Assert.Equal(0.00675m, rating.Output.CostUsd);
        Assert.Equal(0.02025m, rating.ProviderCostUsd);
        Assert.Equal(40_500, rating.UserPriceMicros);
    }

    [Fact]
    public void Rate_OpenAiWithCachedPromptTokens_CachedPartAtCacheReadRate()
    {
        // gpt-4o: input 2.5, cache_read 1.25, output 10 USD/Mtok. OpenAI: prompt_tokens 5,000 of which
        // prompt_tokens_details.cached_tokens 3,584; completion_tokens 200.
        var rating = Rater.Rate(Model(Catalog(), "openai/gpt-4o-2024-08-06"),
            new TokenUsage(InputTokens: 5_000, OutputTokens: 200, CacheReadTokens: 3_584), Now);

        // (5,000 − 3,584) × 2.5 = 3,540; 3,584 × 1.25 = 4,480; 200 × 10 = 2,000 → 10,020 / 10^6.
        Assert.Equal(0.00354m, rating.Input.CostUsd);
        Assert.Equal(0.00448m, rating.CacheRead.CostUsd);
        Assert.Equal(0.01002m, rating.ProviderCostUsd);
        Assert.Equal(10_020, rating.ProviderCostMicros);
        Assert.Equal(20_040, rating.UserPriceMicros);
    }

    [Theory]
    // claude-sonnet-4-5: input 3 (6 above 200k input tokens), output 15 (22.5 above 200k); cliff: all tokens.
    [InlineData(199_999, "0.614997")]   // 199,999 × 3 + 1,000 × 15 = 599,997 + 15,000
    [InlineData(200_000, "0.615")]      // at the threshold: still base
    [InlineData(200_001, "1.222506")]   // 200,001 × 6 + 1,000 × 22.5 = 1,200,006 + 22,500
    [InlineData(250_000, "1.5225")]     // 1,500,000 + 22,500
    public void Rate_TieredContextPrice_WholeCallPaysTheTierAboveThreshold(long input, string expected)
    {
        var rating = Rater.Rate(Model(Catalog(), "anthropic/claude-sonnet-4-5"), new TokenUsage(input, 1_000), Now);

        Assert.Equal(decimal.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), rating.ProviderCostUsd);
        Assert.Equal(input > 200_000 ? 0 : -1, rating.Tier);
    }

    [Fact]
    public void Rate_TieredCacheReads_UseTotalInputForTheTier()
    {
        // 210,000 input of which 190,000 cache reads: the tier follows the 210,000 total.
        // 20,000 × 6 = 120,000; 190,000 × 0.6 = 114,000; 0 output.
        var rating = Rater.Rate(Model(Catalog(), "anthropic/claude-sonnet-4-5"), new TokenUsage(210_000, 0, CacheReadTokens: 190_000), Now);

        Assert.Equal(0.234m, rating.ProviderCostUsd);
    }

    [Fact]
    public void Rate_PriceChangeAtMidnight_CallsJustBeforeAndAfterPayTheirOwnPrices()
    {
        // claude-sonnet-5: 2 / 10 USD/Mtok through 2026-08-31, 3 / 15 from 2026-09-01 (start_date, UTC).
        var model = Model(Catalog(), "anthropic/claude-sonnet-5");
        var usage = new TokenUsage(1_000_000, 100_000);
        var midnight = new DateTimeOffset(2026, 9, 1, 0, 0, 0, TimeSpan.Zero);

        var before = Rater.Rate(model, usage, midnight.AddTicks(-1));
        var after = Rater.Rate(model, usage, midnight);

        Assert.Equal(3.0m, before.ProviderCostUsd);  // 2 + 100,000 × 10 / 10^6
        Assert.Equal(4.5m, after.ProviderCostUsd);   // 3 + 1.5
        // The same instant in another offset is the same call: 01:30 at +02:00 is still 31 August UTC.
        Assert.Equal(3.0m, Rater.Rate(model, usage, new DateTimeOffset(2026, 9, 1, 1, 30, 0, TimeSpan.FromHours(2))).ProviderCostUsd);
    }

    [Theory]
    // deepseek-chat: 0.27 / 1.1 USD/Mtok 00:30–16:30 UTC, else 0.135 / 0.55 (off-peak).
    [InlineData(0, 29, "0.000685")]   // 1,000 × 0.135 + 1,000 × 0.55
    [InlineData(0, 30, "0.00137")]    // 1,000 × 0.27 + 1,000 × 1.1
    [InlineData(16, 29, "0.00137")]
    [InlineData(16, 30, "0.000685")]
    public void Rate_TimeOfDayPrices_FollowTheUtcWindow(int hour, int minute, string expected)
    {
        var at = new DateTimeOffset(2026, 11, 21, hour, minute, 0, TimeSpan.Zero);
        var rating = Rater.Rate(Model(Catalog(), "deepseek/deepseek-chat"), new TokenUsage(1_000, 1_000), at);

        Assert.Equal(decimal.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), rating.ProviderCostUsd);
    }

    [Fact]
    public void Rate_FractionOfAMicro_RoundsUpNeverDown()
    {
        // deepseek-chat off-peak input 0.135 USD/Mtok: one token costs $0.000000135, a fraction of a micro-USD.
        var offPeak = new DateTimeOffset(2026, 11, 21, 20, 0, 0, TimeSpan.Zero);
        var rating = Rater.Rate(Model(Catalog(), "deepseek/deepseek-chat"), new TokenUsage(1, 0), offPeak);

        Assert.Equal(0.000000135m, rating.ProviderCostUsd);
        Assert.Equal(1, rating.ProviderCostMicros);
        Assert.Equal(0.00000027m, rating.UserPriceUsd);
        Assert.Equal(1, rating.UserPriceMicros);

        // 7 tokens: 0.945 micro-USD provider cost → 1; 1.89 micro-USD user price → 2.
        var r2 = Rater.Rate(Model(Catalog(), "deepseek/deepseek-chat"), new TokenUsage(7, 0), offPeak);
        Assert.Equal(1, r2.ProviderCostMicros);
        Assert.Equal(2, r2.UserPriceMicros);
    }

    [Fact]
    public void Rate_PerRequestFee_AddedOncePerCall()
    {
        // perplexity sonar: input 1, output 1 USD/Mtok, requests_kcount 12 → $0.012 per request.
        var rating = Rater.Rate(Model(Catalog(), "perplexity/sonar"), new TokenUsage(1_000, 1_000), Now);

        Assert.Equal(0.012m, rating.Request.CostUsd);
        Assert.Equal(0.014m, rating.ProviderCostUsd);
        Assert.Equal(28_000, rating.UserPriceMicros);
    }

    [Fact]
    public void Rate_ReasoningTokens_BilledAsOutputUnlessPricedApart()
    {
        var catalog = Catalog(new PricingOptions
        {
            Models = new()
            {
                ["acme/plain"] = new ModelPricingOptions { InputMtok = 1m, OutputMtok = 10m },
                ["acme/thinker"] = new ModelPricingOptions { InputMtok = 1m, OutputMtok = 10m, ReasoningMtok = 4m },
            },
        });
        var usage = new TokenUsage(0, OutputTokens: 1_000, ReasoningTokens: 600);

        // plain: 1,000 output × 10 = 10,000. thinker: 400 × 10 + 600 × 4 = 6,400.
        Assert.Equal(0.01m, Rater.Rate(Model(catalog, "acme/plain"), usage, Now).ProviderCostUsd);
        Assert.Equal(0.0064m, Rater.Rate(Model(catalog, "acme/thinker"), usage, Now).ProviderCostUsd);
    }

    [Fact]
    public void Rate_MarkupsByProviderAndModel_ModelWinsOverProviderOverDefault()
    {
        var catalog = Catalog(new PricingOptions
        {
            DefaultMarkup = 1.5m,
            Providers = new() { ["openai"] = new ProviderPricingOptions { Markup = 3m } },
            Models = new() { ["openai/gpt-4o-mini"] = new ModelPricingOptions { Markup = 1.25m } },
        });
        var usage = new TokenUsage(1_000_000, 0);

        Assert.Equal(7_500_000, Rater.Rate(Model(catalog, "openai/gpt-4o"), usage, Now).UserPriceMicros);          // 2.5 × 3
        Assert.Equal(187_500, Rater.Rate(Model(catalog, "openai/gpt-4o-mini"), usage, Now).UserPriceMicros);      // 0.15 × 1.25
        Assert.Equal(4_500_000, Rater.Rate(Model(catalog, "anthropic/claude-3-5-sonnet"), usage, Now).UserPriceMicros); // 3 × 1.5
    }

    [Fact]
    public void Rate_ListPrice_ChargesListRatesNotMarkup()
    {
        var catalog = Catalog(new PricingOptions
        {
            Models = new() { ["openai/gpt-4o"] = new ModelPricingOptions { ListPrice = new RateOptions { InputMtok = 4m, CacheReadMtok = 2m, OutputMtok = 12m } } },
        });

        var rating = Rater.Rate(Model(catalog, "openai/gpt-4o"), new TokenUsage(1_000_000, 100_000), Now);

        Assert.Equal(3.5m, rating.ProviderCostUsd);   // 2.5 + 1.0
        Assert.Equal(5_200_000, rating.UserPriceMicros); // 4 + 1.2
    }

    [Fact]
    public void Catalog_ListPriceBelowProvider_FailsWithClearMessage()
    {
        var e = Assert.Throws<OptionsValidationException>(() => Catalog(new PricingOptions
        {
            Models = new() { ["openai/gpt-4o"] = new ModelPricingOptions { ListPrice = new RateOptions { InputMtok = 2m, OutputMtok = 12m } } },
        }));
        Assert.Contains("Tollgate:Pricing:Models:openai/gpt-4o:ListPrice:InputMtok must be at least the provider's 2.5", e.Message);
    }

    [Fact]
    public void Catalog_ConfiguredDiscountFromADate_KeepsCatalogPricesBefore()
    {
        var catalog = Catalog(new PricingOptions
        {
            Models = new() { ["openai/gpt-4o"] = new ModelPricingOptions { InputMtok = 2m, EffectiveFrom = new DateOnly(2026, 12, 1) } },
        });
        var model = Model(catalog, "openai/gpt-4o");
        var usage = new TokenUsage(1_000_000, 0);

        Assert.Equal(2.5m, Rater.Rate(model, usage, new DateTimeOffset(2026, 11, 30, 23, 59, 59, TimeSpan.Zero)).ProviderCostUsd);
        Assert.Equal(2m, Rater.Rate(model, usage, new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero)).ProviderCostUsd);
    }

    [Fact]
    public void UserPrice_RandomUsageAcrossWholeCatalog_NeverBelowProviderCost()
    {
        var random = new Random(20261121);
        var catalog = Catalog();
        var start = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var checks = 0;
        foreach (var model in catalog.Models)
        {
            for (var i = 0; i < 20; i++)
            {
                var input = Tokens(random);
                var cacheRead = random.Next(3) == 0 ? 0 : random.NextInt64(0, input + 1);
                var cacheWrite = random.Next(3) == 0 ? 0 : random.NextInt64(0, input - cacheRead + 1);
                var output = Tokens(random);
                var usage = new TokenUsage(input, output, cacheRead, cacheWrite, random.NextInt64(0, output + 1));
                Assert.Null(usage.Validate());
                var at = start.AddMinutes(random.NextInt64(0, 4L * 365 * 24 * 60));

                var r = Rater.Rate(model, usage, at);

                Assert.True(r.ProviderCostUsd >= 0, model.Key);
                Assert.True(r.UserPriceUsd >= r.ProviderCostUsd, $"{model.Key} {usage} at {at:O}");
                Assert.True(r.UserPriceMicros >= r.ProviderCostMicros, $"{model.Key} {usage}");
                // Rounded up, by less than one micro-USD.
                var exactMicros = r.ProviderCostUsd * 1_000_000m;
                Assert.True(r.ProviderCostMicros >= exactMicros && r.ProviderCostMicros - exactMicros < 1m, $"{model.Key} {usage}");
                var exactUser = r.UserPriceUsd * 1_000_000m;
                Assert.True(r.UserPriceMicros >= exactUser && r.UserPriceMicros - exactUser < 1m, $"{model.Key} {usage}");
                checks++;
            }
        }
        Assert.True(checks > 20_000, $"{checks} ratings");
    }

    private static long Tokens(Random random) => random.Next(4) switch
    {
        0 => 0,
        1 => random.NextInt64(0, 1_000),
        2 => random.NextInt64(0, 400_000),
        _ => random.NextInt64(0, TokenUsage.MaxTokens + 1),
    };

    [Fact]
    public void Resolve_BareNameOfOneProvider_Found()
    {
        var r = Catalog().Resolve("gpt-4o-2024-11-20");

        Assert.Equal(ResolveOutcome.Found, r.Outcome);
        Assert.Equal("openai/gpt-4o", r.Model!.Key);
    }

    [Fact]
    public void Resolve_BareNameOfSeveralProviders_AmbiguousWithCandidates()
    {
        var r = Catalog().Resolve("claude-3-5-sonnet-20241022");

        Assert.Equal(ResolveOutcome.Ambiguous, r.Outcome);
        Assert.Contains("anthropic/claude-3-5-sonnet", r.Candidates);
        Assert.Contains("google/claude-3-5-sonnet", r.Candidates);
        Assert.Equal("anthropic/claude-3-5-sonnet", Catalog().Resolve("anthropic/claude-3-5-sonnet-20241022").Model!.Key);
    }

    [Theory]
    [InlineData("")]
    [InlineData("no-such-model-xyz")]
    [InlineData("openai/no-such-model-xyz")]
    [InlineData("nosuchprovider/gpt-4o")]
    public void Resolve_Unknown_NotFound(string name) => Assert.Equal(ResolveOutcome.NotFound, Catalog().Resolve(name).Outcome);

    [Fact]
    public void Resolve_ProviderIdWithSlashInModelId_FindsOpenRouterModel()
    {
        Assert.Equal("openrouter/anthropic/claude-sonnet-5", Catalog().Resolve("openrouter/anthropic/claude-sonnet-5").Model!.Key);
    }

    [Theory]
    [InlineData("azure/chatgpt-4o-latest", "openai/chatgpt-4o-latest")]   // Azure lists no such model: OpenAI's price
    [InlineData("azure/claude-2", "anthropic/claude-2")]                   // second fallback provider
    public void Resolve_ProviderWithoutTheModel_UsesItsFallbackProviders(string name, string expected)
    {
        Assert.Equal(expected, Catalog().Resolve(name).Model!.Key);
    }

    [Theory]
    [InlineData(-1, 0, 0, 0, 0, "input_tokens")]
    [InlineData(10_000_001, 0, 0, 0, 0, "input_tokens")]
    [InlineData(10, 0, 6, 5, 0, "input_tokens")]
    [InlineData(10, 5, 0, 0, 6, "output_tokens")]
    [InlineData(0, 0, 0, -1, 0, "cache_write_tokens")]
    public void Validate_BadUsage_NamesTheField(long input, long output, long cacheRead, long cacheWrite, long reasoning, string field)
    {
        Assert.Equal(field, new TokenUsage(input, output, cacheRead, cacheWrite, reasoning).Validate()?.Field);
    }

    [Fact]
    public void Rate_SteadyState_AllocatesNothing()
    {
        var catalog = Catalog();
        var model = Model(catalog, "anthropic/claude-sonnet-4-5");
        var usage = new TokenUsage(250_000, 1_000, 10_000, 5_000, 100);
        Rater.Rate(model, usage, Now);

        var before = GC.GetAllocatedBytesForCurrentThread();
        decimal sum = 0;
        for (var i = 0; i < 1_000; i++) sum += Rater.Rate(model, usage, Now).ProviderCostUsd;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(sum > 0);
        Assert.Equal(0, allocated);
    }
}
