using System.Globalization;
using System.Text.Json;
using Dapper;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Payments.Stripe;

/// <summary>One disagreement between what the payment side says and what the ledger holds.</summary>
/// <param name="Kind"><c>money_without_credit</c>, <c>credit_without_money</c>, <c>amount_mismatch</c>, or <c>refund_unrecovered</c> (Stripe: a refund whose credits were already spent).</param>
public sealed record Mismatch(string Kind, string Reference, string? AccountId, long? PaidCents, long? RecordedCents, long CreditedMicros, string Detail)
{
    /// <summary>The operator's adjustment that resolved it (<c>reconcile:{source}:{reference}</c>), or null while it waits for one.</summary>
    public string? ResolvedBy { get; init; }
    /// <summary>What that adjustment did to the account's balance: positive credited it, negative took credits back, 0 wrote it off.</summary>
    public long? ResolvedMicros { get; init; }
    /// <summary><c>credited</c>, <c>taken_back</c> or <c>written_off</c> (the operator absorbed it).</summary>
    public string? Resolution { get; init; }
}

/// <param name="From">The period (Stripe); for the chain see <see cref="FromBlock"/> and <see cref="ToBlock"/>.</param>
public sealed record ReconciliationReport(string Source, DateTimeOffset? From, DateTimeOffset? To, int Checked, IReadOnlyList<Mismatch> Mismatches)
{
    public long? FromBlock { get; init; }
    public long? ToBlock { get; init; }

    /// <summary>Mismatches no operator has resolved yet.</summary>
    public int Unresolved => Mismatches.Count(m => m.ResolvedBy is null);

    /// <summary>Nothing waits for a decision: every mismatch (if any) has been resolved by an adjustment.</summary>
    public bool Clean => Unresolved == 0;
}

/// <summary>
/// Compares Stripe's paid Checkout Sessions of a period with Tollgate's records and the ledger's top-up transfers,
/// and lists every mismatch. It never fixes anything: an operator resolves each one with an idempotent adjustment
/// (<c>POST /admin/v1/payments/reconciliation/resolutions</c>), after which the mismatch is listed as resolved.
/// </summary>
internal sealed class StripeReconciler(StripeClient stripe, Database db, LedgerService ledger, ReconciliationResolutions resolutions)
{
    private sealed record UnrecoveredRow(string id, string account_id, long amount_cents, long refunded_cents, long unrecovered_micros, long created_at);

    private sealed record LocalRow(string id, string account_id, string mode, long amount_cents, string currency, long amount_micros);

    public async Task<ReconciliationReport> ReconcileAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken ct)
    {
        var paid = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        string? after = null;
        var seen = 0;
        do
        {
            var query = $"/v1/checkout/sessions?limit=100&created[gte]={from.ToUnixTimeSeconds()}&created[lt]={to.ToUnixTimeSeconds()}"
                        + (after is null ? "" : "&starting_after=" + Uri.EscapeDataString(after));
            var page = await stripe.GetAsync(query, ct);
            var data = page.GetProperty("data");
            foreach (var session in data.EnumerateArray())
            {
                seen++;
                after = session.GetProperty("id").GetString();
                if (Str(session, "mode") == "payment" && Str(session, "payment_status") is "paid" or "no_payment_required") paid[after!] = session;
            }
            if (!(page.TryGetProperty("has_more", out var more) && more.ValueKind == JsonValueKind.True) || data.GetArrayLength() == 0) break;
        } while (true);

        await using var c = await db.OpenAsync(ct);
        var local = (await c.QueryAsync<LocalRow>(new CommandDefinition("""
            SELECT id, account_id, mode, amount_cents, currency, amount_micros FROM stripe_checkouts
            WHERE mode = 'payment' AND created_at >= @from AND created_at < @to
            """, new { from = UnixMicros.From(from), to = UnixMicros.From(to) }, cancellationToken: ct))).ToDictionary(r => r.id, StringComparer.Ordinal);
        // Sessions paid in the period but recorded (created) just before it are still ours to match.
        foreach (var id in paid.Keys.Where(id => !local.ContainsKey(id)).ToList())
            if (await c.QuerySingleOrDefaultAsync<LocalRow>(new CommandDefinition(
                    "SELECT id, account_id, mode, amount_cents, currency, amount_micros FROM stripe_checkouts WHERE id = @id", new { id }, cancellationToken: ct)) is { } row)
                local[id] = row;

        var mismatches = new List<Mismatch>();
        foreach (var (id, session) in paid)
        {
            var total = session.TryGetProperty("amount_total", out var t) && t.TryGetInt64(out var tv) ? tv : (long?)null;
            var owner = session.TryGetProperty("metadata", out var m) && m.ValueKind == JsonValueKind.Object ? Str(m, "tollgate_account") : null;
            if (!local.TryGetValue(id, out var row))
            {
                if (owner is not null)
                    mismatches.Add(new Mismatch("money_without_credit", id, owner, total, null, 0, "Paid at Stripe for this account, but Tollgate has no record of the session."));
                continue;
            }
            var credit = await ledger.GetTransferAsync($"stripe:checkout:{id}", ct);
            if (credit is null)
                mismatches.Add(new Mismatch("money_without_credit", id, row.account_id, total, row.amount_cents, 0, "Paid at Stripe, never credited (a webhook not delivered or refused)."));
            else if (total != row.amount_cents)
                mismatches.Add(new Mismatch("amount_mismatch", id, row.account_id, total, row.amount_cents, credit.Amount,
                    $"Stripe's total is {total?.ToString(CultureInfo.InvariantCulture) ?? "unknown"} cents, Tollgate sold it for {row.amount_cents}."));
        }
        foreach (var row in local.Values.Where(r => !paid.ContainsKey(r.id)))
            if (await ledger.GetTransferAsync($"stripe:checkout:{row.id}", ct) is { } credit)
                mismatches.Add(new Mismatch("credit_without_money", row.id, row.account_id, null, row.amount_cents, credit.Amount,
                    "Credited, but Stripe does not list the session as paid in this period."));
        // Refunds whose credits were already spent: the money went back to the buyer, the credits stayed. Listed until an
        // operator decides (takes them back now, or writes them off); once decided, only while the purchase is in the period.
        var fromMicros = UnixMicros.From(from);
        var toMicros = UnixMicros.From(to);
        foreach (var r in await c.QueryAsync<UnrecoveredRow>(new CommandDefinition("""
                     SELECT id, account_id, amount_cents, refunded_cents, unrecovered_micros, created_at FROM stripe_checkouts
                     WHERE unrecovered_micros > 0 ORDER BY created_at, id
                     """, cancellationToken: ct)))
        {
            var reference = r.id + ":refund";
            var inPeriod = r.created_at >= fromMicros && r.created_at < toMicros;
            if (!inPeriod && await ledger.GetTransferAsync(ReconciliationResolutions.TransferId("stripe", reference), ct) is not null) continue;
            mismatches.Add(new Mismatch("refund_unrecovered", reference, r.account_id, r.refunded_cents, r.amount_cents, r.unrecovered_micros,
                $"Refunded {r.refunded_cents.ToString(CultureInfo.InvariantCulture)} of {r.amount_cents.ToString(CultureInfo.InvariantCulture)} cents, but "
                + $"{r.unrecovered_micros.ToString(CultureInfo.InvariantCulture)} micro-USD of its credits were already spent and could not be taken back."));
        }
        return new ReconciliationReport("stripe", from, to, seen, await resolutions.AnnotateAsync("stripe", mismatches, ct));
    }

    private static string? Str(JsonElement o, string name) => o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
