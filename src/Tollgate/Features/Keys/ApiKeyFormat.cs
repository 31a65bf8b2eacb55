using Tollgate.Infrastructure;

namespace Tollgate.Features.Keys;

/// <summary>A freshly generated key: <see cref="Key"/> is shown once and never stored.</summary>
public sealed record GeneratedKey(string Key, string Prefix, byte[] Hash);

/// <summary>API keys look like <c>tg_live_3hK…</c> (43 base62 characters ≈ 256 bits after the environment).</summary>
public static class ApiKeyFormat
{
    public const int RandomLength = 43;
    public const int VisibleRandomChars = 6;

    public static GeneratedKey Generate(string environment)
    {
        var key = $"tg_{environment}_{Secrets.RandomBase62(RandomLength)}";
        return new GeneratedKey(key, PrefixOf(key), Secrets.Hash(key));
    }

    /// <summary>The non-secret head of a key used to recognise it in listings, e.g. "tg_live_3hK9aZ".</summary>
    public static string PrefixOf(string key)
    {
        var lastUnderscore = key.LastIndexOf('_');
        var end = Math.Min(key.Length, lastUnderscore + 1 + VisibleRandomChars);
        return key[..end];
    }
}
