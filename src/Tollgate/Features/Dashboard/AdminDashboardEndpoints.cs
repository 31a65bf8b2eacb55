using Microsoft.Extensions.Options;
using Tollgate.Features.Admin;
using Tollgate.Features.Metering;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Features.Pricing;
using Tollgate.Infrastructure.Money;
using static Tollgate.Features.Dashboard.Html;

namespace Tollgate.Features.Dashboard;

/// <summary>
/// The operator's pages under <c>/admin</c> (not <c>/admin/v1</c>, the JSON API): accounts with balances, the pricing
/// catalog, the needs-review queue and Stripe reconciliation. Signing in takes the admin key; the pages only read.
/// </summary>
internal static class AdminDashboardEndpoints
{
    public const int AccountsShown = 200;
    public const int ModelsShown = 200;

    public static void Map(RouteGroupBuilder group)
    {
        group.MapGet("/admin", Accounts);
        group.MapGet("/admin/sign-in", async (HttpContext http, CancellationToken ct) => SignInPage(http, await DashboardAuth.LoadAsync(http, ct)));
        group.MapPost("/admin/sign-in", SignIn);
        group.MapPost("/admin/sign-out", SignOut);
        group.MapGet("/admin/pricing", Pricing);
        group.MapGet("/admin/review", Review);
        group.MapGet("/admin/margin", Margin);
        group.MapGet("/admin/reconciliation", Reconciliation);
    }

    private static IResult SignInPage(HttpContext http, DashboardContext d, string? error = null, int status = 200) =>
        DashboardEndpoints.HtmlPage(http, Page("Operator sign-in", d, $"""
            {Notice(error, error: true)}
            <form method="post" action="/admin/sign-in" class="card narrow">
              {Csrf(d)}
              <div class="field"><label for="admin-key">Admin key</label><input id="admin-key" name="admin_key" type="password" autocomplete="off" required></div>
              <button type="submit">Sign in</button>
            </form>
            <p class="muted"><a href="/">Member sign-in</a></p>
            """, ""), status);

    private static async Task<IResult> SignIn(HttpContext http, AdminKeys keys, Members.MemberService members, IOptions<DashboardOptions> options, TimeProvider time, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!await DashboardAuth.ValidFormAsync(http)) return DashboardEndpoints.Forged(http, d);
        var key = (await http.Request.ReadFormAsync(ct))["admin_key"].ToString().Trim();
        var attempts = http.RequestServices.GetRequiredService<SignInAttempts>();
        if (attempts.RetryAfter(SignInAttempts.AdminScope, http.Connection.RemoteIpAddress, null) is { } wait)
        {
            http.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(wait.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            return SignInPage(http, d, "Too many failed sign-in attempts; try again later.", StatusCodes.Status429TooManyRequests);
        }
        if (key.Length is 0 or > 200 || !keys.IsAdmin(key))
        {
            attempts.RecordFailure(SignInAttempts.AdminScope, http.Connection.RemoteIpAddress, null);
            return SignInPage(http, d, "That is not an admin key.", StatusCodes.Status401Unauthorized);
        }
        var lifetime = TimeSpan.FromHours(options.Value.OperatorSessionHours);
        // One role per browser: a member session open here is ended, not just forgotten.
        if (http.Request.Cookies[DashboardAuth.SessionCookie] is { } session && Members.MemberService.IsSessionToken(session)) await members.SignOutAsync(session, ct);
        http.Response.Cookies.Delete(DashboardAuth.SessionCookie, DashboardAuth.Cookie(http, null));
        http.Response.Cookies.Append(DashboardAuth.OperatorCookie, DashboardAuth.ProtectOperator(http, key, lifetime), DashboardAuth.Cookie(http, time.GetUtcNow() + lifetime));
        return Results.Redirect("/admin");
    }

