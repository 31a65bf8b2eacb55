using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Tollgate.Features.Webhooks;

namespace Tollgate.Features.Alerts;

/// <summary>Configuration section <c>Tollgate:Alerts</c>.</summary>
public sealed record AlertOptions
{
    public const string Section = "Tollgate:Alerts";

    public static readonly IReadOnlyList<int> StandardThresholds = [50, 80, 100];

    /// <summary>Usage thresholds in percent of a limit for accounts without their own (<c>Tollgate:Alerts:DefaultThresholds:0 = 50</c> …); unset: 50, 80, 100.</summary>
    public int[]? DefaultThresholds { get; init; }

    /// <summary>Low-balance line in micro-USD for accounts without their own setting; unset: no low-balance alerts by default.</summary>
    public long? DefaultBalanceLowMicros { get; init; }

    /// <summary>How long an account's settings and unresolved alerts are cached per process; default 5 s (a change by another process shows within it).</summary>
    public TimeSpan CacheTtl { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Observations queued off the request path (<see cref="AlertService.PostUsage"/>); beyond this they are dropped and logged. Default 10,000.</summary>
    public int QueueCapacity { get; init; } = 10_000;

    public IReadOnlyList<int> EffectiveThresholds => DefaultThresholds is { Length: > 0 } t ? Normalise(t) : StandardThresholds;

    public const int MaxThresholds = 10, MaxThresholdPercent = 1_000;

    public static IReadOnlyList<int> Normalise(IEnumerable<int> thresholds) => thresholds.Distinct().Order().ToArray();

    public static string? ThresholdProblem(IReadOnlyList<int> thresholds) =>
        thresholds.Count > MaxThresholds ? $"at most {MaxThresholds} thresholds"
        : thresholds.Any(t => t is < 1 or > MaxThresholdPercent) ? $"each threshold must be 1–{MaxThresholdPercent} (percent)"
        : null;
}

/// <summary>An account's alert settings in force (its own, or the configured defaults).</summary>
public sealed record AlertSettings(IReadOnlyList<int> Thresholds, long? BalanceLowMicros, bool IsDefault);

/// <summary>
/// The alerts engine. Other features report what they measure; the engine decides whether a threshold was crossed
/// or an alert is over, and turns each into an <c>alert.fired</c> / <c>alert.resolved</c> event for the webhooks.
///
///   ObserveUsageAsync(account, subject, period, used, limit)
///     1. for each threshold t (percent) with used·100 ≥ limit·t not yet known to have fired here:
///        insert (account, subject, period, t) on conflict do nothing; fire only if inserted (once, across processes)
///     2. for each unresolved alert of the subject: resolve it if it belongs to another period (a new period began)
///        or the limit changed and usage is now below its threshold (a raised limit)
///   ObserveBalanceAsync(account, balance)
///     balance &lt; the account's low line → fire "balance:low" unless one is unresolved; at or above → resolve it
///
/// The arithmetic is integers only; the database is written only when something fires or resolves (reads of the
/// settings and unresolved alerts are cached for <see cref="AlertOptions.CacheTtl"/>). Hot paths call
/// <see cref="PostUsage"/> / <see cref="PostBalance"/>, which queue the observation for a background reader.
/// </summary>
internal sealed partial class AlertService(AlertStore store, WebhookSignal webhooks, IOptions<AlertOptions> options, TimeProvider time,
    ILogger<AlertService> logger) : BackgroundService
{
    private const int MaxCacheEntries = 100_000;
    private readonly AlertOptions _options = options.Value;
    private readonly Channel<Observation> _queue = Channel.CreateBounded<Observation>(new BoundedChannelOptions(options.Value.QueueCapacity)
    {
        SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite,
    });
    private readonly ConcurrentDictionary<string, (AlertSettings Settings, long Until)> _settings = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string Account, string Subject), (IReadOnlyList<ActiveAlert> Alerts, long Until)> _active = new();
    private readonly ConcurrentDictionary<(string Account, string Subject, string Period, int Threshold), byte> _fired = new();

    private readonly record struct Observation(string AccountId, string? Subject, string? PeriodKey, long Used, long Limit, long BalanceMicros);

