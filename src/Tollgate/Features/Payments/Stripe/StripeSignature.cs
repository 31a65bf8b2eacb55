using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Tollgate.Features.Payments.Stripe;

public enum SignatureCheck { Valid, Malformed, NoMatch, OutsideTolerance }

/// <summary>
/// Verifies <c>Stripe-Signature: t=…,v1=…[,v1=…]</c>: HMAC-SHA256 keyed with the whole <c>whsec_…</c> string over
/// <c>"{t}.{raw body}"</c>, lower-case hex, compared in constant time with every <c>v1</c> (several during a secret
/// rotation; <c>v0</c> and unknown schemes are ignored), then the timestamp within the tolerance either way.
/// </summary>
public static class StripeSignature
{
    public static SignatureCheck Verify(string? header, ReadOnlySpan<byte> body, IReadOnlyList<string> secrets, DateTimeOffset now, int toleranceSeconds)
    {
        if (string.IsNullOrEmpty(header) || header.Length > 4096) return SignatureCheck.Malformed;
        string? t = null;
        var signatures = new List<byte[]>();
        foreach (var item in header.Split(','))
        {
            var eq = item.IndexOf('=');
            if (eq <= 0) continue;
            var (key, value) = (item[..eq].Trim(), item[(eq + 1)..].Trim());
            if (key == "t") t = value;
            else if (key == "v1" && value.Length == 64) signatures.Add(Encoding.ASCII.GetBytes(value));
        }
        if (t is null || !long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var timestamp) || signatures.Count == 0)
            return SignatureCheck.Malformed;

        var prefix = Encoding.UTF8.GetBytes(t + ".");
        var signed = new byte[prefix.Length + body.Length];
        prefix.CopyTo(signed, 0);
        body.CopyTo(signed.AsSpan(prefix.Length));
        var matched = false;
        foreach (var secret in secrets)
        {
            var expected = Encoding.ASCII.GetBytes(Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), signed)));
            // Every candidate is compared in full: no early exit that would time which secret or signature matched.
            foreach (var candidate in signatures) matched |= CryptographicOperations.FixedTimeEquals(expected, candidate);
        }
        if (!matched) return SignatureCheck.NoMatch;
        return Math.Abs(now.ToUnixTimeSeconds() - timestamp) > toleranceSeconds ? SignatureCheck.OutsideTolerance : SignatureCheck.Valid;
    }
}
