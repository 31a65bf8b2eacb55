using Tollgate.Infrastructure.Money;

namespace Tollgate.Tests.Money;

// Inside this namespace "Money" would name the namespace itself, so alias the type.
using Money = Tollgate.Infrastructure.Money.Money;

public sealed class MoneyTests
{
    [Theory]
    [InlineData(0L, "0.000000")]
    [InlineData(1L, "0.000001")]
    [InlineData(-1L, "-0.000001")]
    [InlineData(12_345_678L, "12.345678")]
    [InlineData(-12_345_678L, "-12.345678")]
    [InlineData(1_000_000L, "1.000000")]
    [InlineData(-1_000_000L, "-1.000000")]
    [InlineData(long.MaxValue, "9223372036854.775807")]
    [InlineData(long.MinValue, "-9223372036854.775808")]
    public void FormatMicros_AnyValue_WritesSixDecimalsWithSign(long micros, string expected)
    {
        Assert.Equal(expected, Money.FormatMicros(micros));
        Assert.Equal(expected, new Money(micros).ToString());
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("3", 3_000_000L)]
    [InlineData("12.5", 12_500_000L)]
    [InlineData("+12.5", 12_500_000L)]
    [InlineData("-12.5", -12_500_000L)]
    [InlineData("0.000001", 1L)]
    [InlineData("-0.000001", -1L)]
    [InlineData("1.000000", 1_000_000L)]
    [InlineData("007.25", 7_250_000L)]
    [InlineData("-0", 0L)]
    [InlineData("9223372036854.775807", long.MaxValue)]
    [InlineData("-9223372036854.775808", long.MinValue)]
    public void TryParse_PlainDecimal_ReturnsExactMicros(string text, long expected)
    {
        Assert.True(Money.TryParse(text, out var value, out var error), error);
        Assert.Equal(expected, value.Micros);
        Assert.Equal(expected, Money.Parse(text).Micros);
    }

    [Theory]
    [InlineData("1.0000001")]   // seven decimals: rejected, not rounded
    [InlineData("0.0000005")]
    [InlineData("1e5")]
    [InlineData("1E-3")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("1,000")]
    [InlineData("1,5")]
    [InlineData("")]
    [InlineData(".5")]
    [InlineData("5.")]
    [InlineData("-")]
    [InlineData("+")]
    [InlineData("--1")]
    [InlineData("+-1")]
    [InlineData("1.2.3")]
    [InlineData("$1")]
    [InlineData("0x10")]
    [InlineData("NaN")]
    [InlineData("١")]            // Arabic-Indic digit one: not an ASCII digit
    [InlineData("9223372036854.775808")]   // long.MaxValue + 1 micro
    [InlineData("-9223372036854.775809")]  // long.MinValue − 1 micro
    [InlineData("9223372036855")]
    [InlineData("99999999999999999999999999999999999999999")]
    public void TryParse_MalformedOrOutOfRange_ReturnsFalseWithError(string text)
    {
        Assert.False(Money.TryParse(text, out var value, out var error));
        Assert.False(string.IsNullOrWhiteSpace(error));
        Assert.Equal(Money.Zero, value);
        Assert.Throws<FormatException>(() => Money.Parse(text));
    }

    [Fact]
    public void TryParse_Null_ReturnsFalse()
    {
        Assert.False(Money.TryParse(null, out _, out var error));
        Assert.NotNull(error);
    }

