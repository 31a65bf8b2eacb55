using System.Text;

namespace Tollgate.Features.Pricing;

/// <summary>A model's prices before and after an import, as canonical descriptions.</summary>
internal sealed record PriceChange(string Model, string Before, string After);

/// <summary>What an import changes, by Tollgate model id (<c>provider/model</c>), each list sorted ordinally.</summary>
internal sealed record CatalogChanges(IReadOnlyList<string> Added, IReadOnlyList<string> Removed, IReadOnlyList<PriceChange> Changed)
{
    public bool IsEmpty => Added.Count == 0 && Removed.Count == 0 && Changed.Count == 0;

    public static CatalogChanges Between(PriceCatalog before, PriceCatalog after)
    {
        var old = Index(before);
        var @new = Index(after);
        var added = @new.Keys.Where(k => !old.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var removed = old.Keys.Where(k => !@new.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var changed = @new.Where(kv => old.TryGetValue(kv.Key, out var o) && o != kv.Value)
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => new PriceChange(kv.Key, old[kv.Key], kv.Value)).ToList();
        return new CatalogChanges(added, removed, changed);
    }

    /// <summary>First model of a key wins, as in resolution.</summary>
    private static Dictionary<string, string> Index(PriceCatalog c)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var m in c.AllModels) d.TryAdd(m.Key, m.DescribePrices());
        return d;
    }

    public string Report()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{Added.Count} model(s) added, {Removed.Count} removed, {Changed.Count} with price changes.");
        foreach (var a in Added) sb.AppendLine($"+ {a}");
        foreach (var r in Removed) sb.AppendLine($"- {r}");
        foreach (var c in Changed)
        {
            sb.AppendLine($"~ {c.Model}");
            sb.AppendLine($"    was: {c.Before}");
            sb.AppendLine($"    now: {c.After}");
        }
        return sb.ToString();
    }
}

/// <summary>
/// <c>tollgate catalog import FILE</c>: validates a genai-prices <c>data.json</c>, reports the changes against the
/// catalog in force, and writes it to <see cref="PricingOptions.CatalogFile"/>, which overrides the embedded
/// catalog from the next start-up. The write is atomic (temporary file, then rename), so a running server or a
/// concurrent start never reads half a file.
/// </summary>
internal static class CatalogImporter
{
    public static (PriceCatalog Catalog, CatalogChanges Changes) Import(string file, PricingOptions options, bool dryRun)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new IOException($"Cannot read {file}: {e.Message}", e); }
        var imported = GenAiPricesParser.Parse(new MemoryStream(bytes), file);
        // The configured overrides must still apply to the new catalog (e.g. a model they override still exists
        // or has the rates they need); this throws the same validation errors a start-up would.
        _ = new PricingCatalog(imported, options);
        var current = PricingCatalog.LoadBase(options);
        var changes = CatalogChanges.Between(current, imported);
        if (!dryRun)
        {
            var target = Path.GetFullPath(options.CatalogFile);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            var temp = target + ".tmp-" + Environment.ProcessId;
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, target, overwrite: true);
        }
        return (imported, changes);
    }
}