    /// <summary>
    /// Reports usage of a limited thing: <paramref name="used"/> units of <paramref name="limit"/> in the period
    /// <paramref name="periodKey"/> (any stable text naming the period, e.g. its start). <paramref name="subject"/> names
    /// the thing, e.g. <c>quota:requests</c>, <c>cap:key:{keyId}:monthly</c>, <c>cap:account:daily</c>. Units are the
    /// caller's (requests, micro-USD…), the same for both numbers. A limit ≤ 0 means unlimited: nothing to do.
    /// </summary>
    public async Task ObserveUsageAsync(string accountId, string subject, string periodKey, long used, long limit, CancellationToken ct)
    {
        if (limit <= 0) return;
        var settings = await SettingsAsync(accountId, ct);
        var now = time.GetUtcNow();
        var changed = false;
        foreach (var t in settings.Thresholds)
        {
            if (!Crossed(used, limit, t)) continue;
            var key = (accountId, subject, periodKey, t);
            if (_fired.ContainsKey(key)) continue;
            var alert = await store.TryFireAsync(accountId, subject, periodKey, t, used, limit, null, now, ct);
            if (_fired.Count >= MaxCacheEntries) _fired.Clear();
            _fired[key] = 0;
            if (alert is not null) { changed = true; LogFired(logger, accountId, subject, t, periodKey); }
        }
        if (changed) _active.TryRemove((accountId, subject), out _);

        var resolvedAny = false;
        foreach (var a in await ActiveAsync(accountId, subject, ct))
        {
            var newPeriod = a.PeriodKey != periodKey;
            var raisedLimit = !newPeriod && a.Limit != limit && !Crossed(used, limit, a.ThresholdPercent);
            if (!newPeriod && !raisedLimit) continue;
            resolvedAny = true;
            if (await store.TryResolveAsync(accountId, a.Id, used, limit, null, now, ct) is not null)
            {
                changed = true;
                LogResolved(logger, accountId, subject, a.ThresholdPercent);
            }
        }
        if (resolvedAny) _active.TryRemove((accountId, subject), out _);
        if (changed) webhooks.Notify();
    }

    /// <summary>
    /// Reports an account's balance (micro-USD, after a charge or a top-up). Below the account's low line a
    /// <c>balance:low</c> alert fires, once until the balance is back at or above the line (then it resolves).
    /// </summary>
    public async Task ObserveBalanceAsync(string accountId, long balanceMicros, CancellationToken ct)
    {
        var settings = await SettingsAsync(accountId, ct);
        // Most accounts have no low line: nothing to read (an alert left from a removed line is resolved by SaveSettingsAsync).
        if (settings.BalanceLowMicros is not { } low) return;
        var active = await ActiveAsync(accountId, AlertStore.BalanceLowSubject, ct);
        var now = time.GetUtcNow();
        if (balanceMicros < low)
        {
            if (active.Count > 0) return;
            var alert = await store.TryFireAsync(accountId, AlertStore.BalanceLowSubject, "", 0, null, low, balanceMicros, now, ct);
            _active.TryRemove((accountId, AlertStore.BalanceLowSubject), out _);
            if (alert is null) return;
            LogFired(logger, accountId, AlertStore.BalanceLowSubject, 0, "");
            webhooks.Notify();
            return;
        }
        if (active.Count == 0) return;
        var changed = false;
        foreach (var a in active)
            if (await store.TryResolveAsync(accountId, a.Id, null, low, balanceMicros, now, ct) is not null)
            {
                changed = true;
                LogResolved(logger, accountId, AlertStore.BalanceLowSubject, 0);
            }
        _active.TryRemove((accountId, AlertStore.BalanceLowSubject), out _);
        if (changed) webhooks.Notify();
    }

    /// <summary>Queues <see cref="ObserveUsageAsync"/> off the caller's path; never throws, never waits.</summary>
    public void PostUsage(string accountId, string subject, string periodKey, long used, long limit)
    {
        if (!_queue.Writer.TryWrite(new Observation(accountId, subject, periodKey, used, limit, 0))) LogDropped(logger, accountId, subject);
    }

    /// <summary>Queues <see cref="ObserveBalanceAsync"/> off the caller's path; never throws, never waits.</summary>
    public void PostBalance(string accountId, long balanceMicros)
    {
        if (!_queue.Writer.TryWrite(new Observation(accountId, null, null, 0, 0, balanceMicros))) LogDropped(logger, accountId, AlertStore.BalanceLowSubject);
    }

