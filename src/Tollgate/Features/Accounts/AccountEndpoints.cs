using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Money;

namespace Tollgate.Features.Accounts;

/// <summary>The caller's own account under <c>/api/v1</c>, authenticated by API key.</summary>
internal static class AccountEndpoints
{
    public static RouteGroupBuilder MapAccountApi(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/account").RequireApiKey().WithTags("Account");
        group.MapGet("/", Get);
        return group;
    }

    /// <summary>The account of the presented key with its balance, available and held amounts (micro-USD), as the admin API shows it.</summary>
    private static async Task<Ok<AccountResponse>> Get(HttpContext http, AccountService accounts, CreditUnit credits, CancellationToken ct)
    {
        var caller = http.GetCaller();
        // The key was resolved to this account a moment ago and accounts are never deleted.
        var account = await accounts.GetAsync(caller.AccountId, ct)
            ?? throw new InvalidOperationException($"Account {caller.AccountId} of key {caller.KeyId} disappeared.");
        return TypedResults.Ok(AccountResponse.From(account, credits));
    }
}
