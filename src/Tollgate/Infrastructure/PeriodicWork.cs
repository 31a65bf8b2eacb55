namespace Tollgate.Infrastructure;

/// <summary>
/// The loop behind Tollgate's background jobs (hold expiry, plan and price reloads, the chain watcher, the rollup fold):
/// one round of work per tick until the host stops. A failed round is reported and the next tick retries it, so one
/// bad moment (a database restart, say) never ends the job.
/// </summary>
internal static class PeriodicWork
{
    /// <param name="runAtStart">Run a round right away instead of waiting for the first tick.</param>
    public static async Task RunAsync(TimeSpan every, TimeProvider time, Func<CancellationToken, Task> round, Action<Exception> failed,
        CancellationToken stop, bool runAtStart = false)
    {
        using var timer = new PeriodicTimer(every, time);
        if (runAtStart && !await RoundAsync(round, failed, stop)) return;
        while (await timer.WaitForNextTickAsync(stop))
            if (!await RoundAsync(round, failed, stop)) return;
    }

    /// <summary>One round; false once the host is stopping.</summary>
    private static async Task<bool> RoundAsync(Func<CancellationToken, Task> round, Action<Exception> failed, CancellationToken stop)
    {
        try
        {
            await round(stop);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            return false;
        }
        catch (Exception e)
        {
            failed(e);
        }
        return true;
    }
}
