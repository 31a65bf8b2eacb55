using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Dashboard;

/// <summary>
/// The dashboard's HTML, built on the server as strings: every interpolated value goes through <see cref="E"/>
/// (HTML encoding), so nothing a user typed is ever markup. No client framework and no script.
/// </summary>
internal static class Html
{
    private static readonly HtmlEncoder Encoder = HtmlEncoder.Default;

    /// <summary>HTML-encodes text for an element body or a quoted attribute.</summary>
    public static string E(string? text) => text is null ? "" : Encoder.Encode(text);

    /// <summary>Exact dollars from micro-USD, trailing zeros past the cents dropped ($1.50, $0.000123).</summary>
    public static string Usd(long micros)
    {
        var text = Money.FormatMicros(micros);
        var keep = text.Length;
        while (text[keep - 1] == '0' && text.Length - keep < 4) keep--;
        return (text[0] == '-' ? "−$" + text[1..keep] : "$" + text[..keep]);
    }

    /// <summary>Whole-cent price for plan and pack cards.</summary>
    public static string Cents(long cents, string currency = "usd") =>
        (currency == "usd" ? "$" : currency.ToUpperInvariant() + " ") + (cents / 100).ToString("N0", CultureInfo.InvariantCulture) + "." + (cents % 100).ToString("00", CultureInfo.InvariantCulture);

    public static string N(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    public static string When(DateTimeOffset? at) => at is { } t ? $"<time datetime=\"{t.UtcDateTime:O}\">{t.UtcDateTime:yyyy-MM-dd HH:mm} UTC</time>" : "—";

    public static string Day(DateTimeOffset at) => at.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);

    /// <summary>The hidden antiforgery field every form carries.</summary>
    public static string Csrf(DashboardContext d) => $"<input type=\"hidden\" name=\"{E(d.CsrfField)}\" value=\"{E(d.CsrfToken)}\">";

    public static string Notice(string? text, bool error = false) =>
        text is null ? "" : $"<p class=\"notice{(error ? " error" : "")}\" role=\"{(error ? "alert" : "status")}\">{E(text)}</p>";

    /// <summary>The page frame: skip link, header with navigation for the signed-in role, one h1, main content.</summary>
    public static string Page(string title, DashboardContext d, string body, string active)
    {
        var sb = new StringBuilder(4096);
        sb.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
        sb.Append("<title>").Append(E(title)).Append(" · Tollgate</title><link rel=\"stylesheet\" href=\"/dashboard.css\"></head><body>");
        sb.Append("<a class=\"skip\" href=\"#main\">Skip to content</a><header><a class=\"brand\" href=\"").Append(d.IsOperator ? "/admin" : "/").Append("\">Tollgate</a>");
        if (d.IsSignedIn)
        {
            sb.Append("<nav aria-label=\"Main\"><ul>");
            var links = d.IsOperator
                ? new[] { ("/admin", "Accounts"), ("/admin/pricing", "Pricing"), ("/admin/margin", "Margin"), ("/admin/review", "Needs review"), ("/admin/reconciliation", "Reconciliation") }
                : new[] { ("/", "Overview"), ("/usage", "Usage"), ("/keys", "Keys"), ("/billing", "Billing"), ("/earnings", "Earnings") };
            foreach (var (href, label) in links)
                sb.Append("<li><a href=\"").Append(href).Append('"').Append(href == active ? " aria-current=\"page\"" : "").Append('>').Append(label).Append("</a></li>");
            sb.Append("</ul></nav><div class=\"who\"><span>").Append(E(d.Who)).Append("</span>");
            sb.Append("<form method=\"post\" action=\"").Append(d.IsOperator ? "/admin/sign-out" : "/sign-out").Append("\">").Append(Csrf(d))
                .Append("<button type=\"submit\" class=\"link\">Sign out</button></form></div>");
        }
        sb.Append("</header><main id=\"main\"><h1>").Append(E(title)).Append("</h1>").Append(body).Append("</main></body></html>");
        return sb.ToString();
    }

