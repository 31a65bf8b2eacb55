using System.Globalization;
using System.Numerics;
using System.Text;
using Org.BouncyCastle.Asn1.X9;
using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Math.EC;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>
/// The Ethereum primitives Tollgate verifies by hand: Keccak-256 (the original Keccak padding, not FIPS SHA3-256, so .NET's
/// <c>SHA3_256</c> cannot be used), EIP-191 <c>personal_sign</c> hashes, secp256k1 public-key recovery and EIP-55 addresses.
/// </summary>
public static class Ethereum
{
    /// <summary>keccak256("Transfer(address,address,uint256)"): topic 0 of every ERC-20 Transfer log.</summary>
    public const string TransferTopic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

    private static readonly X9ECParameters Secp256k1 = Org.BouncyCastle.Asn1.Sec.SecNamedCurves.GetByName("secp256k1");
    private static readonly BcBigInteger HalfN = Secp256k1.N.ShiftRight(1);

    public static byte[] Keccak256(ReadOnlySpan<byte> data)
    {
        var digest = new KeccakDigest(256);
        var input = data.ToArray();
        digest.BlockUpdate(input, 0, input.Length);
        var hash = new byte[32];
        digest.DoFinal(hash, 0);
        return hash;
    }

    /// <summary>keccak256("\x19Ethereum Signed Message:\n" + byte length + message): what <c>personal_sign</c> signs.</summary>
    public static byte[] PersonalMessageHash(string message)
    {
        var body = Encoding.UTF8.GetBytes(message);
        var prefix = Encoding.UTF8.GetBytes("\x19" + "Ethereum Signed Message:\n" + body.Length.ToString(CultureInfo.InvariantCulture));
        return Keccak256([.. prefix, .. body]);
    }

    /// <summary>
    /// Recovers the address (lower-case <c>0x</c> + 40 hex) that made a 65-byte <c>r ‖ s ‖ v</c> signature of a 32-byte hash,
    /// or null when the signature is malformed: v not 0/1/27/28, r or s outside [1, n−1], high s (EIP-2), or no curve point.
    /// </summary>
    public static string? RecoverAddress(ReadOnlySpan<byte> hash, ReadOnlySpan<byte> signature)
    {
        if (hash.Length != 32 || signature.Length != 65) return null;
        int recoveryId = signature[64] switch { 0 or 27 => 0, 1 or 28 => 1, _ => -1 };
        if (recoveryId < 0) return null;
        var n = Secp256k1.N;
        var r = new BcBigInteger(1, signature[..32].ToArray());
        var s = new BcBigInteger(1, signature[32..64].ToArray());
        if (r.SignValue <= 0 || r.CompareTo(n) >= 0 || s.SignValue <= 0 || s.CompareTo(HalfN) > 0) return null;

        // R = the curve point with x = r and the y parity the recovery id names (x = r + n, ids 2/3, never happens in practice).
        ECPoint point;
        try
        {
            var encoded = new byte[33];
            encoded[0] = (byte)(0x02 + recoveryId);
            var x = r.ToByteArrayUnsigned();
            x.CopyTo(encoded, 33 - x.Length);
            point = Secp256k1.Curve.DecodePoint(encoded);
        }
        catch (ArgumentException)
        {
            return null;
        }

        // Q = r⁻¹ (s·R − e·G), as one double multiplication: (s·r⁻¹)·R + (−e·r⁻¹)·G.
        var e = new BcBigInteger(1, hash.ToArray()).Mod(n);
        var rInverse = r.ModInverse(n);
        var q = ECAlgorithms.SumOfTwoMultiplies(point, s.Multiply(rInverse).Mod(n), Secp256k1.G, e.Negate().Mod(n).Multiply(rInverse).Mod(n)).Normalize();
        if (q.IsInfinity) return null;
        var publicKey = q.GetEncoded(false); // 0x04 ‖ X ‖ Y
        return AddressOfPublicKey(publicKey.AsSpan(1));
    }

    /// <summary>Lower-case address of an uncompressed public key X ‖ Y (64 bytes): the last 20 bytes of its Keccak-256.</summary>
    public static string AddressOfPublicKey(ReadOnlySpan<byte> xy) => "0x" + Convert.ToHexStringLower(Keccak256(xy).AsSpan(12));

    /// <summary>The EIP-55 mixed-case form of a lower-case <c>0x</c> address.</summary>
    public static string ToChecksumAddress(string address)
    {
        var lower = address[2..].ToLowerInvariant();
        var hash = Convert.ToHexStringLower(Keccak256(Encoding.ASCII.GetBytes(lower)));
        var chars = new char[42];
        chars[0] = '0';
        chars[1] = 'x';
        for (var i = 0; i < 40; i++)
            chars[i + 2] = char.IsAsciiLetter(lower[i]) && hash[i] >= '8' ? char.ToUpperInvariant(lower[i]) : lower[i];
        return new string(chars);
    }

    /// <summary><c>0x</c> + 40 hex digits in any case.</summary>
    public static bool IsAddress(string? value) => value is { Length: 42 } && value.StartsWith("0x", StringComparison.Ordinal) && IsHex(value.AsSpan(2));

    /// <summary>An address in its canonical stored form (lower case), or null when it is not an address.</summary>
    public static string? NormalizeAddress(string? value) => IsAddress(value) ? value!.ToLowerInvariant() : null;

    /// <summary>A transaction hash as <c>0x</c> + 64 lower-case hex, or null when it is not one.</summary>
    public static string? NormalizeHash(string? value) =>
        value is { Length: 66 } && value.StartsWith("0x", StringComparison.Ordinal) && IsHex(value.AsSpan(2)) ? value.ToLowerInvariant() : null;

    /// <summary>An address left-padded to a 32-byte topic (12 zero bytes), lower case.</summary>
    public static string AddressTopic(string address) => "0x" + new string('0', 24) + address[2..].ToLowerInvariant();

    /// <summary>The address in a 32-byte topic, or null when its first 12 bytes are not zero.</summary>
    public static string? AddressFromTopic(string? topic)
    {
        if (topic is not { Length: 66 } || !topic.StartsWith("0x", StringComparison.Ordinal) || !IsHex(topic.AsSpan(2))) return null;
        return topic.AsSpan(2, 24).ContainsAnyExcept('0') ? null : "0x" + topic[26..].ToLowerInvariant();
    }

    /// <summary>A JSON-RPC quantity (<c>0x</c> + hex, no leading zeros required) as a non-negative long, or null.</summary>
    public static long? ParseQuantity(string? value)
    {
        if (value is not { Length: > 2 and <= 18 } || !value.StartsWith("0x", StringComparison.Ordinal) || !IsHex(value.AsSpan(2))) return null;
        var v = ulong.Parse(value.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        return v > long.MaxValue ? null : (long)v;
    }

    public static string FormatQuantity(long value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);

    /// <summary>A 32-byte big-endian unsigned word (<c>0x</c> + exactly 64 hex), e.g. an ERC-20 Transfer's data; null otherwise.</summary>
    public static BigInteger? ParseUint256(string? data)
    {
        if (data is not { Length: 66 } || !data.StartsWith("0x", StringComparison.Ordinal) || !IsHex(data.AsSpan(2))) return null;
        return new BigInteger(Convert.FromHexString(data.AsSpan(2)), isUnsigned: true, isBigEndian: true);
    }

    private static bool IsHex(ReadOnlySpan<char> s)
    {
        foreach (var c in s)
            if (!char.IsAsciiHexDigit(c)) return false;
        return true;
    }
}
