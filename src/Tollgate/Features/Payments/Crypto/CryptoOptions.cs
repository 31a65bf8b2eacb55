using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>
/// <c>Tollgate:Crypto</c>: USDC top-ups on an EVM chain (Base by default). Validated at start-up only when
/// <see cref="Enabled"/>; with it off, Tollgate runs without any crypto routes or background jobs.
/// </summary>
public sealed record CryptoOptions
{
    public const string Section = "Tollgate:Crypto";
    /// <summary>Base mainnet.</summary>
    public const long BaseChainId = 8453;
    /// <summary>Circle's native USDC on Base (FiatTokenProxy), 6 decimals.</summary>
    public const string BaseUsdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";

    public bool Enabled { get; init; }
    /// <summary>JSON-RPC endpoint of a node on <see cref="ChainId"/> (a paid provider in production).</summary>
    public string? RpcUrl { get; init; }
    public long ChainId { get; init; } = BaseChainId;
    /// <summary>The accepted token contract; Transfer logs from any other contract are ignored.</summary>
    public string UsdcContract { get; init; } = BaseUsdc;
    /// <summary>The operator's receiving address (required when enabled).</summary>
    public string? TreasuryAddress { get; init; }
    /// <summary>Blocks a transfer needs (its own block counts as 1) before it is credited.</summary>
    public int Confirmations { get; init; } = 12;
    /// <summary>
    /// The rate, as an integer ratio: <see cref="RateUnits"/> token base units credit <see cref="RateMicros"/> micro-USD.
    /// The default 1,000,000 : 1,000,000 credits 1 USDC (10⁶ units) as 1 USD; the credit is rounded down.
    /// </summary>
    public long RateMicros { get; init; } = 1_000_000;
    public long RateUnits { get; init; } = 1_000_000;
    /// <summary>Smallest transfer credited, in token base units (default 0.01 USDC); smaller ones are listed as unmatched.</summary>
    public long MinimumUnits { get; init; } = 10_000;
    /// <summary>How often the background job re-checks pending confirmations and scans for new transfers.</summary>
    public int ScanIntervalSeconds { get; init; } = 15;
    /// <summary>Most blocks asked for in one <c>eth_getLogs</c> call (providers cap the range).</summary>
    public int ScanBlockRange { get; init; } = 2_000;
    /// <summary>First block the watcher scans when it has no cursor yet; null = the newest confirmed block at that moment.</summary>
    public long? ScanStartBlock { get; init; }
    /// <summary>Turns the <c>eth_getLogs</c> watcher off (submitted hashes are still confirmed and re-checked).</summary>
    public bool WatcherEnabled { get; init; } = true;
    /// <summary>A submitted transaction still unconfirmed after this long is given up (marked failed, never credited).</summary>
    public int PendingTimeoutSeconds { get; init; } = 3_600;
    /// <summary>Confirm calls allowed per account per minute.</summary>
    public int ConfirmPerMinute { get; init; } = 20;
    /// <summary>Lifetime of a Sign-In with Ethereum nonce.</summary>
    public int NonceTtlSeconds { get; init; } = 600;
    /// <summary>The SIWE domain wallets show; null = the Host of the nonce request.</summary>
    public string? SiweDomain { get; init; }
    /// <summary>The SIWE URI; null = scheme://host of the nonce request.</summary>
    public string? SiweUri { get; init; }
    public int RpcTimeoutSeconds { get; init; } = 10;
}

/// <summary>Reports every configuration error at once, and only when crypto payments are enabled.</summary>
internal sealed class CryptoOptionsValidator : IValidateOptions<CryptoOptions>
{
    public ValidateOptionsResult Validate(string? name, CryptoOptions o)
    {
        if (!o.Enabled) return ValidateOptionsResult.Success;
        var errors = new List<string>();
        if (!System.Uri.TryCreate(o.RpcUrl, UriKind.Absolute, out var rpc) || rpc.Scheme is not ("http" or "https"))
            errors.Add("Tollgate:Crypto:RpcUrl must be an http(s) URL of a JSON-RPC node.");
        if (o.ChainId <= 0) errors.Add("Tollgate:Crypto:ChainId must be positive.");
        if (!Ethereum.IsAddress(o.UsdcContract)) errors.Add("Tollgate:Crypto:UsdcContract must be a 0x address (40 hex digits).");
        if (!Ethereum.IsAddress(o.TreasuryAddress)) errors.Add("Tollgate:Crypto:TreasuryAddress must be a 0x address (40 hex digits).");
        else if (o.TreasuryAddress!.Any(char.IsAsciiLetterUpper) && o.TreasuryAddress!.Any(char.IsAsciiLetterLower)
            && Ethereum.ToChecksumAddress(o.TreasuryAddress!) != o.TreasuryAddress)
            errors.Add("Tollgate:Crypto:TreasuryAddress has a wrong EIP-55 checksum (a typo?); check it, or give it all lower case.");
        if (o.Confirmations is < 1 or > 10_000) errors.Add("Tollgate:Crypto:Confirmations must be 1–10000.");
        if (o.RateMicros <= 0 || o.RateUnits <= 0) errors.Add("Tollgate:Crypto:RateMicros and RateUnits must be positive integers.");
        if (o.MinimumUnits < 1) errors.Add("Tollgate:Crypto:MinimumUnits must be at least 1.");
        if (o.ScanIntervalSeconds is < 1 or > 3_600) errors.Add("Tollgate:Crypto:ScanIntervalSeconds must be 1–3600.");
        if (o.ScanBlockRange is < 1 or > 100_000) errors.Add("Tollgate:Crypto:ScanBlockRange must be 1–100000.");
        if (o.ScanStartBlock is < 0) errors.Add("Tollgate:Crypto:ScanStartBlock must not be negative.");
        if (o.PendingTimeoutSeconds < 60) errors.Add("Tollgate:Crypto:PendingTimeoutSeconds must be at least 60.");
        if (o.ConfirmPerMinute < 1) errors.Add("Tollgate:Crypto:ConfirmPerMinute must be at least 1.");
        if (o.NonceTtlSeconds is < 30 or > 86_400) errors.Add("Tollgate:Crypto:NonceTtlSeconds must be 30–86400.");
        if (o.SiweUri is not null && !System.Uri.TryCreate(o.SiweUri, UriKind.Absolute, out _)) errors.Add("Tollgate:Crypto:SiweUri must be an absolute URI.");
        if (o.RpcTimeoutSeconds is < 1 or > 300) errors.Add("Tollgate:Crypto:RpcTimeoutSeconds must be 1–300.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