    /// <summary>
    /// A vertical bar chart as inline SVG (one bar per value, labelled by <paramref name="labels"/>), with a text
    /// alternative: the same numbers in a table under it, so screen readers and keyboard users get them too.
    /// </summary>
    public static string BarChart(string caption, IReadOnlyList<string> labels, IReadOnlyList<long> values, Func<long, string> format, string id)
    {
        const int width = 600, height = 160, top = 10, bottom = 22;
        var max = Math.Max(1, values.Count == 0 ? 1 : values.Max());
        // At least ten slots, so one or two bars stay bar-shaped instead of filling the width.
        var slot = (double)width / Math.Max(values.Count, 10);
        var sb = new StringBuilder();
        sb.Append("<figure class=\"chart\"><figcaption id=\"").Append(id).Append("-cap\">").Append(E(caption)).Append("</figcaption>");
        sb.Append("<svg id=\"").Append(id).Append("\" viewBox=\"0 0 ").Append(width).Append(' ').Append(height + bottom)
            .Append("\" role=\"img\" aria-labelledby=\"").Append(id).Append("-cap\" preserveAspectRatio=\"none\">");
        sb.Append("<line x1=\"0\" y1=\"").Append(height).Append("\" x2=\"").Append(width).Append("\" y2=\"").Append(height).Append("\" class=\"axis\"/>");
        for (var i = 0; i < values.Count; i++)
        {
            // Integer arithmetic in 128 bits for the scale; only the pixel result is a double.
            var h = values[i] <= 0 ? 0 : Math.Max(1, (double)((Int128)values[i] * (height - top) / max));
            var x = i * slot + slot * 0.15;
            sb.Append(CultureInfo.InvariantCulture, $"<rect class=\"bar\" data-value=\"{values[i]}\" x=\"{x:0.#}\" y=\"{height - h:0.#}\" width=\"{slot * 0.7:0.#}\" height=\"{h:0.#}\"><title>{E(labels[i])}: {E(format(values[i]))}</title></rect>");
            // Long series: every seventh label counted back from the last (today), so labels never overlap.
            if (values.Count <= 12 || (values.Count - 1 - i) % 7 == 0)
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x + slot * 0.35:0.#}\" y=\"{height + 16}\" text-anchor=\"middle\">{E(Short(labels[i]))}</text>");
        }
        sb.Append("</svg><details><summary>Numbers</summary><table><thead><tr><th scope=\"col\">Label</th><th scope=\"col\" class=\"num\">Value</th></tr></thead><tbody>");
        for (var i = 0; i < values.Count; i++)
            sb.Append("<tr><td>").Append(E(labels[i])).Append("</td><td class=\"num\">").Append(E(format(values[i]))).Append("</td></tr>");
        sb.Append("</tbody></table></details></figure>");
        return sb.ToString();
    }

    private static string Short(string label) => label.Length == 10 && label[4] == '-' ? label[5..] : label.Length > 14 ? label[..13] + "…" : label;

    /// <summary>A small stylesheet: readable at phone width, visible focus, no external fonts.</summary>
    public const string Css = """
        :root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--accent:#0b5cad;--bad:#b42318;--ok:#1a7f37;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
        body{margin:0;line-height:1.45}
        .skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
        header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;padding:.6rem 1rem;border-bottom:1px solid var(--line)}
        .brand{font-weight:700;text-decoration:none;color:var(--fg)}
        nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;margin:0;padding:0}
        nav a{color:var(--accent);text-decoration:none;padding:.2rem 0}nav a[aria-current=page]{font-weight:700;border-bottom:2px solid var(--accent)}
        .who{margin-left:auto;display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:center;color:var(--muted);font-size:.9rem;min-width:0}.who span{overflow-wrap:anywhere}.who form{margin:0}
        main{max-width:64rem;margin:0 auto;padding:1rem}
        h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
        .cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.75rem}
        .card{border:1px solid var(--line);border-radius:6px;padding:.75rem}.card h2,.card h3{margin:.1rem 0 .4rem;font-size:1rem}
        .big{font-size:1.6rem;font-weight:700}.muted{color:var(--muted)}
        table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
        .num{text-align:right;font-variant-numeric:tabular-nums}.scroll{overflow-x:auto}
        form.inline{display:inline}fieldset{border:1px solid var(--line);border-radius:6px}
        .field{display:flex;flex-direction:column;gap:.2rem;margin:.5rem 0;max-width:24rem}
        input,select,button{font:inherit;padding:.4rem .5rem;border:1px solid var(--line);border-radius:4px}
        button{background:var(--accent);color:#fff;border-color:var(--accent);cursor:pointer}button.danger{background:var(--bad);border-color:var(--bad)}
        button.link{background:none;border:none;color:var(--accent);padding:0;text-decoration:underline}
        :focus-visible{outline:3px solid #f0a500;outline-offset:2px}
        .notice{padding:.6rem .8rem;border-radius:4px;background:#e8f3ff;border:1px solid #b6d4fe}.notice.error{background:#fdecea;border-color:#f5c2c0;color:var(--bad)}
        .secret{font-family:ui-monospace,monospace;word-break:break-all;background:#f6f8fa;padding:.5rem;border:1px dashed var(--line)}
        meter{width:100%;height:1rem}.narrow{max-width:26rem}#wallet-form{margin-top:1rem}
        .chart svg{width:100%;height:auto;max-height:14rem}.chart .bar{fill:var(--accent)}.chart .axis{stroke:var(--line)}.chart text{font-size:11px;fill:var(--muted)}
        .filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:flex-end}.filters .field{margin:0}
        @media (max-width:40rem){.who{margin-left:0}main{padding:.75rem}.big{font-size:1.3rem}}
        """;
}
