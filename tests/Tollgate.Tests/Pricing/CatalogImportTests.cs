using System.Text;
using Tollgate.Features.Pricing;

namespace Tollgate.Tests.Pricing;

/// <summary>The genai-prices reader and <c>tollgate catalog import</c> on small hand-written catalogs.</summary>
public sealed class CatalogImportTests : IDisposable
{
    private const string V1 = """
        [{"id":"acme","name":"Acme","models":[
          {"id":"small","match":{"equals":"small"},"prices":{"input_mtok":1,"output_mtok":2}},
          {"id":"large","match":{"or":[{"starts_with":"large"},{"contains":"big"}]},"prices":{"input_mtok":10,"output_mtok":30}},
          {"id":"old","match":{"equals":"old"},"prices":{"input_mtok":5,"output_mtok":5}}
        ]}]
        """;

    private const string V2 = """
        [{"id":"acme","name":"Acme","models":[
          {"id":"small","match":{"equals":"small"},"prices":{"input_mtok":1,"output_mtok":2}},
          {"id":"large","match":{"starts_with":"large"},"prices":[
            {"prices":{"input_mtok":10,"output_mtok":30}},
            {"constraint":{"start_date":"2027-01-01"},"prices":{"input_mtok":8,"cache_read_mtok":0.8,"output_mtok":24}}]},
          {"id":"new","match":{"equals":"new"},"prices":{"input_mtok":{"base":1,"tiers":[{"start":100000,"price":2}]},"output_mtok":3}}
        ]}]
        """;

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "tollgate-catalog-" + Guid.NewGuid().ToString("N"));

    public CatalogImportTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static PriceCatalog Parse(string json) => GenAiPricesParser.Parse(new MemoryStream(Encoding.UTF8.GetBytes(json)), "test");

    [Fact]
    public void Between_TwoVersions_ReportsAddedRemovedAndPriceChanges()
    {
        var changes = CatalogChanges.Between(Parse(V1), Parse(V2));

        Assert.Equal(["acme/new"], changes.Added);
        Assert.Equal(["acme/old"], changes.Removed);
        var change = Assert.Single(changes.Changed);
        Assert.Equal("acme/large", change.Model);
        Assert.Equal("input 10, output 30 USD/Mtok", change.Before);
        Assert.Equal("[default] input 10, output 30 USD/Mtok; [from 2027-01-01] input 8, cache_read 0.8, output 24 USD/Mtok", change.After);
        var report = changes.Report();
        Assert.Contains("1 model(s) added, 1 removed, 1 with price changes.", report);
        Assert.Contains("+ acme/new", report);
        Assert.Contains("- acme/old", report);
        Assert.DoesNotContain("acme/small", report); // unchanged prices are not reported
    }

    [Fact]
    public void Import_WritesCatalogFileThatOverridesEmbeddedAtStart()
    {
        var file = Path.Combine(_dir, "v2.json");
        File.WriteAllText(file, V2);
        var options = new PricingOptions { CatalogFile = Path.Combine(_dir, "data", "genai-prices.json") };

        var (_, changes) = CatalogImporter.Import(file, options, dryRun: false);

        Assert.Contains("acme/new", changes.Added);   // against the embedded catalog
        Assert.True(File.Exists(options.CatalogFile));
        var catalog = PricingCatalog.Create(Microsoft.Extensions.Options.Options.Create(options));
        Assert.Equal(3, catalog.Models.Count);
        // The tier: 100,001 input tokens at 2 USD/Mtok.
        var rating = Rater.Rate(catalog.Resolve("new").Model!, new TokenUsage(100_001, 0), DateTimeOffset.UtcNow);
        Assert.Equal(0.200002m, rating.ProviderCostUsd);

        // Importing the same file again reports nothing.
        Assert.True(CatalogImporter.Import(file, options, dryRun: true).Changes.IsEmpty);
    }

    [Fact]
    public void Import_DryRun_WritesNothing()
    {
        var file = Path.Combine(_dir, "v1.json");
        File.WriteAllText(file, V1);
        var options = new PricingOptions { CatalogFile = Path.Combine(_dir, "out.json") };

        CatalogImporter.Import(file, options, dryRun: true);

        Assert.False(File.Exists(options.CatalogFile));
    }

    [Theory]
    [InlineData("""{"id":"x"}""", "expected a list of providers")]
    [InlineData("""[{"id":"a","models":[{"id":"m","match":{"equals":"m"},"prices":{"input_mtok":-1}}]}]""", "$[0].models[0].prices.input_mtok: prices must not be negative")]
    [InlineData("""[{"id":"a","models":[{"id":"m","match":{"like":"m"},"prices":{}}]}]""", "unknown match clause 'like'")]
    [InlineData("""[{"id":"a","models":[{"id":"m","match":{"equals":"m"},"prices":{"input_mtok":"3"}}]}]""", "input_mtok: expected a number")]
    [InlineData("""[{"id":"a","models":[{"id":"m","match":{"equals":"m"},"prices":[{"constraint":{"start_date":"soon"},"prices":{}}]}]}]""", "expected a date")]
    [InlineData("""[{"id":"a"},{"id":"a"}]""", "duplicate provider id 'a'")]
    public void Parse_Malformed_ThrowsWithPath(string json, string message)
    {
        var e = Assert.Throws<CatalogFormatException>(() => Parse(json));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Parse_Shipped_ReadsEveryProviderAndModelExactly()
    {
        var catalog = GenAiPricesParser.LoadEmbedded();

        Assert.Equal(34, catalog.Providers.Count);
        Assert.Equal(1_442, catalog.AllModels.Count());
        // A number that binary floating point cannot hold exactly survives as written.
        var haiku = catalog.Providers.Single(p => p.Id == "anthropic").Models.Single(m => m.Id == "claude-3-5-haiku-latest");
        Assert.Equal(0.08m, haiku.Periods[0].Prices.CacheReadMtok!.Base);
        Assert.Contains("MIT License", GenAiPricesParser.EmbeddedLicense());
    }
}
