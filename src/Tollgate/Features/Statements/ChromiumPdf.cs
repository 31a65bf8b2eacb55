using System.Diagnostics;
using Microsoft.Extensions.Options;

namespace Tollgate.Features.Statements;

public sealed class StatementOptions
{
    public const string Section = "Tollgate:Statements";

    /// <summary>Chromium (or Chrome) binary used to print statements to PDF; empty = look for it on PATH.</summary>
    public string? ChromiumPath { get; set; }

    /// <summary>How long one PDF may take to print before it is abandoned.</summary>
    public int PdfTimeoutSeconds { get; set; } = 60;

    /// <summary>How often the statement job looks for ended periods without a stored statement (seconds; 0 = never).</summary>
    public int JobIntervalSeconds { get; set; } = 3600;
}

/// <summary>
/// Prints HTML to PDF with headless Chromium (no PDF library is available): the page is written to a private temporary
/// directory and printed with <c>--print-to-pdf</c>. One Chromium process per document, with its own profile directory.
/// </summary>
public sealed class ChromiumPdf(IOptions<StatementOptions> options)
{
    private static readonly string[] Candidates = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

    /// <summary>The Chromium binary, or null if none is configured or found on PATH.</summary>
    public string? FindBinary()
    {
        if (options.Value.ChromiumPath is { Length: > 0 } configured) return File.Exists(configured) ? configured : null;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            foreach (var name in Candidates)
                if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    /// <summary>The PDF bytes of <paramref name="html"/>; throws <see cref="InvalidOperationException"/> when printing fails.</summary>
    public async Task<byte[]> RenderAsync(string binary, string html, CancellationToken ct)
    {
        var dir = Directory.CreateTempSubdirectory("tollgate-pdf-");
        try
        {
            var input = Path.Combine(dir.FullName, "statement.html");
            var output = Path.Combine(dir.FullName, "statement.pdf");
            await File.WriteAllTextAsync(input, html, ct);
            var psi = new ProcessStartInfo(binary) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var arg in (string[])["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-pdf-header-footer",
                         $"--user-data-dir={Path.Combine(dir.FullName, "profile")}", $"--print-to-pdf={output}", new Uri(input).AbsoluteUri])
                psi.ArgumentList.Add(arg);
            using var process = Process.Start(psi) ?? throw new InvalidOperationException($"Chromium ({binary}) did not start.");
            var stderr = process.StandardError.ReadToEndAsync(ct);
            _ = process.StandardOutput.ReadToEndAsync(ct);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(options.Value.PdfTimeoutSeconds));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new InvalidOperationException($"Chromium did not print the statement within {options.Value.PdfTimeoutSeconds} s.");
            }
            if (!File.Exists(output) || new FileInfo(output).Length == 0)
                throw new InvalidOperationException($"Chromium exited with {process.ExitCode} without a PDF: {(await stderr).Trim()}");
            return await File.ReadAllBytesAsync(output, ct);
        }
        finally
        {
            try { dir.Delete(recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
