using System.Text.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Tollgate.Features.Accounts;
using Tollgate.Features.Admin;
using Tollgate.Features.Ledger;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Payments;

/// <param name="Source"><c>stripe</c> or <c>usdc</c>: whose clearing account the adjustment moves money against.</param>
/// <param name="Reference">The mismatch's reference as the report lists it (a Checkout Session id, or <c>0x…tx#logIndex</c>).</param>
/// <param name="AmountMicros">Positive credits the account (money arrived, no credit); negative takes credits back (credit without money).</param>
/// <param name="WriteOff">The operator absorbs the amount: it moves from <c>system:adjustments</c> to the clearing account and the account keeps its balance (e.g. credits a refund could not take back).</param>
public sealed record ResolveMismatchInput(string? Source, string? Reference, string? AccountId, long? AmountMicros, string? Reason, bool? WriteOff = null);

public sealed record ResolutionView(string Source, string Reference, string AccountId, long AmountMicros, string Resolution, string TransferId, bool Replayed);

/// <summary>
/// How an operator resolves a reconciliation mismatch: one ledger transfer between the source's payment clearing account
/// and the account, whose id names the mismatch (<c>reconcile:{source}:{reference}</c>). The id makes it idempotent — a
/// repeat is a replay, a repeat with another amount or account is refused — and lets the reconcilers show the mismatch
/// as resolved from then on, so a report lists what still needs a decision, never a silent fix.
/// </summary>
internal sealed class ReconciliationResolutions(LedgerService ledger, SystemAccounts system, AccountService accounts)
{
    public const string Code = "reconciliation_adjustment";
    public const string WriteOffCode = "reconciliation_write_off";
    public static readonly string[] Sources = ["stripe", "usdc"];

    /// <summary>The ledger id of the adjustment resolving a mismatch (the reference's '#' is not an id character).</summary>
    public static string TransferId(string source, string reference) => $"reconcile:{source}:{reference.Replace('#', ':')}";

    private ValueTask<long> ClearingAsync(string source, CancellationToken ct) => source == "usdc"
        ? system.GetIdAsync(SystemAccounts.UsdcPayments, LedgerAccountKinds.PaymentsClearing, ct)
        : system.StripeClearingAsync(ct);

    public enum Outcome { Resolved, Replayed, UnknownAccount, Conflict, InsufficientFunds, Invalid }

    public async Task<(Outcome Outcome, ResolutionView? View)> ResolveAsync(string source, string reference, string accountId, long amountMicros, bool writeOff,
        string? reason, CancellationToken ct)
    {
        var id = TransferId(source, reference);
        if (!LedgerService.IsValidId(id)) return (Outcome.Invalid, null);
        if (await accounts.GetAsync(accountId, ct) is not { } account) return (Outcome.UnknownAccount, null);
        var clearing = await ClearingAsync(source, ct);
        var credit = amountMicros > 0;
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = id,
            DebitAccountId = writeOff ? await system.AdjustmentsAsync(ct) : credit ? clearing : account.Account.LedgerAccountId,
            CreditAccountId = writeOff ? clearing : credit ? account.Account.LedgerAccountId : clearing,
            Amount = Math.Abs(amountMicros),
            Code = writeOff ? WriteOffCode : Code,
            Reference = reference,
            Description = reason,
            Metadata = JsonSerializer.Serialize(new Dictionary<string, object> { ["source"] = source, ["reference"] = reference, ["account_id"] = accountId }),
        }, ct);
        return result.Code switch
        {
            TransferResultCode.Ok or TransferResultCode.Replayed => (result.Code == TransferResultCode.Ok ? Outcome.Resolved : Outcome.Replayed,
                new ResolutionView(source, reference, accountId, amountMicros, writeOff ? "written_off" : credit ? "credited" : "taken_back", id,
                    result.Code == TransferResultCode.Replayed)),
            TransferResultCode.IdempotencyConflict => (Outcome.Conflict, null),
            TransferResultCode.InsufficientFunds => (Outcome.InsufficientFunds, null),
            _ => (Outcome.Invalid, null),
        };
    }

    /// <summary>Marks the mismatches an operator has resolved (their adjustment transfer exists) with its id and signed amount.</summary>
    public async Task<IReadOnlyList<Mismatch>> AnnotateAsync(string source, IReadOnlyList<Mismatch> mismatches, CancellationToken ct)
    {
        if (mismatches.Count == 0) return mismatches;
        var clearing = await ClearingAsync(source, ct);
        var annotated = new List<Mismatch>(mismatches.Count);
        foreach (var m in mismatches)
        {
            var id = TransferId(source, m.Reference);
            annotated.Add(LedgerService.IsValidId(id) && await ledger.GetTransferAsync(id, ct) is { } t
                ? t.Code == WriteOffCode
                    ? m with { ResolvedBy = id, Resolution = "written_off", ResolvedMicros = 0 }
                    : m with { ResolvedBy = id, Resolution = t.DebitAccountId == clearing ? "credited" : "taken_back", ResolvedMicros = t.DebitAccountId == clearing ? t.Amount : -t.Amount }
                : m);
        }
        return annotated;
    }
}

