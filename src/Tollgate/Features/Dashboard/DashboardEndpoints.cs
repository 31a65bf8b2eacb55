using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.DataProtection;
using Tollgate.Features.Accounts;
using Tollgate.Features.Alerts;
using Tollgate.Features.Keys;
using Tollgate.Features.Members;
using Tollgate.Features.Payments;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Features.Plans;
using static Tollgate.Features.Dashboard.Html;

namespace Tollgate.Features.Dashboard;

/// <summary>
/// The member dashboard, rendered on the server: <c>/</c> (sign-in, then the overview), <c>/usage</c>, <c>/keys</c>,
/// <c>/billing</c>. Pages read through the same services as the self-service API; every change is a form POST that
/// must carry the antiforgery token, and changes (keys, purchases, cancelling) need an owner or admin — the server
/// refuses them for members and viewers whatever the page showed. A member only ever sees the account of their session.
/// </summary>
internal static class DashboardEndpoints
{
    public const int UsageWindowDays = 30;
    public const int RecentLimit = 50;

    /// <summary>Fixed confirmation texts, chosen by a code in the query string (never echoing user input).</summary>
    private static readonly Dictionary<string, string> Done = new(StringComparer.Ordinal)
    {
        ["revoked"] = "The key was revoked; it stops working within a second.",
        ["cancel_scheduled"] = "The subscription will end at the end of the current period.",
        ["canceled"] = "The subscription was cancelled.",
        ["paid"] = "Thank you! Your credits appear here as soon as Stripe confirms the payment.",
        ["checkout_cancelled"] = "The checkout was cancelled; nothing was charged.",
    };

    public static void MapDashboard(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("").ExcludeFromDescription();
        group.MapGet("/dashboard.css", (HttpContext http) =>
        {
            http.Response.Headers.CacheControl = "public, max-age=3600";
            return Results.Text(Css, "text/css; charset=utf-8");
        });
        group.MapGet("/", Overview);
        group.MapPost("/sign-in", SignIn);
        group.MapPost("/sign-out", SignOut);
        group.MapGet("/usage", Usage);
        group.MapGet("/keys", Keys);
        group.MapPost("/keys", CreateKey).AddEndpointFilter(Audit.AuditFilter.DashboardAsync);
        group.MapPost("/keys/{keyId}/revoke", RevokeKey).AddEndpointFilter(Audit.AuditFilter.DashboardAsync);
        group.MapGet("/billing", Billing);
        group.MapGet("/earnings", Earnings);
        group.MapPost("/billing/credits", BuyCredits).AddEndpointFilter(Audit.AuditFilter.DashboardAsync);
        group.MapPost("/billing/subscription/cancel", CancelSubscription).AddEndpointFilter(Audit.AuditFilter.DashboardAsync);
        // Stripe Checkout's default return addresses (Tollgate:Stripe:SuccessUrl / CancelUrl).
        group.MapGet("/billing/success", () => Results.Redirect("/billing?done=paid"));
        group.MapGet("/billing/cancel", () => Results.Redirect("/billing?done=checkout_cancelled"));
        AdminDashboardEndpoints.Map(group);
    }

    internal static IResult HtmlPage(HttpContext http, string html, int status = StatusCodes.Status200OK)
    {
        // No framing by other sites, no inline script anywhere, and pages with balances and keys are not cached.
        http.Response.Headers.ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";
        http.Response.Headers.XContentTypeOptions = "nosniff";
        // frame-ancestors above for current browsers; this for those that predate it.
        http.Response.Headers.XFrameOptions = "DENY";
        http.Response.Headers.CacheControl = "no-store";
        http.Response.Headers["Referrer-Policy"] = "same-origin";
        return Results.Content(html, "text/html; charset=utf-8", Encoding.UTF8, status);
    }

