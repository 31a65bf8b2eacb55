using System.CommandLine;
using System.Text.Json;
using Tollgate.Features.Accounts;
using Tollgate.Features.Gateway;
using Tollgate.Features.Ledger;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Cli;

/// <summary>The <c>tollgate</c> executable: <c>serve</c> (default), <c>migrate</c>, and admin helpers.</summary>
public static class TollgateCli
{
    public static async Task<int> RunAsync(string[] args)
    {
        var database = new Option<string?>("--database", "-d")
        {
            Description = "PostgreSQL connection string or postgres:// URL, or a SQLite file path (default ./data/tollgate.db; env TOLLGATE_DATABASE).",
            Recursive = true,
        };
        var root = new RootCommand("Tollgate: metering, credits and billing gateway for LLM applications.");
        root.Options.Add(database);

        var serve = new Command("serve", "Run the HTTP server (default).") { TreatUnmatchedTokensAsErrors = false };
        serve.SetAction((p, ct) => ServeAsync(p.GetValue(database), p.UnmatchedTokens.ToArray(), ct));
        root.Subcommands.Add(serve);
        root.TreatUnmatchedTokensAsErrors = false;
        root.SetAction((p, ct) => ServeAsync(p.GetValue(database), p.UnmatchedTokens.ToArray(), ct));

        var migrate = new Command("migrate", "Apply database migrations and exit.");
        migrate.SetAction((p, ct) => WithAppAsync(p.GetValue(database), async (app, _) =>
        {
            var versions = await app.Services.GetRequiredService<Migrator>().AppliedVersionsAsync(ct);
            Console.WriteLine($"Database {app.Services.GetRequiredService<Database>().Target.Describe()} is at schema version {versions.LastOrDefault()}.");
            return 0;
        }, ct));
        root.Subcommands.Add(migrate);

        root.Subcommands.Add(AccountsCommand(database));
        root.Subcommands.Add(KeysCommand(database));
        root.Subcommands.Add(CreditsCommand(database));
        root.Subcommands.Add(CatalogCommand(database));
        root.Subcommands.Add(ReconcileCommand(database));

        try
        {
            // ProcessTerminationTimeout = null: System.CommandLine would otherwise answer SIGTERM by ending the program
            // two seconds later with exit code 130, cutting the server's graceful shutdown (the host handles SIGTERM itself).
            return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
        }
        catch (Exception e) when (e is System.Data.Common.DbException or ArgumentException or FormatException
                                      or Features.Payments.Stripe.StripeException or Features.Payments.Crypto.EvmRpcException
                                      or Microsoft.Extensions.Options.OptionsValidationException or IOException
                                      or System.Net.Sockets.SocketException or TimeoutException)
        {
            // Configuration and connectivity problems get one clear line, not a stack trace.
            Console.Error.WriteLine($"tollgate: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    private static async Task<int> ServeAsync(string? database, string[] aspnetArgs, CancellationToken ct)
    {
        var app = TollgateApp.Build(aspnetArgs, database);
        var adminKey = await TollgateApp.PrepareAsync(app, ct);
        var db = app.Services.GetRequiredService<Database>();
        Console.WriteLine($"Tollgate: database {db.Target.Describe()}");
        var prices = app.Services.GetRequiredService<PricingCatalog>();
        Console.WriteLine($"Tollgate: price catalog {prices.Source}, {prices.Models.Count} models");
        if (adminKey is not null)
        {
            Console.WriteLine();
            Console.WriteLine("  Admin key (shown once, only its hash is stored):");
            Console.WriteLine($"    {adminKey}");
            Console.WriteLine();
        }
        if (await DemoSetup.CreateIfFreshAsync(app.Services, ct) is { } demoKey)
        {
            Console.WriteLine("  Demo account with $1.00 of credits; its API key (shown once):");
            Console.WriteLine($"    {demoKey}");
            Console.WriteLine("  Try a billed call (the built-in demo provider needs no network):");
            Console.WriteLine($"    curl -s localhost:5000/v1/chat/completions -H 'Authorization: Bearer {demoKey}' -H 'content-type: application/json' \\");
            Console.WriteLine("      -d '{\"model\":\"demo/echo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello, Tollgate\"}]}' -i");
            Console.WriteLine();
        }
        await app.RunAsync();
        return 0;
    }

    private static async Task<int> WithAppAsync(string? database, Func<WebApplication, CancellationToken, Task<int>> action, CancellationToken ct)
    {
        await using var app = TollgateApp.Build([], database, b =>
        {
            b.Logging.SetMinimumLevel(LogLevel.Warning);
            // The configured "Default: Information" outranks the minimum level; outgoing calls (Stripe, the chain) would log each request.
            b.Logging.AddFilter("System.Net.Http.HttpClient", LogLevel.Warning);
            // stdout carries the command's JSON (reconcile's report is piped to jq); every log line goes to stderr.
            b.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        });
        await app.Services.GetRequiredService<Migrator>().MigrateAsync(ct);
        return await action(app, ct);
    }

    private static void Print(object value) => Console.WriteLine(JsonSerializer.Serialize(value, new JsonSerializerOptions(TollgateApp.Json) { WriteIndented = true }));

    private static Command AccountsCommand(Option<string?> database)
    {
        var name = new Option<string>("--name") { Description = "Account name.", Required = true };
        var limit = new Option<long>("--credit-limit-micros") { Description = "Overdraft allowance in micro-USD (0 = prepaid)." };
        var create = new Command("create", "Create a billing account.") { name, limit };
        create.SetAction((p, ct) => WithAppAsync(p.GetValue(database), async (app, _) =>
        {
            if (p.GetValue(limit) is < 0 or > LedgerService.MaxAmountMicros) { Console.Error.WriteLine($"--credit-limit-micros must be 0–{LedgerService.MaxAmountMicros}."); return 2; }
            var account = await app.Services.GetRequiredService<AccountService>().CreateAsync(p.GetRequiredValue(name), p.GetValue(limit), ct);
            Print(AccountResponse.From(account, app.Services.GetRequiredService<CreditUnit>()));
            return 0;
        }, ct));
        return new Command("accounts", "Manage billing accounts.") { create };
    }

    private static Command KeysCommand(Option<string?> database)
    {
        var account = new Option<string>("--account") { Description = "Account id (acct_…).", Required = true };
        var name = new Option<string?>("--name") { Description = "A label for the key." };
        var type = new Option<string>("--type")
        {
            Description = "standard (usage is charged) or internal (usage is priced and recorded, never charged).",
            DefaultValueFactory = _ => "standard",
        };
        type.AcceptOnlyFromAmong("standard", "internal");
        var create = new Command("create", "Create an API key; the key is printed once.") { account, name, type };
        create.SetAction((p, ct) => WithAppAsync(p.GetValue(database), async (app, _) =>
        {
            var created = await app.Services.GetRequiredService<AccountService>().CreateKeyAsync(p.GetRequiredValue(account), p.GetValue(name), p.GetRequiredValue(type), ct);
            if (created is null) { Console.Error.WriteLine($"No account '{p.GetValue(account)}'."); return 1; }
            Print(new { id = created.Record.Id, key = created.Key, prefix = created.Record.Prefix, account_id = created.Record.AccountId, type = created.Record.Type });
            return 0;
        }, ct));
        return new Command("keys", "Manage API keys.") { create };
    }

    private static Command CreditsCommand(Option<string?> database)
    {
        var account = new Option<string>("--account") { Description = "Account id (acct_…).", Required = true };
        var amount = new Option<string>("--amount") { Description = "USD amount, e.g. 10 or 2.5 (negative adjusts down; at most 6 decimals).", Required = true };
        var key = new Option<string?>("--idempotency-key") { Description = "Makes the grant safe to repeat (default: a new random key)." };
        var reason = new Option<string?>("--reason") { Description = "Why the credits were granted." };
        var grant = new Command("grant", "Grant (or with a negative amount, adjust) an account's credits.") { account, amount, key, reason };
        grant.SetAction((p, ct) => WithAppAsync(p.GetValue(database), async (app, _) =>
        {
            if (!Money.TryParse(p.GetRequiredValue(amount), out var money, out var error)) { Console.Error.WriteLine(error); return 2; }
            var result = await app.Services.GetRequiredService<AccountService>().GrantAsync(
                p.GetRequiredValue(account), money.Micros, p.GetValue(key) ?? Guid.NewGuid().ToString("N"), p.GetValue(reason), ct);
            if (result.Transfer is null) { Console.Error.WriteLine($"Not granted: {result.Outcome}."); return 1; }
            Print(new { outcome = result.Outcome.ToString(), transfer = TransferResponse.From(result.Transfer), balance_micros = result.BalanceMicros });
            return 0;
        }, ct));
        return new Command("credits", "Grant or adjust credits.") { grant };
    }

    private static Command ReconcileCommand(Option<string?> database)
    {
        var from = new Option<DateTimeOffset?>("--from") { Description = "Stripe: start of the period (ISO 8601; default 30 days before --to)." };
        var to = new Option<DateTimeOffset?>("--to") { Description = "Stripe: end of the period, exclusive (default now)." };
        var fromBlock = new Option<long?>("--from-block") { Description = "Chain: first block (default 10,000 blocks before --to-block)." };
        var toBlock = new Option<long?>("--to-block") { Description = "Chain: last block (default and at most the confirmed head)." };
        var source = new Option<string>("--source")
        {
            Description = "stripe, usdc, or all (default: every payment source configured).",
            DefaultValueFactory = _ => "all",
        };
        source.AcceptOnlyFromAmong("all", "stripe", "usdc");
        var command = new Command("reconcile",
            "Compare what Stripe and the chain say was paid with the ledger's credits and list every mismatch (exit code 1 if any is unresolved). Fixes nothing.")
        {
            from, to, fromBlock, toBlock, source,
        };
        command.SetAction((p, ct) => WithAppAsync(p.GetValue(database), async (app, _) =>
        {
            var which = p.GetRequiredValue(source);
            var stripeOn = app.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Features.Payments.Stripe.StripeOptions>>().Value.Enabled;
            var chain = app.Services.GetService<Features.Payments.Crypto.CryptoReconciler>();
            if (which == "stripe" && !stripeOn) { Console.Error.WriteLine("Stripe is not configured (Tollgate:Stripe:SecretKey); nothing to reconcile."); return 2; }
            if (which == "usdc" && chain is null) { Console.Error.WriteLine("USDC payments are not enabled (Tollgate:Crypto:Enabled); nothing to reconcile."); return 2; }
            if (!stripeOn && chain is null) { Console.Error.WriteLine("No payment source is configured (Tollgate:Stripe, Tollgate:Crypto); nothing to reconcile."); return 2; }
            var reports = new List<Features.Payments.Stripe.ReconciliationReport>();
            if (stripeOn && which is "all" or "stripe")
            {
                var end = p.GetValue(to) ?? DateTimeOffset.UtcNow;
                reports.Add(await app.Services.GetRequiredService<Features.Payments.Stripe.StripeReconciler>().ReconcileAsync(p.GetValue(from) ?? end.AddDays(-30), end, ct));
            }
            if (chain is not null && which is "all" or "usdc")
            {
                var (first, last) = await chain.ConfirmedRangeAsync(p.GetValue(fromBlock), p.GetValue(toBlock), 10_001, ct);
                if (first > last) { Console.Error.WriteLine($"--from-block {first} is after the last block to reconcile ({last}, the confirmed head at most)."); return 2; }
                reports.Add(await chain.ReconcileAsync(first, last, ct));
            }
            Print(new { clean = reports.All(r => r.Clean), reports });
            return reports.All(r => r.Clean) ? 0 : 1;
        }, ct));
        return command;
    }

    private static Command CatalogCommand(Option<string?> database)
    {
        var file = new Argument<string>("FILE") { Description = "A genai-prices data.json (https://github.com/pydantic/genai-prices)." };
        var dryRun = new Option<bool>("--dry-run") { Description = "Report the changes without writing anything." };
        var import = new Command("import", "Validate a price catalog, report what changes, and make it the catalog used from the next start.") { file, dryRun };
        import.SetAction(async (p, ct) =>
        {
            // No database work: only the configuration (Tollgate:Pricing) is needed.
            await using var app = TollgateApp.Build([], p.GetValue(database), b => b.Logging.SetMinimumLevel(LogLevel.Warning));
            var options = app.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<PricingOptions>>().Value;
            var dry = p.GetValue(dryRun);
            var (_, changes) = CatalogImporter.Import(p.GetRequiredValue(file), options, dry);
            Console.Write(changes.Report());
            Console.WriteLine(dry
                ? "Dry run: nothing written."
                : $"Wrote {Path.GetFullPath(options.CatalogFile)}; it replaces the built-in catalog when tollgate next starts.");
            return 0;
        });
        return new Command("catalog", "Manage the price catalog.") { import };
    }
}
