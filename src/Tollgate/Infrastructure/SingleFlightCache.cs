using System.Collections.Concurrent;

namespace Tollgate.Infrastructure;

/// <summary>
/// A bounded in-process cache of values that live for a fixed time, whose misses are loaded once: when an entry is
/// absent or has expired, the first caller starts the load and every concurrent caller for the same key awaits that
/// same load. Without this, a hot key (32 gateway connections on one API key) costs one database query per in-flight
/// request each time its entry expires, instead of one.
/// </summary>
/// <remarks>
/// The load runs without the caller's cancellation token: other callers share it, and one caller hanging up must not
/// fail them all. A failed load is not cached; the next caller tries again.
/// </remarks>
internal sealed class SingleFlightCache<TKey, TValue>(TimeSpan ttl, int maxEntries) where TKey : notnull
{
    private sealed class Entry(DateTimeOffset expiresAt)
    {
        public readonly DateTimeOffset ExpiresAt = expiresAt;
        public readonly TaskCompletionSource<TValue> Value = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly ConcurrentDictionary<TKey, Entry> _entries = new();

    public int Count => _entries.Count;

    /// <param name="state">Passed to <paramref name="load"/>, so a hit allocates no closure.</param>

    public ValueTask<TValue> GetAsync<TState>(TKey key, DateTimeOffset now, TState state, Func<TKey, TState, Task<TValue>> load, CancellationToken ct)
    {
        while (true)
        {
            _entries.TryGetValue(key, out var seen);
            // A load in flight is shared even if it started just before the entry's expiry.
            if (seen is not null && (seen.ExpiresAt > now || !seen.Value.Task.IsCompleted))
            {
                var task = seen.Value.Task;
                return task.IsCompletedSuccessfully ? new ValueTask<TValue>(task.Result) : new ValueTask<TValue>(task.WaitAsync(ct));
            }
            var fresh = new Entry(now + ttl);
            if (seen is null)
            {
                if (_entries.Count >= maxEntries) _entries.Clear();
                if (!_entries.TryAdd(key, fresh)) continue;
            }
            else if (!_entries.TryUpdate(key, fresh, seen)) continue;
            return LoadAsync(key, fresh, state, load, ct);
        }
    }

    private ValueTask<TValue> LoadAsync<TState>(TKey key, Entry entry, TState state, Func<TKey, TState, Task<TValue>> load, CancellationToken ct)
    {
        _ = RunAsync(key, entry, state, load);
        var task = entry.Value.Task;
        return task.IsCompletedSuccessfully ? new ValueTask<TValue>(task.Result) : new ValueTask<TValue>(task.WaitAsync(ct));
    }

    private async Task RunAsync<TState>(TKey key, Entry entry, TState state, Func<TKey, TState, Task<TValue>> load)
    {
        try
        {
            entry.Value.SetResult(await load(key, state));
        }
        catch (Exception e)
        {
            _entries.TryRemove(new KeyValuePair<TKey, Entry>(key, entry));
            entry.Value.SetException(e);
        }
    }

    public void Remove(TKey key) => _entries.TryRemove(key, out _);

    public void RemoveWhere(Func<TKey, bool> match)
    {
        foreach (var key in _entries.Keys)
            if (match(key)) _entries.TryRemove(key, out _);
    }

    public void Clear() => _entries.Clear();
}