    internal static IResult SignInPage(HttpContext http, DashboardContext d, string? error = null, string? email = null, int status = 200) =>
        HtmlPage(http, Page("Sign in", d, $"""
            {Notice(error, error: true)}
            <form method="post" action="/sign-in" class="card narrow">
              {Csrf(d)}
              <div class="field"><label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required value="{E(email)}"></div>
              <div class="field"><label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required></div>
              <div class="field"><label for="account">Account id <span class="muted">(only if you belong to several)</span></label><input id="account" name="account" autocomplete="off"></div>
              <button type="submit">Sign in</button>
            </form>
            {WalletSignInForm(http, d)}
            <p class="muted">Operators: <a href="/admin/sign-in">sign in with the admin key</a>.</p>
            """, "/"), status);

    /// <summary>
    /// The "Sign in with wallet" button (when crypto payments are on): disabled until /dashboard-wallet.js finds a wallet,
    /// whose signature it posts in this form.
    /// </summary>
    private static string WalletSignInForm(HttpContext http, DashboardContext d) =>
        !http.RequestServices.GetRequiredService<Microsoft.Extensions.Options.IOptions<Payments.Crypto.CryptoOptions>>().Value.Enabled ? "" : $"""
            <form method="post" action="/sign-in/wallet" id="wallet-form" class="card narrow">
              {Csrf(d)}
              <input type="hidden" name="message"><input type="hidden" name="signature">
              <button type="button" id="wallet-sign-in" disabled>Sign in with wallet</button>
              <p class="muted" id="wallet-status" role="status" aria-live="polite">Sign-In with Ethereum: your wallet signs a one-time message; no transaction, no gas.</p>
            </form>
            <script src="/dashboard-wallet.js" defer></script>
            """;

    /// <summary>A 400 page for a POST without a valid antiforgery token: nothing was changed.</summary>
    internal static IResult Forged(HttpContext http, DashboardContext d) =>
        HtmlPage(http, Page("Form expired", d, $"{Notice("This form was not sent from this dashboard or has expired; nothing was changed. Go back and try again.", error: true)}<p><a href=\"/\">Back to the dashboard</a></p>", ""), StatusCodes.Status400BadRequest);

    private static IResult Forbidden(HttpContext http, DashboardContext d) =>
        HtmlPage(http, Page("Not allowed", d, $"{Notice($"Your role '{d.Member?.Role}' can look but not change this; an owner or admin can.", error: true)}<p><a href=\"/\">Back to the dashboard</a></p>", ""), StatusCodes.Status403Forbidden);

