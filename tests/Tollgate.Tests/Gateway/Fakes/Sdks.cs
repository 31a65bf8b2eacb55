using System.ClientModel;
using System.ClientModel.Primitives;
using Anthropic;
using OpenAI;

namespace Tollgate.Tests.Gateway.Fakes;

/// <summary>
/// Official SDK clients pointed at a test server (the fake upstream, or Tollgate itself), retries off so error cases
/// are fast and a request is sent exactly once.
///
/// <para><b>OpenAI .NET SDK, NuGet <c>OpenAI</c> 2.15.0</b> (System.ClientModel based):</para>
/// <list type="bullet">
/// <item>Endpoint = the base URL INCLUDING <c>/v1</c> (<see cref="OpenAIClientOptions.Endpoint"/>); the SDK appends
/// <c>/chat/completions</c>. Key: <c>new ApiKeyCredential(key)</c>, sent as <c>Authorization: Bearer key</c>.</item>
/// <item>Retries: <c>RetryPolicy = new ClientRetryPolicy(maxRetries: 0)</c>.</item>
/// <item><c>client.GetChatClient(model)</c> → <c>ChatClient</c>; <c>CompleteChatAsync(messages, options)</c> returns
/// <c>ClientResult&lt;ChatCompletion&gt;</c> (implicitly converts to ChatCompletion): <c>.Content[0].Text</c>,
/// <c>.FinishReason</c>, <c>.ToolCalls[i].FunctionName / .FunctionArguments</c> (BinaryData),
/// <c>.Usage.InputTokenCount / OutputTokenCount / TotalTokenCount / InputTokenDetails.CachedTokenCount /
/// OutputTokenDetails.ReasoningTokenCount</c>.</item>
/// <item>Streaming: <c>await foreach (StreamingChatCompletionUpdate u in chat.CompleteChatStreamingAsync(messages, options))</c>:
/// text in <c>u.ContentUpdate</c> (list of parts, <c>.Text</c>), tools in <c>u.ToolCallUpdates</c> (<c>Index, ToolCallId,
/// FunctionName, FunctionArgumentsUpdate</c>), <c>u.FinishReason</c>, usage in <c>u.Usage</c> (non-null only on the
/// usage chunk). This SDK version ALWAYS sends <c>"stream_options":{"include_usage":true}</c> on streaming calls
/// (there is no public option to turn it off) — a test of "client did not ask for usage" must send raw HTTP.</item>
/// <item>Max tokens: <c>ChatCompletionOptions.MaxOutputTokenCount</c> is sent as <c>max_completion_tokens</c>.</item>
/// <item>Errors: a non-2xx status throws <c>System.ClientModel.ClientResultException</c> (<c>.Status</c>,
/// <c>.GetRawResponse()</c>); the message includes the error body's message. An in-band stream error
/// (<c>data: {"error":{...}}</c> after the 200) is SILENTLY IGNORED: the enumeration just ends, with no finish reason
/// and no usage — an SDK caller can only notice the missing finish reason.</item>
/// </list>
///
/// <para><b>Anthropic C# SDK, NuGet <c>Anthropic</c> 13.12.0</b> (the official SDK since 10.x; Stainless generated):</para>
/// <list type="bullet">
/// <item><c>new AnthropicClient { BaseUrl = root (WITHOUT /v1 — it appends <c>v1/messages</c>), ApiKey = key, MaxRetries = 0 }</c>.
/// CAUTION: this version sends <c>ApiKey</c> as <c>Authorization: Bearer key</c> (NOT <c>x-api-key</c>) and
/// <c>anthropic-version: 2026-10-21</c> (checked on the wire against the fake; the reference doc's x-api-key + 2023-06-01 is
/// the older convention). A gateway's Anthropic endpoint must therefore accept the caller's key as a bearer token
/// (and should also accept <c>x-api-key</c> for other clients). Other headers: <c>X-Stainless-*</c>, <c>x-stainless-retry-count</c>,
/// <c>Accept-Encoding: gzip</c>.</item>
/// <item><c>await client.Messages.Create(new MessageCreateParams { Model = "...", MaxTokens = 64, Messages = [new() { Role = Role.User, Content = "hi" }] })</c>
/// → <c>Message</c>: <c>.Content</c> (list of <c>ContentBlock</c>; <c>block.TryPickText(out var text)</c>,
/// <c>TryPickToolUse(out var tool)</c>), <c>.StopReason</c>, <c>.Usage.InputTokens / OutputTokens /
/// CacheReadInputTokens / CacheCreationInputTokens</c>. Models are lazily parsed; <c>.Validate()</c> checks every required field.</item>
/// <item>Streaming: <c>await foreach (RawMessageStreamEvent e in client.Messages.CreateStreaming(parameters))</c>;
/// <c>e.TryPickStart(out var start)</c> (<c>start.Message.Usage</c>), <c>TryPickContentBlockDelta(out var d)</c>
/// (<c>d.Delta.TryPickText(out var t)</c> → <c>t.Text</c>; <c>TryPickInputJson(out var j)</c> → <c>j.PartialJson</c>),
/// <c>TryPickDelta(out var md)</c> (<c>md.Usage.OutputTokens</c>, cumulative), <c>TryPickStop</c>. <c>ping</c> events are skipped by the SDK.</item>
/// <item>Errors: <c>Anthropic.Exceptions.Anthropic5xxException</c> for 5xx, <c>AnthropicRateLimitException</c> for 429,
/// <c>AnthropicBadRequestException</c> for 400 — all derive from <c>AnthropicApiException</c>. An in-band
/// <c>event: error</c> mid-stream makes the enumeration throw an <c>AnthropicException</c> (the message contains the error's message).</item>
/// </list>
/// </summary>
public static class Sdks
{
    /// <summary>An OpenAI client whose endpoint is <paramref name="baseUrl"/> (include the <c>/v1</c>). Use <c>.GetChatClient(model)</c>.</summary>
    public static OpenAIClient OpenAi(Uri baseUrl, string apiKey, TimeSpan? timeout = null) =>
        new(new ApiKeyCredential(apiKey), new OpenAIClientOptions
        {
            Endpoint = baseUrl,
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
            NetworkTimeout = timeout ?? TimeSpan.FromSeconds(30),
        });

    /// <summary>An Anthropic client whose base URL is <paramref name="baseUrl"/> (the root, WITHOUT <c>/v1</c>).</summary>
    public static AnthropicClient Anthropic(Uri baseUrl, string apiKey, TimeSpan? timeout = null) => new()
    {
        BaseUrl = baseUrl.ToString().TrimEnd('/'),
        ApiKey = apiKey,
        MaxRetries = 0,
        Timeout = timeout ?? TimeSpan.FromSeconds(30),
    };
}
