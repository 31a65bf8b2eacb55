using Tollgate.Infrastructure;
using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Logging;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Ledger;

/// <summary>Ledger tuning. Configuration section <c>Tollgate:Ledger</c>.</summary>
public sealed record LedgerOptions
{
    public const string Section = "Tollgate:Ledger";

    /// <summary>Most transfers committed in one database transaction.</summary>
    [Range(1, 10_000)]
    public int MaxBatchTransfers { get; init; } = 2_000;

    /// <summary>How often the sweeper voids expired holds, in milliseconds.</summary>
    [Range(50, 600_000)]
    public int ExpirySweepIntervalMs { get; init; } = 1_000;

    /// <summary>Attempts for a batch that hit a retryable database error (deadlock, busy, unique race).</summary>
    [Range(1, 50)]
    public int MaxAttempts { get; init; } = 8;

    /// <summary>
    /// PostgreSQL: while this process holds the writer claim, apply batches to the writer's state and leave their
    /// writes to a sender thread (see PostgresLedgerStore, "Deferred writes"). Off: every batch waits for its own write.
    /// </summary>
    public bool DeferWrites { get; init; } = true;
}

/// <summary>
/// The ledger's public face. Callers submit transfers one at a time and await their own outcome; underneath,
/// a single writer loop drains whatever arrived while the previous commit was in flight and commits it as one
/// database transaction (group commit), so throughput grows with concurrency while each caller still gets
/// an acknowledgement only after its transfer is durable.
///
/// The writer loop is a thread of its own making synchronous database calls. Under load the thread pool's queue
/// holds the HTTP requests' work; a loop made of awaits would wait in that queue after every round trip, and every
/// request in the process waits on this loop. A thread of its own is woken by the kernel as soon as its socket has
/// the reply.
///
///   callers ──► queue ──► writer thread: take ≤ MaxBatchTransfers ──► store.Apply (one transaction; on PostgreSQL
///                                        and the next batch's locks and reads in the same round trip as the commit)
///                                            ▲                               │ per-transfer results
///                                            └── retry on deadlock/busy ◄────┘ split on a poisoned batch
///
/// On PostgreSQL, while this process is the only writer (the writer claim), the store may take a batch's write off this
/// thread instead (<see cref="ILedgerStore.TryDefer"/>, PostgresLedgerStore "Deferred writes"): the batch is applied to
/// the writer's cached state at once and its commands are acknowledged by the store when their write commits. A
/// deferred write that fails hands its batches back here, and they are applied again before anything else.
/// A caller that finds the writer thread asleep and nothing queued applies its own command that way, on its own thread
/// (see <see cref="_applying"/>): no thread is woken for a hold, and only the sender for a settlement.
/// </summary>
public sealed partial class LedgerService : IAsyncDisposable
{
    public const int MaxIdLength = 128;
    public const int MaxCodeLength = 64;
    public const int MaxReferenceLength = 256;
    public const int MaxDescriptionLength = 1_024;
    public const int MaxMetadataLength = 16_384;

    /// <summary>
    /// Largest amount of one transfer and largest credit limit: 10^15 micro-USD ($1 billion). Bounding single amounts
    /// keeps every counter at least 9,000 maximal transfers away from overflowing 64 bits.
    /// </summary>
    public const long MaxAmountMicros = 1_000_000_000_000_000;

    private readonly ILedgerStore _store;
    private readonly TimeProvider _time;
    private readonly LedgerOptions _options;
    private readonly ILogger<LedgerService> _logger;
    private readonly WriterQueue _queue = new();
    private readonly TaskCompletionSource _writerStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly Infrastructure.Metrics.TollgateMetrics? _metrics;

    /// <summary>
    /// Held by whoever applies batches to the store: the writer thread, except while it sleeps for work, or a caller
    /// applying its own command while the writer sleeps. Handing a command to a sleeping thread and a result back to
    /// the pool cost two thread wake-ups and context switches per command; without them Tollgate used 18 % less CPU
    /// per call on a busy two-core machine (BENCHMARKS.md, "Session 9"). A hold applied to the cached state takes microseconds.
    /// </summary>
    private readonly Lock _applying = new();

