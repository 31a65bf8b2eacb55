using Microsoft.Extensions.Options;

namespace Tollgate.Features.Payments.Crypto;

internal static class CryptoRegistration
{
    /// <summary>Registers crypto payments when <c>Tollgate:Crypto:Enabled</c>; returns whether it did.</summary>
    public static bool AddCryptoPayments(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<CryptoOptions>().BindConfiguration(CryptoOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<CryptoOptions>, CryptoOptionsValidator>();
        if (!configuration.GetValue<bool>(CryptoOptions.Section + ":Enabled")) return false;
        services.AddHttpClient(EvmRpcClient.HttpClientName);
        services.AddSingleton<EvmRpcClient>();
        services.AddSingleton<CryptoStore>();
        services.AddSingleton<CryptoPaymentService>();
        services.AddSingleton<CryptoReconciler>();
        services.AddSingleton<CryptoConfirmLimiter>();
        services.AddSingleton<CryptoPaymentWorker>();
        services.AddHostedService(sp => sp.GetRequiredService<CryptoPaymentWorker>());
        return true;
    }
}
