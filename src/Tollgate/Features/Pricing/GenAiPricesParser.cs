using System.Globalization;
using System.Reflection;
using System.Text.Json;

namespace Tollgate.Features.Pricing;

/// <summary>A catalog file that does not follow the genai-prices format; the message names the JSON path.</summary>
public sealed class CatalogFormatException(string message) : FormatException(message);

/// <summary>
/// Reads the genai-prices dataset format (<c>data.json</c>, schema <c>data.schema.json</c>): a list of providers, each
/// with <c>models</c> whose <c>prices</c> are one price set or a list of conditional prices (<c>start_date</c> or daily
/// <c>start_time</c>/<c>end_time</c> constraints). Numbers are read with <see cref="JsonElement.GetDecimal"/>, never as
/// binary floating point. Audio/image/video rates are outside Tollgate's usage shape and are ignored.
/// </summary>
internal static class GenAiPricesParser
{
    public const string EmbeddedResource = "pricing/genai-prices.json";
    public const string LicenseResource = "pricing/GENAI-PRICES-LICENSE";

    /// <summary>The catalog shipped inside the assembly.</summary>
    public static PriceCatalog LoadEmbedded()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(EmbeddedResource)
            ?? throw new InvalidOperationException($"Embedded resource {EmbeddedResource} is missing.");
        return Parse(stream, "embedded genai-prices");
    }

    public static string EmbeddedLicense()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(LicenseResource)
            ?? throw new InvalidOperationException($"Embedded resource {LicenseResource} is missing.");
        return new StreamReader(stream).ReadToEnd();
    }

    public static PriceCatalog Parse(Stream json, string source)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new CatalogFormatException($"{source}: not valid JSON ({e.Message}).");
        }
        using (doc) return Parse(doc.RootElement, source);
    }

    public static PriceCatalog Parse(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Array) throw Error(source, "$", "expected a list of providers");
        var providers = new List<CatalogProvider>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var i = 0;
        foreach (var p in root.EnumerateArray())
        {
            var path = $"$[{i++}]";
            var provider = ParseProvider(p, path, source);
            if (!ids.Add(provider.Id)) throw Error(source, path, $"duplicate provider id '{provider.Id}'");
            providers.Add(provider);
        }
        return new PriceCatalog(providers, source);
    }

    private static CatalogProvider ParseProvider(JsonElement p, string path, string source)
    {
        if (p.ValueKind != JsonValueKind.Object) throw Error(source, path, "expected a provider object");
        var id = RequiredString(p, "id", path, source);
        if (id.Contains('/')) throw Error(source, path + ".id", "provider ids must not contain '/'");
        var models = new List<CatalogModel>();
        if (p.TryGetProperty("models", out var ms))
        {
            if (ms.ValueKind != JsonValueKind.Array) throw Error(source, path + ".models", "expected a list");
            var j = 0;
            foreach (var m in ms.EnumerateArray()) models.Add(ParseModel(m, id, $"{path}.models[{j++}]", source));
        }
        string[] fallback = [];
        if (p.TryGetProperty("fallback_model_providers", out var f))
        {
            if (f.ValueKind != JsonValueKind.Array) throw Error(source, path + ".fallback_model_providers", "expected a list");
            fallback = f.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()!
                : throw Error(source, path + ".fallback_model_providers", "expected strings")).ToArray();
        }
        return new CatalogProvider
        {
            Id = id,
            Name = OptionalString(p, "name", path, source),
            ProviderMatch = p.TryGetProperty("provider_match", out var pm) ? ParseMatch(pm, path + ".provider_match", source) : null,
            FallbackProviders = fallback,
            Models = models,
        };
    }

    private static CatalogModel ParseModel(JsonElement m, string providerId, string path, string source)
    {
        if (m.ValueKind != JsonValueKind.Object) throw Error(source, path, "expected a model object");
        if (!m.TryGetProperty("match", out var match)) throw Error(source, path, "'match' is required");
        if (!m.TryGetProperty("prices", out var prices)) throw Error(source, path, "'prices' is required");
        long? context = null;
        if (m.TryGetProperty("context_window", out var cw))
            context = cw.ValueKind == JsonValueKind.Number && cw.TryGetInt64(out var c) ? c : throw Error(source, path + ".context_window", "expected an integer");
        return new CatalogModel
        {
            ProviderId = providerId,
            Id = RequiredString(m, "id", path, source),
            Name = OptionalString(m, "name", path, source),
            Match = ParseMatch(match, path + ".match", source),
            ContextWindow = context,
            Deprecated = m.TryGetProperty("deprecated", out var d) && d.ValueKind == JsonValueKind.True,
            Periods = ParsePeriods(prices, path + ".prices", source),
        };
    }

    private static PricePeriod[] ParsePeriods(JsonElement prices, string path, string source)
    {
        if (prices.ValueKind == JsonValueKind.Object) return [new PricePeriod(null, ParsePriceSet(prices, path, source))];
        if (prices.ValueKind != JsonValueKind.Array || prices.GetArrayLength() == 0)
            throw Error(source, path, "expected a price object or a non-empty list of conditional prices");
        var periods = new List<PricePeriod>();
        var i = 0;
        foreach (var c in prices.EnumerateArray())
        {
            var cp = $"{path}[{i++}]";
            if (c.ValueKind != JsonValueKind.Object || !c.TryGetProperty("prices", out var set)) throw Error(source, cp, "expected {constraint?, prices}");
            PriceConstraint? constraint = null;
            if (c.TryGetProperty("constraint", out var k) && k.ValueKind != JsonValueKind.Null)
                constraint = ParseConstraint(k, cp + ".constraint", source);
            periods.Add(new PricePeriod(constraint, ParsePriceSet(set, cp + ".prices", source)));
        }
        return periods.ToArray();
    }

    private static PriceConstraint ParseConstraint(JsonElement k, string path, string source)
    {
        if (k.TryGetProperty("start_date", out var sd))
        {
            return sd.ValueKind == JsonValueKind.String && DateOnly.TryParseExact(sd.GetString(), "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.None, out var date)
                ? new PriceConstraint.StartDate(date)
                : throw Error(source, path + ".start_date", "expected a date yyyy-MM-dd");
        }
        if (k.TryGetProperty("start_time", out var st) && k.TryGetProperty("end_time", out var et))
            return new PriceConstraint.TimeOfDay(ParseTime(st, path + ".start_time", source), ParseTime(et, path + ".end_time", source));
        throw Error(source, path, "expected start_date or start_time/end_time");
    }

    private static TimeOnly ParseTime(JsonElement e, string path, string source)
    {
        // The dataset writes UTC times as "00:30:00Z"; an explicit offset other than UTC is not supported.
        var s = e.ValueKind == JsonValueKind.String ? e.GetString()! : "";
        if (s.EndsWith('Z')) s = s[..^1];
        else if (s.EndsWith("+00:00", StringComparison.Ordinal)) s = s[..^6];
        return TimeOnly.TryParseExact(s, ["HH:mm:ss", "HH:mm", "HH:mm:ss.FFFFFFF"], CultureInfo.InvariantCulture, DateTimeStyles.None, out var t)
            ? t
            : throw Error(source, path, "expected a UTC time HH:mm:ss[Z]");
    }

    private static PriceSet ParsePriceSet(JsonElement set, string path, string source)
    {
        if (set.ValueKind != JsonValueKind.Object) throw Error(source, path, "expected a price object");
        decimal? requests = null;
        if (set.TryGetProperty("requests_kcount", out var rk)) requests = NonNegative(rk, path + ".requests_kcount", source);
        return new PriceSet
        {
            InputMtok = Rate(set, "input_mtok", path, source),
            OutputMtok = Rate(set, "output_mtok", path, source),
            CacheReadMtok = Rate(set, "cache_read_mtok", path, source),
            CacheWriteMtok = Rate(set, "cache_write_mtok", path, source),
            RequestsKcount = requests,
        };
    }

    private static TieredRate? Rate(JsonElement set, string name, string path, string source)
    {
        if (!set.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        path = path + "." + name;
        if (v.ValueKind == JsonValueKind.Number) return new TieredRate(NonNegative(v, path, source));
        if (v.ValueKind != JsonValueKind.Object || !v.TryGetProperty("base", out var b) || !v.TryGetProperty("tiers", out var tiers)
            || tiers.ValueKind != JsonValueKind.Array)
            throw Error(source, path, "expected a number or {base, tiers}");
        var starts = new List<long>();
        var rates = new List<decimal>();
        var i = 0;
        foreach (var t in tiers.EnumerateArray())
        {
            var tp = $"{path}.tiers[{i++}]";
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("start", out var s) || !s.TryGetInt64(out var start) || start < 0
                || !t.TryGetProperty("price", out var p))
                throw Error(source, tp, "expected {start: integer ≥ 0, price: number}");
            starts.Add(start);
            rates.Add(NonNegative(p, tp + ".price", source));
        }
        // Tiers are applied by threshold, so sort them; equal starts are ambiguous.
        var order = Enumerable.Range(0, starts.Count).OrderBy(k => starts[k]).ToArray();
        var sortedStarts = order.Select(k => starts[k]).ToArray();
        for (var k = 1; k < sortedStarts.Length; k++)
            if (sortedStarts[k] == sortedStarts[k - 1]) throw Error(source, path, "two tiers start at the same token count");
        return new TieredRate(NonNegative(b, path + ".base", source), sortedStarts, order.Select(k => rates[k]).ToArray());
    }

    private static decimal NonNegative(JsonElement v, string path, string source)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDecimal(out var d)) throw Error(source, path, "expected a decimal number");
        if (d < 0) throw Error(source, path, "prices must not be negative");
        // Bounded so that 10 million tokens × rate × the largest markup stays far inside micro-USD in 64 bits.
        return d <= PricingOptionsValidator.MaxRatePerMtok ? d : throw Error(source, path, $"prices above {PricingOptionsValidator.MaxRatePerMtok} USD are not accepted");
    }

    internal static MatchRule ParseMatch(JsonElement e, string path, string source)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Error(source, path, "expected a match clause object");
        using var props = e.EnumerateObject();
        if (!props.MoveNext()) throw Error(source, path, "empty match clause");
        var prop = props.Current;
        if (props.MoveNext()) throw Error(source, path, "a match clause has exactly one key");
        var v = prop.Value;
        string Text() => v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Error(source, $"{path}.{prop.Name}", "expected a string");
        MatchRule[] List()
        {
            if (v.ValueKind != JsonValueKind.Array) throw Error(source, $"{path}.{prop.Name}", "expected a list of clauses");
            var i = 0;
            return v.EnumerateArray().Select(x => ParseMatch(x, $"{path}.{prop.Name}[{i++}]", source)).ToArray();
        }
        switch (prop.Name)
        {
            case "equals": return new MatchRule.EqualsRule(Text());
            case "starts_with": return new MatchRule.StartsWithRule(Text());
            case "ends_with": return new MatchRule.EndsWithRule(Text());
            case "contains": return new MatchRule.ContainsRule(Text());
            case "regex":
                try { return new MatchRule.RegexRule(Text()); }
                catch (ArgumentException) { throw Error(source, path + ".regex", "invalid regular expression"); }
            case "or": return new MatchRule.AnyRule(List());
            case "and": return new MatchRule.AllRule(List());
            default: throw Error(source, path, $"unknown match clause '{prop.Name}'");
        }
    }

    private static string RequiredString(JsonElement e, string name, string path, string source) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s && !s.Any(char.IsWhiteSpace)
            ? s
            : throw Error(source, $"{path}.{name}", "a non-empty string without spaces is required");

    private static string? OptionalString(JsonElement e, string name, string path, string source) =>
        !e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw Error(source, $"{path}.{name}", "expected a string");

    private static CatalogFormatException Error(string source, string path, string message) => new($"{source}: {path}: {message}.");
}
