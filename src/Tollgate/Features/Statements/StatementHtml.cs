using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Statements;

/// <summary>The printable statement: one self-contained HTML page (inline CSS, no scripts, no external resources).</summary>
public static class StatementHtml
{
    private static readonly Dictionary<string, string> CategoryNames = new(StringComparer.Ordinal)
    {
        [StatementService.Categories.Topups] = "Top-ups",
        [StatementService.Categories.Grants] = "Grants and included credits",
        [StatementService.Categories.Usage] = "Usage",
        [StatementService.Categories.SubscriptionFees] = "Subscription fees",
        [StatementService.Categories.ProrationCredits] = "Proration credits",
        [StatementService.Categories.AddOns] = "Add-ons",
        [StatementService.Categories.Marketplace] = "Marketplace",
        [StatementService.Categories.Refunds] = "Refunds and claw-backs",
        [StatementService.Categories.Adjustments] = "Adjustments",
        [StatementService.Categories.Other] = "Other",
    };

    private const string Css = """
        @page { size: A4; margin: 18mm 16mm; }
        * { box-sizing: border-box; }
        body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10.5pt; color: #111; margin: 0; }
        header { display: flex; justify-content: space-between; align-items: baseline; border-bottom: 2px solid #111; padding-bottom: 6px; margin-bottom: 14px; }
        h1 { font-size: 18pt; margin: 0; }
        h2 { font-size: 12pt; margin: 18px 0 6px; }
        .muted { color: #555; }
        table { width: 100%; border-collapse: collapse; page-break-inside: auto; }
        tr { page-break-inside: avoid; }
        th, td { padding: 4px 6px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
        th { background: #f2f2f2; font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        tr.total td { font-weight: 700; border-top: 2px solid #111; border-bottom: none; }
        .draft { color: #a00; font-weight: 700; }
        @media print { a { color: inherit; text-decoration: none; } }
        """;

    public static string Render(StatementDocument d)
    {
        var e = HtmlEncoder.Default;
        var s = new StringBuilder(8 * 1024);
        s.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Statement ")
            .Append(e.Encode(d.Period)).Append(" — ").Append(e.Encode(d.AccountName)).Append("</title><style>").Append(Css).Append("</style></head><body>\n");
        s.Append("<header><div><h1>Statement ").Append(e.Encode(d.Period)).Append("</h1><div class=\"muted\">")
            .Append(e.Encode(d.AccountName)).Append(" · ").Append(e.Encode(d.AccountId)).Append("</div></div><div class=\"muted\">")
            .Append(Date(d.PeriodStart)).Append(" – ").Append(Date(d.PeriodEnd.AddDays(-1))).Append(" (UTC)<br>Currency ").Append(e.Encode(d.Currency))
            .Append(d.Final ? "" : "<br><span class=\"draft\">Period in progress: not final</span>").Append("</div></header>\n");

        s.Append("<h2>Summary</h2><table><tbody>\n");
        Row(s, "Opening balance", d.OpeningBalanceMicros);
        foreach (var (category, total) in d.TotalsByCategory)
            if (d.Lines.Any(l => l.Category == category)) Row(s, CategoryNames.GetValueOrDefault(category, category), total);
        s.Append("<tr class=\"total\"><td>Closing balance</td><td class=\"num\">").Append(Usd(d.ClosingBalanceMicros)).Append("</td></tr>\n");
        if (d.AmountDueMicros is { } due)
            s.Append("<tr class=\"total\"><td>Amount due (credit limit ").Append(Usd(d.CreditLimitMicros)).Append(")</td><td class=\"num\">").Append(Usd(due)).Append("</td></tr>\n");
        s.Append("</tbody></table>\n");

        s.Append("<h2>Movements</h2><table><thead><tr><th>Category</th><th>Code</th><th>Source</th><th class=\"num\">Count</th><th class=\"num\">Amount (USD)</th></tr></thead><tbody>\n");
        foreach (var l in d.Lines)
            s.Append("<tr><td>").Append(e.Encode(CategoryNames.GetValueOrDefault(l.Category, l.Category))).Append("</td><td>").Append(e.Encode(l.Code))
                .Append("</td><td>").Append(e.Encode(l.Source ?? "")).Append("</td><td class=\"num\">").Append(l.Count.ToString("N0", CultureInfo.InvariantCulture))
                .Append("</td><td class=\"num\">").Append(Usd(l.AmountMicros)).Append("</td></tr>\n");
        if (d.Lines.Count == 0) s.Append("<tr><td colspan=\"5\" class=\"muted\">No movements in this period.</td></tr>\n");
        s.Append("</tbody></table>\n");

        s.Append("<h2>Usage by model</h2><table><thead><tr><th>Model</th><th class=\"num\">Requests</th><th class=\"num\">Input tokens</th><th class=\"num\">Output tokens</th>")
            .Append("<th class=\"num\">Cache read</th><th class=\"num\">Cache write</th><th class=\"num\">Price (USD)</th></tr></thead><tbody>\n");
        foreach (var u in d.UsageByModel)
            s.Append("<tr><td>").Append(e.Encode(u.Model)).Append("</td><td class=\"num\">").Append(N(u.Requests)).Append("</td><td class=\"num\">").Append(N(u.InputTokens))
                .Append("</td><td class=\"num\">").Append(N(u.OutputTokens)).Append("</td><td class=\"num\">").Append(N(u.CacheReadTokens))
                .Append("</td><td class=\"num\">").Append(N(u.CacheWriteTokens)).Append("</td><td class=\"num\">").Append(Usd(u.PriceMicros)).Append("</td></tr>\n");
        if (d.UsageByModel.Count == 0) s.Append("<tr><td colspan=\"7\" class=\"muted\">No billed usage in this period.</td></tr>\n");
        s.Append("</tbody></table>\n<p class=\"muted\">Balances and movements come from the ledger (versions ")
            .Append(d.LedgerVersionFrom).Append("–").Append(d.LedgerVersionTo).Append("); usage by model from the usage records of the period. Generated ")
            .Append(d.GeneratedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)).Append(" UTC.</p>\n</body></html>\n");
        return s.ToString();
    }

    private static void Row(StringBuilder s, string label, long micros) =>
        s.Append("<tr><td>").Append(HtmlEncoder.Default.Encode(label)).Append("</td><td class=\"num\">").Append(Usd(micros)).Append("</td></tr>\n");

    private static string Usd(long micros) => Money.FormatMicros(micros);
    private static string N(long n) => n.ToString("N0", CultureInfo.InvariantCulture);
    private static string Date(DateTimeOffset d) => d.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
}
