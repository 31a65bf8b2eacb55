using Npgsql;
using Tollgate.Features.Ledger;
using Tollgate.Infrastructure.Data;
using Tollgate.Tests.Api;
using Tollgate.Tests.Processes;

namespace Tollgate.Tests.Cli;

/// <summary>
/// The <c>tollgate</c> executable as an operator runs it: a child process per command against a temporary SQLite file
/// or a fresh PostgreSQL database, its JSON output parsed, its effects read back from the database directly.
/// </summary>
public sealed class CliTests
{
    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task Migrate_FreshDatabaseTwice_ReportsSameSchemaVersionAndSucceeds(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);

        var first = await TollgateExecutable.RunAsync(["migrate", "--database", database]);
        var second = await TollgateExecutable.RunAsync(["migrate", "--database", database]);

        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains("is at schema version ", first.StdOut);
        Assert.Equal(first.StdOut, second.StdOut);
        var version = int.Parse(first.StdOut.Trim().TrimEnd('.').Split(' ')[^1]);
        Assert.True(version >= 2, first.StdOut);
        Assert.StartsWith(engine == TestDatabases.Postgres ? "Database postgresql://" : "Database sqlite:", first.StdOut);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task AccountsKeysCredits_OnEachEngine_PrintJsonAndPersistExactly(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);

        var created = await TollgateExecutable.RunAsync(["accounts", "create", "--name", "CLI Acme", "--database", database]);
        Assert.True(created.ExitCode == 0, created.ToString());
        var account = created.Json();
        var accountId = account.GetProperty("id").GetString()!;
        Assert.StartsWith("acct_", accountId);
        Assert.Equal("CLI Acme", account.GetProperty("name").GetString());
        Assert.Equal(0, account.GetProperty("balance_micros").GetInt64());
        Assert.Equal(0, account.GetProperty("credit_limit_micros").GetInt64());
        var ledgerAccountId = account.GetProperty("ledger_account_id").GetInt64();

        var key = await TollgateExecutable.RunAsync(["keys", "create", "--account", accountId, "--database", database]);
        Assert.True(key.ExitCode == 0, key.ToString());
        var keyJson = key.Json();
        var fullKey = keyJson.GetProperty("key").GetString()!;
        Assert.StartsWith("tg_live_", fullKey);
        Assert.StartsWith(keyJson.GetProperty("prefix").GetString()!, fullKey);
        Assert.Equal(accountId, keyJson.GetProperty("account_id").GetString());

        var grant = await TollgateExecutable.RunAsync(
            ["credits", "grant", "--account", accountId, "--amount", "2.5", "--idempotency-key", "cli-grant-1", "--reason", "welcome", "--database", database]);
        Assert.True(grant.ExitCode == 0, grant.ToString());
        var grantJson = grant.Json();
        Assert.Equal("Granted", grantJson.GetProperty("outcome").GetString());
        Assert.Equal(2_500_000, grantJson.GetProperty("transfer").GetProperty("amount_micros").GetInt64());
        Assert.Equal("welcome", grantJson.GetProperty("transfer").GetProperty("description").GetString());
        Assert.Equal(ledgerAccountId, grantJson.GetProperty("transfer").GetProperty("credit_account_id").GetInt64());
        Assert.Equal(2_500_000, grantJson.GetProperty("balance_micros").GetInt64());

        var replay = await TollgateExecutable.RunAsync(
            ["credits", "grant", "--account", accountId, "--amount", "2.5", "--idempotency-key", "cli-grant-1", "--reason", "welcome", "--database", database]);
        Assert.True(replay.ExitCode == 0, replay.ToString());
        var replayJson = replay.Json();
        Assert.Equal("Replayed", replayJson.GetProperty("outcome").GetString());
        Assert.Equal(grantJson.GetProperty("transfer").GetRawText(), replayJson.GetProperty("transfer").GetRawText());
        Assert.Equal(2_500_000, replayJson.GetProperty("balance_micros").GetInt64());

        var adjust = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount=-1", "--database", database]);
        Assert.True(adjust.ExitCode == 0, adjust.ToString());
        Assert.Equal(1_500_000, adjust.Json().GetProperty("balance_micros").GetInt64());
        Assert.Equal("adjustment", adjust.Json().GetProperty("transfer").GetProperty("code").GetString());

