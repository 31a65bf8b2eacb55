namespace Tollgate.Infrastructure;

/// <summary>Timestamps are stored as Unix microseconds (bigint) on both engines; conversions live here only.</summary>
public static class UnixMicros
{
    public static long From(DateTimeOffset time) => (time - DateTimeOffset.UnixEpoch).Ticks / TimeSpan.TicksPerMicrosecond;

    public static DateTimeOffset ToDateTimeOffset(long micros) => DateTimeOffset.UnixEpoch.AddTicks(micros * TimeSpan.TicksPerMicrosecond);

    public static long GetUtcNowMicros(this TimeProvider time) => From(time.GetUtcNow());
}
