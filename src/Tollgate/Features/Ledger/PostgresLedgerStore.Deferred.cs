using System.Diagnostics;
using Npgsql;

namespace Tollgate.Features.Ledger;

// ---- Deferred writes ----
// Under the claim (see "Exclusive writer") the cached state is exact, so the writer thread need not wait for a batch's
// round trip before applying the next one: it applies each batch to the cache, acknowledges its holds, and hands the
// write to a sender thread of its own. While one write is in flight the next batches queue; the sender writes all of
// them as one transaction (one state check: each account as the first of them found it; every row they insert; each
// account as the last left it), so a busy ledger makes few, large commits and the writer thread never waits on I/O.
// Other commands (settlements with their usage records, payments, voids) are acknowledged once their transaction
// commits, as before.
// Another writer asking for the claim does not take it from under queued writes: a deferred write passes keep_held
// (migration 0028), so the holder keeps the claim and is told (a negative result); it stops deferring, writes what it
// queued, and lets go at its next ordinary batch.
// When a deferred write fails, nothing of it was written; every batch not yet committed (applied to a state that now
// never was) goes back to the writer thread, which drops the cache and applies them again the ordinary way, in order.
// Their holds, acknowledged already, keep their results: the case a relaxed commit allows for (a settlement then
// charges at most what is available).
internal sealed partial class PostgresLedgerStore
{
    /// <summary>A batch applied to the cached state, waiting for its write.</summary>
    private sealed record Deferred(IReadOnlyList<LedgerCommand> Batch, LedgerStateCache.StateCheck Check, LedgerBatchWrites Writes, int Transfers);

    /// <summary>Most transfers written in one deferred transaction.</summary>
    private const int MaxDeferredTransfers = 2_000;

    /// <summary>
    /// A write in flight for longer than this (a stalled server) stops further deferring: the claim might lapse before
    /// the batches queued behind it get there, so the writer waits for it instead.
    /// </summary>
    private static readonly long MaxInFlightTicks = Stopwatch.Frequency / 10;

    private readonly object _pipe = new();
    private readonly Queue<Deferred> _unsent = new();
    private bool _writing;
    private long _writeSentAt;
    /// <summary>Set when a deferred write failed: every batch not committed, in order, for the writer thread to apply again.</summary>
    private List<Deferred>? _failed;
    private Exception? _failure;
    private bool _failedUnderClaim;
    private long _failedSentAt;
    private bool _stopping;
    private Thread? _sender;
    private Action? _deferredFailed;

    /// <summary>Batches applied to the cached state and left to the sender.</summary>
    public long DeferredBatches { get; private set; }

    /// <summary>Deferred transactions committed (each writes one or more deferred batches).</summary>
    public long DeferredWrites { get; private set; }

    public void OnDeferredFailure(Action wakeWriter) => _deferredFailed = wakeWriter;

    /// <summary>Called on the sender thread after each deferred transaction commits: its commands, and seconds from send to commit.</summary>
    public Action<int, double>? DeferredWriteCommitted { get; set; }

    public bool TryDefer(IReadOnlyList<LedgerCommand> batch, long nowMicros)
    {
        var now = Stopwatch.GetTimestamp();
        if (now >= Volatile.Read(ref _exclusiveUntil)) return false;
        lock (_pipe)
        {
            if (_failed is not null || _stopping || (_writing && now - _writeSentAt > MaxInFlightTicks)) return false;
        }
        if (_cache.TryTake(batch) is not { } snapshot) return false;

        var writes = new LedgerBatchProcessor(snapshot.Accounts, snapshot.Known, nowMicros).Apply(batch);
        // The next batch starts from what this one leaves, before the database has it.
        _cache.Remember(snapshot.Accounts, snapshot.Known);
        var transfers = 0;
        foreach (var c in batch) transfers += c.Transfers.Count;
        var deferred = new Deferred(batch, snapshot.Check, writes, transfers);
        DeferredBatches++;
        lock (_pipe)
        {
            if (_failed is not null)
            {
                // Applied to a state the failed write never made: it is applied again with the rest, not acknowledged now.
                _failed.Add(deferred);
                return true;
            }
            AcknowledgeEarly(batch);
            _unsent.Enqueue(deferred);
            if (_unsent.Count == 1) Monitor.PulseAll(_pipe);
        }
        _sender ??= StartSender();
        return true;
    }

