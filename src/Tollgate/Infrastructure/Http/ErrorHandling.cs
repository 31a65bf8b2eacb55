using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Tollgate.Features.Gateway;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Infrastructure.Http;

/// <summary>Maps exceptions that escape a handler to problem responses: client mistakes to 4xx, outages to 503.</summary>
public static partial class ErrorHandling
{
    public static void UseTollgateErrors(this WebApplication app)
    {
        app.UseExceptionHandler(new ExceptionHandlerOptions
        {
            StatusCodeSelector = _ => StatusCodes.Status500InternalServerError,
            ExceptionHandler = async context =>
            {
                var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
                var (status, code, detail) = Map(error);
                if (status >= 500)
                {
                    var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Tollgate.Errors");
                    // An outage fails every request alike: one line each, not a stack trace each (the ledger logs its own failure once per batch).
                    if (status is StatusCodes.Status503ServiceUnavailable or StatusCodes.Status507InsufficientStorage) LogUnavailable(logger, context.Request.Method, context.Request.Path, Innermost(error));
                    else LogUnhandled(logger, error, context.Request.Method, context.Request.Path);
                }
                context.Response.StatusCode = status;
                if (context.Items[GatewayHandler.RequestIdItem] is string requestId) context.Response.Headers["x-tollgate-request-id"] = requestId;
                if (GatewayError.IsGatewayPath(context.Request.Path))
                    await new GatewayError(status, code, detail) { Dialect = GatewayError.DialectFor(context.Request.Path) }.ExecuteAsync(context);
                else await Problems.Create(status, code, detail).ExecuteAsync(context);
            },
        });
        app.UseStatusCodePages(async statusContext =>
        {
            // Routing misses (404/405) get a problem body too, instead of an empty response.
            var http = statusContext.HttpContext;
            if (http.Response.HasStarted || http.Response.ContentLength is > 0) return;
            var status = http.Response.StatusCode;
            // Minimal APIs answer an over-limit body by setting 413 themselves (no exception reaches the handler above).
            var code = status switch { 404 => "not_found", 405 => "method_not_allowed", 413 => "payload_too_large", 415 => "unsupported_media_type", _ => "error" };
            var detail = status switch
            {
                404 => $"No route for {http.Request.Method} {http.Request.Path}.",
                405 => $"{http.Request.Method} is not allowed on {http.Request.Path}.",
                413 => "The request body is larger than this route accepts.",
                415 => "Send the request body as application/json.",
                _ => "The request failed.",
            };
            if (GatewayError.IsGatewayPath(http.Request.Path))
                await new GatewayError(status, code, detail) { Dialect = GatewayError.DialectFor(http.Request.Path) }.ExecuteAsync(http);
            else await Problems.Create(status, code, detail).ExecuteAsync(http);
        });
    }

    internal static (int Status, string Code, string Detail) Map(Exception? error)
    {
        // Before the ledger's wrapper below: a full or read-only SQLite file needs an operator, not a retry in a moment.
        switch (error is null ? null : DbErrors.SqliteStorage(error))
        {
            case SqliteStorageProblem.Full:
                return (507, "storage_full", "The database is full; nothing was changed. An operator must free space (or raise Tollgate:Sqlite:MaxSizeBytes).");
            case SqliteStorageProblem.ReadOnly:
                return (503, "database_read_only", "The database is read-only; nothing was changed. Reads still work; retry writes once it is writable again.");
        }
        for (var e = error; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case BadHttpRequestException bad when bad.StatusCode == StatusCodes.Status413PayloadTooLarge:
                    return (413, "payload_too_large", "The request body is larger than this route accepts.");
                case JsonException json:
                    return (400, "invalid_json", "The request body is not valid JSON for this route: " + JsonMessage(json));
                case BadHttpRequestException bad when bad.StatusCode == StatusCodes.Status415UnsupportedMediaType:
                    return (415, "unsupported_media_type", "Send the request body as application/json.");
                case BadHttpRequestException bad when e.InnerException is null:
                    return (bad.StatusCode, "bad_request", bad.Message);
                case LedgerUnavailableException:
                    return (503, "ledger_unavailable", "The ledger is temporarily unavailable; retry with the same idempotency key.");
            }
        }
        if (error is not null && DbErrors.Classify(error) is DbErrorKind.Unavailable or DbErrorKind.Retryable)
            return (503, "database_unavailable", "The database is temporarily unavailable; retry shortly.");
        return (500, "internal_error", "An unexpected error occurred.");
    }

    /// <summary>System.Text.Json's message names the path and position but never echoes request content.</summary>
    private static string JsonMessage(JsonException e) =>
        e.Path is { Length: > 0 } path ? $"problem at {path}." : e.LineNumber is { } line ? $"problem at line {line + 1}." : "malformed JSON.";

    private static string Innermost(Exception? e)
    {
        while (e?.InnerException is not null) e = e.InnerException;
        return e is null ? "" : $"{e.GetType().Name}: {e.Message}";
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Database unavailable on {Method} {Path}: {Cause}")]
    private static partial void LogUnavailable(ILogger logger, string method, string path, string cause);

    [LoggerMessage(Level = LogLevel.Error, Message = "Unhandled error on {Method} {Path}")]
    private static partial void LogUnhandled(ILogger logger, Exception? e, string method, string path);
}
