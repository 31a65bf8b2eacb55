using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Tollgate.Infrastructure.Http;

/// <summary>
/// RFC 9457 problem responses for every non-<c>/v1</c> route. Each carries a stable machine-readable <c>code</c>,
/// also encoded in <c>type</c> as <c>urn:tollgate:error:{code}</c>; never a stack trace.
/// </summary>
public static class Problems
{
    public static ProblemHttpResult Create(int status, string code, string detail, IDictionary<string, object?>? extensions = null)
    {
        var problem = new ProblemDetails
        {
            Status = status,
            Type = "urn:tollgate:error:" + code,
            Title = TitleFor(status),
            Detail = detail,
        };
        problem.Extensions["code"] = code;
        if (extensions is not null)
            foreach (var (k, v) in extensions) problem.Extensions[k] = v;
        return TypedResults.Problem(problem);
    }

    public static ProblemHttpResult BadRequest(string code, string detail, string? param = null) =>
        Create(StatusCodes.Status400BadRequest, code, detail, param is null ? null : new Dictionary<string, object?> { ["param"] = param });

    public static ProblemHttpResult NotFound(string what, string id) =>
        Create(StatusCodes.Status404NotFound, "not_found", $"No {what} with id '{id}'.");

    public static ProblemHttpResult Conflict(string code, string detail) => Create(StatusCodes.Status409Conflict, code, detail);

    public static ProblemHttpResult Unauthorized(string detail) => Create(StatusCodes.Status401Unauthorized, "unauthorized", detail);

    private static string TitleFor(int status) => status switch
    {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Error",
    };
}