    /// <summary>Observations queued and not yet taken by the background reader.</summary>
    public int Queued => _queue.Reader.Count;

    /// <summary>used / limit ≥ threshold / 100, in integers (no rounding, no overflow).</summary>
    public static bool Crossed(long used, long limit, int thresholdPercent) => (Int128)used * 100 >= (Int128)limit * thresholdPercent;

    public async Task<AlertSettings> SettingsAsync(string accountId, CancellationToken ct)
    {
        var tick = Stopwatch.GetTimestamp();
        if (_settings.TryGetValue(accountId, out var cached) && cached.Until > tick) return cached.Settings;
        var row = await store.SettingsAsync(accountId, ct);
        var settings = row is null
            ? new AlertSettings(_options.EffectiveThresholds, _options.DefaultBalanceLowMicros, true)
            : new AlertSettings(row.Thresholds, row.BalanceLowMicros, false);
        if (_settings.Count >= MaxCacheEntries) _settings.Clear();
        _settings[accountId] = (settings, tick + Ttl);
        return settings;
    }

    public async Task<AlertSettings> SaveSettingsAsync(string accountId, IReadOnlyList<int> thresholds, long? balanceLowMicros, CancellationToken ct)
    {
        var normalised = AlertOptions.Normalise(thresholds);
        await store.SaveSettingsAsync(accountId, normalised, balanceLowMicros, time.GetUtcNow(), ct);
        _settings.TryRemove(accountId, out _);
        if (balanceLowMicros is null)
        {
            // No line any more: an unresolved low-balance alert would otherwise stay active for ever.
            var resolved = false;
            foreach (var a in await store.ActiveAsync(accountId, AlertStore.BalanceLowSubject, ct))
                resolved |= await store.TryResolveAsync(accountId, a.Id, null, null, null, time.GetUtcNow(), ct) is not null;
            _active.TryRemove((accountId, AlertStore.BalanceLowSubject), out _);
            if (resolved) webhooks.Notify();
        }
        return new AlertSettings(normalised, balanceLowMicros, false);
    }

    private long Ttl => (long)(_options.CacheTtl.TotalSeconds * Stopwatch.Frequency);

    private async Task<IReadOnlyList<ActiveAlert>> ActiveAsync(string accountId, string subject, CancellationToken ct)
    {
        var tick = Stopwatch.GetTimestamp();
        if (_active.TryGetValue((accountId, subject), out var cached) && cached.Until > tick) return cached.Alerts;
        var alerts = await store.ActiveAsync(accountId, subject, ct);
        if (_active.Count >= MaxCacheEntries) _active.Clear();
        _active[(accountId, subject)] = (alerts, tick + Ttl);
        return alerts;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var o in _queue.Reader.ReadAllAsync(stoppingToken))
            {
                try
                {
                    if (o.Subject is null) await ObserveBalanceAsync(o.AccountId, o.BalanceMicros, stoppingToken);
                    else await ObserveUsageAsync(o.AccountId, o.Subject, o.PeriodKey!, o.Used, o.Limit, stoppingToken);
                }
                catch (Exception e) when (!stoppingToken.IsCancellationRequested)
                {
                    LogObserveFailed(logger, e, o.AccountId, o.Subject ?? AlertStore.BalanceLowSubject);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Alert fired for account {AccountId}: {Subject} at {Threshold}% in period '{Period}'.")]
    private static partial void LogFired(ILogger logger, string accountId, string subject, int threshold, string period);

    [LoggerMessage(Level = LogLevel.Information, Message = "Alert resolved for account {AccountId}: {Subject} at {Threshold}%.")]
    private static partial void LogResolved(ILogger logger, string accountId, string subject, int threshold);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The alert queue is full; an observation of {Subject} for account {AccountId} was dropped.")]
    private static partial void LogDropped(ILogger logger, string accountId, string subject);

    [LoggerMessage(Level = LogLevel.Error, Message = "An alert observation of {Subject} for account {AccountId} failed.")]
    private static partial void LogObserveFailed(ILogger logger, Exception e, string accountId, string subject);
}
