using System.ClientModel;
using System.Diagnostics;
using System.Text;
using Anthropic.Exceptions;
using Anthropic.Models.Messages;
using OpenAI.Chat;

namespace Tollgate.Tests.Gateway.Fakes;

/// <summary>
/// The official SDKs pointed DIRECTLY at the fake (no gateway): if they parse its answers, the fake speaks the real
/// wire formats, and the gateway tests built on it test something real.
/// </summary>
public sealed class FakeUpstreamTests
{
    private const string Model = "gpt-fake-mini";
    private const string Claude = "claude-fake-4";

    // ------------------------------------------------------------------ OpenAI SDK

    [Fact]
    public async Task OpenAi_sdk_parses_a_non_streaming_completion_with_counted_usage()
    {
        await using var fake = await FakeUpstream.StartAsync();
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk-provider-1").GetChatClient(Model);

        ChatCompletion completion = await chat.CompleteChatAsync(
            [new SystemChatMessage("be brief"), new UserChatMessage("hello there fake world")]);

        Assert.Equal("echo: hello there fake world", completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(Model, completion.Model);
        Assert.Equal(6, completion.Usage.InputTokenCount);        // "be brief" + "hello there fake world"
        Assert.Equal(5, completion.Usage.OutputTokenCount);       // five words streamed/answered
        Assert.Equal(11, completion.Usage.TotalTokenCount);
        Assert.Equal(0, completion.Usage.InputTokenDetails.CachedTokenCount);

        var request = Assert.Single(fake.Requests);
        Assert.Equal(FakeUpstream.OpenAiPath, request.Path);
        Assert.Equal("sk-provider-1", request.BearerToken);
        Assert.Equal(Model, request.Model);
        Assert.False(request.Stream);
        Assert.Equal("hello there fake world", request.LastUserText);
    }

    [Fact]
    public async Task OpenAi_sdk_streams_text_and_reads_usage_from_the_usage_chunk()
    {
        await using var fake = await FakeUpstream.StartAsync();
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk-provider-1").GetChatClient(Model);

        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        var updates = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("one two three")]))
        {
            updates++;
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            if (update.Usage is not null)
            {
                Assert.Null(usage);   // exactly one usage chunk
                usage = update.Usage;
            }
        }

        Assert.Equal("echo: one two three", text.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.NotNull(usage);
        Assert.Equal(3, usage.InputTokenCount);
        Assert.Equal(4, usage.OutputTokenCount);
        Assert.Equal(1 + 4 + 1 + 1, updates);   // role, 4 content, finish, usage

        var request = Assert.Single(fake.Requests);
        Assert.True(request.Stream);
        Assert.True(request.IncludeUsage);   // this SDK always asks for the usage chunk
    }

    [Fact]
    public async Task OpenAi_sdk_reads_scripted_cached_and_reasoning_tokens()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply
        {
            Text = "cached answer",
            Usage = new FakeUsage(Input: 1200, Output: 300, CacheRead: 1024, Reasoning: 128),
        });
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("x")]);

        Assert.Equal("cached answer", completion.Content[0].Text);
        Assert.Equal(1200, completion.Usage.InputTokenCount);
        Assert.Equal(300, completion.Usage.OutputTokenCount);
        Assert.Equal(1500, completion.Usage.TotalTokenCount);
        Assert.Equal(1024, completion.Usage.InputTokenDetails.CachedTokenCount);
        Assert.Equal(128, completion.Usage.OutputTokenDetails.ReasoningTokenCount);
    }

    [Fact]
    public async Task OpenAi_sdk_parses_tool_calls_streaming_and_not()
    {
        var tool = new FakeToolCall("call_1", "get_weather", """{"city":"Paris","unit":"celsius"}""");
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { ToolCalls = [tool] });
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);
        var options = new ChatCompletionOptions { Tools = { ChatTool.CreateFunctionTool("get_weather", "weather") } };

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage("weather?")], options);
        var call = Assert.Single(completion.ToolCalls);
        Assert.Equal(ChatFinishReason.ToolCalls, completion.FinishReason);
        Assert.Equal("call_1", call.Id);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal(tool.ArgumentsJson, call.FunctionArguments.ToString());
        var fragments = FakeUpstream.ToolArgumentFragments(tool.ArgumentsJson).Count;
        Assert.Equal(fragments, completion.Usage.OutputTokenCount);

        var arguments = new StringBuilder();
        string? name = null, id = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("weather?")], options))
        {
            foreach (var t in update.ToolCallUpdates)
            {
                Assert.Equal(0, t.Index);
                name ??= t.FunctionName;
                id ??= t.ToolCallId;
                if (t.FunctionArgumentsUpdate is { } a && !a.ToMemory().IsEmpty) arguments.Append(a.ToString());
            }
            finish ??= update.FinishReason;
        }
        Assert.Equal("get_weather", name);
        Assert.Equal("call_1", id);
        Assert.Equal(tool.ArgumentsJson, arguments.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, finish);
    }

    [Fact]
    public async Task OpenAi_sdk_surfaces_a_500_as_ClientResultException_without_retrying()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => FakeReply.OpenAiError(500, "server_error", "upstream exploded"));
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);

        var error = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("x")]));

        Assert.Equal(500, error.Status);
        Assert.Contains("upstream exploded", error.Message);
        Assert.Single(fake.Requests);
    }

    [Fact]
    public async Task OpenAi_max_tokens_truncates_unless_the_reply_forces_an_overrun()
    {
        await using var fake = await FakeUpstream.StartAsync();
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);
        var capped = new ChatCompletionOptions { MaxOutputTokenCount = 2 };

        ChatCompletion truncated = await chat.CompleteChatAsync([new UserChatMessage("a b c d e")], capped);
        Assert.Equal(ChatFinishReason.Length, truncated.FinishReason);
        Assert.Equal("echo: a", truncated.Content[0].Text);
        Assert.Equal(2, truncated.Usage.OutputTokenCount);
        Assert.Equal(2, fake.Requests[0].MaxTokens);
        Assert.Equal(2, fake.Requests[0].Json.GetProperty("max_completion_tokens").GetInt32());   // the SDK's field name

        fake.Script = _ => new FakeReply { OutputTokens = 50 };
        ChatCompletion overrun = await chat.CompleteChatAsync([new UserChatMessage("a b c d e")], capped);
        Assert.Equal(50, overrun.Usage.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Stop, overrun.FinishReason);
    }

    // ------------------------------------------------------------------ OpenAI raw wire (what the SDK hides)

    [Fact]
    public async Task OpenAi_stream_has_a_usage_chunk_only_when_include_usage_is_asked_and_not_omitted()
    {
        await using var fake = await FakeUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = fake.BaseUrl };

        var without = await RawSseAsync(http, FakeUpstream.OpenAiPath, """{"model":"m","stream":true,"messages":[{"role":"user","content":"hi you"}]}""");
        Assert.Equal("[DONE]", without[^1]);
        Assert.DoesNotContain(without, d => d.Contains("\"usage\""));

        var with = await RawSseAsync(http, FakeUpstream.OpenAiPath,
            """{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi you"}]}""");
        Assert.Equal("[DONE]", with[^1]);
        var usageChunk = JsonDocument.Parse(with[^2]).RootElement;
        Assert.Equal(0, usageChunk.GetProperty("choices").GetArrayLength());
        Assert.Equal(2, usageChunk.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(3, usageChunk.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        // Every earlier chunk carries "usage": null, as OpenAI does when include_usage is on.
        Assert.All(with[..^2], d => Assert.Equal(JsonValueKind.Null, JsonDocument.Parse(d).RootElement.GetProperty("usage").ValueKind));

        fake.Script = _ => new FakeReply { OmitUsage = true };
        var ignored = await RawSseAsync(http, FakeUpstream.OpenAiPath,
            """{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi you"}]}""");
        Assert.DoesNotContain(ignored, d => d.Contains("prompt_tokens"));
        var body = await (await http.PostAsync(FakeUpstream.OpenAiPath, Json("""{"model":"m","messages":[{"role":"user","content":"hi"}]}"""))).Content.ReadAsStringAsync();
        Assert.False(JsonDocument.Parse(body).RootElement.TryGetProperty("usage", out _));
    }

    [Fact]
    public async Task Connection_is_dropped_after_the_scripted_number_of_content_chunks()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { Chunks = 10, DropAfterChunks = 3 });
        using var http = new HttpClient { BaseAddress = fake.BaseUrl };

        var received = new List<string>();
        var error = await Record.ExceptionAsync(async () =>
        {
            using var response = await http.SendAsync(
                new HttpRequestMessage(HttpMethod.Post, FakeUpstream.OpenAiPath) { Content = Json("""{"model":"m","stream":true,"messages":[{"role":"user","content":"a b"}]}""") },
                HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            while (await reader.ReadLineAsync() is { } line)
                if (line.StartsWith("data: ")) received.Add(line["data: ".Length..]);
        });

        Assert.NotNull(error);   // the body ended abnormally (HttpIOException / IOException), not with [DONE]
        Assert.Equal(1 + 3, received.Count);   // the role chunk, then exactly 3 content chunks
        Assert.DoesNotContain("[DONE]", received);
        Assert.Equal(new FakeOutcome(FakeEnd.Dropped, 3), await fake.OutcomeAsync(fake.Requests[0]));
    }

    [Fact]
    public async Task Reset_before_any_byte_and_delay_before_headers_fail_the_client()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { ResetBeforeAnyByte = true });
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk", timeout: TimeSpan.FromMilliseconds(500)).GetChatClient(Model);
        await Assert.ThrowsAnyAsync<Exception>(() => chat.CompleteChatAsync([new UserChatMessage("x")]));

        fake.Script = _ => new FakeReply { DelayBeforeHeaders = TimeSpan.FromSeconds(20) };
        var clock = Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<Exception>(() => chat.CompleteChatAsync([new UserChatMessage("x")]));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"timed out after {clock.Elapsed}");
        Assert.Equal(2, fake.Requests.Count);
    }

    [Fact]
    public async Task Slow_streams_pace_their_chunks()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { Chunks = 6, DelayBetweenChunks = TimeSpan.FromMilliseconds(60) });
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);

        var clock = Stopwatch.StartNew();
        var text = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("tick tock")]))
            foreach (var part in update.ContentUpdate) text.Append(part.Text);

        // Five pauses of 60 ms; timers may fire a millisecond early, so allow some slack below 300 ms (load only adds time).
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(5 * 60 - 30), $"took {clock.Elapsed}");
        Assert.Equal("echo: tick tock echo: tick tock", text.ToString());   // 6 chunks cycling the answer's words
    }

    // ------------------------------------------------------------------ Anthropic SDK

    [Fact]
    public async Task Anthropic_sdk_parses_a_message_and_sends_its_key_as_a_bearer_token()
    {
        await using var fake = await FakeUpstream.StartAsync();
        var client = Sdks.Anthropic(fake.BaseUrl, "sk-ant-provider");

        var message = await client.Messages.Create(new MessageCreateParams
        {
            Model = Claude,
            MaxTokens = 100,
            System = "be brief",
            Messages = [new UserMessageParam("hello claude fake")],
        });
        message.Validate();

        Assert.True(message.Content[0].TryPickText(out var text));
        Assert.Equal("echo: hello claude fake", text.Text);
        Assert.Equal(StopReason.EndTurn, message.StopReason!.Value());
        Assert.Equal(5, message.Usage.InputTokens);     // "be brief" + "hello claude fake"
        Assert.Equal(4, message.Usage.OutputTokens);
        Assert.Equal(0, message.Usage.CacheReadInputTokens);

        var request = Assert.Single(fake.Requests);
        Assert.Equal(FakeUpstream.AnthropicPath, request.Path);
        // SDK 13.x sends the key as a bearer token (not x-api-key) and a dated anthropic-version header.
        Assert.Equal("sk-ant-provider", request.BearerToken);
        Assert.Null(request.Header("x-api-key"));
        Assert.Equal("sk-ant-provider", request.ApiKey);
        Assert.False(string.IsNullOrEmpty(request.Header("anthropic-version")));
        Assert.Equal(Claude, request.Model);
        Assert.Equal(100, request.MaxTokens);
    }

    [Fact]
    public async Task Anthropic_sdk_reads_scripted_cache_usage()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply
        {
            Usage = new FakeUsage(Input: 50, Output: 200, CacheRead: 4000, CacheWrite: 1000),
        });
        var client = Sdks.Anthropic(fake.BaseUrl, "k");

        var message = await client.Messages.Create(new MessageCreateParams
        {
            Model = Claude, MaxTokens = 500, Messages = [new UserMessageParam("hi")],
        });

        Assert.Equal(50, message.Usage.InputTokens);
        Assert.Equal(200, message.Usage.OutputTokens);
        Assert.Equal(4000, message.Usage.CacheReadInputTokens);
        Assert.Equal(1000, message.Usage.CacheCreationInputTokens);
    }

    [Fact]
    public async Task Anthropic_sdk_streams_text_with_usage_in_message_start_and_message_delta()
    {
        await using var fake = await FakeUpstream.StartAsync();
        var client = Sdks.Anthropic(fake.BaseUrl, "k");

        var text = new StringBuilder();
        long? startInput = null, startOutput = null, finalOutput = null;
        var stopped = false;
        await foreach (var e in client.Messages.CreateStreaming(new MessageCreateParams
        {
            Model = Claude, MaxTokens = 100, Messages = [new UserMessageParam("stream me now")],
        }))
        {
            if (e.TryPickStart(out var start))
            {
                startInput = start.Message.Usage.InputTokens;
                startOutput = start.Message.Usage.OutputTokens;
            }
            if (e.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var t)) text.Append(t.Text);
            if (e.TryPickDelta(out var messageDelta)) finalOutput = messageDelta.Usage.OutputTokens;
            if (e.TryPickStop(out _)) stopped = true;
        }

        Assert.Equal("echo: stream me now", text.ToString());
        Assert.Equal(3, startInput);
        Assert.Equal(1, startOutput);    // placeholder, replaced (not added) by message_delta
        Assert.Equal(4, finalOutput);
        Assert.True(stopped);
        Assert.True(Assert.Single(fake.Requests).Stream);
    }

    [Fact]
    public async Task Anthropic_stream_uses_the_named_event_sequence()
    {
        await using var fake = await FakeUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = fake.BaseUrl };
        using var response = await http.PostAsync(FakeUpstream.AnthropicPath,
            Json("""{"model":"c","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"x y"}]}"""));
        var events = (await response.Content.ReadAsStringAsync())
            .Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(frame => frame.Split('\n'))
            .Select(lines => (Name: lines[0]["event: ".Length..], Type: JsonDocument.Parse(lines[1]["data: ".Length..]).RootElement.GetProperty("type").GetString()))
            .ToArray();

        Assert.All(events, e => Assert.Equal(e.Name, e.Type));
        Assert.Equal(
            ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta",
             "content_block_stop", "message_delta", "message_stop"],
            events.Select(e => e.Name).ToArray());
    }

    [Fact]
    public async Task Anthropic_sdk_streams_a_tool_use_block_with_input_json_deltas()
    {
        var tool = new FakeToolCall("toolu_1", "get_weather", """{"city":"Paris"}""");
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { ToolCalls = [tool] });
        var client = Sdks.Anthropic(fake.BaseUrl, "k");
        var parameters = new MessageCreateParams
        {
            Model = Claude, MaxTokens = 100, Messages = [new UserMessageParam("weather?")],
        };

        var json = new StringBuilder();
        string? name = null;
        await foreach (var e in client.Messages.CreateStreaming(parameters))
        {
            if (e.TryPickContentBlockStart(out var start) && start.ContentBlock.TryPickToolUse(out var use)) name = use.Name;
            if (e.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickInputJson(out var partial)) json.Append(partial.PartialJson);
        }
        Assert.Equal("get_weather", name);
        Assert.Equal("Paris", JsonDocument.Parse(json.ToString()).RootElement.GetProperty("city").GetString());

        var message = await client.Messages.Create(parameters);
        Assert.Equal(StopReason.ToolUse, message.StopReason!.Value());
        Assert.True(message.Content[0].TryPickToolUse(out var block));
        Assert.Equal("toolu_1", block.ID);
        Assert.Equal("Paris", block.Input["city"].GetString());
    }

    [Fact]
    public async Task Anthropic_sdk_surfaces_500_and_429_as_its_exception_types()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => FakeReply.AnthropicError(500, "api_error", "boom"));
        var client = Sdks.Anthropic(fake.BaseUrl, "k");
        var parameters = new MessageCreateParams
        {
            Model = Claude, MaxTokens = 10, Messages = [new UserMessageParam("x")],
        };

        var serverError = await Assert.ThrowsAsync<Anthropic5xxException>(() => client.Messages.Create(parameters));
        Assert.Contains("boom", serverError.Message);

        fake.Script = _ => FakeReply.AnthropicError(429, "rate_limit_error", "slow down");
        await Assert.ThrowsAsync<AnthropicRateLimitException>(() => client.Messages.Create(parameters));
        Assert.Equal(2, fake.Requests.Count);   // no retries
    }

    [Fact]
    public async Task Mid_stream_errors_arrive_in_band_after_the_scripted_chunks()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { Chunks = 5, ErrorAfterChunks = 2 });
        using var http = new HttpClient { BaseAddress = fake.BaseUrl };

        var openAi = await RawSseAsync(http, FakeUpstream.OpenAiPath,
            """{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b"}]}""");
        Assert.Equal(1 + 2 + 1, openAi.Count);   // role, 2 content chunks, the error; no finish, usage or [DONE]
        Assert.Equal("server_error", JsonDocument.Parse(openAi[^1]).RootElement.GetProperty("error").GetProperty("type").GetString());

        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);
        // OpenAI .NET 2.15 IGNORES an in-band error frame: the caller just sees a stream that stops early, with no
        // finish reason and no usage (checked here so a gateway test knows what an SDK client can observe).
        var sdkText = new StringBuilder();
        ChatFinishReason? sdkFinish = null;
        ChatTokenUsage? sdkUsage = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("a b")]))
        {
            foreach (var part in update.ContentUpdate) sdkText.Append(part.Text);
            sdkFinish ??= update.FinishReason;
            sdkUsage ??= update.Usage;
        }
        Assert.Equal("echo: a ", sdkText.ToString());
        Assert.Null(sdkFinish);
        Assert.Null(sdkUsage);

        var client = Sdks.Anthropic(fake.BaseUrl, "k");
        var text = new StringBuilder();
        var anthropicError = await Record.ExceptionAsync(async () =>
        {
            await foreach (var e in client.Messages.CreateStreaming(new MessageCreateParams
            {
                Model = Claude, MaxTokens = 100, Messages = [new UserMessageParam("a b")],
            }))
                if (e.TryPickContentBlockDelta(out var d) && d.Delta.TryPickText(out var t)) text.Append(t.Text);
        });
        Assert.NotNull(anthropicError);
        Assert.IsAssignableFrom<AnthropicException>(anthropicError);
        Assert.Contains("Overloaded", anthropicError.Message);
        Assert.Equal("echo: a ", text.ToString());
    }

    [Fact]
    public async Task Legacy_anthropic_message_delta_carries_only_output_tokens()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { LegacyAnthropicDeltaUsage = true });
        var client = Sdks.Anthropic(fake.BaseUrl, "k");

        MessageDeltaUsage? usage = null;
        await foreach (var e in client.Messages.CreateStreaming(new MessageCreateParams
        {
            Model = Claude, MaxTokens = 100, Messages = [new UserMessageParam("one two")],
        }))
            if (e.TryPickDelta(out var d)) usage = d.Usage;

        Assert.NotNull(usage);
        Assert.Equal(3, usage.OutputTokens);
        Assert.Null(usage.InputTokens);
        Assert.Null(usage.CacheReadInputTokens);
    }

    [Fact]
    public async Task Outcomes_tell_a_completed_stream_from_one_the_client_left()
    {
        await using var fake = await FakeUpstream.StartAsync(_ => new FakeReply { Chunks = 200, DelayBetweenChunks = TimeSpan.FromMilliseconds(20) });
        var chat = Sdks.OpenAi(fake.OpenAiBaseUrl, "sk").GetChatClient(Model);

        var seen = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("go")]))
            if (update.ContentUpdate.Count > 0 && ++seen == 3) break;   // leaving the loop disposes the response

        var left = await fake.OutcomeAsync(fake.Requests[0]).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(FakeEnd.ClientDisconnected, left.End);
        Assert.InRange(left.ContentChunksSent, 3, 199);

        fake.Script = _ => new FakeReply { Chunks = 4 };
        await foreach (var _ in chat.CompleteChatStreamingAsync([new UserChatMessage("go")])) { }
        Assert.Equal(new FakeOutcome(FakeEnd.Completed, 4), await fake.OutcomeAsync(fake.Requests[1]).WaitAsync(TimeSpan.FromSeconds(10)));

        fake.Script = _ => new FakeReply { Chunks = 4, ErrorAfterChunks = 1 };
        await foreach (var _ in chat.CompleteChatStreamingAsync([new UserChatMessage("go")])) { }
        Assert.Equal(new FakeOutcome(FakeEnd.InBandError, 1), await fake.OutcomeAsync(fake.Requests[2]).WaitAsync(TimeSpan.FromSeconds(10)));

        fake.Script = _ => FakeReply.OpenAiError(429, "rate_limit_exceeded", "slow");
        await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("go")]));
        Assert.Equal(FakeEnd.ErrorStatus, (await fake.OutcomeAsync(fake.Requests[3])).End);
        Assert.Equal(4, (await fake.WaitForRequestsAsync(4)).Count);
    }

    // ------------------------------------------------------------------ helpers

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    /// <summary>The <c>data:</c> payloads of a complete SSE response.</summary>
    private static async Task<List<string>> RawSseAsync(HttpClient http, string path, string body)
    {
        using var response = await http.PostAsync(path, Json(body));
        response.EnsureSuccessStatusCode();
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        return text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(frame => frame.Split('\n').Single(l => l.StartsWith("data: "))["data: ".Length..])
            .ToList();
    }
}
