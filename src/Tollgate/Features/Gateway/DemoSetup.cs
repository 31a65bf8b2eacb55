using Microsoft.Extensions.Configuration;
using Tollgate.Features.Accounts;

namespace Tollgate.Features.Gateway;

/// <summary>
/// First-start convenience for <c>tollgate serve</c>: on a database without any account, and with the built-in demo
/// provider enabled, creates a "Demo" account with a small grant and one API key, and returns that key to print once,
/// so a newcomer's first call (model <c>demo/echo</c>) works and is billed within a minute.
/// Off with <c>Tollgate:Demo:CreateAccount=false</c>.
/// </summary>
internal static class DemoSetup
{
    public const long WelcomeGrantMicros = 1_000_000;

    public static async Task<string?> CreateIfFreshAsync(IServiceProvider services, CancellationToken ct)
    {
        var config = services.GetRequiredService<IConfiguration>();
        if (!config.GetValue("Tollgate:Demo:CreateAccount", true)) return null;
        if (services.GetRequiredService<ProviderRegistry>().All.All(p => p.Kind != ProviderKind.Demo || !p.Available)) return null;
        if (await services.GetRequiredService<IAccountStore>().CountAsync(ct) > 0) return null;
        var accounts = services.GetRequiredService<AccountService>();
        var account = await accounts.CreateAsync("Demo", 0, ct);
        await accounts.GrantAsync(account.Account.Id, WelcomeGrantMicros, "demo-welcome", "Demo credits", ct);
        var key = await accounts.CreateKeyAsync(account.Account.Id, "demo", ct);
        return key!.Key;
    }
}
