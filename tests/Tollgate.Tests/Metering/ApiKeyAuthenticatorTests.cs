using Tollgate.Features.Accounts;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure;

namespace Tollgate.Tests.Metering;

/// <summary>The authenticator's cache and last-used bookkeeping, on a manual clock and in-memory stores.</summary>
public sealed class ApiKeyAuthenticatorTests
{
    private const string Key = "tg_live_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 11, 21, 10, 0, 0, TimeSpan.Zero);
        public override DateTimeOffset GetUtcNow() => Now;
    }

    private sealed class Keys : IApiKeyStore
    {
        public ApiKeyRecord? Live { get; set; } = new("key_1", "acct_1", null, "tg_live_012345", "standard", DateTimeOffset.UnixEpoch, null, null);
        public int Lookups { get; private set; }
        public List<DateTimeOffset> Touches { get; } = new();

        public Task<ApiKeyRecord?> FindByHashAsync(byte[] hash, CancellationToken ct)
        {
            Lookups++;
            return Task.FromResult(Secrets.HashEquals(hash, Secrets.Hash(Key)) ? Live : null);
        }

        public Task TouchLastUsedAsync(string keyId, DateTimeOffset usedAt, CancellationToken ct)
        {
            Touches.Add(usedAt);
            return Task.CompletedTask;
        }

        public Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, CancellationToken ct) => throw new NotSupportedException();
        public Task<IReadOnlyList<byte[]>> GetAdminKeyHashesAsync(CancellationToken ct) => throw new NotSupportedException();
        public Task<bool> TryCreateFirstAdminKeyAsync(byte[] hash, CancellationToken ct) => throw new NotSupportedException();
        public Task<IReadOnlyList<AdminKeyRecord>> ListAdminKeysAsync(CancellationToken ct) => throw new NotSupportedException();
        public Task<AdminKeyRecord> CreateAdminKeyAsync(byte[] hash, CancellationToken ct) => throw new NotSupportedException();
        public Task<(bool Found, bool Deleted)> DeleteAdminKeyAsync(string id, bool keepLast, CancellationToken ct) => throw new NotSupportedException();
        public Task<bool> RevokeAsync(string accountId, string keyId, DateTimeOffset at, CancellationToken ct) => throw new NotSupportedException();
        public Task<ApiKeyRecord> CreateAsync(string accountId, string? name, string prefix, byte[] hash, string type, KeySettings settings, string? replaces, CancellationToken ct) => throw new NotSupportedException();
        public Task<IReadOnlyList<ApiKeyRecord>> ListAsync(string accountId, CancellationToken ct) => throw new NotSupportedException();
        public Task<ApiKeyRecord?> GetAsync(string accountId, string keyId, CancellationToken ct) => throw new NotSupportedException();
    }

    private sealed class Accounts : IAccountStore
    {
        public Task<Account?> GetAsync(string id, CancellationToken ct) =>
            Task.FromResult<Account?>(id == "acct_1" ? new Account("acct_1", "a", 7, DateTimeOffset.UnixEpoch) : null);

        public Task<Account> CreateAsync(string name, long ledgerAccountId, CancellationToken ct) => throw new NotSupportedException();
        public Task<long> CountAsync(CancellationToken ct) => throw new NotSupportedException();
        public Task<bool> SetPlanAsync(string id, string planId, CancellationToken ct) => throw new NotSupportedException();
    }

    [Fact]
    public async Task Authenticate_WithinCacheTtl_LooksUpOnce()
    {
        var (clock, keys) = (new ManualClock(), new Keys());
        var auth = new ApiKeyAuthenticator(keys, new Accounts(), clock);

        var first = await auth.AuthenticateAsync(Key, CancellationToken.None);
        clock.Now += TimeSpan.FromMilliseconds(900);
        var second = await auth.AuthenticateAsync(Key, CancellationToken.None);

        Assert.Equal(new Caller("key_1", "acct_1", 7), first);
        Assert.Equal(first, second);
        Assert.Equal(1, keys.Lookups);
    }

    [Fact]
    public async Task Authenticate_KeyRevoked_RejectedOnceCacheTtlPasses()
    {
        var (clock, keys) = (new ManualClock(), new Keys());
        var auth = new ApiKeyAuthenticator(keys, new Accounts(), clock);
        Assert.NotNull(await auth.AuthenticateAsync(Key, CancellationToken.None));

        keys.Live = null;
        clock.Now += TimeSpan.FromMilliseconds(999);
        Assert.NotNull(await auth.AuthenticateAsync(Key, CancellationToken.None));
        clock.Now += TimeSpan.FromMilliseconds(1);
        Assert.Null(await auth.AuthenticateAsync(Key, CancellationToken.None));
    }

    [Fact]
    public async Task Authenticate_UnknownKey_CachedToo()
    {
        var (clock, keys) = (new ManualClock(), new Keys());
        var auth = new ApiKeyAuthenticator(keys, new Accounts(), clock);

        Assert.Null(await auth.AuthenticateAsync("tg_live_unknown", CancellationToken.None));
        Assert.Null(await auth.AuthenticateAsync("tg_live_unknown", CancellationToken.None));

        Assert.Equal(1, keys.Lookups);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("sk-openai-style")]
    [InlineData("tg_admin_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")]
    public async Task Authenticate_NotAnApiKey_RejectedWithoutLookup(string? presented)
    {
        var keys = new Keys();
        var auth = new ApiKeyAuthenticator(keys, new Accounts(), new ManualClock());

        Assert.Null(await auth.AuthenticateAsync(presented, CancellationToken.None));

        Assert.Equal(0, keys.Lookups);
    }

    [Fact]
    public async Task Authenticate_UsedContinuously_TouchesLastUsedAtMostOncePerMinute()
    {
        var (clock, keys) = (new ManualClock(), new Keys());
        var auth = new ApiKeyAuthenticator(keys, new Accounts(), clock);

        // Two minutes of requests every 100 ms: the store still reports last_used_at as never set.
        for (var i = 0; i < 1_200; i++)
        {
            Assert.NotNull(await auth.AuthenticateAsync(Key, CancellationToken.None));
            clock.Now += TimeSpan.FromMilliseconds(100);
        }

        Assert.Equal(120, keys.Lookups);
        Assert.Equal(2, keys.Touches.Count);
        Assert.Equal(TimeSpan.FromMinutes(1), keys.Touches[1] - keys.Touches[0]);
    }
}