    /// <summary>Whether callers may apply their own commands when the writer sleeps (only deferrable ones, PostgreSQL).</summary>
    private readonly bool _callersApply;

    internal LedgerService(ILedgerStore store, TimeProvider time, LedgerOptions options, ILogger<LedgerService> logger,
        Infrastructure.Metrics.TollgateMetrics? metrics = null)
    {
        _metrics = metrics;
        _store = store;
        _time = time;
        _options = options;
        _logger = logger;
        _callersApply = options.DeferWrites && store is PostgresLedgerStore;
        if (store is PostgresLedgerStore postgres)
        {
            metrics?.ObserveLedgerSpeculation(() => postgres.SpeculatedBatches, () => postgres.SpeculationFailures);
            metrics?.ObserveLedgerEarlyAcknowledgements(() => postgres.EarlyAcknowledged, () => postgres.HoldsClaim ? 1L : 0L, () => postgres.StaleUnderClaim);
            metrics?.ObserveLedgerDeferredBatches(() => postgres.DeferredBatches);
            if (metrics is not null)
                postgres.DeferredWriteCommitted = (commands, seconds) =>
                {
                    metrics.LedgerBatchCommands.Record(commands);
                    metrics.LedgerCommit.Record(seconds);
                };
        }
        new Thread(WriteLoop) { IsBackground = true, Name = "tollgate-ledger-writer" }.Start();
    }

    internal ILedgerStore Store => _store;

    /// <summary>Applies one transfer; completes once it is durable (or failed with a result code).</summary>
    public async Task<TransferResult> TransferAsync(TransferRequest request, CancellationToken ct = default)
    {
        var results = await SubmitAsync([request], atomic: false, null, ct);
        return results[0];
    }

    /// <summary>Applies one transfer, committed as <paramref name="commit"/> says (relaxed durability, records written with it).</summary>
    public async Task<TransferResult> TransferAsync(TransferRequest request, LedgerCommit commit, CancellationToken ct = default)
    {
        var results = await SubmitAsync([request], atomic: false, commit, ct);
        return results[0];
    }

    /// <summary>Applies transfers all-or-nothing: either every one succeeds or none has any effect.</summary>
    public Task<TransferResult[]> TransferAtomicAsync(IReadOnlyList<TransferRequest> requests, CancellationToken ct = default) =>
        SubmitAsync(requests, atomic: true, null, ct);

    public Task<TransferResult[]> TransferAtomicAsync(IReadOnlyList<TransferRequest> requests, LedgerCommit commit, CancellationToken ct = default) =>
        SubmitAsync(requests, atomic: true, commit, ct);

