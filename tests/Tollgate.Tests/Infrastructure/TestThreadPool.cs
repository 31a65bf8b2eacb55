using System.Runtime.CompilerServices;

namespace Tollgate.Tests.Infrastructure;

/// <summary>
/// Store-level tests call the PostgreSQL ledger store's synchronous <c>Apply</c> from async test methods, which blocks a
/// thread-pool thread on socket I/O. Npgsql writes a batch's later statements asynchronously even in a synchronous call,
/// and the socket I/O then appears to need a pool thread to complete: with the pool at its default minimum (one thread
/// per core, two here) a fresh test process's first <c>Apply</c> calls stalled 0.6–1 s, waiting in a socket receive while
/// the database session sat idle (dotnet-trace and pg_stat_activity; about one run in five, none in 15 runs with this
/// minimum). A second is longer than the writer claim's trust window, so assertions about it failed at random. In the
/// app the ledger writer runs on a thread of its own, not a pool thread; this keeps the tests' own blocking from
/// starving the pool.
/// </summary>
internal static class TestThreadPool
{
    [ModuleInitializer]
    internal static void RaiseMinimum()
    {
        ThreadPool.GetMinThreads(out var workers, out var io);
        ThreadPool.SetMinThreads(Math.Max(workers, 16), io);
    }
}
