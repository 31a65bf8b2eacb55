using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Ledger;

public static class LedgerRegistration
{
    public static IServiceCollection AddLedger(this IServiceCollection services)
    {
        services.AddOptions<LedgerOptions>().BindConfiguration(LedgerOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<ILedgerStore>(sp => CreateStore(sp.GetRequiredService<Database>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(sp => new LedgerService(
            sp.GetRequiredService<ILedgerStore>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<LedgerOptions>>().Value, sp.GetRequiredService<ILogger<LedgerService>>(),
            sp.GetService<Infrastructure.Metrics.TollgateMetrics>()));
        services.AddSingleton<SystemAccounts>();
        services.AddHostedService<HoldExpirySweeper>();
        return services;
    }

    internal static ILedgerStore CreateStore(Database db, TimeProvider time) => db.Engine == DatabaseEngine.Postgres
        ? new PostgresLedgerStore(db, time)
        : new SqliteLedgerStore(db, time);
}
