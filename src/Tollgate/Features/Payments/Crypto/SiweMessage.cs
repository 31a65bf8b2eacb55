using System.Globalization;
using System.Text.RegularExpressions;

namespace Tollgate.Features.Payments.Crypto;

/// <summary>
/// A Sign-In with Ethereum (ERC-4361) message, parsed strictly: LF line endings only, no trailing newline, the fixed field
/// order of the ABNF, an EIP-55 checksummed address, version 1. Layout (optional lines marked ?):
/// <code>
/// [scheme://]domain wants you to sign in with your Ethereum account:
/// 0xAddress
///
/// statement?                         (without a statement there are three LFs after the address)
///
/// URI: uri
/// Version: 1
/// Chain ID: 8453
/// Nonce: [A-Za-z0-9]{8,}
/// Issued At: RFC 3339
/// Expiration Time: RFC 3339?
/// Not Before: RFC 3339?
/// Request ID: text?
/// Resources:?                        followed by "- uri" lines
/// </code>
/// </summary>
public sealed partial record SiweMessage(
    string? Scheme,
    string Domain,
    string Address,
    string? Statement,
    string Uri,
    string Version,
    long ChainId,
    string Nonce,
    DateTimeOffset IssuedAt,
    DateTimeOffset? ExpirationTime,
    DateTimeOffset? NotBefore,
    string? RequestId,
    IReadOnlyList<string> Resources)
{
    private const string HeaderSuffix = " wants you to sign in with your Ethereum account:";

    /// <summary>Renders the message exactly as wallets sign it (the inverse of <see cref="TryParse"/>).</summary>
    public override string ToString()
    {
        var lines = new List<string>
        {
            (Scheme is null ? "" : Scheme + "://") + Domain + HeaderSuffix,
            Address,
            "",
        };
        if (Statement is not null) lines.Add(Statement);
        lines.Add("");
        lines.Add("URI: " + Uri);
        lines.Add("Version: " + Version);
        lines.Add("Chain ID: " + ChainId.ToString(CultureInfo.InvariantCulture));
        lines.Add("Nonce: " + Nonce);
        lines.Add("Issued At: " + FormatTime(IssuedAt));
        if (ExpirationTime is { } exp) lines.Add("Expiration Time: " + FormatTime(exp));
        if (NotBefore is { } nbf) lines.Add("Not Before: " + FormatTime(nbf));
        if (RequestId is not null) lines.Add("Request ID: " + RequestId);
        if (Resources.Count > 0)
        {
            lines.Add("Resources:");
            lines.AddRange(Resources.Select(r => "- " + r));
        }
        return string.Join('\n', lines);
    }

    /// <summary>RFC 3339 in UTC with milliseconds, the form spruceid/siwe and most wallets produce.</summary>
    public static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>Parses <paramref name="text"/>; on failure <paramref name="error"/> says which rule it broke.</summary>
    public static bool TryParse(string? text, out SiweMessage? message, out string error)
    {
        message = null;
        error = "";
        if (string.IsNullOrEmpty(text)) return Fail("The message is empty.", out error);
        if (text.Contains('\r')) return Fail("Lines must end with LF only (no CR).", out error);
        var lines = text.Split('\n');
        var i = 0;
        string Next() => i < lines.Length ? lines[i++] : throw new FormatException();

        try
        {
            var header = Next();
            if (!header.EndsWith(HeaderSuffix, StringComparison.Ordinal)) return Fail($"The first line must be '<domain>{HeaderSuffix}'.", out error);
            var authority = header[..^HeaderSuffix.Length];
            string? scheme = null;
            if (authority.IndexOf("://", StringComparison.Ordinal) is var sep and >= 0)
            {
                scheme = authority[..sep];
                authority = authority[(sep + 3)..];
                if (!SchemePattern().IsMatch(scheme)) return Fail("The scheme is not a URI scheme.", out error);
            }
            if (authority.Length == 0 || authority.Any(c => c <= ' ' || c is '/' or '?' or '#')) return Fail("The domain is not a URI authority.", out error);

            var address = Next();
            if (!Ethereum.IsAddress(address)) return Fail("The second line must be the 0x-prefixed address.", out error);
            if (Ethereum.ToChecksumAddress(address) != address) return Fail("The address is not EIP-55 checksummed.", out error);
            if (Next().Length != 0) return Fail("An empty line must follow the address.", out error);

            string? statement = null;
            var line = Next();
            if (line.Length != 0)
            {
                statement = line;
                if (Next().Length != 0) return Fail("An empty line must follow the statement.", out error);
            }

            var uri = Field(Next(), "URI: ");
            if (uri is null || !System.Uri.TryCreate(uri, UriKind.Absolute, out _)) return Fail("Expected 'URI: <absolute URI>'.", out error);
            var version = Field(Next(), "Version: ");
            if (version != "1") return Fail("Expected 'Version: 1'.", out error);
            var chain = Field(Next(), "Chain ID: ");
            if (chain is null || !DigitsPattern().IsMatch(chain) || !long.TryParse(chain, NumberStyles.None, CultureInfo.InvariantCulture, out var chainId))
                return Fail("Expected 'Chain ID: <decimal>'.", out error);
            var nonce = Field(Next(), "Nonce: ");
            if (nonce is null || !NoncePattern().IsMatch(nonce)) return Fail("Expected 'Nonce: ' followed by at least 8 letters or digits.", out error);
            if (!TryTime(Field(Next(), "Issued At: "), out var issuedAt)) return Fail("Expected 'Issued At: <RFC 3339 date-time>'.", out error);

            DateTimeOffset? expiration = null, notBefore = null;
            string? requestId = null;
            var resources = new List<string>();
            if (i < lines.Length && lines[i].StartsWith("Expiration Time: ", StringComparison.Ordinal))
            {
                if (!TryTime(Field(Next(), "Expiration Time: "), out var t)) return Fail("'Expiration Time' is not an RFC 3339 date-time.", out error);
                expiration = t;
            }
            if (i < lines.Length && lines[i].StartsWith("Not Before: ", StringComparison.Ordinal))
            {
                if (!TryTime(Field(Next(), "Not Before: "), out var t)) return Fail("'Not Before' is not an RFC 3339 date-time.", out error);
                notBefore = t;
            }
            if (i < lines.Length && lines[i].StartsWith("Request ID: ", StringComparison.Ordinal)) requestId = Field(Next(), "Request ID: ");
            if (i < lines.Length && lines[i] == "Resources:")
            {
                i++;
                while (i < lines.Length && lines[i].StartsWith("- ", StringComparison.Ordinal)) resources.Add(lines[i++][2..]);
            }
            if (i != lines.Length)
                return Fail($"Unexpected line {i + 1}: fields must follow the ERC-4361 order, with no trailing newline.", out error);

            message = new SiweMessage(scheme, authority, address, statement, uri, version, chainId, nonce, issuedAt, expiration, notBefore, requestId, resources);
            return true;
        }
        catch (FormatException)
        {
            return Fail("The message ends before its required fields (URI, Version, Chain ID, Nonce, Issued At).", out error);
        }
    }

    private static string? Field(string line, string prefix) => line.StartsWith(prefix, StringComparison.Ordinal) ? line[prefix.Length..] : null;

    private static bool TryTime(string? value, out DateTimeOffset time)
    {
        time = default;
        return value is not null && Rfc3339Pattern().IsMatch(value)
            && DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out time);
    }

    private static bool Fail(string reason, out string error)
    {
        error = reason;
        return false;
    }

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9+.-]*$")]
    private static partial Regex SchemePattern();

    [GeneratedRegex("^[0-9]{1,18}$")]
    private static partial Regex DigitsPattern();

    [GeneratedRegex("^[A-Za-z0-9]{8,}$")]
    private static partial Regex NoncePattern();

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,7})?([Zz]|[+-]\d{2}:\d{2})$")]
    private static partial Regex Rfc3339Pattern();
}