    [Fact]
    public void TryParse_MoreThanSixDecimals_NamesTheDecimalLimit()
    {
        Assert.False(Money.TryParse("1.0000001", out _, out var error));
        Assert.Contains("6 decimal places", error);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(-1L)]
    [InlineData(999_999L)]
    [InlineData(-1_000_001L)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    public void Parse_FormattedValue_RoundTrips(long micros) =>
        Assert.Equal(micros, Money.Parse(Money.FormatMicros(micros)).Micros);

    [Fact]
    public void Operators_WithinRange_ComputeExactly()
    {
        var a = new Money(1_500_000);
        var b = new Money(-250_000);
        Assert.Equal(new Money(1_250_000), a + b);
        Assert.Equal(new Money(1_750_000), a - b);
        Assert.Equal(new Money(-1_500_000), -a);
        Assert.Equal(new Money(4_500_000), a * 3);
        var aCopy = new Money(1_500_000);
        Assert.True(b < a && a > b && a >= aCopy && a <= aCopy && !(a < aCopy) && !(a > aCopy));
        Assert.True(b.IsNegative && a.IsPositive && !Money.Zero.IsPositive && !Money.Zero.IsNegative);
        Assert.Equal(-1, b.CompareTo(a));
    }

    [Fact]
    public void Operators_Overflow_ThrowInsteadOfWrapping()
    {
        var max = new Money(long.MaxValue);
        var min = new Money(long.MinValue);
        Assert.Throws<OverflowException>(() => max + new Money(1));
        Assert.Throws<OverflowException>(() => min + new Money(-1));
        Assert.Throws<OverflowException>(() => min - new Money(1));
        Assert.Throws<OverflowException>(() => max - new Money(-1));
        Assert.Throws<OverflowException>(() => -min);
        Assert.Throws<OverflowException>(() => max * 2);
        Assert.Throws<OverflowException>(() => min * -1);
        Assert.Throws<OverflowException>(() => new Money(long.MaxValue / 2 + 1) * 2);
        // The edges themselves are fine.
        Assert.Equal(long.MaxValue, (max + new Money(0)).Micros);
        Assert.Equal(long.MinValue + 1, (-max).Micros);
    }

    [Theory]
    // value in USD, expected micros for Up, Down, HalfEven
    [InlineData("1.0000005", 1_000_001L, 1_000_000L, 1_000_000L)]    // exact tie, even neighbour below
    [InlineData("1.0000015", 1_000_002L, 1_000_001L, 1_000_002L)]    // exact tie, even neighbour above
    [InlineData("-1.0000005", -1_000_000L, -1_000_001L, -1_000_000L)]
    [InlineData("-1.0000015", -1_000_001L, -1_000_002L, -1_000_002L)]
    [InlineData("0.0000004", 1L, 0L, 0L)]
    [InlineData("0.0000006", 1L, 0L, 1L)]
    [InlineData("-0.0000004", 0L, -1L, 0L)]
    [InlineData("-0.0000006", 0L, -1L, -1L)]
    [InlineData("0.00000050000001", 1L, 0L, 1L)]                   // just above a tie
    [InlineData("0.00000049999999", 1L, 0L, 0L)]                   // just below a tie
    [InlineData("2.5", 2_500_000L, 2_500_000L, 2_500_000L)]         // exact: no rounding at all
    [InlineData("-2.5", -2_500_000L, -2_500_000L, -2_500_000L)]
    [InlineData("0", 0L, 0L, 0L)]
    public void FromUsd_EachRounding_RoundsInItsDirection(string usd, long up, long down, long halfEven)
    {
        var value = decimal.Parse(usd, System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(up, Money.FromUsd(value, Rounding.Up).Micros);
        Assert.Equal(down, Money.FromUsd(value, Rounding.Down).Micros);
        Assert.Equal(halfEven, Money.FromUsd(value, Rounding.HalfEven).Micros);
    }

    [Fact]
    public void FromUsd_AtAndBeyondRange_FitsExactlyOrThrows()
    {
        Assert.Equal(long.MaxValue, Money.FromUsd(9_223_372_036_854.775807m, Rounding.Up).Micros);
        Assert.Equal(long.MinValue, Money.FromUsd(-9_223_372_036_854.775808m, Rounding.Down).Micros);
        Assert.Throws<OverflowException>(() => Money.FromUsd(9_223_372_036_854.775808m, Rounding.Down));
        // Rounding up may be what pushes a value out of range.
        Assert.Throws<OverflowException>(() => Money.FromUsd(9_223_372_036_854.7758071m, Rounding.Up));
        Assert.Equal(long.MaxValue, Money.FromUsd(9_223_372_036_854.7758071m, Rounding.Down).Micros);
        Assert.Throws<OverflowException>(() => Money.FromUsd(-9_223_372_036_854.7758081m, Rounding.Down));
        Assert.Throws<OverflowException>(() => Money.FromUsd(decimal.MaxValue, Rounding.Down));
        Assert.Throws<ArgumentOutOfRangeException>(() => Money.FromUsd(1m, (Rounding)42));
    }

    [Theory]
    // value × numerator ÷ denominator; expected for Up, Down, HalfEven
    [InlineData(7L, 1L, 2L, 4L, 3L, 4L)]        // 3.5: tie to even 4
    [InlineData(5L, 1L, 2L, 3L, 2L, 2L)]        // 2.5: tie to even 2
    [InlineData(-7L, 1L, 2L, -3L, -4L, -4L)]    // −3.5: tie to even −4
    [InlineData(-5L, 1L, 2L, -2L, -3L, -2L)]    // −2.5: tie to even −2
    [InlineData(7L, -1L, 2L, -3L, -4L, -4L)]    // sign from the numerator
    [InlineData(10L, 1L, 3L, 4L, 3L, 3L)]       // 3.33…
    [InlineData(20L, 1L, 3L, 7L, 6L, 7L)]       // 6.66…
    [InlineData(-10L, 1L, 3L, -3L, -4L, -3L)]
    [InlineData(-20L, 1L, 3L, -6L, -7L, -7L)]
    [InlineData(12L, 5L, 4L, 15L, 15L, 15L)]    // exact
    [InlineData(0L, 5L, 7L, 0L, 0L, 0L)]
    [InlineData(2_500_000L, 1L, 1_000_000L, 3L, 2L, 2L)]      // $2.50 per million tokens × 1 token = 2.5 micros
    [InlineData(2_500_000L, 3L, 1_000_000L, 8L, 7L, 8L)]      // × 3 tokens = 7.5 micros
    [InlineData(1L, 1L, 1_000_000L, 1L, 0L, 0L)]
    public void MulDiv_EachRounding_RoundsOnceInItsDirection(long value, long numerator, long denominator, long up, long down, long halfEven)
    {
        Assert.Equal(up, Money.MulDiv(value, numerator, denominator, Rounding.Up));
        Assert.Equal(down, Money.MulDiv(value, numerator, denominator, Rounding.Down));
        Assert.Equal(halfEven, Money.MulDiv(value, numerator, denominator, Rounding.HalfEven));
    }

    [Fact]
    public void MulDiv_IntermediateBeyond64Bits_StaysExact()
    {
        Assert.Equal(long.MaxValue, Money.MulDiv(long.MaxValue, long.MaxValue, long.MaxValue, Rounding.Down));
        Assert.Equal(long.MinValue, Money.MulDiv(long.MinValue, long.MaxValue, long.MaxValue, Rounding.Up));
        // 4,000,000,000,000 micros × 3,000,000 tokens ÷ 1,000,000 = 12e12 × 1e6 / 1e6, product 1.2e19 > long.MaxValue.
        Assert.Equal(12_000_000_000_000L, Money.MulDiv(4_000_000_000_000L, 3_000_000L, 1_000_000L, Rounding.HalfEven));
        // (2^62 + 1) × 3 ÷ 2 = 6917529027641081857.5 → a tie beyond 64-bit products.
        Assert.Equal(6_917_529_027_641_081_858L, Money.MulDiv((1L << 62) + 1, 3, 2, Rounding.HalfEven));
        Assert.Equal(6_917_529_027_641_081_857L, Money.MulDiv((1L << 62) + 1, 3, 2, Rounding.Down));
    }

    [Fact]
    public void MulDiv_ResultOutOfRangeOrBadDenominator_Throws()
    {
        Assert.Throws<OverflowException>(() => Money.MulDiv(long.MaxValue, 2, 1, Rounding.Down));
        Assert.Throws<OverflowException>(() => Money.MulDiv(long.MinValue, -1, 1, Rounding.Down));
        // 2,753,074,036,095 × 6,700,417 = 2^64 − 1, so ÷ 2 = long.MaxValue + 0.5: only rounding away from it overflows.
        Assert.Equal(long.MaxValue, Money.MulDiv(2_753_074_036_095, 6_700_417, 2, Rounding.Down));
        Assert.Throws<OverflowException>(() => Money.MulDiv(2_753_074_036_095, 6_700_417, 2, Rounding.Up));
        Assert.Throws<OverflowException>(() => Money.MulDiv(2_753_074_036_095, 6_700_417, 2, Rounding.HalfEven));
        Assert.Throws<ArgumentOutOfRangeException>(() => Money.MulDiv(1, 1, 0, Rounding.Up));
        Assert.Throws<ArgumentOutOfRangeException>(() => Money.MulDiv(1, 1, -3, Rounding.Up));
        Assert.Throws<ArgumentOutOfRangeException>(() => Money.MulDiv(1, 1, 3, (Rounding)42));
    }
}