    private Task<TransferResult[]> SubmitAsync(IReadOnlyList<TransferRequest> requests, bool atomic, LedgerCommit? commit, CancellationToken ct)
    {
        if (requests.Count == 0) return Task.FromResult(Array.Empty<TransferResult>());
        var command = new LedgerCommand(requests, atomic, commit);
        var (invalid, code) = Validate(requests);
        if (invalid >= 0)
        {
            for (var i = 0; i < requests.Count; i++)
                command.Results[i] = new(i == invalid ? code : TransferResultCode.LinkedTransferFailed, null);
            return Task.FromResult(command.Results);
        }
        if (requests.Count > _options.MaxBatchTransfers)
            throw new ArgumentException($"At most {_options.MaxBatchTransfers} transfers per atomic batch.", nameof(requests));
        var completion = new TaskCompletionSource<TransferResult[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        command.Acknowledgement = results => completion.TrySetResult(results);
        command.Failure = e => completion.TrySetException(e);
        if (!(_callersApply && TryApplyHere(command)) && !_queue.TryAdd(command)) throw new ObjectDisposedException(nameof(LedgerService));
        // Cancelling stops the wait, not the transfer: once queued it may still commit (replay to learn the outcome).
        return ct.CanBeCanceled ? completion.Task.WaitAsync(ct) : completion.Task;
    }

    /// <summary>
    /// Applies <paramref name="command"/> on the caller's thread when nothing is queued and the writer thread sleeps,
    /// and the store can defer it (it then acknowledges it, at once for a hold, after its write otherwise). False:
    /// nothing happened, queue it. Commands racing each other here or into the queue have no order between them;
    /// each caller's own commands keep theirs, since a caller submits the next only after the previous is answered.
    /// </summary>
    private bool TryApplyHere(LedgerCommand command)
    {
        if (!_queue.IsEmpty || !_applying.TryEnter()) return false;
        try
        {
            return !_queue.IsClosed && _store.TryDefer([command], NowMicros());
        }
        finally
        {
            _applying.Exit();
        }
    }

    /// <summary>The first request the ledger must refuse before touching the database, and why; index −1 if none.</summary>
    private static (int Index, TransferResultCode Code) Validate(IReadOnlyList<TransferRequest> requests)
    {
        for (var i = 0; i < requests.Count; i++)
        {
            var r = requests[i];
            if (!IsValidId(r.Id, allowSystem: r.IsExpiry) || (r.PendingId is not null && !IsValidId(r.PendingId, allowSystem: false))
                || string.IsNullOrEmpty(r.Code) || r.Code.Length > MaxCodeLength
                || r.Reference?.Length > MaxReferenceLength || r.Description?.Length > MaxDescriptionLength
                || r.Metadata?.Length > MaxMetadataLength)
                return (i, TransferResultCode.InvalidId);
            if (r.Amount > MaxAmountMicros) return (i, TransferResultCode.AmountTooLarge);
        }
        return (-1, TransferResultCode.Ok);
    }

    /// <summary>
    /// Transfer ids: 1–128 characters of letters, digits and <c>_ - . : @ +</c> (no '/', so an id is one URL path segment). Ids beginning with '~' are the
    /// ledger's own (expiry voids) and cannot be chosen by clients.
    /// </summary>
    public static bool IsValidId(string? id, bool allowSystem = false)
    {
        if (string.IsNullOrEmpty(id) || id.Length > MaxIdLength + (allowSystem ? 16 : 0)) return false;
        for (var i = 0; i < id.Length; i++)
        {
            var c = id[i];
            if (char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':' or '@' or '+') continue;
            if (c == '~' && i == 0 && allowSystem) continue;
            return false;
        }
        return true;
    }

    public Task<LedgerAccount> CreateAccountAsync(NewLedgerAccount account, CancellationToken ct = default) =>
        _store.CreateAccountAsync(CheckLimit(account), ct);

    public Task<LedgerAccount> EnsureAccountAsync(NewLedgerAccount account, CancellationToken ct = default) =>
        _store.EnsureAccountAsync(CheckLimit(account), ct);

    private static NewLedgerAccount CheckLimit(NewLedgerAccount account) =>
        account.CreditLimitMicros is >= 0 and <= MaxAmountMicros
            ? account
            : throw new ArgumentOutOfRangeException(nameof(account), $"Credit limit must be 0–{MaxAmountMicros} micro-USD.");
    public Task<LedgerAccount?> GetAccountAsync(long id, CancellationToken ct = default) => _store.GetAccountAsync(id, ct);
    public Task<IReadOnlyList<LedgerAccount>> GetAccountsAsync(IReadOnlyCollection<long> ids, CancellationToken ct = default) => _store.GetAccountsAsync(ids, ct);

    /// <summary>Sets an account's credit limit (never below what it already uses, see <see cref="ILedgerStore.SetCreditLimitAsync"/>).</summary>
    public Task SetCreditLimitAsync(long id, long creditLimitMicros, CancellationToken ct = default) =>
        _store.SetCreditLimitAsync(id, CheckLimit(new NewLedgerAccount("", CreditLimitMicros: creditLimitMicros)).CreditLimitMicros, ct);
    public Task<Transfer?> GetTransferAsync(string id, CancellationToken ct = default) => _store.GetTransferAsync(id, ct);
    public Task<IReadOnlyList<StatementLine>> GetStatementAsync(long accountId, long? beforeVersion, int limit, CancellationToken ct = default) =>
        _store.GetStatementAsync(accountId, beforeVersion, limit, ct);
    public Task<LedgerAudit> AuditAsync(CancellationToken ct = default) => _store.AuditAsync(ct);

    /// <summary>Voids every hold whose timeout has passed; returns how many were expired now.</summary>
    public async Task<int> ExpireDueHoldsAsync(CancellationToken ct = default)
    {
        var expired = 0;
        while (true)
        {
            var ids = await _store.GetExpiredPendingAsync(NowMicros(), 500, ct);
            if (ids.Count == 0) return expired;
            var tasks = ids.Select(id => TransferAsync(new TransferRequest
            {
                Id = "~expire:" + id, Kind = TransferKind.VoidPending, PendingId = id, Code = "hold_expired", IsExpiry = true,
            }, ct)).ToArray();
            var results = await Task.WhenAll(tasks);
            expired += results.Count(r => r.Code == TransferResultCode.Ok);
            // Holds posted or voided by a client in the meantime come back again only if still pending, so this ends.
            if (ids.Count < 500) return expired;
        }
    }

    private long NowMicros() => _time.GetUtcNowMicros();

    private void WriteLoop()
    {
        try
        {
            _store.OnDeferredFailure(_queue.Wake);
            // The next batch, and whether the store has begun it already (see ILedgerStore.Apply's next).
            Batch? ready = null;
            var begun = false;
            _applying.Enter();
            try
            {
                while (true)
                {
                    // Batches whose deferred write failed come first: they were taken before anything still queued.
                    foreach (var failed in _store.TakeFailedDeferred()) Execute(new Batch(failed), null);
                    var batch = ready ?? TakeBatch(wait: false);
                    if (batch is null)
                    {
                        // Asleep: callers may apply their own commands meanwhile (TryApplyHere). Nothing is begun or carried.
                        _applying.Exit();
                        LedgerCommand? first;
                        try
                        {
                            first = _queue.Take(wait: true);
                        }
                        finally
                        {
                            _applying.Enter();
                        }
                        if (first is not null) Fill(batch = new Batch([]), first);
                    }
                    var wasBegun = begun;
                    (ready, begun) = (null, false);
                    if (batch is null)
                    {
                        if (_queue.IsClosed) break;
                        continue; // woken for a failed deferred write
                    }
                    if (!wasBegun && _options.DeferWrites && _store.TryDefer(batch.Commands, NowMicros())) continue;
                    foreach (var failed in _store.DrainDeferred()) Execute(new Batch(failed), null);

                    var next = _store.BeginsNextBatchEarly ? TakeBatch(wait: false) : null;
                    Execute(batch, next);
                    if (next is null) continue;
                    begun = _store.HasBegun(next.Commands);
                    // A next batch the store did not begin takes along what was queued meanwhile: bigger batches, fewer commits.
                    if (!begun && _carried is null) Fill(next, _queue.Take(wait: false));
                    ready = next;
                }
                foreach (var failed in _store.DrainDeferred()) Execute(new Batch(failed), null);
            }
            finally
            {
                _applying.Exit();
            }
        }
        finally
        {
            _writerStopped.TrySetResult();
        }
    }

    /// <summary>Queued commands up to MaxBatchTransfers; waits for the first only if asked. Null when there are none (or the queue is closed).</summary>
    private Batch? TakeBatch(bool wait)
    {
        var first = _carried;
        _carried = null;
        first ??= _queue.Take(wait);
        if (first is null) return null;
        var batch = new Batch([]);
        Fill(batch, first);
        return batch;
    }

    /// <summary>Adds <paramref name="first"/> and whatever else is queued to <paramref name="batch"/>, up to MaxBatchTransfers; the one that does not fit is carried to the next batch.</summary>
    private void Fill(Batch batch, LedgerCommand? first)
    {
        var transfers = 0;
        foreach (var c in batch.Commands) transfers += c.Transfers.Count;
        for (var next = first; next is not null; next = _queue.Take(wait: false))
        {
            if (transfers > 0 && transfers + next.Transfers.Count > _options.MaxBatchTransfers)
            {
                _carried = next;
                break;
            }
            batch.Commands.Add(next);
            transfers += next.Transfers.Count;
            if (transfers >= _options.MaxBatchTransfers) break;
        }
    }

    private void Execute(Batch batch, Batch? next)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var error = TryApply(batch.Commands, next?.Commands);
        if (error is null)
        {
            _metrics?.LedgerBatchCommands.Record(batch.Commands.Count);
            _metrics?.LedgerCommit.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
            foreach (var c in batch.Commands) c.Acknowledge();
            return;
        }
        if (batch.Commands.Count > 1 && DbErrors.Classify(error) == DbErrorKind.Other)
        {
            // One bad command must not fail its neighbours: apply each alone so only the culprit sees the error.
            LogBatchSplit(error, batch.Commands.Count);
            foreach (var c in batch.Commands) Execute(new Batch([c]), null);
            return;
        }
        foreach (var c in batch.Commands) c.Fail(new LedgerUnavailableException(error));
    }

