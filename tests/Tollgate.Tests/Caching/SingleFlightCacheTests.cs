using Tollgate.Infrastructure;

namespace Tollgate.Tests.Caching;

public sealed class SingleFlightCacheTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task Concurrent_misses_for_one_key_share_a_single_load()
    {
        var cache = new SingleFlightCache<string, int>(TimeSpan.FromSeconds(1), 100);
        var loads = 0;
        var release = new TaskCompletionSource();
        async Task<int> Load(string _, int value)
        {
            Interlocked.Increment(ref loads);
            await release.Task;
            return value;
        }
        var callers = Enumerable.Range(0, 32).Select(_ => cache.GetAsync("hot", T0, 7, Load, CancellationToken.None).AsTask()).ToArray();
        release.SetResult();
        Assert.All(await Task.WhenAll(callers), v => Assert.Equal(7, v));
        Assert.Equal(1, loads);
    }

    [Fact]
    public async Task An_entry_is_reloaded_once_it_expires_and_not_before()
    {
        var cache = new SingleFlightCache<string, int>(TimeSpan.FromSeconds(1), 100);
        var loads = 0;
        Task<int> Load(string _, int __) => Task.FromResult(Interlocked.Increment(ref loads));
        Assert.Equal(1, await cache.GetAsync("k", T0, 0, Load, CancellationToken.None));
        Assert.Equal(1, await cache.GetAsync("k", T0.AddMilliseconds(999), 0, Load, CancellationToken.None));
        Assert.Equal(2, await cache.GetAsync("k", T0.AddSeconds(1), 0, Load, CancellationToken.None));
        cache.Remove("k");
        Assert.Equal(3, await cache.GetAsync("k", T0.AddSeconds(1), 0, Load, CancellationToken.None));
    }

    [Fact]
    public async Task A_failed_load_reaches_every_waiting_caller_and_is_not_cached()
    {
        var cache = new SingleFlightCache<string, int>(TimeSpan.FromMinutes(1), 100);
        var release = new TaskCompletionSource();
        async Task<int> Fail(string _, int __) { await release.Task; throw new InvalidOperationException("database down"); }
        var first = cache.GetAsync("k", T0, 0, Fail, CancellationToken.None).AsTask();
        var second = cache.GetAsync("k", T0, 0, Fail, CancellationToken.None).AsTask();
        release.SetResult();
        await Assert.ThrowsAsync<InvalidOperationException>(() => first);
        await Assert.ThrowsAsync<InvalidOperationException>(() => second);
        Assert.Equal(5, await cache.GetAsync("k", T0, 5, (_, v) => Task.FromResult(v), CancellationToken.None));
    }

    [Fact]
    public async Task A_cancelled_caller_stops_waiting_without_failing_the_shared_load()
    {
        var cache = new SingleFlightCache<string, int>(TimeSpan.FromMinutes(1), 100);
        var release = new TaskCompletionSource();
        async Task<int> Load(string _, int v) { await release.Task; return v; }
        using var hangUp = new CancellationTokenSource();
        var leaving = cache.GetAsync("k", T0, 3, Load, hangUp.Token).AsTask();
        var staying = cache.GetAsync("k", T0, 3, Load, CancellationToken.None).AsTask();
        hangUp.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving);
        release.SetResult();
        Assert.Equal(3, await staying);
    }
}