    private static async Task<IResult> SignOut(HttpContext http, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!await DashboardAuth.ValidFormAsync(http)) return DashboardEndpoints.Forged(http, d);
        http.Response.Cookies.Delete(DashboardAuth.OperatorCookie, DashboardAuth.Cookie(http, null));
        return Results.Redirect("/admin/sign-in");
    }

    private static async Task<IResult> Accounts(HttpContext http, DashboardStore store, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!d.IsOperator) return Results.Redirect("/admin/sign-in");
        var accounts = await store.AccountsAsync(AccountsShown, ct);
        var rows = string.Concat(accounts.Select(a => $"""
            <tr><td><code>{E(a.Id)}</code></td><td>{E(a.Name)}</td><td>{E(a.PlanId)}</td><td class="num">{Usd(a.BalanceMicros)}</td><td class="num">{Usd(a.HeldMicros)}</td><td>{When(a.CreatedAt)}</td></tr>
            """));
        var body = $"""
            <p class="muted">Newest {AccountsShown}. Details and changes: the admin API (<code>/admin/v1/accounts/ID</code>) or the CLI.</p>
            <div class="scroll"><table id="accounts"><thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Plan</th><th scope="col" class="num">Balance</th><th scope="col" class="num">Held</th><th scope="col">Created</th></tr></thead>
            <tbody>{(rows.Length == 0 ? "<tr><td colspan=\"6\" class=\"muted\">No accounts.</td></tr>" : rows)}</tbody></table></div>
            """;
        return DashboardEndpoints.HtmlPage(http, Page("Accounts", d, body, "/admin"));
    }

    private static async Task<IResult> Pricing(HttpContext http, PricingCatalog catalog, CreditUnit credits, TimeProvider time, Plans.PlanCatalog plans, string? q, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!d.IsOperator) return Results.Redirect("/admin/sign-in");
        q = q is { Length: > 0 and <= 100 } ? q.Trim() : null;
        var list = PricingEndpoints.List(catalog, credits, time, plans, null).Value!;
        var matching = list.Models.Where(m => q is null || m.Id.Contains(q, StringComparison.OrdinalIgnoreCase)).ToList();
        var rows = string.Concat(matching.Take(ModelsShown).Select(m =>
        {
            var plan = m.Plans.FirstOrDefault();
            string Rate(string kind) => plan?.Rates.FirstOrDefault(r => r.Kind == kind) is { } r ? $"${E(r.ProviderUsd)} → {E(Micros(r.UserMicros))}" : "—";
            return $"<tr><td><code>{E(m.Id)}</code></td><td>{E(plan?.Plan ?? "—")}</td><td class=\"num\">{Rate("input")}</td><td class=\"num\">{Rate("output")}</td><td>{E(m.PriceSource.ToString().ToLowerInvariant())}</td></tr>";
        }));
        var body = $"""
            <form method="get" action="/admin/pricing" class="filters" role="search" aria-label="Search models">
              <div class="field"><label for="q">Model contains</label><input id="q" name="q" value="{E(q)}"></div><button type="submit">Search</button>
            </form>
            <p class="muted">{N(matching.Count)} of {N(list.Models.Count)} models{(matching.Count > ModelsShown ? $", first {ModelsShown} shown" : "")}. Per million tokens: provider price → price charged on the first plan that allows the model. Source: {E(list.CatalogSource)}. {E(list.CatalogLicense)}</p>
            <div class="scroll"><table id="pricing"><thead><tr><th scope="col">Model</th><th scope="col">Plan</th><th scope="col" class="num">Input</th><th scope="col" class="num">Output</th><th scope="col">Source</th></tr></thead>
            <tbody>{rows}</tbody></table></div>
            """;
        return DashboardEndpoints.HtmlPage(http, Page("Pricing catalog", d, body, "/admin/pricing"));
    }

    /// <summary>A user price in micro-USD per million tokens, shown as dollars (the catalog's decimal rates are display-only here).</summary>
    private static string Micros(decimal micros) => "$" + (micros / 1_000_000m).ToString("0.######", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Revenue, provider cost and margin over the last <c>days</c> whole UTC days, by model or account (the margin report's numbers).</summary>
    private static async Task<IResult> Margin(HttpContext http, Analytics.AnalyticsStore store, TimeProvider time, int? days, string? by, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!d.IsOperator) return Results.Redirect("/admin/sign-in");
        var span = Math.Clamp(days ?? 30, 1, Analytics.AnalyticsQuery.MaxRangeDays);
        var grouping = by switch { "account" => Analytics.UsageGrouping.Account, "provider" => Analytics.UsageGrouping.Provider, "day" => Analytics.UsageGrouping.Day, _ => Analytics.UsageGrouping.Model };
        const long day = Analytics.AnalyticsQuery.MicrosPerDay;
        var to = (Infrastructure.UnixMicros.From(time.GetUtcNow()) / day + 1) * day;
        var filter = new Analytics.UsageFilter(null, to - span * day, to, null, null, null, null, null, null);
        var rows = (await store.SummaryAsync(filter, grouping, null, ct)).Select(Analytics.MarginRow.From).OrderByDescending(r => r.RevenueMicros).ToList();
        var table = string.Concat(rows.Select(r =>
            $"<tr><td>{E(r.Key ?? "—")}</td><td class=\"num\">{N(r.Requests)}</td><td class=\"num\">{Usd(r.RevenueMicros)}</td>"
            + $"<td class=\"num\">{Usd(r.ProviderCostMicros)}</td><td class=\"num\">{Usd(r.MarginMicros)}</td></tr>"));
        var options = string.Concat(new[] { "model", "provider", "account", "day" }.Select(o => $"<option{(o == (by ?? "model") ? " selected" : "")}>{o}</option>"));
        var body = $"""
            <form method="get" action="/admin/margin" class="filters">
              <div class="field"><label for="days">Days back</label><input id="days" name="days" type="number" min="1" max="366" value="{span}"></div>
              <div class="field"><label for="by">Group by</label><select id="by" name="by">{options}</select></div>
              <button type="submit">Show</button>
            </form>
            <p>Revenue <strong id="margin-revenue">{Usd(rows.Sum(r => r.RevenueMicros))}</strong>, provider cost <strong>{Usd(rows.Sum(r => r.ProviderCostMicros))}</strong>,
            margin <strong id="margin-total">{Usd(rows.Sum(r => r.MarginMicros))}</strong>.</p>
            {BarChart("Margin", rows.Select(r => r.Key ?? "—").ToList(), rows.Select(r => Math.Max(0, r.MarginMicros)).ToList(), Usd, "chart-margin")}
            <div class="scroll"><table id="margin"><thead><tr><th scope="col">{E(by ?? "model")}</th><th scope="col" class="num">Requests</th><th scope="col" class="num">Revenue</th><th scope="col" class="num">Provider cost</th><th scope="col" class="num">Margin</th></tr></thead>
            <tbody>{(table.Length == 0 ? "<tr><td colspan=\"5\" class=\"muted\">No usage in this range.</td></tr>" : table)}</tbody></table></div>
            """;
        return DashboardEndpoints.HtmlPage(http, Page("Margin", d, body, "/admin/margin"));
    }

    private static async Task<IResult> Review(HttpContext http, IUsageStore usage, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!d.IsOperator) return Results.Redirect("/admin/sign-in");
        var items = await usage.ListNeedsReviewAsync(null, null, null, 100, ct);
        var rows = string.Concat(items.Select(i => $"""
            <tr><td>{When(i.Record.OccurredAt)}</td><td><code>{E(i.Record.AccountId)}</code></td><td>{E(i.Record.Model)}</td><td class="num">{N(i.Record.InputTokens)}</td><td class="num">{N(i.Record.OutputTokens)}</td><td><code>{E(i.Record.Id)}</code></td></tr>
            """));
        var body = $"""
            <p class="muted">Usage of models without a price, oldest first (up to 100). Price the model (admin pricing API), then re-rate: <code>POST /admin/v1/usage/rerate</code>.</p>
            <div class="scroll"><table id="review"><thead><tr><th scope="col">When</th><th scope="col">Account</th><th scope="col">Model</th><th scope="col" class="num">Input</th><th scope="col" class="num">Output</th><th scope="col">Record</th></tr></thead>
            <tbody>{(rows.Length == 0 ? "<tr><td colspan=\"6\" class=\"muted\">Nothing waits for review.</td></tr>" : rows)}</tbody></table></div>
            """;
        return DashboardEndpoints.HtmlPage(http, Page("Needs review", d, body, "/admin/review"));
    }

    private static async Task<IResult> Reconciliation(HttpContext http, StripeReconciler reconciler, IOptions<StripeOptions> options, TimeProvider time, int? days, CancellationToken ct)
    {
        var d = await DashboardAuth.LoadAsync(http, ct);
        if (!d.IsOperator) return Results.Redirect("/admin/sign-in");
        var form = $"""
            <form method="get" action="/admin/reconciliation" class="filters">
              <div class="field"><label for="days">Days back</label><input id="days" name="days" type="number" min="1" max="365" value="{days ?? 30}"></div>
              <button type="submit">Reconcile with Stripe</button>
            </form>
            """;
        if (!options.Value.Enabled) return DashboardEndpoints.HtmlPage(http, Page("Reconciliation", d, "<p class=\"muted\">Stripe is not configured.</p>", "/admin/reconciliation"));
        // Reconciling calls Stripe, so it runs only when asked (the form), not on every visit.
        if (days is not { } n) return DashboardEndpoints.HtmlPage(http, Page("Reconciliation", d, form, "/admin/reconciliation"));
        n = Math.Clamp(n, 1, 365);
        var to = time.GetUtcNow();
        string result;
        try
        {
            var report = await reconciler.ReconcileAsync(to.AddDays(-n), to, ct);
            var rows = string.Concat(report.Mismatches.Select(m => $"""
                <tr><td>{E(m.Kind)}</td><td><code>{E(m.Reference)}</code></td><td>{E(m.AccountId ?? "—")}</td><td class="num">{(m.PaidCents is { } p ? Cents(p) : "—")}</td><td class="num">{(m.RecordedCents is { } r ? Cents(r) : "—")}</td><td class="num">{Usd(m.CreditedMicros)}</td><td>{E(m.Detail)}</td></tr>
                """));
            result = $"""
                <p role="status">{N(report.Checked)} paid sessions checked from {When(report.From)} to {When(report.To)}: <strong>{(report.Clean ? "clean" : $"{report.Mismatches.Count} mismatches")}</strong>.</p>
                {(report.Clean ? "" : $"<div class=\"scroll\"><table id=\"mismatches\"><thead><tr><th scope=\"col\">Kind</th><th scope=\"col\">Reference</th><th scope=\"col\">Account</th><th scope=\"col\" class=\"num\">Paid</th><th scope=\"col\" class=\"num\">Recorded</th><th scope=\"col\" class=\"num\">Credited</th><th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table></div>")}
                """;
        }
        catch (StripeException e)
        {
            result = Notice($"Stripe refused or failed the request: {e.Message}", error: true);
        }
        return DashboardEndpoints.HtmlPage(http, Page("Reconciliation", d, form + result, "/admin/reconciliation"));
    }
}