    /// <summary>GET /: the sign-in form, or the account's overview.</summary>
    private static async Task<IResult> Overview(HttpContext http, AccountService accounts, PlanCatalog plans, QuotaStore quotas, AlertStore alerts,
        SubscriptionService subscriptions, TimeProvider time, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.IsOperator) return Results.Redirect("/admin");
        if (d.Member is not { } caller) return SignInPage(http, d);
        var account = await accounts.GetAsync(caller.AccountId, ct) ?? throw new InvalidOperationException($"Account {caller.AccountId} of a live session disappeared.");
        var plan = plans.For(caller);
        var period = PlanPeriod.Of(caller, time.GetUtcNow());
        var quotaRows = new StringBuilder();
        foreach (var (kind, limit) in new[] { (QuotaStore.Requests, plan.IncludedRequests), (QuotaStore.Tokens, plan.IncludedTokens) })
        {
            if (limit is not { } included) continue;
            var used = await quotas.UsedAsync(caller.AccountId, kind, period.Start, ct);
            quotaRows.Append(CultureInfo.InvariantCulture, $"""
                <tr><th scope="row">Included {kind}</th><td class="num">{N(used)} of {N(included)}</td>
                <td><meter min="0" max="{included}" value="{Math.Min(used, included)}" aria-label="{kind} used">{N(used)}</meter></td></tr>
                """);
        }
        var active = await alerts.ListAsync(caller.AccountId, activeOnly: true, 20, ct);
        var subscription = await subscriptions.GetAsync(caller.AccountId, ct);
        var l = account.Ledger;
        var alertList = active.Count == 0
            ? "<p class=\"muted\">No active alerts.</p>"
            : "<ul>" + string.Concat(active.Select(a => $"<li><strong>{E(AlertText(a))}</strong> <span class=\"muted\">since {When(a.FiredAt)}</span></li>")) + "</ul>";
        var body = $"""
            <p class="muted">Account <code id="account-id">{E(account.Account.Id)}</code></p>
            <section aria-labelledby="balance-h"><h2 id="balance-h">Balance</h2>
            <div class="cards">
              <div class="card"><h3>Balance</h3><p class="big" id="balance">{Usd(l.BalanceMicros)}</p></div>
              <div class="card"><h3>Available</h3><p class="big" id="available">{Usd(l.AvailableMicros)}</p><p class="muted">balance − held{(l.CreditLimitMicros > 0 ? " + credit limit " + Usd(l.CreditLimitMicros) : "")}</p></div>
              <div class="card"><h3>Held</h3><p class="big" id="held">{Usd(l.HeldMicros)}</p><p class="muted">reserved by calls in flight</p></div>
            </div></section>
            <section aria-labelledby="plan-h"><h2 id="plan-h">Plan: {E(plan.Name)}</h2>
            <p>Period {Day(period.Start)} – {Day(period.End)}{(subscription is { IsLive: true } s ? $" · subscription {E(s.Status)}{(s.CancelAtPeriodEnd ? ", ends at period end" : "")}" : "")}.</p>
            {(quotaRows.Length == 0 ? "<p class=\"muted\">This plan has no included quotas.</p>" : $"<table><tbody>{quotaRows}</tbody></table>")}
            </section>
            <section aria-labelledby="alerts-h"><h2 id="alerts-h">Active alerts</h2>{alertList}</section>
            <p><a href="/usage">Usage for the last {UsageWindowDays} days</a> · <a href="/keys">API keys</a> · <a href="/billing">Buy credits</a></p>
            """;
        return HtmlPage(http, Page(account.Account.Name, d, body, "/"));
    }

    private static string AlertText(Alert a) => a.Subject == AlertStore.BalanceLowSubject
        ? $"Balance low ({(a.BalanceMicros is { } b ? Usd(b) : "?")})"
        : $"{a.Subject} at {a.ThresholdPercent}%" + (a.Used is { } u && a.Limit is { } lim ? $" ({N(u)} of {N(lim)})" : "");

    private static async Task<IResult> SignIn(HttpContext http, MemberService members, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        var form = await http.Request.ReadFormAsync(ct);
        var email = form["email"].ToString();
        var password = form["password"].ToString();
        var accountId = form["account"].ToString() is { Length: > 0 } a ? a.Trim() : null;
        if (email.Length is 0 or > 254 || password.Length is 0 or > MemberService.MaxPasswordLength)
            return SignInPage(http, d, "Enter your email and password.", email, StatusCodes.Status400BadRequest);
        var attempts = http.RequestServices.GetRequiredService<Admin.SignInAttempts>();
        var ip = http.Connection.RemoteIpAddress;
        if (attempts.RetryAfter(Admin.SignInAttempts.PasswordScope, ip, email) is { } wait)
        {
            http.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(wait.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            return SignInPage(http, d, "Too many failed sign-in attempts; try again later.", email, StatusCodes.Status429TooManyRequests);
        }
        var session = await members.SignInAsync(email, password, accountId, ct);
        if (session is not { } s)
        {
            attempts.RecordFailure(Admin.SignInAttempts.PasswordScope, ip, email);
            return SignInPage(http, d, "Wrong email or password (or, if you belong to several accounts, give the account id).", email, StatusCodes.Status401Unauthorized);
        }
        attempts.RecordSuccess(Admin.SignInAttempts.PasswordScope, email);
        http.Response.Cookies.Delete(DashboardAuth.OperatorCookie);
        http.Response.Cookies.Append(DashboardAuth.SessionCookie, s.Token, DashboardAuth.Cookie(http, s.ExpiresAt));
        return Results.Redirect("/", permanent: false);
    }

    private static async Task<IResult> SignOut(HttpContext http, MemberService members, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        if (http.Request.Cookies[DashboardAuth.SessionCookie] is { } token && MemberService.IsSessionToken(token)) await members.SignOutAsync(token, ct);
        http.Response.Cookies.Delete(DashboardAuth.SessionCookie, DashboardAuth.Cookie(http, null));
        return Results.Redirect("/");
    }

    private static async Task<IResult> Usage(HttpContext http, DashboardStore store, TimeProvider time, string? model, string? status, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is not { } caller) return Results.Redirect("/");
        model = model is { Length: > 0 and <= 200 } ? model : null;
        status = status is "billed" or "internal" or "byok" or "needs_review" ? status : null;
        var today = DateTimeOffset.FromUnixTimeSeconds(time.GetUtcNow().ToUnixTimeSeconds() / 86400 * 86400);
        var from = today.AddDays(-(UsageWindowDays - 1));
        var (days, models) = await store.AggregatesAsync(caller.AccountId, from, ct);
        var recent = await store.RecentAsync(caller.AccountId, model, status, RecentLimit, ct);

        var byDay = days.ToDictionary(x => x.Day);
        var labels = new List<string>();
        var spend = new List<long>();
        var requests = new List<long>();
        for (var day = from; day <= today; day = day.AddDays(1))
        {
            labels.Add(Day(day));
            spend.Add(byDay.TryGetValue(day, out var u) ? u.PriceMicros : 0);
            requests.Add(u?.Requests ?? 0);
        }
        var modelOptions = string.Concat(models.Select(m => $"<option value=\"{E(m.Model)}\"{(m.Model == model ? " selected" : "")}>{E(m.Model)}</option>"));
        if (model is not null && models.All(m => m.Model != model)) modelOptions += $"<option value=\"{E(model)}\" selected>{E(model)}</option>";
        var statusOptions = string.Concat(new[] { "billed", "internal", "byok", "needs_review" }.Select(s => $"<option{(s == status ? " selected" : "")}>{s}</option>"));
        var rows = string.Concat(recent.Select(r => $"""
            <tr><td>{When(r.OccurredAt)}</td><td>{E(r.Model)}</td><td>{E(r.KeyId ?? "—")}</td><td class="num">{N(r.InputTokens)}</td><td class="num">{N(r.OutputTokens)}</td>
            <td class="num">{(r.PriceMicros is { } p ? Usd(p) : "—")}</td><td>{E(r.BillingStatus)}</td></tr>
            """));
        var body = $"""
            <p>Totals for the last {UsageWindowDays} days: <strong id="total-requests">{N(requests.Sum())}</strong> requests, <strong id="total-spend">{Usd(spend.Sum())}</strong>.</p>
            {BarChart($"Spend per day (UTC), last {UsageWindowDays} days", labels, spend, Usd, "chart-days")}
            {BarChart("Spend by model", models.Select(m => m.Model).ToList(), models.Select(m => m.PriceMicros).ToList(), Usd, "chart-models")}
            <section aria-labelledby="recent-h"><h2 id="recent-h">Recent requests</h2>
            <form method="get" action="/usage" class="filters" role="search" aria-label="Filter recent requests">
              <div class="field"><label for="f-model">Model</label><select id="f-model" name="model"><option value="">All models</option>{modelOptions}</select></div>
              <div class="field"><label for="f-status">Billing status</label><select id="f-status" name="status"><option value="">Any</option>{statusOptions}</select></div>
              <button type="submit">Filter</button>
            </form>
            <div class="scroll"><table id="recent"><caption class="muted">Newest {RecentLimit}{(model is null && status is null ? "" : ", filtered")}</caption>
            <thead><tr><th scope="col">When</th><th scope="col">Model</th><th scope="col">Key</th><th scope="col" class="num">Input</th><th scope="col" class="num">Output</th><th scope="col" class="num">Price</th><th scope="col">Status</th></tr></thead>
            <tbody>{(rows.Length == 0 ? "<tr><td colspan=\"7\" class=\"muted\">No usage yet.</td></tr>" : rows)}</tbody></table></div>
            </section>
            """;
        return HtmlPage(http, Page("Usage", d, body, "/usage"));
    }

    /// <summary>A creator's earnings from agents sold on the marketplace: the balance not yet paid out, and per month and agent what came in.</summary>
    private static async Task<IResult> Earnings(HttpContext http, Marketplace.MarketplaceService market, Ledger.LedgerService ledger, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is not { } caller) return Results.Redirect("/");
        var rows = await market.EarningsAsync(caller.AccountId, ct);
        var balance = (await ledger.GetAccountAsync(await market.EarningsAccountAsync(caller.AccountId, ct), ct))?.BalanceMicros ?? 0;
        var byMonth = rows.GroupBy(r => r.Period).OrderBy(g => g.Key, StringComparer.Ordinal).ToList();
        var table = string.Concat(rows.OrderByDescending(r => r.Period, StringComparer.Ordinal).ThenBy(r => r.AgentId, StringComparer.Ordinal).Select(r =>
            $"<tr><td>{E(r.Period)}</td><td>{E(r.AgentId)}</td><td>{(r.Code == "agent_share" ? "usage share" : "purchases")}</td>"
            + $"<td class=\"num\">{N(r.Count)}</td><td class=\"num\">{Usd(r.AmountMicros)}</td></tr>"));
        var empty = "<tr><td colspan=\"5\" class=\"muted\">No earnings yet: publish an agent (POST /api/v1/agents) and they appear here.</td></tr>";
        var body = $"""
            <p>Not yet paid out: <strong id="earnings-balance">{Usd(balance)}</strong>. Earned in all: <strong id="earnings-total">{Usd(rows.Sum(r => r.AmountMicros))}</strong>.</p>
            {BarChart("Earnings per month (UTC)", byMonth.Select(g => g.Key).ToList(), byMonth.Select(g => g.Sum(r => r.AmountMicros)).ToList(), Usd, "chart-earnings")}
            <section aria-labelledby="earn-h"><h2 id="earn-h">By month and agent</h2>
            <div class="scroll"><table id="earnings"><thead><tr><th scope="col">Month</th><th scope="col">Agent</th><th scope="col">From</th><th scope="col" class="num">Count</th><th scope="col" class="num">Earned</th></tr></thead>
            <tbody>{(table.Length == 0 ? empty : table)}</tbody></table></div>
            </section>
            """;
        return HtmlPage(http, Page("Earnings", d, body, "/earnings"));
    }

    private static async Task<IResult> Keys(HttpContext http, IApiKeyStore keys, string? done, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is not { } caller) return Results.Redirect("/");
        // The new key travels once, encrypted, in a short-lived cookie set by the POST; it is deleted as it is shown, so a
        // reload (or the back button) never shows it again.
        string? newKey = null;
        if (http.Request.Cookies[DashboardAuth.NewKeyCookie] is { Length: > 0 } sealedKey)
        {
            http.Response.Cookies.Delete(DashboardAuth.NewKeyCookie, DashboardAuth.Cookie(http, null, "/keys"));
            try
            {
                var opened = DashboardAuth.Protector(http, DashboardAuth.NewKeyPurpose).ToTimeLimitedDataProtector().Unprotect(sealedKey);
                if (opened.StartsWith(caller.AccountId + "\n", StringComparison.Ordinal)) newKey = opened[(caller.AccountId.Length + 1)..];
            }
            catch (System.Security.Cryptography.CryptographicException)
            {
                // Expired or not ours: show nothing.
            }
        }
        var list = await keys.ListAsync(caller.AccountId, ct);
        var rows = string.Concat(list.Select(k => $"""
            <tr><td>{E(k.Name ?? "—")}</td><td><code>{E(k.Prefix)}…</code></td><td>{Limits(k.Settings)}</td><td>{When(k.CreatedAt)}</td><td>{When(k.LastUsedAt)}</td>
            <td>{(k.RevokedAt is { } r ? "revoked " + When(r) : "live")}</td>
            <td>{(d.CanManage && k.RevokedAt is null ? $"<form method=\"post\" action=\"/keys/{E(Uri.EscapeDataString(k.Id))}/revoke\" class=\"inline\">{Csrf(d)}<button type=\"submit\" class=\"danger\" aria-label=\"Revoke key {E(k.Name ?? k.Prefix)}\">Revoke</button></form>" : "")}</td></tr>
            """));
        var shown = newKey is null ? "" : $"""
            <div class="notice" role="status"><p><strong>Your new API key</strong> — copy it now; it is shown only once.</p>
            <p class="secret" id="new-key">{E(newKey)}</p></div>
            """;
        var create = !d.CanManage ? "<p class=\"muted\">Your role can see keys but not create or revoke them.</p>" : $"""
            <form method="post" action="/keys" class="card">
              <h2>Create a key</h2>{Csrf(d)}
              <div class="field"><label for="key-name">Name</label><input id="key-name" name="name" maxlength="{AccountService.MaxNameLength}"></div>
              <div class="field"><label for="key-models">Allowed models <span class="muted">(comma-separated globs, empty: any)</span></label><input id="key-models" name="allowed_models" placeholder="openai/*, demo/echo"></div>
              <div class="field"><label for="key-rpm">Requests per minute <span class="muted">(empty: default)</span></label><input id="key-rpm" name="requests_per_minute" type="number" min="1" inputmode="numeric"></div>
              <div class="field"><label for="key-tpm">Tokens per minute <span class="muted">(empty: default)</span></label><input id="key-tpm" name="tokens_per_minute" type="number" min="1" inputmode="numeric"></div>
              <button type="submit">Create key</button>
            </form>
            """;
        var body = $"""
            {shown}{Notice(done is { } k && Done.TryGetValue(k, out var text) ? text : null)}
            <div class="scroll"><table id="keys"><thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Limits</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">State</th><th scope="col"><span class="muted">Action</span></th></tr></thead>
            <tbody>{(rows.Length == 0 ? "<tr><td colspan=\"7\" class=\"muted\">No keys yet.</td></tr>" : rows)}</tbody></table></div>
            {create}
            """;
        return HtmlPage(http, Page("API keys", d, body, "/keys"));
    }

    private static string Limits(KeySettings s)
    {
        var parts = new List<string>();
        if (s.AllowedModels is { } m) parts.Add("models: " + string.Join(", ", m));
        if (s.RequestsPerMinute is { } rpm) parts.Add($"{N(rpm)} req/min");
        if (s.TokensPerMinute is { } tpm) parts.Add($"{N(tpm)} tokens/min");
        if (s.ConcurrentRequests is { } cc) parts.Add($"{N(cc)} concurrent");
        if (s.ExpiresAt is { } e) parts.Add("expires " + Day(e));
        return parts.Count == 0 ? "<span class=\"muted\">defaults</span>" : E(string.Join(" · ", parts));
    }

    private static async Task<IResult> CreateKey(HttpContext http, AccountService accounts, TimeProvider time, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is null) return Results.Redirect("/");
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        if (!d.CanManage) return Forbidden(http, d);
        var caller = d.Member;
        var form = await http.Request.ReadFormAsync(ct);
        var name = form["name"].ToString().Trim() is { Length: > 0 } n ? n : null;
        if (name?.Length > AccountService.MaxNameLength) return await KeyError(http, d, $"The name is longer than {AccountService.MaxNameLength} characters.");
        var models = form["allowed_models"].ToString().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        int? rpm = null;
        long? tpm = null;
        if (form["requests_per_minute"].ToString() is { Length: > 0 } r)
            if (int.TryParse(r, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) rpm = v; else return await KeyError(http, d, "Requests per minute must be a whole number.");
        if (form["tokens_per_minute"].ToString() is { Length: > 0 } t)
            if (long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var v)) tpm = v; else return await KeyError(http, d, "Tokens per minute must be a whole number.");
        var settings = new KeySettings { AllowedModels = models.Length == 0 ? null : models, RequestsPerMinute = rpm, TokensPerMinute = tpm };
        if (settings.Validate(time.GetUtcNow()) is { } problem) return await KeyError(http, d, $"'{problem.Field}' {problem.Message}.");
        var created = await accounts.CreateKeyAsync(caller.AccountId, name, ApiKeyTypes.Standard, settings, ct)
            ?? throw new InvalidOperationException($"Account {caller.AccountId} of a live session disappeared.");
        var sealedKey = DashboardAuth.Protector(http, DashboardAuth.NewKeyPurpose).ToTimeLimitedDataProtector()
            .Protect(caller.AccountId + "\n" + created.Key, TimeSpan.FromMinutes(2));
        http.Response.Cookies.Append(DashboardAuth.NewKeyCookie, sealedKey, DashboardAuth.Cookie(http, time.GetUtcNow().AddMinutes(2), "/keys"));
        return Results.Redirect("/keys", permanent: false);
    }

    private static Task<IResult> KeyError(HttpContext http, DashboardContext d, string message) =>
        Task.FromResult(HtmlPage(http, Page("API keys", d, $"{Notice(message, error: true)}<p><a href=\"/keys\">Back to the keys</a></p>", "/keys"), StatusCodes.Status400BadRequest));

    private static async Task<IResult> RevokeKey(string keyId, HttpContext http, IApiKeyStore keys, TimeProvider time, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is null) return Results.Redirect("/");
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        if (!d.CanManage) return Forbidden(http, d);
        // Scoped by the session's account: another account's key id is simply not found.
        if (!await keys.RevokeAsync(d.Member.AccountId, keyId, time.GetUtcNow(), ct))
            return HtmlPage(http, Page("API keys", d, $"{Notice("No live key with this id in your account.", error: true)}<p><a href=\"/keys\">Back to the keys</a></p>", "/keys"), StatusCodes.Status404NotFound);
        return Results.Redirect("/keys?done=revoked");
    }

    private static async Task<IResult> Billing(HttpContext http, PlanCatalog plans, CreditPackCatalog packs, SubscriptionService subscriptions, StripeStore stripe,
        Microsoft.Extensions.Options.IOptions<StripeOptions> stripeOptions, string? done, string? error, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is not { } caller) return Results.Redirect("/");
        var current = plans.For(caller);
        var subscription = await subscriptions.GetAsync(caller.AccountId, ct);
        var checkouts = stripeOptions.Value.Enabled ? await stripe.CheckoutsAsync(caller.AccountId, 10, ct) : [];
        var tiers = string.Concat(plans.All.Where(p => !p.Archived || p.Id == current.Id).OrderBy(p => p.MonthlyPriceCents ?? 0).ThenBy(p => p.Id, StringComparer.Ordinal).Select(p => $"""
            <article class="card"{(p.Id == current.Id ? " aria-current=\"true\"" : "")}><h3>{E(p.Name)}{(p.Id == current.Id ? " <span class=\"muted\">(your plan)</span>" : "")}</h3>
            <p class="big">{(p.MonthlyPriceCents is { } m ? Cents(m) + "<span class=\"muted\">/month</span>" : p.IsFree ? "Free" : "")}</p>
            {(p.YearlyPriceCents is { } y ? $"<p class=\"muted\">or {Cents(y)}/year</p>" : "")}
            <ul>{(p.IncludedRequests is { } ir ? $"<li>{N(ir)} requests included</li>" : "")}{(p.IncludedTokens is { } it ? $"<li>{N(it)} tokens included</li>" : "")}{(p.IncludedCreditsMicros is { } ic ? $"<li>{Usd(ic)} credits included</li>" : "")}<li>models: {E(p.Models is null ? "all" : string.Join(", ", p.Models))}</li></ul>
            </article>
            """));
        var packCards = !stripeOptions.Value.Enabled
            ? "<p class=\"muted\">Card payments are not configured on this Tollgate.</p>"
            : string.Concat(packs.All.Select(p => $"""
                <article class="card"><h3>{E(p.Name)}</h3><p class="big">{Cents(p.PriceCents, p.Currency)}</p><p>{Usd(p.AmountMicros)} of credits{(p.BonusCredits > 0 ? " (bonus included)" : "")}</p>
                {(d.CanManage ? $"<form method=\"post\" action=\"/billing/credits\">{Csrf(d)}<input type=\"hidden\" name=\"pack\" value=\"{E(p.Id)}\"><button type=\"submit\" aria-label=\"Buy {E(p.Name)}\">Buy</button></form>" : "")}
                </article>
                """));
        var sub = subscription is not { IsLive: true } s ? "<p class=\"muted\">No subscription: the account is on its plan without a recurring charge.</p>" : $"""
            <p>{E(plans.Get(s.PlanId).Name)}, billed {E(s.Interval)}ly ({E(s.Billing)}), status <strong>{E(s.Status)}</strong>; period {Day(s.CurrentPeriodStart)} – {Day(s.CurrentPeriodEnd)}.
            {(s.CancelAtPeriodEnd ? "Ends at the end of this period." : "")}</p>
            {(d.CanManage && !s.CancelAtPeriodEnd ? $"<form method=\"post\" action=\"/billing/subscription/cancel\">{Csrf(d)}<button type=\"submit\" class=\"danger\">Cancel at period end</button></form>" : "")}
            """;
        var history = checkouts.Count == 0 ? "" : "<h2>Recent purchases</h2><div class=\"scroll\"><table><thead><tr><th scope=\"col\">When</th><th scope=\"col\">What</th><th scope=\"col\" class=\"num\">Paid</th><th scope=\"col\">Status</th></tr></thead><tbody>"
            + string.Concat(checkouts.Select(c => $"<tr><td>{When(c.CreatedAt)}</td><td>{E(c.PackId ?? c.PlanId ?? c.Mode)}</td><td class=\"num\">{Cents(c.AmountCents, c.Currency)}</td><td>{E(c.Status)}</td></tr>"))
            + "</tbody></table></div>";
        var body = $"""
            {Notice(done is { } k && Done.TryGetValue(k, out var text) ? text : null)}{Notice(error is "stripe" ? "The payment provider could not start a checkout; nothing was charged. Try again later." : null, error: true)}
            <section aria-labelledby="packs-h"><h2 id="packs-h">Buy credits</h2><div class="cards">{packCards}</div>
            {(d.CanManage ? "" : "<p class=\"muted\">Your role cannot buy credits; an owner or admin can.</p>")}</section>
            <section aria-labelledby="sub-h"><h2 id="sub-h">Subscription</h2>{sub}</section>
            <section aria-labelledby="plans-h"><h2 id="plans-h">Plans</h2><div class="cards">{tiers}</div></section>
            {history}
            """;
        return HtmlPage(http, Page("Billing", d, body, "/billing"));
    }

    /// <summary>The same checkout as <c>POST /api/v1/billing/checkout/credits</c>, then a 303 to Stripe's hosted page.</summary>
    private static async Task<IResult> BuyCredits(HttpContext http, StripeBilling billing, CreditPackCatalog packs, Microsoft.Extensions.Options.IOptions<StripeOptions> options, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is null) return Results.Redirect("/");
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        if (!d.CanManage) return Forbidden(http, d);
        if (!options.Value.Enabled) return Results.Redirect("/billing");
        var form = await http.Request.ReadFormAsync(ct);
        if (packs.Find(form["pack"].ToString()) is not { } pack)
            return HtmlPage(http, Page("Billing", d, $"{Notice("No such credit pack.", error: true)}<p><a href=\"/billing\">Back to billing</a></p>", "/billing"), StatusCodes.Status400BadRequest);
        try
        {
            var created = await billing.CheckoutCreditsAsync(d.Member, pack, null, ct);
            if (!Uri.TryCreate(created.Url, UriKind.Absolute, out var url) || url.Scheme != Uri.UriSchemeHttps) return Results.Redirect("/billing?error=stripe");
            return Results.Redirect(url.AbsoluteUri, permanent: false, preserveMethod: false);
        }
        catch (StripeException)
        {
            return Results.Redirect("/billing?error=stripe");
        }
    }

    private static async Task<IResult> CancelSubscription(HttpContext http, SubscriptionService subscriptions, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (d.Member is null) return Results.Redirect("/");
        if (!await DashboardAuth.ValidFormAsync(http)) return Forged(http, d);
        if (!d.CanManage) return Forbidden(http, d);
        var result = await subscriptions.CancelAsync(d.Member.AccountId, atPeriodEnd: true, ct);
        return Results.Redirect(result.Succeeded ? "/billing?done=cancel_scheduled" : "/billing");
    }
}
