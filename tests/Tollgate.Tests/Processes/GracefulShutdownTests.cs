using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Tollgate.Tests.Gateway.Fakes;
using static Tollgate.Tests.Processes.ServerApi;

namespace Tollgate.Tests.Processes;

/// <summary>
/// SIGTERM on <c>tollgate serve</c> in the middle of two slow streams (a provider that streams slowly): the stream that
/// ends within the grace period reaches its client complete, the one that does not is cut at the deadline, the
/// process exits 0, and after a restart on the same database nothing is held and each call was charged for what it
/// delivered.
/// </summary>
[Collection(ChildProcessCollection.Name)]
public sealed class GracefulShutdownTests
{
    /// <param name="ErrorCode">The code of an in-band error event, if the stream carried one.</param>
    /// <param name="Failure">How the connection failed, if it did not end cleanly.</param>
    private sealed record StreamResult(int ContentChunks, bool Done, string? ErrorCode, string? Failure);

    /// <summary>Reads an OpenAI stream to its end (or until the connection drops), counting content deltas.</summary>
    private static async Task<StreamResult> ReadStreamAsync(HttpResponseMessage response, TaskCompletionSource firstChunk)
    {
        var chunks = 0;
        var done = false;
        string? error = null;
        try
        {
            await using var body = await response.Content.ReadAsStreamAsync();
            using var reader = new StreamReader(body, Encoding.UTF8);
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                var data = line["data: ".Length..];
                if (data == "[DONE]") { done = true; continue; }
                using var doc = JsonDocument.Parse(data);
                if (doc.RootElement.TryGetProperty("error", out var e)) error = e.GetProperty("code").GetString();
                else if (doc.RootElement.TryGetProperty("choices", out var choices) && choices.GetArrayLength() > 0
                    && choices[0].GetProperty("delta").TryGetProperty("content", out var content) && content.GetString() is { Length: > 0 })
                {
                    chunks++;
                    firstChunk.TrySetResult();
                }
            }
            return new StreamResult(chunks, done, error, null);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            return new StreamResult(chunks, done, error, e.GetType().Name);
        }
    }

    [Fact]
    public async Task Sigterm_finishes_streams_within_the_grace_cuts_the_rest_settles_and_exits_zero()
    {
        const long grant = 10_000_000;
        // "short …" streams 8 chunks in ≈ 0.8 s (ends well within the 3 s grace, even on a loaded machine);
        // "long …" streams 200 in ≈ 40 s (does not).
        await using var fake = await FakeUpstream.StartAsync(r => r.LastUserText.StartsWith("short", StringComparison.Ordinal)
            ? new FakeReply { Chunks = 8, DelayBetweenChunks = TimeSpan.FromMilliseconds(100) }
            : new FakeReply { Chunks = 200, DelayBetweenChunks = TimeSpan.FromMilliseconds(200) });
        var database = await TestDatabases.CreateAsync(TestDatabases.Postgres);
        var env = new Dictionary<string, string?>
        {
            ["Tollgate__Providers__openai__BaseUrl"] = fake.OpenAiBaseUrl.ToString(),
            ["Tollgate__Providers__openai__ApiKey"] = "sk-fake-shutdown",
            ["Tollgate__Gateway__ShutdownGraceSeconds"] = "3",
        };
        var server = await TollgateServer.StartAsync(database, env);
        string accountId, key;
        StreamResult shortCall, longCall;
        await using (server)
        {
            (accountId, _, _) = await CreateFundedAccountAsync(server.Admin, grant);
            key = (await ReadOkAsync(await server.Admin.PostAsync($"/admin/v1/accounts/{accountId}/keys", Json("{}")), HttpStatusCode.Created))
                .GetProperty("key").GetString()!;
            using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);

            async Task<StreamResult> Stream(string text, TaskCompletionSource first)
            {
                var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = Json($$"""{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"{{text}}"}]}"""),
                };
                var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                return await ReadStreamAsync(response, first);
            }

            var shortStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var longStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var shortTask = Stream("short story", shortStarted);
            var longTask = Stream("long story", longStarted);
            await Task.WhenAll(shortStarted.Task, longStarted.Task).WaitAsync(TimeSpan.FromSeconds(20));

            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            var exitCode = await server.TerminateAsync(TimeSpan.FromSeconds(30));
            Assert.True(exitCode == 0, $"exit code {exitCode}\n{server.Output}");
            // Grace 3 s, then the cut calls settle: well before the long stream's 40 s.
            Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(15));
            shortCall = await shortTask;
            longCall = await longTask;
        }

        Assert.Equal(new StreamResult(8, true, null, null), shortCall);
        // The long one was ended by the gateway at the deadline: a clean end with an in-band error, not a dropped connection.
        Assert.Equal((true, "server_shutting_down", (string?)null), (longCall.Done, longCall.ErrorCode, longCall.Failure));
        Assert.InRange(longCall.ContentChunks, 1, 40);

        // Restarted on the same database: no hold is left, and each call was charged what it delivered.
        await using var restarted = await TollgateServer.StartAsync(database, env);
        var account = await ReadOkAsync(await restarted.Admin.GetAsync($"/admin/v1/accounts/{accountId}"));
        Assert.Equal(0, account.GetProperty("held_micros").GetInt64());
        using var customer = new HttpClient { BaseAddress = restarted.BaseAddress };
        customer.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        var usage = (await ReadOkAsync(await customer.GetAsync("/api/v1/usage"))).GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(2, usage.Count);
        var completed = usage.Single(u => u.GetProperty("outcome").GetString() == "completed");
        var cut = usage.Single(u => u.GetProperty("outcome").GetString() == "cut_off");
        Assert.Equal(8, completed.GetProperty("output_tokens").GetInt64());
        // The cut stream is charged for the text the client received, counted with the tokenizer (a chunk is a word of
        // one or two tokens), not for the 200 chunks the provider would have sent.
        Assert.InRange(cut.GetProperty("output_tokens").GetInt64(), longCall.ContentChunks, 2 * longCall.ContentChunks + 2);
        var charged = usage.Sum(u => u.GetProperty("user_price_micros").GetInt64());
        Assert.True(charged > 0);
        Assert.Equal(grant - charged, account.GetProperty("balance_micros").GetInt64());
        await AuditAsync(restarted.Admin);
    }
}