        await using var db = new Database(DatabaseTarget.Parse(database));
        await using var connection = await db.OpenAsync(CancellationToken.None);
        Assert.Equal(1_500_000, await AdminApi.ScalarAsync(connection, $"SELECT credits_posted - debits_posted FROM ledger_accounts WHERE id = {ledgerAccountId}"));
        Assert.Equal(2, await AdminApi.ScalarAsync(connection, $"SELECT COUNT(*) FROM ledger_transfers WHERE debit_account_id = {ledgerAccountId} OR credit_account_id = {ledgerAccountId}"));
        await AdminApi.AssertKeyStoredOnlyAsHashAsync(connection, "api_keys", keyJson.GetProperty("id").GetString()!, fullKey);
        var audit = await LedgerSql.AuditAsync(connection, CancellationToken.None);
        Assert.Empty(audit.Violations);
    }

    [Theory]
    [MemberData(nameof(TestDatabases.Engines), MemberType = typeof(TestDatabases))]
    public async Task CreditsGrant_AmountWithSevenDecimals_ExitsNonZeroAndGrantsNothing(string engine)
    {
        var database = await TestDatabases.CreateAsync(engine);
        var accountId = (await TollgateExecutable.RunAsync(["accounts", "create", "--name", "Precise", "--database", database])).Json().GetProperty("id").GetString()!;

        var result = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount", "1.0000001", "--database", database]);

        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("6 decimal", result.StdErr);
        Assert.Equal("", result.StdOut.Trim());
        await using var db = new Database(DatabaseTarget.Parse(database));
        await using var connection = await db.OpenAsync(CancellationToken.None);
        Assert.Equal(0, await AdminApi.ScalarAsync(connection, "SELECT COUNT(*) FROM ledger_transfers"));
    }

    [Fact]
    public async Task CreditsGrant_AdjustmentBelowZeroOrUnknownAccount_ExitsNonZeroAndChangesNothing()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        var accountId = (await TollgateExecutable.RunAsync(["accounts", "create", "--name", "Small", "--database", database])).Json().GetProperty("id").GetString()!;
        var granted = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount", "0.5", "--database", database]);
        Assert.True(granted.ExitCode == 0, granted.ToString());

        var overdraw = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount=-0.500001", "--database", database]);
        var unknown = await TollgateExecutable.RunAsync(["credits", "grant", "--account", "acct_doesnotexist", "--amount", "1", "--database", database]);
        var unknownKey = await TollgateExecutable.RunAsync(["keys", "create", "--account", "acct_doesnotexist", "--database", database]);
        var zero = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount", "0", "--database", database]);

        Assert.True(overdraw.ExitCode != 0, overdraw.ToString());
        Assert.Contains("InsufficientCredits", overdraw.StdErr);
        Assert.True(unknown.ExitCode != 0, unknown.ToString());
        Assert.True(unknownKey.ExitCode != 0, unknownKey.ToString());
        Assert.Contains("acct_doesnotexist", unknownKey.StdErr);
        Assert.True(zero.ExitCode != 0, zero.ToString());
        await using var db = new Database(DatabaseTarget.Parse(database));
        await using var connection = await db.OpenAsync(CancellationToken.None);
        Assert.Equal(1, await AdminApi.ScalarAsync(connection, "SELECT COUNT(*) FROM ledger_transfers"));
        Assert.Equal(0, await AdminApi.ScalarAsync(connection, "SELECT COUNT(*) FROM api_keys"));
        Assert.Equal(500_000, await AdminApi.ScalarAsync(connection, "SELECT credits_posted - debits_posted FROM ledger_accounts WHERE id = (SELECT ledger_account_id FROM accounts)"));
    }

    [Fact]
    public async Task KeysCreate_TypeInternalOrUnknown_StoresTypeOrRefuses()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        var accountId = (await TollgateExecutable.RunAsync(["accounts", "create", "--name", "Ops", "--database", database])).Json().GetProperty("id").GetString()!;

        var @internal = await TollgateExecutable.RunAsync(["keys", "create", "--account", accountId, "--type", "internal", "--database", database]);
        var unknown = await TollgateExecutable.RunAsync(["keys", "create", "--account", accountId, "--type", "root", "--database", database]);

        Assert.True(@internal.ExitCode == 0, @internal.ToString());
        Assert.Equal("internal", @internal.Json().GetProperty("type").GetString());
        Assert.True(unknown.ExitCode != 0, unknown.ToString());
        await using var db = new Database(DatabaseTarget.Parse(database));
        await using var connection = await db.OpenAsync(CancellationToken.None);
        Assert.Equal(1, await AdminApi.ScalarAsync(connection, "SELECT COUNT(*) FROM api_keys"));
        Assert.Equal(1, await AdminApi.ScalarAsync(connection, "SELECT COUNT(*) FROM api_keys WHERE type = 'internal'"));
    }

    [Fact]
    public async Task Serve_NoAdminKeyConfigured_PrintsGeneratedKeyOnceAndItAuthenticates()
    {
        var database = await TestDatabases.CreateAsync(TestDatabases.Sqlite);
        var noKey = new Dictionary<string, string?> { ["TOLLGATE_ADMIN_KEY"] = null };

        string key;
        await using (var first = await TollgateServer.StartAsync(database, noKey))
        {
            key = await WaitForAdminKeyAsync(first);
            using var client = new HttpClient { BaseAddress = first.BaseAddress };
            using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/ledger/audit");
            request.Headers.Authorization = new("Bearer", key);
            Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(request)).StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, (await first.Admin.GetAsync("/admin/v1/ledger/audit")).StatusCode);
        }
        await using var second = await TollgateServer.StartAsync(database, noKey);
        using var again = new HttpClient { BaseAddress = second.BaseAddress };
        using var retry = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/ledger/audit");
        retry.Headers.Authorization = new("Bearer", key);

        Assert.Equal(HttpStatusCode.OK, (await again.SendAsync(retry)).StatusCode);
        Assert.DoesNotContain("Admin key", second.Output);
        Assert.DoesNotContain(key, second.Output);
    }

    private static async Task<string> WaitForAdminKeyAsync(TollgateServer server)
    {
        // The key is printed before Kestrel listens, but the redirected output arrives asynchronously.
        for (var i = 0; i < 100; i++)
        {
            var match = System.Text.RegularExpressions.Regex.Match(server.Output, @"Admin key \(shown once[^\n]*\n\s*(tg_admin_[0-9A-Za-z]{43})\s");
            if (match.Success) return match.Groups[1].Value;
            await Task.Delay(50);
        }
        throw new InvalidOperationException("serve printed no admin key:\n" + server.Output);
    }

    [Fact]
    public async Task Database_PostgresUrlForm_ReachesTheNamedDatabaseAndHidesPassword()
    {
        var keyValue = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var b = new NpgsqlConnectionStringBuilder(keyValue);
        var url = $"postgres://{Uri.EscapeDataString(b.Username!)}:{Uri.EscapeDataString(b.Password!)}@{b.Host}:{b.Port}/{b.Database}";

        var migrate = await TollgateExecutable.RunAsync(["migrate", "--database", url]);
        var created = await TollgateExecutable.RunAsync(["accounts", "create", "--name", "Via URL", "--database", url]);
        Assert.True(migrate.ExitCode == 0, migrate.ToString());
        Assert.True(created.ExitCode == 0, created.ToString());
        var accountId = created.Json().GetProperty("id").GetString()!;
        var grant = await TollgateExecutable.RunAsync(["credits", "grant", "--account", accountId, "--amount", "3", "--database", url]);

        Assert.True(grant.ExitCode == 0, grant.ToString());
        Assert.Equal(3_000_000, grant.Json().GetProperty("balance_micros").GetInt64());
        Assert.Contains($"postgresql://{b.Username}@{b.Host}:{b.Port}/{b.Database}", migrate.StdOut);
        Assert.DoesNotContain(":" + b.Password + "@", migrate.StdOut);
        // The same rows are visible through the key-value form, so the URL named this database and no other.
        await using var connection = new NpgsqlConnection(keyValue);
        await connection.OpenAsync();
        await using var cmd = new NpgsqlCommand("SELECT name FROM accounts WHERE id = @id", connection);
        cmd.Parameters.AddWithValue("id", accountId);
        Assert.Equal("Via URL", await cmd.ExecuteScalarAsync());
    }
}
