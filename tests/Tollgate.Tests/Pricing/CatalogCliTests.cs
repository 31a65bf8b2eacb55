using Tollgate.Tests.Processes;

namespace Tollgate.Tests.Pricing;

/// <summary><c>tollgate catalog import</c> as an operator runs it: a child process, its report, its exit code.</summary>
public sealed class CatalogCliTests
{
    [Fact]
    public async Task CatalogImport_ChangedFile_ReportsChangesAndWritesCatalogFile()
    {
        var dir = Path.Combine(Path.GetTempPath(), "tollgate-catalog-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var source = Path.Combine(dir, "data.json");
            await File.WriteAllTextAsync(source, """
                [{"id":"openai","models":[{"id":"gpt-4o","match":{"equals":"gpt-4o"},"prices":{"input_mtok":2,"cache_read_mtok":1,"output_mtok":8}}]},
                 {"id":"acme","models":[{"id":"tiny","match":{"equals":"tiny"},"prices":{"input_mtok":0.1,"output_mtok":0.2}}]}]
                """);
            var target = Path.Combine(dir, "data", "genai-prices.json");
            var env = new Dictionary<string, string?> { ["Tollgate__Pricing__CatalogFile"] = target };

            var dry = await TollgateExecutable.RunAsync(["catalog", "import", source, "--dry-run"], env);
            var run = await TollgateExecutable.RunAsync(["catalog", "import", source], env);
            var again = await TollgateExecutable.RunAsync(["catalog", "import", source], env);
            var bad = await TollgateExecutable.RunAsync(["catalog", "import", Path.Combine(dir, "missing.json")], env);

            Assert.True(dry.ExitCode == 0, dry.ToString());
            Assert.Contains("Dry run: nothing written.", dry.StdOut);
            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Contains("+ acme/tiny", run.StdOut);
            Assert.Contains("- anthropic/claude-2", run.StdOut);
            Assert.Contains("~ openai/gpt-4o", run.StdOut);
            Assert.Contains("was: input 2.5, cache_read 1.25, output 10 USD/Mtok", run.StdOut);
            Assert.Contains("now: input 2, cache_read 1, output 8 USD/Mtok", run.StdOut);
            Assert.True(File.Exists(target));
            Assert.Contains("0 model(s) added, 0 removed, 0 with price changes.", again.StdOut);
            Assert.Equal(1, bad.ExitCode);
            Assert.Contains("missing.json", bad.StdErr);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