    private Exception? TryApply(List<LedgerCommand> commands, List<LedgerCommand>? next)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                // Only the first attempt may begin the next batch: a retry comes after a failure that dropped it.
                _store.Apply(commands, NowMicros(), attempt == 1 ? next : null);
                return null;
            }
            catch (Exception e)
            {
                var kind = DbErrors.Classify(e);
                // A unique violation here is another process inserting the same transfer id: retrying sees it as a replay.
                if (attempt >= _options.MaxAttempts || kind is not (DbErrorKind.Retryable or DbErrorKind.UniqueViolation))
                {
                    LogBatchFailed(e, commands.Count, attempt);
                    return e;
                }
                Thread.Sleep(Math.Min(2 << attempt, 200));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Close();
        await _writerStopped.Task;
        if (_store is IAsyncDisposable d) await d.DisposeAsync();
    }

    private LedgerCommand? _carried;

    /// <summary>
    /// Many submitters, one writer thread. Submitters only enqueue, and signal the writer only when it said it is going
    /// to sleep, so under load (the writer busy committing) adding takes no lock at all; a blocking collection's
    /// semaphore made every submitter contend for one monitor.
    /// </summary>
    private sealed class WriterQueue
    {
        private readonly ConcurrentQueue<LedgerCommand> _items = new();
        private readonly ManualResetEventSlim _wake = new(false, spinCount: 0);
        private int _sleeping;
        private volatile bool _closed;
        private volatile bool _poked;

        public bool TryAdd(LedgerCommand command)
        {
            if (_closed) return false;
            _items.Enqueue(command);
            Signal();
            // Closed meanwhile: the writer may have drained and stopped already; the caller must not wait forever.
            if (_closed) command.Fail(new ObjectDisposedException(nameof(LedgerService)));
            return true;
        }

        public bool IsClosed => _closed;

        public bool IsEmpty => _items.IsEmpty;

        /// <summary>Makes the writer's next or current waiting <see cref="Take"/> return, null if nothing was added.</summary>
        public void Wake()
        {
            _poked = true;
            Signal();
        }

        private void Signal()
        {
            if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _sleeping, 0) == 1) _wake.Set();
        }

        /// <summary>
        /// The next item; waits for one if asked. Null when there is none (waiting: once closed and drained, or woken by
        /// <see cref="Wake"/> with nothing added).
        /// </summary>
        public LedgerCommand? Take(bool wait)
        {
            while (true)
            {
                if (_items.TryDequeue(out var command)) return command;
                if (!wait || _closed) return null;
                if (_poked)
                {
                    _poked = false;
                    return null;
                }
                _wake.Reset();
                // Announce the sleep, then look again: a submitter that enqueued before seeing the flag is caught here.
                Interlocked.Exchange(ref _sleeping, 1);
                if (!_items.IsEmpty || _closed || _poked)
                {
                    Interlocked.Exchange(ref _sleeping, 0);
                    continue;
                }
                _wake.Wait();
            }
        }

        public void Close()
        {
            _closed = true;
            Interlocked.Exchange(ref _sleeping, 0);
            _wake.Set();
        }
    }

    private sealed record Batch(List<LedgerCommand> Commands)
    {
        public Batch(IReadOnlyList<LedgerCommand> commands) : this(commands.ToList()) { }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Ledger batch of {Commands} commands failed after {Attempts} attempt(s)")]
    private partial void LogBatchFailed(Exception e, int commands, int attempts);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ledger batch of {Commands} commands failed; applying them one by one")]
    private partial void LogBatchSplit(Exception e, int commands);
}

/// <summary>The database could not apply a ledger batch; nothing of it was written. Retrying with the same ids is safe.</summary>
public sealed class LedgerUnavailableException(Exception inner)
    : Exception("The ledger is temporarily unavailable; retry with the same transfer id.", inner);