/// <summary>The latest reports of the background reconciliation, per source.</summary>
internal sealed class ReconciliationState
{
    private readonly Dictionary<string, (ReconciliationReport? Report, DateTimeOffset At, string? Error)> _latest = new(StringComparer.Ordinal);

    public void Set(string source, ReconciliationReport? report, DateTimeOffset at, string? error)
    {
        lock (_latest) _latest[source] = (report, at, error);
    }

    public IReadOnlyDictionary<string, (ReconciliationReport? Report, DateTimeOffset At, string? Error)> Latest
    {
        get { lock (_latest) return new Dictionary<string, (ReconciliationReport?, DateTimeOffset, string?)>(_latest); }
    }
}

/// <summary><c>Tollgate:Reconciliation</c>: the background job comparing the payment side with the ledger.</summary>
public sealed record ReconciliationOptions
{
    public const string Section = "Tollgate:Reconciliation";
    public bool Enabled { get; init; } = true;
    /// <summary>How often it runs (default every 6 hours).</summary>
    public int IntervalSeconds { get; init; } = 6 * 3600;
    /// <summary>Seconds after start-up before the first run.</summary>
    public int InitialDelaySeconds { get; init; } = 300;
    /// <summary>Stripe: how many days back each run looks.</summary>
    public int StripeLookbackDays { get; init; } = 7;
    /// <summary>Chain: how many confirmed blocks back each run looks (Base makes ~43,000 a day).</summary>
    public long ChainLookbackBlocks { get; init; } = 50_000;
}

