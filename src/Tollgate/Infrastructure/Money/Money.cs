using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Tollgate.Infrastructure.Money;

/// <summary>How a value that falls between two whole micro-USD is brought onto one.</summary>
public enum Rounding
{
    /// <summary>Towards positive infinity: what a user is charged.</summary>
    Up,
    /// <summary>Towards negative infinity.</summary>
    Down,
    /// <summary>To the nearest, ties to the even neighbour (banker's rounding).</summary>
    HalfEven,
}

/// <summary>
/// An amount of money in micro-USD (1 USD = 1,000,000). All arithmetic is checked: an overflow throws
/// <see cref="OverflowException"/> instead of wrapping. Display units (dollars, credits) exist only at the edges.
/// </summary>
public readonly record struct Money(long Micros) : IComparable<Money>
{
    public const long MicrosPerUsd = 1_000_000;
    public const int MaxDecimals = 6;

    public static readonly Money Zero = new(0);

    public static Money FromMicros(long micros) => new(micros);

    public bool IsNegative => Micros < 0;
    public bool IsPositive => Micros > 0;

    public static Money operator +(Money a, Money b) => new(checked(a.Micros + b.Micros));
    public static Money operator -(Money a, Money b) => new(checked(a.Micros - b.Micros));
    public static Money operator -(Money a) => new(checked(-a.Micros));
    public static Money operator *(Money a, long factor) => new(checked(a.Micros * factor));
    public static bool operator <(Money a, Money b) => a.Micros < b.Micros;
    public static bool operator >(Money a, Money b) => a.Micros > b.Micros;
    public static bool operator <=(Money a, Money b) => a.Micros <= b.Micros;
    public static bool operator >=(Money a, Money b) => a.Micros >= b.Micros;

    public int CompareTo(Money other) => Micros.CompareTo(other.Micros);

    /// <summary>
    /// Converts an exact USD amount to micro-USD with explicit rounding. Pricing computes in
    /// <see cref="decimal"/> (exact base-10) and crosses into integers only here.
    /// </summary>
    public static Money FromUsd(decimal usd, Rounding rounding)
    {
        var micros = usd * MicrosPerUsd;
        var rounded = rounding switch
        {
            Rounding.Up => decimal.Ceiling(micros),
            Rounding.Down => decimal.Floor(micros),
            Rounding.HalfEven => decimal.Round(micros, 0, MidpointRounding.ToEven),
            _ => throw new ArgumentOutOfRangeException(nameof(rounding)),
        };
        if (rounded > long.MaxValue || rounded < long.MinValue)
            throw new OverflowException($"{usd} USD does not fit in micro-USD.");
        return new((long)rounded);
    }

    /// <summary>
    /// Computes <c>value × numerator ÷ denominator</c> exactly in 128 bits and rounds once, e.g. a per-million-token
    /// price times a token count. <paramref name="denominator"/> must be positive.
    /// </summary>
    public static long MulDiv(long value, long numerator, long denominator, Rounding rounding)
    {
        if (denominator <= 0) throw new ArgumentOutOfRangeException(nameof(denominator), "Denominator must be positive.");
        var product = (Int128)value * numerator;
        var quotient = Int128.DivRem(product, denominator);
        var (q, r) = (quotient.Quotient, quotient.Remainder);
        if (r != 0)
        {
            // Int128 division truncates towards zero; r carries the sign of the product.
            var positive = r > 0;
            switch (rounding)
            {
                case Rounding.Up:
                    if (positive) q += 1;
                    break;
                case Rounding.Down:
                    if (!positive) q -= 1;
                    break;
                case Rounding.HalfEven:
                    var twice = Int128.Abs(r) * 2;
                    if (twice > denominator || (twice == denominator && !Int128.IsEvenInteger(q)))
                        q += positive ? 1 : -1;
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(rounding));
            }
        }
        if (q > long.MaxValue || q < long.MinValue) throw new OverflowException("Result does not fit in 64 bits.");
        return (long)q;
    }

    /// <summary>Formats as a plain decimal USD string with exactly six decimals, e.g. "12.345678" or "-0.000001".</summary>
    public override string ToString() => FormatMicros(Micros);

    public static string FormatMicros(long micros)
    {
        var negative = micros < 0;
        // Unsigned magnitude so long.MinValue formats instead of overflowing.
        var magnitude = negative ? (ulong)(-(micros + 1)) + 1 : (ulong)micros;
        var whole = magnitude / MicrosPerUsd;
        var frac = magnitude % MicrosPerUsd;
        return string.Create(CultureInfo.InvariantCulture, $"{(negative ? "-" : "")}{whole}.{frac:D6}");
    }

    /// <summary>
    /// Parses a decimal USD string ("12.5", "-0.000001", "3"). More than six decimals, exponents, thousands
    /// separators, whitespace and out-of-range values are rejected rather than rounded or truncated.
    /// </summary>
    public static bool TryParse(string? text, out Money value, [NotNullWhen(false)] out string? error)
    {
        value = Zero;
        if (!TryParseScaled(text, MaxDecimals, out var micros, out error)) return false;
        value = new(micros);
        return true;
    }

    public static Money Parse(string text) =>
        TryParse(text, out var value, out var error) ? value : throw new FormatException(error);

    /// <summary>
    /// Parses a plain decimal string into an integer scaled by 10^<paramref name="decimals"/>, exactly.
    /// Shared by USD and credit parsing so both reject the same malformed inputs.
    /// </summary>
    internal static bool TryParseScaled(string? text, int decimals, out long scaled, [NotNullWhen(false)] out string? error)
    {
        scaled = 0;
        if (!TryParseScaledWide(text, decimals, out var wide, out error)) return false;
        if (wide > long.MaxValue || wide < long.MinValue)
        {
            error = $"'{text}' is out of range.";
            return false;
        }
        scaled = (long)wide;
        return true;
    }

    /// <summary>
    /// <see cref="TryParseScaled(string?, int, out long, out string?)"/> into 128 bits, for units larger than a micro-USD
    /// (credits): their scaled value may exceed 64 bits while the amount in micro-USD still fits. The whole part is
    /// limited to 64 bits, so with <paramref name="decimals"/> ≤ 18 the result cannot overflow.
    /// </summary>
    internal static bool TryParseScaledWide(string? text, int decimals, out Int128 scaled, [NotNullWhen(false)] out string? error)
    {
        scaled = 0;
        if (string.IsNullOrEmpty(text)) { error = "Amount is empty."; return false; }
        var s = text.AsSpan();
        var negative = false;
        if (s[0] is '-' or '+')
        {
            negative = s[0] == '-';
            s = s[1..];
        }
        var dot = s.IndexOf('.');
        var wholePart = dot < 0 ? s : s[..dot];
        var fracPart = dot < 0 ? ReadOnlySpan<char>.Empty : s[(dot + 1)..];
        if (wholePart.IsEmpty || (dot >= 0 && fracPart.IsEmpty))
        {
            error = $"'{text}' is not a decimal amount.";
            return false;
        }
        foreach (var c in wholePart)
            if (!char.IsAsciiDigit(c)) { error = $"'{text}' is not a decimal amount."; return false; }
        foreach (var c in fracPart)
            if (!char.IsAsciiDigit(c)) { error = $"'{text}' is not a decimal amount."; return false; }
        if (fracPart.Length > decimals)
        {
            error = $"'{text}' has more than {decimals} decimal places.";
            return false;
        }
        Int128 value = 0;
        foreach (var c in wholePart)
        {
            value = value * 10 + (c - '0');
            if (value > (Int128)long.MaxValue + 1) { error = $"'{text}' is out of range."; return false; }
        }
        for (var i = 0; i < decimals; i++)
            value = value * 10 + (i < fracPart.Length ? fracPart[i] - '0' : 0);
        scaled = negative ? -value : value;
        error = null;
        return true;
    }
}
