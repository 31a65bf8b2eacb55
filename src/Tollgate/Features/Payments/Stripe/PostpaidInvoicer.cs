using System.Globalization;
using Dapper;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Payments.Stripe;

public sealed record UsageInvoice(string Id, string AccountId, string Period, long AmountCents, long AmountMicros, string Status);

/// <summary>
/// Monthly invoicing of postpaid accounts (credit limit above zero). At the end of a UTC month an account that owes
/// money — its balance at the month's end is below zero, so its credits were used up first — gets one Stripe invoice
/// for what it owes and has not been invoiced yet: an invoice item and an invoice, each created with an idempotency
/// key naming the account and month, so a rerun or a second process bills nothing twice. The amount owed is rounded
/// up to whole cents. When Stripe reports the invoice paid, the paid amount is credited back to the account.
/// </summary>
internal sealed partial class PostpaidInvoicer(
    StripeClient stripe, StripeBilling billing, Database db, LedgerService ledger, SystemAccounts system, TimeProvider time, ILogger<PostpaidInvoicer> logger)
{
    public const string Code = "invoice_payment";
    private sealed record Postpaid(string id, long ledger_account_id);
    private sealed record Row(string id, string account_id, string period, long amount_cents, long amount_micros, string status);

    public static string PeriodKey(DateTimeOffset monthStart) => monthStart.ToString("yyyy-MM", CultureInfo.InvariantCulture);

    /// <summary>Invoices every postpaid account for the month starting at <paramref name="monthStart"/>; returns the invoices created (or found).</summary>
    public async Task<IReadOnlyList<UsageInvoice>> InvoiceMonthAsync(DateTimeOffset monthStart, CancellationToken ct)
    {
        monthStart = new DateTimeOffset(monthStart.Year, monthStart.Month, 1, 0, 0, 0, TimeSpan.Zero);
        var end = monthStart.AddMonths(1);
        if (end > time.GetUtcNow()) throw new ArgumentException($"The month {PeriodKey(monthStart)} has not ended yet.");
        List<Postpaid> accounts;
        await using (var c = await db.OpenAsync(ct))
            accounts = (await c.QueryAsync<Postpaid>(new CommandDefinition("""
                SELECT a.id, a.ledger_account_id FROM accounts a JOIN ledger_accounts l ON l.id = a.ledger_account_id
                WHERE l.credit_limit > 0 ORDER BY a.id
                """, cancellationToken: ct))).ToList();
        var invoices = new List<UsageInvoice>();
        foreach (var account in accounts)
            if (await InvoiceAccountAsync(account, monthStart, end, ct) is { } invoice) invoices.Add(invoice);
        return invoices;
    }

    private async Task<UsageInvoice?> InvoiceAccountAsync(Postpaid account, DateTimeOffset monthStart, DateTimeOffset end, CancellationToken ct)
    {
        var period = PeriodKey(monthStart);
        await using var c = await db.OpenAsync(ct);
        if (await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
                "SELECT id, account_id, period, amount_cents, amount_micros, status FROM stripe_invoices WHERE account_id = @id AND period = @period",
                new { account.id, period }, cancellationToken: ct)) is { } known)
            return new UsageInvoice(known.id, known.account_id, known.period, known.amount_cents, known.amount_micros, known.status);

        var balance = await BalanceAtAsync(account.ledger_account_id, end, ct);
        var open = await c.ExecuteScalarAsync<long?>(new CommandDefinition(
            "SELECT SUM(amount_micros) FROM stripe_invoices WHERE account_id = @id AND status = 'open'", new { account.id }, cancellationToken: ct)) ?? 0;
        var owed = -balance - open;
        if (owed <= 0) return null;
        var cents = (owed + 9_999) / 10_000;

        var caller = new Caller("invoicer", account.id, account.ledger_account_id);
        var customer = await billing.CustomerAsync(caller, ct);
        await stripe.PostAsync("/v1/invoiceitems",
        [
            new("customer", customer), new("amount", cents.ToString(CultureInfo.InvariantCulture)), new("currency", "usd"),
            new("description", $"Usage beyond credits, {period}"), new("metadata[tollgate_account]", account.id), new("metadata[period]", period),
        ], $"tollgate-invoiceitem:{account.id}:{period}", ct);
        var invoice = await stripe.PostAsync("/v1/invoices",
        [
            new("customer", customer), new("auto_advance", "true"), new("collection_method", "charge_automatically"),
            new("pending_invoice_items_behavior", "include"), new("metadata[tollgate_account]", account.id), new("metadata[period]", period),
            new("metadata[tollgate_invoice]", "postpaid_usage"),
        ], $"tollgate-invoice:{account.id}:{period}", ct);
        var id = invoice.GetProperty("id").GetString()!;
        await c.ExecuteAsync(new CommandDefinition("""
            INSERT INTO stripe_invoices (id, account_id, period, amount_cents, amount_micros, status, created_at)
            VALUES (@id, @account, @period, @cents, @micros, 'open', @now) ON CONFLICT DO NOTHING
            """, new { id, account = account.id, period, cents, micros = cents * 10_000, now = time.GetUtcNowMicros() }, cancellationToken: ct));
        LogInvoiced(logger, account.id, period, cents);
        return new UsageInvoice(id, account.id, period, cents, cents * 10_000, "open");
    }

    /// <summary>The account's balance just before <paramref name="at"/>: the balance after its last ledger entry before then.</summary>
    private async Task<long> BalanceAtAsync(long ledgerAccountId, DateTimeOffset at, CancellationToken ct)
    {
        var atMicros = UnixMicros.From(at);
        long? before = null;
        while (true)
        {
            var page = await ledger.GetStatementAsync(ledgerAccountId, before, 500, ct);
            if (page.Count == 0) return 0;
            foreach (var line in page)
                if (line.Entry.TimestampMicros < atMicros) return line.Entry.BalanceAfter;
            before = page[^1].Entry.Version;
        }
    }

    /// <summary>
    /// A paid usage invoice credits its amount back (once: the transfer id names the invoice), marked paid in the same
    /// transaction, with <paramref name="eventRow"/> (the event's record). Null if the invoice is not one of these.
    /// </summary>
    public async Task<WebhookOutcome?> InvoicePaidAsync(string invoiceId, long paidCents, LedgerSideWrite eventRow, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition(
            "SELECT id, account_id, period, amount_cents, amount_micros, status FROM stripe_invoices WHERE id = @invoiceId", new { invoiceId }, cancellationToken: ct));
        if (row is null) return null;
        var ledgerAccount = await c.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT ledger_account_id FROM accounts WHERE id = @id", new { id = row.account_id }, cancellationToken: ct));
        var micros = Math.Min(paidCents, row.amount_cents) * 10_000;
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = $"stripe:invoice:{invoiceId}", DebitAccountId = await system.StripeClearingAsync(ct), CreditAccountId = ledgerAccount, Amount = micros,
            Code = Code, Reference = invoiceId, Description = $"Payment of the usage invoice for {row.period}",
        }, new LedgerCommit
        {
            SideWrites =
            [
                eventRow,
                new LedgerSideWrite("UPDATE stripe_invoices SET status = 'paid', paid_at = COALESCE(paid_at, @now) WHERE id = @invoiceId",
                    new Dictionary<string, object?> { ["invoiceId"] = invoiceId, ["now"] = time.GetUtcNowMicros() }),
            ],
        }, ct);
        if (!result.Succeeded) throw new InvalidOperationException($"The ledger refused the payment of invoice {invoiceId}: {result.Code}.");
        return new WebhookOutcome(result.Code == TransferResultCode.Replayed ? "usage_invoice_paid:replayed" : "usage_invoice_paid", row.account_id);
    }

    public async Task<IReadOnlyList<UsageInvoice>> ListAsync(string accountId, CancellationToken ct)
    {
        await using var c = await db.OpenAsync(ct);
        return (await c.QueryAsync<Row>(new CommandDefinition(
            "SELECT id, account_id, period, amount_cents, amount_micros, status FROM stripe_invoices WHERE account_id = @accountId ORDER BY period DESC",
            new { accountId }, cancellationToken: ct))).Select(r => new UsageInvoice(r.id, r.account_id, r.period, r.amount_cents, r.amount_micros, r.status)).ToList();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Account {AccountId} invoiced {Cents} cents for usage beyond credits in {Period}")]
    private static partial void LogInvoiced(ILogger logger, string accountId, string period, long cents);
}

/// <summary>Invoices the month just ended, shortly after it ends (every process may try: the idempotency keys make it once).</summary>
internal sealed partial class PostpaidInvoiceJob(PostpaidInvoicer invoicer, IOptions<StripeOptions> options, TimeProvider time, ILogger<PostpaidInvoiceJob> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Value.Enabled || !options.Value.InvoicePostpaidUsage) return;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var now = time.GetUtcNow();
                await invoicer.InvoiceMonthAsync(new DateTimeOffset(now.Year, now.Month, 1, 0, 0, 0, TimeSpan.Zero).AddMonths(-1), stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogFailed(logger, e);
            }
            try { await Task.Delay(TimeSpan.FromHours(1), time, stoppingToken); }
            catch (OperationCanceledException) { return; }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Postpaid usage invoicing failed; retried in an hour")]
    private static partial void LogFailed(ILogger logger, Exception e);
}