internal sealed class ReconciliationOptionsValidator : IValidateOptions<ReconciliationOptions>
{
    public ValidateOptionsResult Validate(string? name, ReconciliationOptions o)
    {
        var errors = new List<string>();
        if (o.IntervalSeconds is < 1 or > 7 * 86_400) errors.Add("Tollgate:Reconciliation:IntervalSeconds must be 1–604800.");
        if (o.InitialDelaySeconds is < 0 or > 86_400) errors.Add("Tollgate:Reconciliation:InitialDelaySeconds must be 0–86400.");
        if (o.StripeLookbackDays is < 1 or > 90) errors.Add("Tollgate:Reconciliation:StripeLookbackDays must be 1–90.");
        if (o.ChainLookbackBlocks is < 1 or > 1_000_000) errors.Add("Tollgate:Reconciliation:ChainLookbackBlocks must be 1–1000000.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// Reconciles on a schedule what is configured (Stripe, the chain) and logs every unresolved mismatch as a warning; the
/// latest reports are at <c>GET /admin/v1/payments/reconciliation/latest</c>. It only reads and reports: an operator
/// resolves (<see cref="ReconciliationResolutions"/>). Several processes may run it; each only reads.
/// </summary>
internal sealed partial class ReconciliationJob(IServiceProvider services, ReconciliationState state, IOptions<ReconciliationOptions> options,
    IOptions<StripeOptions> stripe, TimeProvider time, ILogger<ReconciliationJob> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        if (!o.Enabled) return;
        var crypto = services.GetService<Crypto.CryptoReconciler>();
        if (!stripe.Value.Enabled && crypto is null) return;
        // Not at once: a process that has just started (or a test) has nothing new to reconcile, and start-up stays quiet.
        try { await Task.Delay(TimeSpan.FromSeconds(o.InitialDelaySeconds), time, stoppingToken); }
        catch (OperationCanceledException) { return; }
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(o.IntervalSeconds), time);
        do
        {
            try
            {
                await RunOnceAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
        } while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>One run over every configured source; a failing source is recorded with its error and does not stop the others.</summary>
    public async Task RunOnceAsync(CancellationToken ct)
    {
        var o = options.Value;
        if (stripe.Value.Enabled)
            await RunSourceAsync("stripe", () =>
            {
                var to = time.GetUtcNow();
                return services.GetRequiredService<StripeReconciler>().ReconcileAsync(to.AddDays(-o.StripeLookbackDays), to, ct);
            }, ct);
        if (services.GetService<Crypto.CryptoReconciler>() is { } crypto)
            await RunSourceAsync("usdc", async () =>
            {
                var (from, to) = await crypto.ConfirmedRangeAsync(null, null, o.ChainLookbackBlocks, ct);
                return await crypto.ReconcileAsync(from, to, ct);
            }, ct);
    }

    private async Task RunSourceAsync(string source, Func<Task<ReconciliationReport>> run, CancellationToken ct)
    {
        try
        {
            var report = await run();
            state.Set(source, report, time.GetUtcNow(), null);
            foreach (var m in report.Mismatches.Where(m => m.ResolvedBy is null))
                LogMismatch(logger, source, m.Kind, m.Reference, m.AccountId, m.Detail);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            state.Set(source, null, time.GetUtcNow(), e.Message);
            LogFailed(logger, e, source);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reconciliation ({Source}): {Kind} {Reference} (account {AccountId}): {Detail}")]
    private static partial void LogMismatch(ILogger logger, string source, string kind, string reference, string? accountId, string detail);

    [LoggerMessage(Level = LogLevel.Error, Message = "Reconciliation ({Source}) failed; retried at the next run")]
    private static partial void LogFailed(ILogger logger, Exception e, string source);
}

internal static class ReconciliationEndpoints
{
    public static void AddReconciliation(IServiceCollection services)
    {
        services.AddOptions<ReconciliationOptions>().BindConfiguration(ReconciliationOptions.Section).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ReconciliationOptions>, ReconciliationOptionsValidator>();
        services.AddSingleton<ReconciliationResolutions>();
        services.AddSingleton<ReconciliationState>();
        services.AddSingleton<ReconciliationJob>();
        services.AddHostedService(sp => sp.GetRequiredService<ReconciliationJob>());
    }

    public static void MapReconciliation(this IEndpointRouteBuilder routes)
    {
        var admin = routes.MapGroup("/admin/v1/payments/reconciliation").RequireAdminKey().WithTags("Admin: payments");
        admin.MapPost("/resolutions", Resolve);
        admin.MapGet("/latest", (ReconciliationState state) => TypedResults.Ok(new Dictionary<string, object>
        {
            ["data"] = state.Latest.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => new Dictionary<string, object?>
            {
                ["source"] = l.Key, ["ran_at"] = l.Value.At, ["error"] = l.Value.Error, ["report"] = l.Value.Report,
            }).ToList(),
        }));
    }

    /// <summary><c>POST /admin/v1/payments/reconciliation/resolutions</c>: resolves one mismatch with an idempotent adjustment.</summary>
    private static async Task<Results<Ok<ResolutionView>, Created<ResolutionView>, ProblemHttpResult>> Resolve(ResolveMismatchInput input,
        ReconciliationResolutions resolutions, CancellationToken ct)
    {
        if (input.Source is not { } source || !ReconciliationResolutions.Sources.Contains(source))
            return Problems.BadRequest("invalid_request", "'source' is 'stripe' or 'usdc'.", "source");
        if (string.IsNullOrEmpty(input.Reference) || input.Reference.Length > 100)
            return Problems.BadRequest("invalid_request", "'reference' is the mismatch's reference from the report (1–100 characters).", "reference");
        if (string.IsNullOrEmpty(input.AccountId)) return Problems.BadRequest("invalid_request", "'account_id' is required.", "account_id");
        if (input.AmountMicros is not { } amount || amount == 0 || Math.Abs(amount) > LedgerService.MaxAmountMicros)
            return Problems.BadRequest("invalid_request", "'amount_micros' is required and not 0: positive credits the account, negative takes credits back.", "amount_micros");
        if (string.IsNullOrWhiteSpace(input.Reason) || input.Reason.Length > LedgerService.MaxDescriptionLength)
            return Problems.BadRequest("invalid_request", "'reason' is required: say why the mismatch is resolved this way.", "reason");
        if (input.WriteOff == true && amount < 0)
            return Problems.BadRequest("invalid_request", "A write-off absorbs a positive amount: the credits the account keeps without money.", "amount_micros");
        var (outcome, view) = await resolutions.ResolveAsync(source, input.Reference, input.AccountId, amount, input.WriteOff == true, input.Reason, ct);
        return outcome switch
        {
            ReconciliationResolutions.Outcome.Resolved => TypedResults.Created($"/admin/v1/payments/reconciliation/resolutions", view!),
            ReconciliationResolutions.Outcome.Replayed => TypedResults.Ok(view!),
            ReconciliationResolutions.Outcome.UnknownAccount => Problems.NotFound("account", input.AccountId),
            ReconciliationResolutions.Outcome.Conflict => Problems.Conflict("already_resolved",
                "This mismatch was already resolved with another amount, account or reason; a resolution is made once."),
            ReconciliationResolutions.Outcome.InsufficientFunds => Problems.Conflict("insufficient_funds",
                "The account's available balance (credit limit included) does not cover taking this much back."),
            _ => Problems.BadRequest("invalid_request", "The reference cannot name a ledger transfer (letters, digits, '_-.:@+#').", "reference"),
        };
    }
}
