namespace Tollgate.Features.Payments.Crypto;

/// <summary>The outcome of checking a signed SIWE message; <see cref="Code"/> is null when it is valid.</summary>
public sealed record SiweCheck(string? Code, string Detail, SiweMessage? Message)
{
    public bool Valid => Code is null;
}

/// <summary>
/// The stateless half of Sign-In with Ethereum verification (ERC-4361 §relying party): layout, domain, URI, chain, times and
/// the EIP-191 signature. The nonce (issued by us, unused, the caller's) is checked against the database by the endpoint.
/// </summary>
public static class SiweVerifier
{
    /// <summary>Clock skew tolerated for <c>Issued At</c> in the future.</summary>
    public static readonly TimeSpan AllowedSkew = TimeSpan.FromSeconds(60);

    public static SiweCheck Check(string message, string signature, string expectedDomain, string expectedUri, long chainId, DateTimeOffset now)
    {
        if (!SiweMessage.TryParse(message, out var m, out var error)) return new("invalid_siwe_message", error, null);
        if (m!.Domain != expectedDomain) return new("domain_mismatch", $"The message is for domain '{m.Domain}', not '{expectedDomain}'.", m);
        if (m.Uri != expectedUri) return new("uri_mismatch", $"The message's URI '{m.Uri}' is not '{expectedUri}'.", m);
        if (m.ChainId != chainId) return new("chain_mismatch", $"The message is for chain {m.ChainId}, not {chainId}.", m);
        if (m.IssuedAt > now + AllowedSkew) return new("message_not_yet_valid", "The message's 'Issued At' is in the future.", m);
        if (m.NotBefore is { } nbf && now < nbf) return new("message_not_yet_valid", "The message's 'Not Before' time has not come yet.", m);
        if (m.ExpirationTime is { } exp && now >= exp) return new("message_expired", "The message's 'Expiration Time' has passed.", m);
        if (!TryDecodeSignature(signature, out var sig)) return new("invalid_signature", "The signature must be 0x followed by 130 hex digits (r ‖ s ‖ v).", m);
        var signer = Ethereum.RecoverAddress(Ethereum.PersonalMessageHash(message), sig);
        if (signer is null) return new("invalid_signature", "The signature is malformed (v, r or s out of range, or high s).", m);
        if (signer != m.Address.ToLowerInvariant()) return new("invalid_signature", "The signature was not made by the message's address.", m);
        return new(null, "", m);
    }

    private static bool TryDecodeSignature(string? hex, out byte[] bytes)
    {
        bytes = [];
        if (hex is not { Length: 132 } || !hex.StartsWith("0x", StringComparison.Ordinal)) return false;
        try
        {
            bytes = Convert.FromHexString(hex.AsSpan(2));
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
