using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Tollgate.Tests.Api;

/// <summary>One captured log line: category, level, rendered message, its structured values, its scopes' values, and any exception.</summary>
internal sealed record CapturedLog(string Category, LogLevel Level, string Text, IReadOnlyDictionary<string, string> Scopes);

/// <summary>
/// Captures everything the app logs, with scopes, so tests can look at every line — message, structured values,
/// scope values and exceptions — as a JSON formatter would write them.
/// </summary>
internal sealed class LogCapture : ILoggerProvider, ISupportExternalScope
{
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

    public ConcurrentQueue<CapturedLog> Lines { get; } = new();

    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose() { }

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var text = new StringBuilder(formatter(state, exception));
            if (state is IEnumerable<KeyValuePair<string, object?>> values)
                foreach (var (k, v) in values) text.Append(' ').Append(k).Append('=').Append(v);
            if (exception is not null) text.Append(' ').Append(exception);
            var scopes = new Dictionary<string, string>();
            owner._scopes.ForEachScope((scope, _) =>
            {
                text.Append(" scope:").Append(scope);
                if (scope is IEnumerable<KeyValuePair<string, object?>> pairs)
                    foreach (var (k, v) in pairs)
                    {
                        scopes[k] = v?.ToString() ?? "";
                        text.Append(' ').Append(k).Append('=').Append(v);
                    }
            }, (object?)null);
            owner.Lines.Enqueue(new CapturedLog(category, logLevel, text.ToString(), scopes));
        }
    }
}
