using System.Buffers;
using System.Text;
using System.Text.Json;
using Tollgate.Features.Pricing;

namespace Tollgate.Features.Gateway.Anthropic;

/// <summary>
/// Pure translation between OpenAI Chat Completions (what Tollgate's <c>/v1/chat/completions</c> accepts) and
/// Anthropic Messages (<c>POST {base}/v1/messages</c>) for models of an Anthropic-kind provider. No I/O: JSON in,
/// UTF-8 JSON out. Streaming answers go through <see cref="MessagesStreamTranslator"/>.
/// <para><b>Request</b> (<see cref="TranslateRequest"/>):</para>
/// <list type="bullet">
/// <item><c>system</c>/<c>developer</c> messages, wherever they are, become the top-level <c>system</c> (a string for
/// one plain text, else text blocks in order); Anthropic has no mid-conversation system turn.</item>
/// <item><c>user</c>/<c>assistant</c> messages become turns; content parts: <c>text</c>, <c>image_url</c> (a
/// <c>data:</c> URL → base64 image block, an http(s) URL → url image block, <c>detail</c> dropped), <c>file</c> with a
/// PDF <c>data:</c> URL → document block; a part's <c>cache_control</c> is passed through (OpenRouter's convention).
/// Empty texts are dropped (Anthropic rejects empty text blocks) and a message left with nothing is skipped.</item>
/// <item>assistant <c>tool_calls</c> → <c>tool_use</c> blocks (arguments parsed into the <c>input</c> object; empty →
/// <c>{}</c>); <c>tool</c> messages → <c>tool_result</c> blocks in a user turn. Consecutive turns of the same role
/// (several tool results, tool results then a user message, two user messages) are merged into one, as Anthropic
/// requires alternation; tool results come first because they came first. A conversation opening with an assistant
/// message gets a "." user turn before it (Anthropic wants the user to speak first).</item>
/// <item><c>tools</c> (function) → name, description, <c>parameters</c> → <c>input_schema</c> (an empty object schema
/// when absent); <c>tool_choice</c> auto/none/required/{function} → auto/none/any/{tool}; <c>parallel_tool_calls:
/// false</c> → <c>disable_parallel_tool_use: true</c>. Without tools, <c>tool_choice</c> auto/none is dropped.</item>
/// <item><c>max_tokens</c> = the gateway's value; <c>temperature</c>, <c>top_p</c>, <c>stream</c> copied;
/// <c>stop</c> (string or array) → <c>stop_sequences</c>; <c>user</c> (else <c>safety_identifier</c>) →
/// <c>metadata.user_id</c>.</item>
/// </list>
/// Parameters Anthropic cannot honour:
/// <list type="table">
/// <listheader><term>parameter</term><description>decision</description></listheader>
/// <item><term><c>n</c> ≠ 1</term><description>rejected: one choice only; silently returning one would break clients
/// that index several</description></item>
/// <item><term><c>logprobs: true</c>, <c>top_logprobs</c> &gt; 0</term><description>rejected: no log
/// probabilities</description></item>
/// <item><term><c>response_format</c> json_object / json_schema</term><description>rejected: no JSON mode on the
/// Messages API without a beta header; <c>{"type":"text"}</c> is accepted</description></item>
/// <item><term><c>logit_bias</c> (non-empty)</term><description>rejected: token bans would be ignored</description></item>
/// <item><term><c>audio</c>, <c>modalities</c> other than text, <c>input_audio</c> parts</term><description>rejected</description></item>
/// <item><term><c>functions</c>, <c>function_call</c>, <c>function</c> role</term><description>rejected (legacy;
/// use <c>tools</c>)</description></item>
/// <item><term><c>web_search_options</c></term><description>rejected (OpenAI's built-in search)</description></item>
/// <item><term><c>temperature</c> outside 0–1</term><description>rejected (Anthropic's range; OpenAI's is 0–2 and
/// clamping would change sampling)</description></item>
/// <item><term><c>file</c> parts by <c>file_id</c> or not PDF</term><description>rejected</description></item>
/// <item><term><c>presence_penalty</c>, <c>frequency_penalty</c>, <c>seed</c>, <c>service_tier</c>, <c>store</c>,
/// <c>metadata</c>, <c>prediction</c>, <c>reasoning_effort</c>, <c>verbosity</c>, <c>prompt_cache_key</c>,
/// <c>stream_options</c>, image <c>detail</c>, message <c>name</c>, tool <c>strict</c>, any unknown field</term>
/// <description>dropped: hints or OpenAI-side features whose absence does not change what a correct answer is
/// (<c>stream_options.include_usage</c> is the gateway's business: Anthropic streams always carry usage)</description></item>
/// </list>
/// <para><b>Response</b> (<see cref="TranslateResponse"/>): text blocks concatenated into <c>message.content</c>
/// (null when there is none but there are tool calls), <c>tool_use</c> → <c>message.tool_calls</c>,
/// <c>thinking</c>/<c>redacted_thinking</c> and server-tool blocks dropped (OpenAI's chat shape has no place for them;
/// their tokens are still in <c>completion_tokens</c>), stop reason via <see cref="MapStopReason"/>, usage via
/// <see cref="UsageFromAnthropic"/>.</para>
/// </summary>
public static class ChatToMessages
{
    // ───────────────────────────── request ─────────────────────────────

