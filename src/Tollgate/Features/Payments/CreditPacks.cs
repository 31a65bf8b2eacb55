using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Payments;

/// <summary>One credit pack as configured under <c>Tollgate:Billing:CreditPacks:&lt;id&gt;</c>.</summary>
public sealed record CreditPackOptions
{
    public string? Name { get; init; }
    /// <summary>What the buyer pays, in the currency's minor unit (cents).</summary>
    public long PriceCents { get; init; }
    public string Currency { get; init; } = "usd";
    /// <summary>Credits bought (see <c>Credits:MicrosPerCredit</c>).</summary>
    public long Credits { get; init; }
    /// <summary>Extra credits given with the pack (e.g. a 25% bonus on a larger pack).</summary>
    public long BonusCredits { get; init; }
    /// <summary>A Stripe Price to sell it with; without one the checkout sends the amount inline (<c>price_data</c>).</summary>
    public string? StripePriceId { get; init; }
    /// <summary><c>false</c> takes the pack off sale — e.g. one of the shipped default packs that a deployment's config file cannot delete.</summary>
    public bool Enabled { get; init; } = true;
}

/// <summary>A pack ready to sell: <see cref="AmountMicros"/> is what the account is credited.</summary>
public sealed record CreditPack(string Id, string Name, long PriceCents, string Currency, long Credits, long BonusCredits, long AmountMicros, string? StripePriceId);

public sealed record CreditPackView(string Id, string Name, long PriceCents, string Currency, long Credits, long BonusCredits, long AmountMicros)
{
    public static CreditPackView From(CreditPack p) => new(p.Id, p.Name, p.PriceCents, p.Currency, p.Credits + p.BonusCredits, p.BonusCredits, p.AmountMicros);
}

/// <summary>The credit packs on sale; invalid packs stop start-up with every problem listed.</summary>
internal sealed class CreditPackCatalog
{
    private readonly Dictionary<string, CreditPack> _packs;

    public CreditPackCatalog(IOptions<Dictionary<string, CreditPackOptions>> options, CreditUnit credits)
    {
        _packs = options.Value.Where(p => p.Value.Enabled).ToDictionary(p => p.Key, p => new CreditPack(p.Key, p.Value.Name ?? p.Key, p.Value.PriceCents,
            p.Value.Currency.ToLowerInvariant(), p.Value.Credits, p.Value.BonusCredits,
            checked((p.Value.Credits + p.Value.BonusCredits) * credits.MicrosPerCredit), p.Value.StripePriceId), StringComparer.Ordinal);
    }

    public IReadOnlyList<CreditPack> All => _packs.Values.OrderBy(p => p.PriceCents).ThenBy(p => p.Id, StringComparer.Ordinal).ToList();

    public CreditPack? Find(string? id) => id is not null && _packs.TryGetValue(id, out var pack) ? pack : null;

    public static void Register(IServiceCollection services)
    {
        Infrastructure.Configuration.NamedOptions.Add<CreditPackOptions>(services, "Tollgate:Billing:CreditPacks", Validate);
        services.AddSingleton<CreditPackCatalog>();
    }

    private static bool Validate(Dictionary<string, CreditPackOptions> packs)
    {
        var errors = new List<string>();
        foreach (var (id, p) in packs.Where(p => p.Value.Enabled))
        {
            var at = $"Tollgate:Billing:CreditPacks:{id}";
            if (id.Length is 0 or > 64 || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
                errors.Add($"{at}: pack ids are 1–64 letters, digits, '-', '_' or '.'.");
            if (p.PriceCents is < 50 or > 100_000_000) errors.Add($"{at}:PriceCents must be 50–100,000,000 (Stripe's minimum charge is 50 cents).");
            if (p.Credits < 1) errors.Add($"{at}:Credits must be at least 1.");
            if (p.BonusCredits < 0) errors.Add($"{at}:BonusCredits must not be negative.");
            if (p.StripePriceId is { } price && !price.StartsWith("price_", StringComparison.Ordinal))
                errors.Add($"{at}:StripePriceId must be a Stripe Price id (price_…).");
            if (p.Currency.Length != 3 || !p.Currency.All(char.IsAsciiLetter)) errors.Add($"{at}:Currency must be a three-letter ISO code such as 'usd'.");
        }
        if (errors.Count > 0) throw new OptionsValidationException("Tollgate:Billing:CreditPacks", typeof(CreditPackOptions), errors);
        return true;
    }
}

internal static class CreditPackEndpoints
{
    /// <summary><c>GET /api/v1/billing/credit-packs</c>: public, so a pricing page can list them without a key.</summary>
    public static void MapCreditPacks(this IEndpointRouteBuilder routes) =>
        routes.MapGet("/api/v1/billing/credit-packs", (CreditPackCatalog packs) =>
                TypedResults.Ok(new Dictionary<string, object> { ["data"] = packs.All.Select(CreditPackView.From).ToList() }))
            .WithTags("Billing");
}
