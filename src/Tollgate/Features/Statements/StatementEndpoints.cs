using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Statements;

public sealed record StatementSummary(string Period, bool Final, bool Stored, string Json, string Html, string Pdf);

/// <summary>
/// <c>GET /api/v1/statements</c> (the caller's periods) and <c>GET /api/v1/statements/{period}[.html|.pdf]</c>; the same
/// under <c>/admin/v1/accounts/{id}/statements</c> for operators. Periods are calendar months in UTC (<c>2026-11</c>).
/// </summary>
internal static class StatementEndpoints
{
    public static void AddStatements(IServiceCollection services)
    {
        services.AddOptions<StatementOptions>().BindConfiguration(StatementOptions.Section)
            .Validate(o => o.PdfTimeoutSeconds is > 0 and <= 600, "Tollgate:Statements:PdfTimeoutSeconds must be 1–600.")
            .Validate(o => o.JobIntervalSeconds >= 0, "Tollgate:Statements:JobIntervalSeconds must be ≥ 0 (0 = off).")
            .ValidateOnStart();
        services.AddSingleton<StatementService>();
        services.AddSingleton<ChromiumPdf>();
        services.AddSingleton<StatementJob>();
        services.AddHostedService(sp => sp.GetRequiredService<StatementJob>());
    }

    public static void MapStatements(IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/statements").RequireApiKey().WithTags("Statements");
        group.MapGet("/", (HttpContext http, StatementService statements, CancellationToken ct) =>
            ListAsync(http.GetCaller().AccountId, "/api/v1/statements", statements, ct));
        group.MapGet("/{period}", (string period, HttpContext http, StatementService statements, ChromiumPdf pdf, CancellationToken ct) =>
            GetAsync(http.GetCaller().AccountId, period, statements, pdf, ct));

        var admin = routes.MapGroup("/admin/v1/accounts/{id}/statements").RequireAdminKey().WithTags("Admin: statements");
        admin.MapGet("/", (string id, StatementService statements, CancellationToken ct) =>
            ListAsync(id, $"/admin/v1/accounts/{id}/statements", statements, ct));
        admin.MapGet("/{period}", (string id, string period, StatementService statements, ChromiumPdf pdf, CancellationToken ct) =>
            GetAsync(id, period, statements, pdf, ct));
    }

    private static async Task<Results<Ok<Dictionary<string, object>>, ProblemHttpResult>> ListAsync(string accountId, string basePath, StatementService statements, CancellationToken ct)
    {
        if (await statements.ListAsync(accountId, ct) is not { } list) return Problems.NotFound("account", accountId);
        return TypedResults.Ok(new Dictionary<string, object>
        {
            ["data"] = list.Select(p => new StatementSummary(p.Period.ToString(), p.Final, p.Stored, $"{basePath}/{p.Period}", $"{basePath}/{p.Period}.html",
                $"{basePath}/{p.Period}.pdf")).ToList(),
        });
    }

    private static async Task<IResult> GetAsync(string accountId, string path, StatementService statements, ChromiumPdf pdf, CancellationToken ct)
    {
        var format = path.EndsWith(".html", StringComparison.Ordinal) ? "html" : path.EndsWith(".pdf", StringComparison.Ordinal) ? "pdf" : path.EndsWith(".json", StringComparison.Ordinal) ? "json" : "";
        var text = format.Length == 0 ? path : path[..^(format.Length + 1)];
        if (!StatementPeriod.TryParse(text, out var period))
            return Problems.BadRequest("invalid_period", $"'{path}' is not a statement period: use yyyy-MM (a calendar month in UTC), optionally with .json, .html or .pdf.", "period");
        string? binary = null;
        if (format == "pdf" && (binary = pdf.FindBinary()) is null)
            return Problems.Create(StatusCodes.Status503ServiceUnavailable, "pdf_unavailable",
                "PDF statements need Chromium, which is not installed on this server: install it (e.g. apt-get install chromium) or set Tollgate:Statements:ChromiumPath. The .html and JSON statements work without it.");
        if (await statements.GetAsync(accountId, period, ct) is not { } statement)
            return Problems.Create(StatusCodes.Status404NotFound, "not_found", $"No statement for '{accountId}' and period {period}: the account does not exist or the period has not started.");
        switch (format)
        {
            case "html":
                return TypedResults.Content(StatementHtml.Render(statement.Document), "text/html; charset=utf-8");
            case "pdf":
                var bytes = await pdf.RenderAsync(binary!, StatementHtml.Render(statement.Document), ct);
                return TypedResults.File(bytes, "application/pdf", $"statement-{statement.Document.AccountId}-{period}.pdf");
            default:
                return TypedResults.Ok(statement.Document);
        }
    }
}