    public IReadOnlyList<IReadOnlyList<LedgerCommand>> DrainDeferred()
    {
        List<Deferred>? failed;
        Exception? failure;
        lock (_pipe)
        {
            while (_unsent.Count > 0 || _writing) Monitor.Wait(_pipe);
            (failed, failure) = (_failed, _failure);
            (_failed, _failure) = (null, null);
        }
        if (failed is null) return [];
        _cache.Clear();
        if (failure is PostgresException { SqlState: StaleStateCode }) FoundStale(_failedSentAt, _failedUnderClaim);
        else if (failure is PostgresException { SqlState: UnknownReplayCode }) SpeculationFailures++;
        _exclusiveUntil = 0;
        return failed.Select(d => d.Batch).ToList();
    }

    public IReadOnlyList<IReadOnlyList<LedgerCommand>> TakeFailedDeferred()
    {
        lock (_pipe)
            if (_failed is null) return [];
        return DrainDeferred();
    }

    /// <summary>Throws when deferred writes are pending: the ordinary path reads the database, which does not have them yet.</summary>
    private void EnsureNothingDeferred()
    {
        lock (_pipe)
            if (_unsent.Count > 0 || _writing || _failed is not null)
                throw new InvalidOperationException("Deferred ledger writes are pending; DrainDeferred first.");
    }

    private Thread StartSender()
    {
        var thread = new Thread(SendLoop) { IsBackground = true, Name = "tollgate-ledger-sender" };
        thread.Start();
        return thread;
    }

    private void SendLoop()
    {
        while (true)
        {
            List<Deferred> transaction;
            long sentAt;
            bool underClaim;
            lock (_pipe)
            {
                while (_unsent.Count == 0 && !_stopping) Monitor.Wait(_pipe);
                if (_unsent.Count == 0) return;
                transaction = [_unsent.Dequeue()];
                var transfers = transaction[0].Transfers;
                while (_unsent.TryPeek(out var d) && transfers + d.Transfers <= MaxDeferredTransfers)
                {
                    transaction.Add(_unsent.Dequeue());
                    transfers += d.Transfers;
                }
                _writing = true;
                sentAt = _writeSentAt = Stopwatch.GetTimestamp();
                underClaim = sentAt < Volatile.Read(ref _exclusiveUntil);
            }

            Exception? failure = null;
            var heldMs = 0;
            try
            {
                heldMs = WriteDeferred(transaction);
            }
            catch (Exception e)
            {
                failure = e;
            }

            lock (_pipe)
            {
                _writing = false;
                if (failure is null)
                {
                    DeferredWrites++;
                    SpeculatedBatches++;
                    Claimed(heldMs, sentAt);
                }
                else
                {
                    Volatile.Write(ref _exclusiveUntil, 0);
                    _failed = [.. transaction, .. _unsent];
                    _unsent.Clear();
                    (_failure, _failedUnderClaim, _failedSentAt) = (failure, underClaim, sentAt);
                }
                Monitor.PulseAll(_pipe);
            }
            if (failure is null)
            {
                var commands = 0;
                foreach (var d in transaction)
                    foreach (var command in d.Batch)
                    {
                        command.Acknowledge();
                        commands++;
                    }
                DeferredWriteCommitted?.Invoke(commands, Stopwatch.GetElapsedTime(sentAt).TotalSeconds);
            }
            else _deferredFailed?.Invoke();
        }
    }

    /// <summary>Writes deferred batches as one transaction; returns the claim's milliseconds.</summary>
    private int WriteDeferred(List<Deferred> transaction)
    {
        var (batch, check, writes) = transaction.Count == 1
            ? (transaction[0].Batch, transaction[0].Check, transaction[0].Writes)
            : (transaction.SelectMany(d => d.Batch).ToList(),
               LedgerStateCache.StateCheck.Merge(transaction.Select(d => d.Check).ToList()),
               LedgerBatchWrites.Merge(transaction.Select(d => d.Writes)));
        var connection = db.OpenPostgresLedgerWriter();
        try
        {
            // Keeps the claim through another writer's request: holds acknowledged under it may still be queued behind.
            var heldMs = WriteChecked(connection, batch, check, writes, keepHeld: true);
            connection.Dispose();
            return heldMs;
        }
        catch
        {
            Discard(connection);
            throw;
        }
    }

    private void StopSender()
    {
        lock (_pipe)
        {
            _stopping = true;
            Monitor.PulseAll(_pipe);
        }
        _sender?.Join();
    }
}
