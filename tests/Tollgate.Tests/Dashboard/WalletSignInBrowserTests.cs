using System.Text;
using Microsoft.Playwright;
using Tollgate.Tests.Metering;
using Tollgate.Tests.Payments.Crypto;

namespace Tollgate.Tests.Dashboard;

/// <summary>
/// "Sign in with wallet" in real headless Chromium: a fake EIP-1193 provider (<c>window.ethereum</c>, injected before the
/// page's scripts run) hands out a test wallet's address and signs with its private key through a Playwright binding, so
/// the page's own script, the nonce route, the form post and the session cookie are the real ones.
/// </summary>
public sealed class WalletSignInBrowserTests : IAsyncLifetime
{
    private Browser _browser = null!;
    private TestApp _app = null!;

    public async Task InitializeAsync()
    {
        _browser = await Browser.LaunchAsync();
        var settings = WalletSignInTests.Settings(signUp: false);
        // The browser's own origin is the SIWE domain here, as a wallet would expect it.
        settings.Remove("Tollgate:Crypto:SiweDomain");
        settings.Remove("Tollgate:Crypto:SiweUri");
        _app = await TestApp.StartAsync(TestDatabases.Sqlite, settings);
    }

    public async Task DisposeAsync()
    {
        await _app.DisposeAsync();
        await _browser.DisposeAsync();
    }

    [Fact]
    public async Task Signing_in_with_an_injected_wallet_lands_on_the_overview_of_the_wallets_account()
    {
        using var customer = await _app.CustomerAsync(1_500_000);
        var wallet = TestWallet.Random();
        await customer.LinkWalletAsync(wallet);

        await using var context = await _browser.ContextAsync(_app.BaseAddress);
        var signed = new List<string>();
        await context.ExposeFunctionAsync("tollgateTestSign", (string hex) =>
        {
            var message = Encoding.UTF8.GetString(Convert.FromHexString(hex[2..]));
            signed.Add(message);
            return wallet.PersonalSign(message);
        });
        await context.AddInitScriptAsync($$"""
            window.ethereum = {
              request: async function (args) {
                if (args.method === 'eth_requestAccounts') return ['{{wallet.Address}}'];
                if (args.method === 'personal_sign') {
                  if (args.params[1] !== '{{wallet.Address}}') throw new Error('asked to sign for another account');
                  return await window.tollgateTestSign(args.params[0]);
                }
                throw new Error('unsupported method ' + args.method);
              }
            };
            """);
        var page = await context.NewPageAsync();
        await page.GotoAsync("/");
        var button = page.GetByRole(AriaRole.Button, new() { Name = "Sign in with wallet" });
        await Assertions.Expect(button).ToBeEnabledAsync();
        await page.ScreenshotAsync(new() { Path = Browser.ScreenshotPath("sign-in-wallet"), FullPage = true });
        await button.ClickAsync();
        await Assertions.Expect(page.Locator("#balance")).ToHaveTextAsync("$1.50");

        Assert.Equal(customer.AccountId, (await page.Locator("#account-id").TextContentAsync())?.Trim());
        Assert.Contains(wallet.Address, await page.Locator(".who").TextContentAsync());
        var message = Assert.Single(signed);
        Assert.StartsWith(new Uri(page.Url).Authority + " wants you to sign in with your Ethereum account:\n" + wallet.ChecksumAddress, message);
        var cookie = Assert.Single(await context.CookiesAsync(), c => c.Name == "tg_session");
        Assert.True(cookie.HttpOnly);
        Assert.Equal(SameSiteAttribute.Strict, cookie.SameSite);
    }

    [Fact]
    public async Task Without_a_wallet_the_button_stays_disabled_and_says_why()
    {
        await using var context = await _browser.ContextAsync(_app.BaseAddress);
        var page = await context.NewPageAsync();
        await page.GotoAsync("/");
        await Assertions.Expect(page.Locator("#wallet-status")).ToHaveTextAsync("No Ethereum wallet was found in this browser.");
        Assert.False(await page.GetByRole(AriaRole.Button, new() { Name = "Sign in with wallet" }).IsEnabledAsync());
    }
}
