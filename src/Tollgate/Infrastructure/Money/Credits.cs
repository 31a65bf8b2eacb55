using System.ComponentModel.DataAnnotations;
using System.Globalization;

namespace Tollgate.Infrastructure.Money;

/// <summary>The display unit "credits". Configuration section <c>Credits</c>.</summary>
public sealed record CreditsOptions
{
    public const string Section = "Credits";

    /// <summary>Micro-USD in one credit; default 1,000 (1 credit = $0.001). Must divide 1,000,000 evenly.</summary>
    [Range(1, 1_000_000)]
    public long MicrosPerCredit { get; init; } = 1_000;
}

/// <summary>Converts between micro-USD and credits; credits are a display unit, never stored.</summary>
public sealed class CreditUnit(long microsPerCredit)
{

    public long MicrosPerCredit { get; } = microsPerCredit;

    /// <summary>Credits as an exact decimal string, e.g. 1,500 micros at 1,000 per credit → "1.5".</summary>
    public string Format(long micros)
    {
        var value = (decimal)micros / MicrosPerCredit;
        return value.ToString("0.######", CultureInfo.InvariantCulture);
    }

    /// <summary>Parses a credit amount; fractions finer than one micro-USD are rejected, not rounded.</summary>
    public bool TryParseCredits(string text, out long micros, out string? error)
    {
        micros = 0;
        // 128 bits: credits × 10^6 exceeds 64 bits long before credits × MicrosPerCredit does.
        if (!Money.TryParseScaledWide(text, Money.MaxDecimals, out var scaledMillionths, out error)) return false;
        // scaledMillionths = credits × 10^6; micros = credits × MicrosPerCredit.
        var product = scaledMillionths * MicrosPerCredit;
        if (product % Money.MicrosPerUsd != 0)
        {
            error = $"'{text}' credits is not a whole number of micro-USD (1 credit = {MicrosPerCredit} micro-USD).";
            return false;
        }
        var result = product / Money.MicrosPerUsd;
        if (result > long.MaxValue || result < long.MinValue) { error = $"'{text}' is out of range."; return false; }
        micros = (long)result;
        return true;
    }
}
