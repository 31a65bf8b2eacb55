using System.Security.Cryptography;
using System.Text;

namespace Tollgate.Infrastructure;

/// <summary>Random tokens and their hashes. Keys are high-entropy, so one SHA-256 (no salt, no stretching) suffices.</summary>
public static class Secrets
{
    private const string Base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    private const string Base32 = "0123456789abcdefghjkmnpqrstvwxyz";

    /// <summary>A random base62 string of <paramref name="length"/> characters (≈5.95 bits each, no modulo bias).</summary>
    public static string RandomBase62(int length)
    {
        var chars = new char[length];
        var buffer = new byte[length * 2];
        var filled = 0;
        while (filled < length)
        {
            RandomNumberGenerator.Fill(buffer);
            foreach (var b in buffer)
            {
                if (b >= 248) continue; // 248 = 4 × 62: rejecting the rest keeps every character equally likely
                chars[filled++] = Base62[b % 62];
                if (filled == length) break;
            }
        }
        return new string(chars);
    }

    /// <summary>A random lower-case base32 identifier body (5 bits per character), e.g. for "acct_…" ids.</summary>
    public static string RandomId(string prefix, int length = 20)
    {
        Span<byte> bytes = stackalloc byte[length];
        RandomNumberGenerator.Fill(bytes);
        var chars = new char[length];
        for (var i = 0; i < length; i++) chars[i] = Base32[bytes[i] & 31];
        return prefix + new string(chars);
    }

    public static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    /// <summary>Constant-time comparison of two hashes (timing reveals nothing about how much matched).</summary>
    public static bool HashEquals(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => CryptographicOperations.FixedTimeEquals(a, b);
}
