using Tollgate.Infrastructure.Money;

namespace Tollgate.Tests.Money;

public sealed class CreditUnitTests
{
    private static readonly CreditUnit Milli = new(1_000);   // the default: 1 credit = $0.001
    private static readonly CreditUnit Micro = new(1);       // 1 credit = 1 micro-USD

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(1L, "0.001")]
    [InlineData(999L, "0.999")]
    [InlineData(1_500L, "1.5")]
    [InlineData(-1_500L, "-1.5")]
    [InlineData(1_000_000L, "1000")]
    [InlineData(123_456_789L, "123456.789")]
    [InlineData(long.MaxValue, "9223372036854775.807")]
    [InlineData(long.MinValue, "-9223372036854775.808")]
    public void Format_ThousandMicrosPerCredit_WritesExactCredits(long micros, string expected) =>
        Assert.Equal(expected, Milli.Format(micros));

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(1L, "1")]
    [InlineData(-7L, "-7")]
    [InlineData(1_500L, "1500")]
    [InlineData(long.MaxValue, "9223372036854775807")]
    [InlineData(long.MinValue, "-9223372036854775808")]
    public void Format_OneMicroPerCredit_WritesWholeCredits(long micros, string expected) =>
        Assert.Equal(expected, Micro.Format(micros));

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1", 1_000L)]
    [InlineData("1.5", 1_500L)]
    [InlineData("0.001", 1L)]
    [InlineData("1.0010", 1_001L)]       // trailing zeros below a micro are fine
    [InlineData("-2", -2_000L)]
    [InlineData("+2.25", 2_250L)]
    [InlineData("1000", 1_000_000L)]
    [InlineData("9223372036854775.807", long.MaxValue)]
    [InlineData("-9223372036854775.808", long.MinValue)]
    public void TryParseCredits_ThousandMicrosPerCredit_ReturnsMicros(string text, long expected)
    {
        Assert.True(Milli.TryParseCredits(text, out var micros, out var error), error);
        Assert.Equal(expected, micros);
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("5", 5L)]
    [InlineData("-5", -5L)]
    [InlineData("1.000000", 1L)]
    [InlineData("10000000000000", 10_000_000_000_000L)]   // $10M in micro-credits
    [InlineData("9223372036854775807", long.MaxValue)]
    [InlineData("-9223372036854775808", long.MinValue)]
    public void TryParseCredits_OneMicroPerCredit_ReturnsMicros(string text, long expected)
    {
        Assert.True(Micro.TryParseCredits(text, out var micros, out var error), error);
        Assert.Equal(expected, micros);
    }

    [Theory]
    [InlineData("0.0001")]
    [InlineData("0.0015")]
    [InlineData("-0.0005")]
    public void TryParseCredits_FinerThanOneMicro_IsRejectedNotRounded(string text)
    {
        Assert.False(Milli.TryParseCredits(text, out var micros, out var error));
        Assert.Equal(0, micros);
        Assert.Contains("not a whole number of micro-USD", error);
    }

    [Theory]
    [InlineData("0.5")]
    [InlineData("1.000001")]
    public void TryParseCredits_FractionOfAMicroCredit_IsRejected(string text)
    {
        Assert.False(Micro.TryParseCredits(text, out _, out var error));
        Assert.Contains("not a whole number of micro-USD", error);
    }

    [Theory]
    [InlineData("")]
    [InlineData(" 1")]
    [InlineData("1,5")]
    [InlineData("1e3")]
    [InlineData(".5")]
    [InlineData("5.")]
    [InlineData("1.0000001")]
    [InlineData("abc")]
    [InlineData("9223372036854775.808")]    // one micro beyond long.MaxValue
    [InlineData("-9223372036854775.809")]
    [InlineData("10000000000000000")]
    public void TryParseCredits_MalformedOrOutOfRange_ReturnsFalseWithError(string text)
    {
        Assert.False(Milli.TryParseCredits(text, out var micros, out var error));
        Assert.Equal(0, micros);
        Assert.False(string.IsNullOrWhiteSpace(error));
    }

    [Theory]
    [InlineData("9223372036854775808")]
    [InlineData("-9223372036854775809")]
    [InlineData("99999999999999999999999")]
    public void TryParseCredits_OneMicroPerCreditBeyondLong_ReturnsOutOfRange(string text)
    {
        Assert.False(Micro.TryParseCredits(text, out _, out var error));
        Assert.Contains("out of range", error);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(-1L)]
    [InlineData(999L)]
    [InlineData(1_001L)]
    [InlineData(-123_456_789L)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    public void TryParseCredits_FormattedValue_RoundTripsForBothUnits(long micros)
    {
        foreach (var unit in new[] { Milli, Micro })
        {
            var text = unit.Format(micros);
            Assert.True(unit.TryParseCredits(text, out var back, out var error), $"{unit.MicrosPerCredit}/credit '{text}': {error}");
            Assert.Equal(micros, back);
        }
    }
}
