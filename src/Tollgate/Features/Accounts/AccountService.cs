using Tollgate.Features.Keys;
using Tollgate.Features.Ledger;

namespace Tollgate.Features.Accounts;

public sealed record AccountWithBalance(Account Account, LedgerAccount Ledger);

public enum GrantOutcome { Granted, Replayed, AccountNotFound, InvalidAmount, InvalidIdempotencyKey, IdempotencyConflict, InsufficientCredits, Overflow }

public sealed record GrantResult(GrantOutcome Outcome, Transfer? Transfer = null, long BalanceMicros = 0, long AvailableMicros = 0);

public sealed record CreatedKey(ApiKeyRecord Record, string Key);

/// <summary>Account operations shared by the admin API and the CLI, so both enforce the same rules.</summary>
internal sealed class AccountService(LedgerService ledger, SystemAccounts system, KeyEnvironment keyEnvironment, IAccountStore accounts, IApiKeyStore keys)
{
    public const int MaxNameLength = 200;
    public const int MaxIdempotencyKeyLength = 80;

    /// <summary>Creates a prepaid (credit limit 0) or postpaid account whose debits may never exceed its credits plus the limit.</summary>
    public async Task<AccountWithBalance> CreateAsync(string name, long creditLimitMicros, CancellationToken ct)
    {
        var ledgerAccount = await ledger.CreateAccountAsync(new NewLedgerAccount(
            LedgerAccountKinds.Customer, CreditLimitMicros: creditLimitMicros, Flags: LedgerAccountFlags.DebitsMustNotExceedCredits), ct);
        var account = await accounts.CreateAsync(name, ledgerAccount.Id, ct);
        return new(account, ledgerAccount);
    }

    public async Task<AccountWithBalance?> GetAsync(string id, CancellationToken ct)
    {
        var account = await accounts.GetAsync(id, ct);
        if (account is null) return null;
        var ledgerAccount = await ledger.GetAccountAsync(account.LedgerAccountId, ct)
            ?? throw new InvalidOperationException($"Account {id} has no ledger account {account.LedgerAccountId}.");
        return new(account, ledgerAccount);
    }

    /// <summary>
    /// Grants credits (positive amount, from the promotions account) or adjusts them down (negative, to the
    /// adjustments account; cannot take a prepaid account below zero). The idempotency key is scoped to the account.
    /// </summary>
    public async Task<GrantResult> GrantAsync(string accountId, long amountMicros, string idempotencyKey, string? reason, CancellationToken ct)
    {
        if (amountMicros == 0 || amountMicros < -LedgerService.MaxAmountMicros || amountMicros > LedgerService.MaxAmountMicros) return new(GrantOutcome.InvalidAmount);
        if (idempotencyKey.Length > MaxIdempotencyKeyLength || !LedgerService.IsValidId(idempotencyKey)) return new(GrantOutcome.InvalidIdempotencyKey);
        var account = await accounts.GetAsync(accountId, ct);
        if (account is null) return new(GrantOutcome.AccountNotFound);

        var grant = amountMicros > 0;
        var otherSide = grant ? await system.PromotionsAsync(ct) : await system.AdjustmentsAsync(ct);
        var result = await ledger.TransferAsync(new TransferRequest
        {
            Id = $"grant:{account.Id}:{idempotencyKey}",
            DebitAccountId = grant ? otherSide : account.LedgerAccountId,
            CreditAccountId = grant ? account.LedgerAccountId : otherSide,
            Amount = Math.Abs(amountMicros),
            Code = grant ? "grant" : "adjustment",
            Description = string.IsNullOrWhiteSpace(reason) ? null : reason,
        }, ct);

        var outcome = result.Code switch
        {
            TransferResultCode.Ok => GrantOutcome.Granted,
            TransferResultCode.Replayed => GrantOutcome.Replayed,
            TransferResultCode.IdempotencyConflict => GrantOutcome.IdempotencyConflict,
            TransferResultCode.InsufficientFunds => GrantOutcome.InsufficientCredits,
            TransferResultCode.Overflow => GrantOutcome.Overflow,
            var other => throw new InvalidOperationException($"Unexpected ledger result {other} for a grant."),
        };
        var current = await ledger.GetAccountAsync(account.LedgerAccountId, ct);
        if (result.Transfer is not { } t) return new(outcome, AvailableMicros: current?.AvailableMicros ?? 0, BalanceMicros: current?.BalanceMicros ?? 0);
        var balanceAfter = grant ? t.CreditBalanceAfter : t.DebitBalanceAfter;
        return new(outcome, t, balanceAfter, current?.AvailableMicros ?? 0);
    }

    /// <summary>Creates an API key of <paramref name="type"/> (<see cref="ApiKeyTypes"/>); the full key exists only in the return value.</summary>
    public Task<CreatedKey?> CreateKeyAsync(string accountId, string? name, CancellationToken ct) => CreateKeyAsync(accountId, name, ApiKeyTypes.Standard, ct);

    /// <inheritdoc cref="CreateKeyAsync(string, string?, CancellationToken)"/>
    public Task<CreatedKey?> CreateKeyAsync(string accountId, string? name, string type, CancellationToken ct) =>
        CreateKeyAsync(accountId, name, type, KeySettings.None, ct);

    /// <inheritdoc cref="CreateKeyAsync(string, string?, CancellationToken)"/>
    public async Task<CreatedKey?> CreateKeyAsync(string accountId, string? name, string type, KeySettings settings, CancellationToken ct)
    {
        if (!ApiKeyTypes.IsValid(type)) throw new ArgumentException($"Unknown API key type '{type}'.", nameof(type));
        var account = await accounts.GetAsync(accountId, ct);
        if (account is null) return null;
        var generated = ApiKeyFormat.Generate(keyEnvironment.Name);
        var record = await keys.CreateAsync(account.Id, name, generated.Prefix, generated.Hash, type, settings, null, ct);
        return new(record, generated.Key);
    }

    /// <summary>
    /// Replaces a live key by a new one with the same name, type and settings, revoking the old one in the same
    /// transaction; null if the account has no such live key.
    /// </summary>
    public async Task<CreatedKey?> RotateKeyAsync(string accountId, string keyId, CancellationToken ct)
    {
        if (await keys.GetAsync(accountId, keyId, ct) is not { RevokedAt: null } old) return null;
        var generated = ApiKeyFormat.Generate(keyEnvironment.Name);
        try
        {
            var record = await keys.CreateAsync(accountId, old.Name, generated.Prefix, generated.Hash, old.Type, old.Settings, old.Id, ct);
            return new(record, generated.Key);
        }
        catch (InvalidOperationException)
        {
            // Revoked (or rotated) concurrently.
            return null;
        }
    }
}

/// <summary>The environment segment of generated keys ("live" unless configured, e.g. "test").</summary>
public sealed record KeyEnvironment(string Name);
