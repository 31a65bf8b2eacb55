using System.Security.Claims;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.DataProtection;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Features.Members;

namespace Tollgate.Features.Dashboard;

/// <summary>
/// Configuration section <c>Tollgate:Dashboard</c>. Cookies are <c>Secure</c> whenever the request came over HTTPS;
/// <see cref="SecureCookies"/> makes them Secure always (set it behind a TLS-terminating proxy that forwards plain HTTP).
/// </summary>
public sealed record DashboardOptions
{
    public const string Section = "Tollgate:Dashboard";
    public bool SecureCookies { get; init; }
    /// <summary>How long an operator stays signed in with the admin key (hours).</summary>
    public int OperatorSessionHours { get; init; } = 8;
    /// <summary>
    /// Wallet sign-in (needs <c>Tollgate:Crypto:Enabled</c>) of a wallet linked to no account: false (default) refuses it
    /// with <c>wallet_not_linked</c>; true creates a prepaid account for it, linked to it, with the wallet as owner.
    /// </summary>
    public bool WalletSignUp { get; init; }
    /// <summary>The role a linked wallet gets in its account at its first wallet sign-in (linking it took an owner or admin).</summary>
    public string WalletMemberRole { get; init; } = Roles.Admin;
    /// <summary>Sign-in nonces one client IP address may ask for per minute (the route needs no credentials).</summary>
    public int WalletNoncesPerMinute { get; init; } = 30;
}

/// <summary>Who is looking at a dashboard page, and the antiforgery token its forms carry.</summary>
internal sealed class DashboardContext
{
    /// <summary>The member's session as the self-service API sees it (account, role); null when not signed in as a member.</summary>
    public Caller? Member { get; init; }
    public string? MemberEmail { get; init; }
    public bool IsOperator { get; init; }
    public string CsrfField { get; set; } = "";
    public string CsrfToken { get; set; } = "";

    public bool IsSignedIn => Member is not null || IsOperator;
    /// <summary>Owners and admins change keys and billing; members and viewers read.</summary>
    public bool CanManage => Member is { Role: not null } m && m.CanManage;
    public string Who => IsOperator ? "Operator" : Member is { } m ? $"{MemberEmail ?? m.UserId} · {m.Role}" : "";
}

/// <summary>
/// Dashboard sign-in state. A member's session is the <c>tg_sess_…</c> token that <c>POST /api/v1/sessions</c> issues,
/// carried in the <c>tg_session</c> cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) and checked against the
/// database on every request, so signing out or removing the member ends it at once. The operator signs in with the
/// admin key, which is kept only inside a data-protected, time-limited <c>tg_operator</c> cookie and re-checked against
/// the configured admin keys on every request. Every form POST must carry the antiforgery token (cookie + field).
/// </summary>
internal static class DashboardAuth
{
    public const string SessionCookie = "tg_session";
    public const string OperatorCookie = "tg_operator";
    public const string NewKeyCookie = "tg_new_key";
    public const string CsrfCookie = "tg_csrf";
    public const string CsrfField = "__csrf";
    private const string OperatorPurpose = "Tollgate.Dashboard.Operator.v1";
    public const string NewKeyPurpose = "Tollgate.Dashboard.NewKey.v1";

    public static void AddDashboard(IServiceCollection services)
    {
        services.AddOptions<DashboardOptions>().BindConfiguration(DashboardOptions.Section)
            .Validate(o => o.OperatorSessionHours is >= 1 and <= 168, "Tollgate:Dashboard:OperatorSessionHours must be 1–168.")
            .Validate(o => Roles.IsValid(o.WalletMemberRole), "Tollgate:Dashboard:WalletMemberRole must be owner, admin, member or viewer.")
            .Validate(o => o.WalletNoncesPerMinute is >= 1 and <= 10_000, "Tollgate:Dashboard:WalletNoncesPerMinute must be 1–10000.")
            .ValidateOnStart();
        services.AddSingleton<DashboardStore>();
        services.AddAntiforgery(o =>
        {
            o.Cookie.Name = CsrfCookie;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.HttpOnly = true;
            o.FormFieldName = CsrfField;
            o.HeaderName = null;
            // Not Always even with SecureCookies: antiforgery refuses to work at all on a plain-HTTP request then. Its
            // cookie is only half of a token pair, not a credential; the session cookie is the one that must stay Secure.
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
        });
    }

    public static CookieOptions Cookie(HttpContext http, DateTimeOffset? expires, string path = "/") => new()
    {
        HttpOnly = true,
        SameSite = SameSiteMode.Strict,
        Secure = http.Request.IsHttps || http.RequestServices.GetRequiredService<Microsoft.Extensions.Options.IOptions<DashboardOptions>>().Value.SecureCookies,
        Path = path,
        Expires = expires,
        IsEssential = true,
    };

    /// <summary>Resolves the signed-in member or operator from the cookies and issues the page's antiforgery token.</summary>
    public static async Task<DashboardContext> LoadAsync(HttpContext http, CancellationToken ct)
    {
        DashboardContext context;
        if (http.Request.Cookies[OperatorCookie] is { Length: > 0 } ticket && OperatorKey(http, ticket) is not null)
        {
            context = new DashboardContext { IsOperator = true };
            http.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, "operator")], "tollgate-operator"));
        }
        else if (http.Request.Cookies[SessionCookie] is { } token && MemberService.IsSessionToken(token)
                 && await http.RequestServices.GetRequiredService<MemberService>().AuthenticateAsync(token, ct) is { } caller)
        {
            context = new DashboardContext { Member = caller, MemberEmail = await http.RequestServices.GetRequiredService<DashboardStore>().EmailAsync(caller.UserId, ct) };
            // Antiforgery tokens are bound to this identity: a token from another member's page does not validate here.
            http.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, caller.UserId ?? caller.KeyId)], "tollgate-session"));
        }
        else
        {
            context = new DashboardContext();
        }
        var tokens = http.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(http);
        context.CsrfField = tokens.FormFieldName;
        context.CsrfToken = tokens.RequestToken ?? "";
        return context;
    }

    /// <summary>True when the POST carries a valid antiforgery token (cookie and form field) for the current identity.</summary>
    public static Task<bool> ValidFormAsync(HttpContext http) =>
        http.Request.HasFormContentType ? http.RequestServices.GetRequiredService<IAntiforgery>().IsRequestValidAsync(http) : Task.FromResult(false);

    public static string ProtectOperator(HttpContext http, string adminKey, TimeSpan lifetime) =>
        Protector(http, OperatorPurpose).ToTimeLimitedDataProtector().Protect(adminKey, lifetime);

    /// <summary>The admin key inside a live operator cookie, if it is still one of the configured admin keys.</summary>
    private static string? OperatorKey(HttpContext http, string ticket)
    {
        try
        {
            var key = Protector(http, OperatorPurpose).ToTimeLimitedDataProtector().Unprotect(ticket);
            return http.RequestServices.GetRequiredService<AdminKeys>().IsAdmin(key) ? key : null;
        }
        catch (System.Security.Cryptography.CryptographicException)
        {
            return null;
        }
    }

    public static IDataProtector Protector(HttpContext http, string purpose) =>
        http.RequestServices.GetRequiredService<IDataProtectionProvider>().CreateProtector(purpose);
}