    /// <summary>OpenAI chat request → UTF-8 JSON body for Anthropic <c>POST /v1/messages</c>.</summary>
    /// <param name="openAiChatRequest">The client's body (a JSON object).</param>
    /// <param name="upstreamModel">Anthropic's model id, e.g. <c>claude-sonnet-4-5</c>.</param>
    /// <param name="maxTokens">Output cap (required by Anthropic), decided by the gateway; ≥ 1.</param>
    /// <exception cref="TranslationException">The request asks for something Anthropic cannot do, or is malformed.</exception>
    public static byte[] TranslateRequest(JsonElement openAiChatRequest, string upstreamModel, long maxTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        var request = openAiChatRequest;
        if (request.ValueKind != JsonValueKind.Object)
            throw new TranslationException("", "The request body must be a JSON object.", TranslationException.InvalidValue);
        RejectUnsupported(request);

        var system = new List<Block>();
        var turns = new List<Turn>();
        ReadMessages(request, system, turns);
        var hasTools = TryGet(request, "tools", out var tools) && tools.ValueKind == JsonValueKind.Array && tools.GetArrayLength() > 0;

        var buffer = new ArrayBufferWriter<byte>(4096);
        using (var w = new Utf8JsonWriter(buffer, OpenAiJson.WriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("model", upstreamModel);
            w.WriteNumber("max_tokens", maxTokens);
            WriteSystem(w, system);
            w.WriteStartArray("messages");
            foreach (var turn in turns)
            {
                w.WriteStartObject();
                w.WriteString("role", turn.Role);
                w.WriteStartArray("content");
                foreach (var block in turn.Blocks) WriteBlock(w, block);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (hasTools)
            {
                WriteTools(w, tools);
                WriteToolChoice(w, request);
            }
            else if (TryGet(request, "tool_choice", out var choice) && !(choice.ValueKind == JsonValueKind.String && choice.GetString() is "auto" or "none"))
            {
                throw new TranslationException("tool_choice", "tool_choice requires tools.", TranslationException.InvalidValue);
            }
            if (TryGet(request, "temperature", out var temperature)) { w.WritePropertyName("temperature"); temperature.WriteTo(w); }
            if (TryGet(request, "top_p", out var topP))
            {
                if (topP.ValueKind != JsonValueKind.Number) throw Invalid("top_p", "top_p must be a number.");
                w.WritePropertyName("top_p");
                topP.WriteTo(w);
            }
            WriteStopSequences(w, request);
            if (TryGet(request, "stream", out var stream))
            {
                if (stream.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Invalid("stream", "stream must be a boolean.");
                w.WriteBoolean("stream", stream.GetBoolean());
            }
            var user = TryGet(request, "user", out var u) ? u : TryGet(request, "safety_identifier", out var s) ? s : default;
            if (user.ValueKind == JsonValueKind.String && user.GetString() is { Length: > 0 } userId)
            {
                w.WriteStartObject("metadata");
                w.WriteString("user_id", userId);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static void RejectUnsupported(JsonElement request)
    {
        if (TryGet(request, "n", out var n) && !(n.ValueKind == JsonValueKind.Number && n.TryGetInt64(out var count) && count == 1))
            throw new TranslationException("n", "Anthropic models return a single choice; n must be 1 or omitted.");
        if (TryGet(request, "logprobs", out var logprobs) && logprobs.ValueKind != JsonValueKind.False)
            throw new TranslationException("logprobs", "Anthropic models do not return log probabilities; omit logprobs.");
        if (TryGet(request, "top_logprobs", out var top) && !(top.ValueKind == JsonValueKind.Number && top.TryGetInt64(out var k) && k == 0))
            throw new TranslationException("top_logprobs", "Anthropic models do not return log probabilities; omit top_logprobs.");
        if (TryGet(request, "response_format", out var format)
            && !(format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out var ft) && ft.ValueKind == JsonValueKind.String && ft.GetString() == "text"))
            throw new TranslationException("response_format", "Anthropic models do not support response_format json_object or json_schema through this gateway; describe the JSON you want in the prompt, or use a tool.");
        if (TryGet(request, "logit_bias", out var bias) && !(bias.ValueKind == JsonValueKind.Object && !bias.EnumerateObject().Any()))
            throw new TranslationException("logit_bias", "Anthropic models do not support logit_bias.");
        if (TryGet(request, "audio", out _))
            throw new TranslationException("audio", "Anthropic models do not produce audio.");
        if (TryGet(request, "modalities", out var modalities))
        {
            if (modalities.ValueKind != JsonValueKind.Array) throw Invalid("modalities", "modalities must be an array.");
            foreach (var m in modalities.EnumerateArray())
                if (!(m.ValueKind == JsonValueKind.String && m.GetString() == "text"))
                    throw new TranslationException("modalities", "Anthropic models only produce text.");
        }
        if (TryGet(request, "functions", out _))
            throw new TranslationException("functions", "The legacy functions parameter is not supported; use tools.");
        if (TryGet(request, "function_call", out _))
            throw new TranslationException("function_call", "The legacy function_call parameter is not supported; use tool_choice.");
        if (TryGet(request, "web_search_options", out _))
            throw new TranslationException("web_search_options", "web_search_options is not supported for Anthropic models.");
        if (TryGet(request, "temperature", out var temperature)
            && !(temperature.ValueKind == JsonValueKind.Number && temperature.TryGetDecimal(out var t) && t >= 0 && t <= 1))
            throw new TranslationException("temperature", "Anthropic models accept a temperature between 0 and 1.", TranslationException.InvalidValue);
    }

    private static void ReadMessages(JsonElement request, List<Block> system, List<Turn> turns)
    {
        if (!TryGet(request, "messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw Invalid("messages", "messages must be a non-empty array.");
        var i = 0;
        foreach (var message in messages.EnumerateArray())
        {
            var path = $"messages[{i++}]";
            if (message.ValueKind != JsonValueKind.Object) throw Invalid(path, $"{path} must be an object.");
            var role = RequiredString(message, "role", path);
            switch (role)
            {
                case "system":
                case "developer":
                    system.AddRange(ReadContent(message, path, Allowed.Text));
                    break;
                case "user":
                    AddTurn(turns, "user", ReadContent(message, path, Allowed.Text | Allowed.Media));
                    break;
                case "assistant":
                    if (TryGet(message, "function_call", out _))
                        throw new TranslationException($"{path}.function_call", "The legacy function_call is not supported; use tool_calls.");
                    var blocks = ReadContent(message, path, Allowed.Text | Allowed.Refusal);
                    ReadToolCalls(message, path, blocks);
                    AddTurn(turns, "assistant", blocks);
                    break;
                case "tool":
                    var toolCallId = RequiredString(message, "tool_call_id", path);
                    AddTurn(turns, "user", [new ToolResultBlock(toolCallId, ReadContent(message, path, Allowed.Text | Allowed.Media))]);
                    break;
                case "function":
                    throw new TranslationException($"{path}.role", "The legacy function role is not supported; use tool messages.");
                default:
                    throw Invalid($"{path}.role", $"Unknown role '{role}'.");
            }
        }
        if (turns.Count == 0) throw Invalid("messages", "messages must contain at least one non-empty user or assistant message.");
        // Anthropic has answered 400 "first message must use the user role"; OpenAI allows an opening assistant
        // greeting (chat UIs send one). A one-character user turn keeps the greeting in context at a token's cost.
        if (turns[0].Role == "assistant") turns.Insert(0, new Turn("user", [new TextBlock(OpeningUserText, null)]));
    }

    /// <summary>The user turn put before a conversation that opens with an assistant message.</summary>
    internal const string OpeningUserText = ".";

    private static void AddTurn(List<Turn> turns, string role, List<Block> blocks)
    {
        if (blocks.Count == 0) return;
        if (turns.Count > 0 && turns[^1].Role == role) turns[^1].Blocks.AddRange(blocks);
        else turns.Add(new Turn(role, blocks));
    }

    [Flags]
    private enum Allowed { Text = 1, Media = 2, Refusal = 4 }

    private static List<Block> ReadContent(JsonElement message, string path, Allowed allowed)
    {
        var blocks = new List<Block>();
        if (!TryGet(message, "content", out var content)) return blocks;
        if (content.ValueKind == JsonValueKind.String)
        {
            if (content.GetString() is { Length: > 0 } text) blocks.Add(new TextBlock(text, null));
            return blocks;
        }
        if (content.ValueKind != JsonValueKind.Array) throw Invalid($"{path}.content", $"{path}.content must be a string or an array of content parts.");
        var j = 0;
        foreach (var part in content.EnumerateArray())
        {
            var partPath = $"{path}.content[{j++}]";
            if (part.ValueKind != JsonValueKind.Object) throw Invalid(partPath, $"{partPath} must be an object.");
            var type = RequiredString(part, "type", partPath);
            var cacheControl = TryGet(part, "cache_control", out var cc) && cc.ValueKind == JsonValueKind.Object ? cc : (JsonElement?)null;
            switch (type)
            {
                case "text":
                    if (RequiredString(part, "text", partPath) is { Length: > 0 } text) blocks.Add(new TextBlock(text, cacheControl));
                    break;
                case "refusal" when allowed.HasFlag(Allowed.Refusal):
                    if (RequiredString(part, "refusal", partPath) is { Length: > 0 } refusal) blocks.Add(new TextBlock(refusal, cacheControl));
                    break;
                case "image_url" when allowed.HasFlag(Allowed.Media):
                    blocks.Add(ReadImage(part, partPath, cacheControl));
                    break;
                case "file" when allowed.HasFlag(Allowed.Media):
                    blocks.Add(ReadFile(part, partPath, cacheControl));
                    break;
                default:
                    throw new TranslationException($"{partPath}.type", $"Content part type '{type}' is not supported here for Anthropic models.");
            }
        }
        return blocks;
    }

    private static Block ReadImage(JsonElement part, string path, JsonElement? cacheControl)
    {
        // OpenAI sends {"image_url":{"url":…,"detail":…}}; some clients send the URL string directly.
        var image = TryGet(part, "image_url", out var i) ? i : throw Invalid($"{path}.image_url", $"{path}.image_url is required.");
        var url = image.ValueKind == JsonValueKind.String ? image.GetString()! : RequiredString(image, "url", $"{path}.image_url");
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var (mediaType, data) = ParseBase64DataUrl(url, $"{path}.image_url.url");
            return new ImageBlock(mediaType, data, null, cacheControl);
        }
        if (url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            return new ImageBlock(null, null, url, cacheControl);
        throw Invalid($"{path}.image_url.url", "An image URL must be an http(s) URL or a base64 data: URL.");
    }

    private static Block ReadFile(JsonElement part, string path, JsonElement? cacheControl)
    {
        if (!TryGet(part, "file", out var file) || file.ValueKind != JsonValueKind.Object) throw Invalid($"{path}.file", $"{path}.file must be an object.");
        if (!TryGet(file, "file_data", out var fileData) || fileData.ValueKind != JsonValueKind.String)
            throw new TranslationException($"{path}.file", "Only inline files (file_data as a base64 data: URL) are supported for Anthropic models, not file_id.");
        var (mediaType, data) = ParseBase64DataUrl(fileData.GetString()!, $"{path}.file.file_data");
        if (!mediaType.Equals("application/pdf", StringComparison.OrdinalIgnoreCase))
            throw new TranslationException($"{path}.file.file_data", $"Only PDF files are supported for Anthropic models, not '{mediaType}'.");
        return new DocumentBlock(mediaType, data, cacheControl);
    }

    /// <summary><c>data:image/png;base64,AAAA</c> → (<c>image/png</c>, <c>AAAA</c>).</summary>
    private static (string MediaType, string Data) ParseBase64DataUrl(string url, string path)
    {
        var comma = url.IndexOf(',');
        var header = comma > 5 ? url.AsSpan(5, comma - 5) : default;
        if (!header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase) || header.Length == ";base64".Length || comma == url.Length - 1)
            throw Invalid(path, "A data: URL must look like data:<media type>;base64,<data>.");
        return (header[..^";base64".Length].ToString().ToLowerInvariant(), url[(comma + 1)..]);
    }

    private static void ReadToolCalls(JsonElement message, string path, List<Block> blocks)
    {
        if (!TryGet(message, "tool_calls", out var calls)) return;
        if (calls.ValueKind != JsonValueKind.Array) throw Invalid($"{path}.tool_calls", $"{path}.tool_calls must be an array.");
        var k = 0;
        foreach (var call in calls.EnumerateArray())
        {
            var callPath = $"{path}.tool_calls[{k++}]";
            if (call.ValueKind != JsonValueKind.Object) throw Invalid(callPath, $"{callPath} must be an object.");
            if (TryGet(call, "type", out var type) && !(type.ValueKind == JsonValueKind.String && type.GetString() == "function"))
                throw new TranslationException($"{callPath}.type", "Only function tool calls are supported for Anthropic models.");
            var id = RequiredString(call, "id", callPath);
            if (!TryGet(call, "function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw Invalid($"{callPath}.function", $"{callPath}.function must be an object.");
            var name = RequiredString(function, "name", $"{callPath}.function");
            var argumentsPath = $"{callPath}.function.arguments";
            var arguments = TryGet(function, "arguments", out var a)
                ? a.ValueKind == JsonValueKind.String ? a.GetString()! : throw Invalid(argumentsPath, "arguments must be a string of JSON.")
                : "";
            blocks.Add(new ToolUseBlock(id, name, ParseToolInput(arguments, argumentsPath)));
        }
    }

    /// <summary>Anthropic's <c>input</c> must be an object; OpenAI's arguments are a JSON string (empty meaning none).</summary>
    private static JsonElement? ParseToolInput(string arguments, string path)
    {
        if (string.IsNullOrWhiteSpace(arguments)) return null;
        JsonElement input;
        try
        {
            using var doc = JsonDocument.Parse(arguments);
            input = doc.RootElement.Clone();
        }
        catch (JsonException)
        {
            throw Invalid(path, $"{path} is not valid JSON.");
        }
        return input.ValueKind == JsonValueKind.Object ? input : throw Invalid(path, $"{path} must be a JSON object.");
    }

    private static void WriteSystem(Utf8JsonWriter w, List<Block> system)
    {
        if (system.Count == 0) return;
        if (system is [TextBlock { CacheControl: null } only])
        {
            w.WriteString("system", only.Text);
            return;
        }
        w.WriteStartArray("system");
        foreach (var block in system) WriteBlock(w, block);
        w.WriteEndArray();
    }

    private static void WriteBlock(Utf8JsonWriter w, Block block)
    {
        w.WriteStartObject();
        switch (block)
        {
            case TextBlock text:
                w.WriteString("type", "text");
                w.WriteString("text", text.Text);
                WriteCacheControl(w, text.CacheControl);
                break;
            case ImageBlock image:
                w.WriteString("type", "image");
                w.WriteStartObject("source");
                if (image.Url is { } url)
                {
                    w.WriteString("type", "url");
                    w.WriteString("url", url);
                }
                else
                {
                    w.WriteString("type", "base64");
                    w.WriteString("media_type", image.MediaType);
                    w.WriteString("data", image.Data);
                }
                w.WriteEndObject();
                WriteCacheControl(w, image.CacheControl);
                break;
            case DocumentBlock document:
                w.WriteString("type", "document");
                w.WriteStartObject("source");
                w.WriteString("type", "base64");
                w.WriteString("media_type", document.MediaType);
                w.WriteString("data", document.Data);
                w.WriteEndObject();
                WriteCacheControl(w, document.CacheControl);
                break;
            case ToolUseBlock toolUse:
                w.WriteString("type", "tool_use");
                w.WriteString("id", toolUse.Id);
                w.WriteString("name", toolUse.Name);
                w.WritePropertyName("input");
                if (toolUse.Input is { } input) input.WriteTo(w);
                else
                {
                    w.WriteStartObject();
                    w.WriteEndObject();
                }
                break;
            case ToolResultBlock result:
                w.WriteString("type", "tool_result");
                w.WriteString("tool_use_id", result.ToolUseId);
                if (result.Content.Count > 0)
                {
                    w.WriteStartArray("content");
                    foreach (var inner in result.Content) WriteBlock(w, inner);
                    w.WriteEndArray();
                }
                break;
        }
        w.WriteEndObject();
    }

    private static void WriteCacheControl(Utf8JsonWriter w, JsonElement? cacheControl)
    {
        if (cacheControl is not { } cc) return;
        w.WritePropertyName("cache_control");
        cc.WriteTo(w);
    }

    private static void WriteTools(Utf8JsonWriter w, JsonElement tools)
    {
        w.WriteStartArray("tools");
        var i = 0;
        foreach (var tool in tools.EnumerateArray())
        {
            var path = $"tools[{i++}]";
            if (tool.ValueKind != JsonValueKind.Object) throw Invalid(path, $"{path} must be an object.");
            if (RequiredString(tool, "type", path) != "function")
                throw new TranslationException($"{path}.type", "Only function tools are supported for Anthropic models.");
            if (!TryGet(tool, "function", out var function) || function.ValueKind != JsonValueKind.Object)
                throw Invalid($"{path}.function", $"{path}.function must be an object.");
            w.WriteStartObject();
            w.WriteString("name", RequiredString(function, "name", $"{path}.function"));
            if (TryGet(function, "description", out var description))
            {
                if (description.ValueKind != JsonValueKind.String) throw Invalid($"{path}.function.description", "description must be a string.");
                w.WriteString("description", description.GetString());
            }
            w.WritePropertyName("input_schema");
            if (TryGet(function, "parameters", out var parameters))
            {
                if (parameters.ValueKind != JsonValueKind.Object) throw Invalid($"{path}.function.parameters", "parameters must be a JSON Schema object.");
                parameters.WriteTo(w);
            }
            else
            {
                // Anthropic requires a schema; OpenAI's absent parameters mean "takes no arguments".
                w.WriteStartObject();
                w.WriteString("type", "object");
                w.WriteStartObject("properties");
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    private static void WriteToolChoice(Utf8JsonWriter w, JsonElement request)
    {
        var disableParallel = TryGet(request, "parallel_tool_calls", out var parallel) && parallel.ValueKind == JsonValueKind.False;
        string type;
        string? name = null;
        if (!TryGet(request, "tool_choice", out var choice)) type = "auto";
        else if (choice.ValueKind == JsonValueKind.String)
        {
            type = choice.GetString() switch
            {
                "auto" => "auto",
                "none" => "none",
                "required" => "any",
                var other => throw Invalid("tool_choice", $"Unknown tool_choice '{other}'; expected auto, none, required or a function."),
            };
        }
        else if (choice.ValueKind == JsonValueKind.Object
                 && TryGet(choice, "type", out var ct) && ct.ValueKind == JsonValueKind.String && ct.GetString() == "function")
        {
            type = "tool";
            name = TryGet(choice, "function", out var f) && f.ValueKind == JsonValueKind.Object
                ? RequiredString(f, "name", "tool_choice.function")
                : throw Invalid("tool_choice.function", "tool_choice.function.name is required.");
        }
        else throw new TranslationException("tool_choice", "Only auto, none, required and {\"type\":\"function\"} tool choices are supported for Anthropic models.");

        // Anthropic's default is auto with parallel calls, like OpenAI's; write it only when it says something.
        if (!TryGet(request, "tool_choice", out _) && !disableParallel) return;
        w.WriteStartObject("tool_choice");
        w.WriteString("type", type);
        if (name is not null) w.WriteString("name", name);
        if (disableParallel && type != "none") w.WriteBoolean("disable_parallel_tool_use", true);
        w.WriteEndObject();
    }

    private static void WriteStopSequences(Utf8JsonWriter w, JsonElement request)
    {
        if (!TryGet(request, "stop", out var stop)) return;
        var sequences = new List<string>();
        if (stop.ValueKind == JsonValueKind.String) sequences.Add(stop.GetString()!);
        else if (stop.ValueKind == JsonValueKind.Array)
        {
            foreach (var s in stop.EnumerateArray())
                sequences.Add(s.ValueKind == JsonValueKind.String ? s.GetString()! : throw Invalid("stop", "stop must be a string or an array of strings."));
        }
        else throw Invalid("stop", "stop must be a string or an array of strings.");
        sequences.RemoveAll(s => s.Length == 0);
        if (sequences.Count == 0) return;
        w.WriteStartArray("stop_sequences");
        foreach (var s in sequences) w.WriteStringValue(s);
        w.WriteEndArray();
    }

    // ───────────────────────────── response ─────────────────────────────

    /// <summary>Anthropic <c>message</c> (non-streaming 200 body) → OpenAI <c>chat.completion</c> UTF-8 JSON.</summary>
    /// <param name="clientModel">The model name the client asked for (echoed as <c>model</c>).</param>
    /// <param name="completionId">The gateway's id, e.g. <c>chatcmpl-…</c>.</param>
    /// <param name="createdUnixSeconds">Echoed as <c>created</c>.</param>
    public static byte[] TranslateResponse(JsonElement anthropicMessage, string clientModel, string completionId, long createdUnixSeconds)
    {
        var text = new StringBuilder();
        var toolCalls = new List<(string Id, string Name, string Arguments)>();
        if (anthropicMessage.ValueKind == JsonValueKind.Object && anthropicMessage.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.Array)
        {
            foreach (var block in content.EnumerateArray())
            {
                switch (StringOrNull(block, "type"))
                {
                    case "text":
                        text.Append(StringOrNull(block, "text"));
                        break;
                    case "tool_use":
                        var arguments = block.TryGetProperty("input", out var input) && input.ValueKind == JsonValueKind.Object ? input.GetRawText() : "{}";
                        toolCalls.Add((StringOrNull(block, "id") ?? "", StringOrNull(block, "name") ?? "", arguments));
                        break;
                    // thinking, redacted_thinking, server_tool_use, *_tool_result: no place in the chat shape.
                }
            }
        }
        var stopReason = anthropicMessage.ValueKind == JsonValueKind.Object ? StringOrNull(anthropicMessage, "stop_reason") : null;
        var usage = anthropicMessage.ValueKind == JsonValueKind.Object && anthropicMessage.TryGetProperty("usage", out var u)
            ? UsageFromAnthropic(u)
            : default;

        return OpenAiJson.Write(w =>
        {
            w.WriteStartObject();
            w.WriteString("id", completionId);
            w.WriteString("object", "chat.completion");
            w.WriteNumber("created", createdUnixSeconds);
            w.WriteString("model", clientModel);
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            w.WriteStartObject("message");
            w.WriteString("role", "assistant");
            if (text.Length == 0 && toolCalls.Count > 0) w.WriteNull("content");
            else w.WriteString("content", text.ToString());
            w.WriteNull("refusal");
            if (toolCalls.Count > 0)
            {
                w.WriteStartArray("tool_calls");
                foreach (var (id, name, arguments) in toolCalls)
                {
                    w.WriteStartObject();
                    w.WriteString("id", id);
                    w.WriteString("type", "function");
                    w.WriteStartObject("function");
                    w.WriteString("name", name);
                    w.WriteString("arguments", arguments);
                    w.WriteEndObject();
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
            w.WriteNull("logprobs");
            w.WriteString("finish_reason", MapStopReason(stopReason));
            w.WriteEndObject();
            w.WriteEndArray();
            OpenAiJson.WriteUsage(w, usage);
            w.WriteEndObject();
        });
    }

    /// <summary>
    /// Anthropic <c>stop_reason</c> → OpenAI <c>finish_reason</c>: end_turn, stop_sequence, pause_turn → stop;
    /// max_tokens, model_context_window_exceeded → length; tool_use → tool_calls; refusal → content_filter. Unknown or
    /// missing reasons (Anthropic adds new ones) → stop.
    /// </summary>
    public static string MapStopReason(string? stopReason) => stopReason switch
    {
        "max_tokens" or "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    };

    /// <summary>
    /// Anthropic <c>usage</c> → Tollgate's <see cref="TokenUsage"/>: InputTokens = input_tokens +
    /// cache_read_input_tokens + cache_creation_input_tokens (Anthropic's input_tokens is the uncached part only);
    /// OutputTokens = output_tokens (thinking included). Null, absent or non-integer fields count as 0.
    /// </summary>
    public static TokenUsage UsageFromAnthropic(JsonElement usage)
    {
        if (usage.ValueKind != JsonValueKind.Object) return default;
        var input = Count(usage, "input_tokens");
        var cacheRead = Count(usage, "cache_read_input_tokens");
        var cacheWrite = Count(usage, "cache_creation_input_tokens");
        return new TokenUsage(input + cacheRead + cacheWrite, Count(usage, "output_tokens"), cacheRead, cacheWrite);
    }

    internal static long Count(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) && n > 0 ? n : 0;

    // ───────────────────────────── helpers ─────────────────────────────

    /// <summary>A present, non-null property (OpenAI clients send explicit nulls for "not set").</summary>
    private static bool TryGet(JsonElement obj, string name, out JsonElement value) =>
        obj.TryGetProperty(name, out value) && value.ValueKind != JsonValueKind.Null;

    private static string RequiredString(JsonElement obj, string name, string path) =>
        TryGet(obj, name, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw Invalid($"{path}.{name}", $"{path}.{name} must be a string.");

    internal static string? StringOrNull(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static TranslationException Invalid(string param, string message) => new(param, message, TranslationException.InvalidValue);

    private sealed record Turn(string Role, List<Block> Blocks);

    private abstract record Block;
    private sealed record TextBlock(string Text, JsonElement? CacheControl) : Block;
    /// <summary>Base64 (MediaType + Data) or by URL.</summary>
    private sealed record ImageBlock(string? MediaType, string? Data, string? Url, JsonElement? CacheControl) : Block;
    private sealed record DocumentBlock(string MediaType, string Data, JsonElement? CacheControl) : Block;
    /// <summary><see cref="Input"/> null: no arguments, sent as <c>{}</c>.</summary>
    private sealed record ToolUseBlock(string Id, string Name, JsonElement? Input) : Block;
    private sealed record ToolResultBlock(string ToolUseId, List<Block> Content) : Block;
}
