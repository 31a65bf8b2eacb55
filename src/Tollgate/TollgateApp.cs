using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Tollgate.Features.Accounts;
using Tollgate.Features.Admin;
using Tollgate.Features.Byok;
using Tollgate.Features.Gateway;
using Tollgate.Features.Health;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Features.Metering;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure.Data;
using Tollgate.Infrastructure.Http;
using Tollgate.Infrastructure.Money;

namespace Tollgate;

/// <summary>Composition root: services and routes of the one Tollgate app, used by <c>serve</c>, the CLI and tests.</summary>
public static class TollgateApp
{
    /// <summary>Largest request body accepted by default (bytes); larger bodies get 413.</summary>
    public const long DefaultMaxRequestBodyBytes = 1 << 20;

    public static readonly JsonSerializerOptions Json = ConfigureJson(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    public static JsonSerializerOptions ConfigureJson(JsonSerializerOptions o)
    {
        o.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        o.DictionaryKeyPolicy = JsonNamingPolicy.SnakeCaseLower;
        // A misspelt field is a 400, not a silently ignored value.
        o.UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow;
        o.NumberHandling = JsonNumberHandling.Strict;
        o.DefaultIgnoreCondition = JsonIgnoreCondition.Never;
        o.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false));
        o.Converters.Add(new NulRejectingStringConverter());
        return o;
    }

    /// <param name="args">ASP.NET Core arguments (e.g. <c>--urls</c>).</param>
    /// <param name="database">Overrides <c>TOLLGATE_DATABASE</c> / <c>Tollgate:Database</c>.</param>
    /// <param name="configure">Extra configuration, e.g. in-memory settings from tests.</param>
    public static WebApplication Build(string[] args, string? database = null, Action<WebApplicationBuilder>? configure = null)
    {
        // appsettings.json ships next to the binary, so read it from there whatever the working directory is.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        configure?.Invoke(builder);
        AddConfigFile(builder.Configuration);
        AddPlanSet(builder.Configuration);
        RequestLogging.ConfigureConsole(builder);
        var target = DatabaseTarget.Parse(database ?? builder.Configuration["TOLLGATE_DATABASE"] ?? builder.Configuration["Tollgate:Database"]);
        var services = builder.Services;

        // TryAdd: a test's configure callback may have put a manual clock in first.
        services.TryAddSingleton(TimeProvider.System);
        // A factory registration, so the container owns the data source and disposes it (closing pooled connections).
        var sqliteMaxSize = builder.Configuration.GetValue<long>("Tollgate:Sqlite:MaxSizeBytes", 0);
        services.AddSingleton(_ => new Database(target, sqliteMaxSize));
        services.AddSingleton<Migrator>();
        services.AddSingleton<Infrastructure.Metrics.TollgateMetrics>();
        services.AddSingleton<Infrastructure.Metrics.PrometheusExporter>();
        services.AddSingleton<HoldGauges>();
        services.AddOptions<CreditsOptions>().BindConfiguration(CreditsOptions.Section).ValidateDataAnnotations()
            .Validate(o => Money.MicrosPerUsd % o.MicrosPerCredit == 0, "Credits:MicrosPerCredit must divide 1,000,000 evenly (e.g. 1, 10, 1000, 10000).")
            .ValidateOnStart();
        services.AddSingleton(sp => new CreditUnit(sp.GetRequiredService<IOptions<CreditsOptions>>().Value.MicrosPerCredit));
        services.AddLedger();
        services.AddPricing();
        services.AddSingleton(new KeyEnvironment(builder.Configuration["Tollgate:KeyEnvironment"] is { Length: > 0 } env ? env : "live"));
        services.AddSingleton<IApiKeyStore, ApiKeyStore>();
        services.AddSingleton<IAccountStore, AccountStore>();
        services.AddSingleton<AccountService>();
        services.AddSingleton<AdminKeys>();
        services.AddOptions<SignInLimitOptions>().BindConfiguration(SignInLimitOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<SignInAttempts>();
        Features.Audit.AuditEndpoints.AddAudit(services);
        services.AddSingleton<ApiKeyAuthenticator>();
        services.AddSingleton<AuthFailureLimiter>();
        services.AddSingleton<AuthorizationService>();
        services.AddSingleton<IUsageStore, UsageStore>();
        services.AddSingleton<Features.Analytics.AnalyticsStore>();
        services.AddOptions<Features.Analytics.AnalyticsOptions>().BindConfiguration(Features.Analytics.AnalyticsOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<Features.Analytics.UsageRollupFolder>();
        services.AddHostedService(sp => sp.GetRequiredService<Features.Analytics.UsageRollupFolder>());
        services.AddOptions<MeteringOptions>().BindConfiguration(MeteringOptions.Section)
            .Validate(o => o.UnknownModelPolicy is MeteringOptions.Reject or MeteringOptions.AllowAndReview,
                "Tollgate:Metering:UnknownModelPolicy must be 'reject' or 'allow_and_review'.")
            .ValidateOnStart();
        services.AddSingleton<UsageEventService>();
        Features.Plans.PlanCatalog.Register(services);
        services.AddSingleton<Features.Members.MemberService>();
        services.AddGateway();
        Features.Webhooks.WebhookEndpoints.AddWebhooks(services);
        Features.Alerts.AlertEndpoints.AddAlerts(services);
        DatabaseXmlRepository.Register(services);
        services.AddSingleton<RerateService>();
        services.AddSingleton<Features.Budgets.SpendCapStore>();
        services.AddSingleton<Features.Budgets.EndCustomerStore>();
        services.AddSingleton<Features.Budgets.BudgetService>();
        Features.Payments.CreditPackCatalog.Register(services);
        Features.Plans.AddOnCatalog.Register(services);
        services.AddOptions<Features.Payments.Stripe.StripeOptions>().BindConfiguration(Features.Payments.Stripe.StripeOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<Features.Payments.Stripe.StripeOptions>, Features.Payments.Stripe.StripeOptionsValidator>();
        services.AddHttpClient(Features.Payments.Stripe.StripeClient.HttpClientName, (sp, c) =>
            c.Timeout = TimeSpan.FromSeconds(sp.GetRequiredService<IOptions<Features.Payments.Stripe.StripeOptions>>().Value.TimeoutSeconds));
        services.AddSingleton<Features.Payments.Stripe.StripeClient>();
        services.AddSingleton<Features.Payments.Stripe.StripeStore>();
        services.AddSingleton<Features.Payments.Stripe.StripeBilling>();
        services.AddSingleton<Features.Payments.Stripe.StripeWebhooks>();
        services.AddSingleton<Features.Payments.Stripe.StripeGraceSweeper>();
        services.AddSingleton<Features.Payments.Stripe.StripeReconciler>();
        services.AddSingleton<Features.Payments.Stripe.PostpaidInvoicer>();
        services.AddHostedService<Features.Payments.Stripe.PostpaidInvoiceJob>();
        services.AddHostedService(sp => sp.GetRequiredService<Features.Payments.Stripe.StripeGraceSweeper>());
        Features.Payments.ReconciliationEndpoints.AddReconciliation(services);
        Features.Dashboard.DashboardAuth.AddDashboard(services);
        Features.Statements.StatementEndpoints.AddStatements(services);
        Features.Marketplace.MarketplaceEndpoints.AddMarketplace(services);
        var cryptoEnabled = Features.Payments.Crypto.CryptoRegistration.AddCryptoPayments(services, builder.Configuration);
        if (cryptoEnabled) Features.Dashboard.WalletSignInEndpoints.AddWalletSignIn(services);

        services.ConfigureHttpJsonOptions(o => ConfigureJson(o.SerializerOptions));
        services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.AddProblemDetails();
        var maxBody = builder.Configuration.GetValue("Tollgate:Http:MaxRequestBodyBytes", DefaultMaxRequestBodyBytes);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = maxBody;
            k.AddServerHeader = false;
        });

        var app = builder.Build();
        // Created before any instrument records, so nothing is missed.
        app.Services.GetRequiredService<Infrastructure.Metrics.PrometheusExporter>();
        // First: every later middleware and handler logs inside the request id's scope.
        RequestLogging.UseRequestIds(app);
        Infrastructure.Metrics.MetricsEndpoints.UseRequestMetrics(app);
        app.UseTollgateErrors();
        Features.Admin.AdminAuthFilter.UseAdminKeyCheck(app);
        ApiKeyAuthFilter.UseApiKeyCheck(app);
        app.MapHealth();
        Infrastructure.Metrics.MetricsEndpoints.MapMetrics(app);
        app.MapAdminAccounts();
        Features.Admin.AdminKeyEndpoints.MapAdminKeys(app);
        app.MapAdminLedger();
        app.MapAccountApi();
        app.MapMetering();
        app.MapUsage();
        Features.Analytics.AnalyticsEndpoints.MapAnalytics(app);
        app.MapAdminUsage();
        app.MapPricing();
        app.MapGateway();
        app.MapProviderKeys();
        app.MapKeys();
        Features.Plans.PlanEndpoints.MapPlan(app);
        Features.Plans.EntitlementEndpoints.MapEntitlements(app);
        Features.Members.MemberEndpoints.MapMembers(app);
        Features.Budgets.BudgetEndpoints.MapBudgets(app);
        Features.Payments.CreditPackEndpoints.MapCreditPacks(app);
        Features.Plans.AddOnEndpoints.MapAddOns(app);
        Features.Payments.Stripe.StripeEndpoints.MapStripe(app);
        Features.Payments.ReconciliationEndpoints.MapReconciliation(app);
        Features.Plans.AdminPlanEndpoints.MapAdminPlans(app);
        Features.Plans.SubscriptionEndpoints.MapSubscriptions(app);
        if (cryptoEnabled)
        {
            Features.Payments.Crypto.CryptoEndpoints.MapCryptoPayments(app);
            Features.Dashboard.WalletSignInEndpoints.MapWalletSignIn(app);
        }
        Features.Statements.StatementEndpoints.MapStatements(app);
        Features.Marketplace.MarketplaceEndpoints.MapMarketplace(app);
        app.MapAdminPricing();
        Features.Webhooks.WebhookEndpoints.MapWebhooks(app);
        Features.Alerts.AlertEndpoints.MapAlerts(app);
        Features.Audit.AuditEndpoints.MapAudit(app);
        // Server-rendered HTML at /, /usage, /keys, /billing and /admin/*; its forms carry antiforgery tokens, the JSON APIs do not.
        Features.Dashboard.DashboardEndpoints.MapDashboard(app);
        return app;
    }

    /// <summary>
    /// <c>--config &lt;file&gt;</c> (or <c>Tollgate:ConfigFile</c>) adds one JSON file of settings — a deployment's or an
    /// example's whole configuration — above the shipped defaults and below environment variables and the command line.
    /// A relative path is taken from the working directory, where the user typed it, not from the binary's folder.
    /// </summary>
    private static void AddConfigFile(ConfigurationManager configuration)
    {
        if ((configuration["config"] ?? configuration["Tollgate:ConfigFile"]) is not { Length: > 0 } path) return;
        var file = Path.GetFullPath(path);
        if (!File.Exists(file))
            throw new Microsoft.Extensions.Options.OptionsValidationException("Tollgate:ConfigFile", typeof(string),
                [$"Configuration file '{file}' does not exist."]);
        InsertAboveDefaults(configuration, file);
    }

    /// <summary>
    /// <c>Tollgate:PlanSet=&lt;name&gt;</c> loads one of the shipped example plan sets (<c>Plans/&lt;name&gt;.json</c> next to
    /// the binary: chat, saas, builder) beneath the other sources, so explicit settings still override it.
    /// </summary>
    private static void AddPlanSet(ConfigurationManager configuration)
    {
        if (configuration["Tollgate:PlanSet"] is not { Length: > 0 } set) return;
        var file = Path.Combine(AppContext.BaseDirectory, "Plans", set + ".json");
        if (set.Any(c => !char.IsAsciiLetterOrDigit(c) && c != '-') || !File.Exists(file))
            throw new Microsoft.Extensions.Options.OptionsValidationException("Tollgate:PlanSet", typeof(string),
                [$"Tollgate:PlanSet '{set}' is not a shipped plan set; use one of: {string.Join(", ", Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Plans"), "*.json").Select(Path.GetFileNameWithoutExtension))}."]);
        InsertAboveDefaults(configuration, file);
    }

    /// <summary>
    /// Right after appsettings.json: above the defaults, below appsettings.{Environment}.json, environment and command
    /// line. Each insert goes beneath the previous one, so a config file outranks the plan set it names.
    /// </summary>
    private static void InsertAboveDefaults(ConfigurationManager configuration, string file)
    {
        var sources = (IList<Microsoft.Extensions.Configuration.IConfigurationSource>)((Microsoft.Extensions.Configuration.IConfigurationBuilder)configuration).Sources;
        var at = sources.Select((s, i) => (s, i)).FirstOrDefault(x => x.s is Microsoft.Extensions.Configuration.Json.JsonConfigurationSource j && j.Path == "appsettings.json").i + 1;
        var json = new Microsoft.Extensions.Configuration.Json.JsonConfigurationSource { Path = file, Optional = false, ReloadOnChange = false };
        json.ResolveFileProvider();
        sources.Insert(at, json);
    }

    /// <summary>Applies migrations and loads admin credentials; returns a newly generated admin key (print it once), or null.</summary>
    public static async Task<string?> PrepareAsync(WebApplication app, CancellationToken ct = default)
    {
        // Load the price catalog now, so a bad catalog file or pricing configuration stops start-up with its message.
        app.Services.GetRequiredService<PricingCatalog>();
        // The gateway counts prompts with o200k: load its rank table now (≈ 0.1–0.3 s) rather than on the first call.
        _ = Features.Gateway.Tokens.BpeEncoding.O200kBase;
        await app.Services.GetRequiredService<Migrator>().MigrateAsync(ct);
        // Admin-API price overrides (database) are in force before the first request.
        await app.Services.GetRequiredService<PriceOverrideService>().ReloadAsync(force: true, ct);
        // Admin-API plans likewise.
        await app.Services.GetRequiredService<Features.Plans.PlanDefinitionService>().ReloadAsync(force: true, ct);
        return await app.Services.GetRequiredService<AdminKeys>().InitialiseAsync(ct);
    }
}
