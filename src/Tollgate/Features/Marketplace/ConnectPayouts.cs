using Dapper;
using Tollgate.Features.Payments.Stripe;
using Tollgate.Infrastructure.Data;

namespace Tollgate.Features.Marketplace;

/// <summary>
/// Sends a recorded payout to the creator's Stripe connected account (<c>POST /v1/transfers</c>), once: the
/// idempotency key names the payout, and the Stripe transfer id is stored with it. A failed send leaves the ledger
/// payout in place; repeating the same payout request sends it then.
/// </summary>
internal sealed class ConnectPayouts(StripeClient stripe, Database db)
{
    public async Task<string> SendAsync(string creatorAccountId, string payoutId, long amountMicros, string destination, CancellationToken ct)
    {
        await using (var c = await db.OpenAsync(ct))
            if (await c.ExecuteScalarAsync<string?>(new CommandDefinition(
                    "SELECT stripe_transfer_id FROM marketplace_payouts WHERE creator_account_id = @creatorAccountId AND id = @payoutId",
                    new { creatorAccountId, payoutId }, cancellationToken: ct)) is { } sent)
                return sent;
        var transfer = await stripe.PostAsync("/v1/transfers",
        [
            new("amount", (amountMicros / 10_000).ToString(System.Globalization.CultureInfo.InvariantCulture)), new("currency", "usd"),
            new("destination", destination), new("transfer_group", $"payout:{creatorAccountId}:{payoutId}"),
            new("metadata[tollgate_account]", creatorAccountId), new("metadata[payout]", payoutId),
        ], $"tollgate-payout:{creatorAccountId}:{payoutId}", ct);
        var id = transfer.GetProperty("id").GetString()!;
        await using (var c = await db.OpenAsync(CancellationToken.None))
            await c.ExecuteAsync(new CommandDefinition(
                "UPDATE marketplace_payouts SET stripe_transfer_id = @id WHERE creator_account_id = @creatorAccountId AND id = @payoutId",
                new { id, creatorAccountId, payoutId }, cancellationToken: CancellationToken.None));
        return id;
    }
}
