using System.Buffers;
using System.Buffers.Text;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Tollgate.Features.Gateway.Tokens;

/// <summary>
/// Prompt and output token counts for sizing a credit hold before an LLM call. Exact (tiktoken-equal) for OpenAI
/// models whose encoding is known; otherwise a conservative upper bound. The provider's reported usage is what
/// gets billed; these counts only decide how much credit to hold.
/// </summary>
/// <remarks>
/// <para>
/// <b>Why the UTF-8 byte count is a safe upper bound.</b> A byte-level BPE token (tiktoken, and as far as anyone can
/// tell Anthropic's and the other providers' tokenizers, which are byte-level BPE or SentencePiece with byte
/// fallback) covers at least one byte of the UTF-8 text, so a text of n bytes never has more than n tokens. The
/// bound is loose (English averages about 4 bytes per token, CJK about 1.5), which makes holds larger than the
/// call, never smaller, for text. What the bound cannot cover is content that is not text: images get the fixed
/// <see cref="ImageTokenAllowance"/>, and provider-side additions are covered by the overheads below.
/// </para>
/// <para>
/// <b>Chat overheads</b> follow OpenAI's cookbook (<c>num_tokens_from_messages</c>): every message costs
/// <see cref="TokensPerMessage"/> tokens for its framing plus the tokens of its role and content, a <c>name</c> costs
/// <see cref="TokensPerName"/> more, and the reply is primed with <see cref="ReplyPrimingTokens"/>. Tool definitions
/// and the <c>response_format</c> JSON schema are counted as their JSON text: OpenAI renders them into the prompt in
/// an undocumented, more compact form, so the JSON text over-counts them slightly.
/// </para>
/// </remarks>
public static class TokenEstimator
{
    /// <summary>Framing tokens per chat message (<c>&lt;|start|&gt;{role}&lt;|message|&gt;…&lt;|end|&gt;</c>), per OpenAI's cookbook.</summary>
    public const int TokensPerMessage = 3;

    /// <summary>Extra tokens for a message's <c>name</c>, per OpenAI's cookbook.</summary>
    public const int TokensPerName = 1;

    /// <summary>Tokens priming the reply (<c>&lt;|start|&gt;assistant&lt;|message|&gt;</c>), per OpenAI's cookbook.</summary>
    public const int ReplyPrimingTokens = 3;

    /// <summary>
    /// Tokens held for one image, whatever its size or detail: 4,000. OpenAI's largest high-detail image costs
    /// 1,445 tokens on GPT-4o/4.1 (85 + 170 per 512-px tile, at most 8 tiles), 1,275 on o1/o3, and up to
    /// 1,536 patches × 2.46 = 3,779 on the patch-priced GPT-4.1-nano; Claude scales images to about 1.15 megapixels
    /// ≈ 1,600 tokens. Known exception: GPT-4o-mini bills images at 2,833 + 5,667 tokens per tile (up to 48,169,
    /// priced so the cost matches GPT-4o), so its hold under-counts images; the settled usage is still exact.
    /// </summary>
    public const int ImageTokenAllowance = 4_000;

    /// <summary>
    /// Tokens of the system prompt Anthropic adds when a request has tools: 600. Anthropic's pricing page lists
    /// 159-530 depending on the model and tool_choice (346 for the Claude 4 family with auto/none); 600 covers them.
    /// </summary>
    public const int AnthropicToolSystemPromptTokens = 600;

    /// <summary>
    /// The encoding of an OpenAI model, for exact counts; null when the tokenizer is not public (every other
    /// provider) or the model is not known, which makes the counters fall back to the UTF-8 byte bound.
    /// </summary>
    /// <param name="provider">Provider id, e.g. "openai", "anthropic", "demo" (case-insensitive).</param>
    /// <param name="model">Model name as sent upstream, e.g. "gpt-4o-mini-2024-07-18"; "ft:" prefixes are allowed.</param>
    public static BpeEncoding? ForModel(string provider, string model)
    {
        ArgumentNullException.ThrowIfNull(provider);
        ArgumentNullException.ThrowIfNull(model);
        // The built-in demo provider speaks the OpenAI wire format and counts like GPT-4o.
        if (provider.Equals("demo", StringComparison.OrdinalIgnoreCase)) return BpeEncoding.O200kBase;
        if (!provider.Equals("openai", StringComparison.OrdinalIgnoreCase)) return null;

        var m = model.AsSpan().Trim();
        if (m.StartsWith("ft:", StringComparison.OrdinalIgnoreCase)) m = m[3..];   // fine-tunes: ft:gpt-4o-mini-…:org::id
        static bool Is(ReadOnlySpan<char> m, string prefix) => m.StartsWith(prefix, StringComparison.OrdinalIgnoreCase);

        if (Is(m, "gpt-4o") || Is(m, "gpt-4.1") || Is(m, "gpt-4.5") || Is(m, "gpt-5") || Is(m, "chatgpt-4o") ||
            Is(m, "gpt-oss") || Is(m, "o1") || Is(m, "o3") || Is(m, "o4"))
            return BpeEncoding.O200kBase;
        if (Is(m, "gpt-4") || Is(m, "gpt-3.5") || Is(m, "text-embedding-3") || Is(m, "text-embedding-ada-002"))
            return BpeEncoding.Cl100kBase;
        return null;
    }

    /// <summary>
    /// Tokens of streamed or returned output text: exact with <paramref name="encoding"/>, else its UTF-8 byte count
    /// (an upper bound, see remarks on <see cref="TokenEstimator"/>).
    /// </summary>
    public static long CountText(ReadOnlySpan<char> text, BpeEncoding? encoding) =>
        encoding?.CountTokens(text) ?? Encoding.UTF8.GetByteCount(text);

    /// <summary>
    /// Prompt tokens of an OpenAI <c>/v1/chat/completions</c> request body: per message the framing, role, content
    /// (a string, or parts: text counted, each image <see cref="ImageTokenAllowance"/>, other parts such as audio or
    /// files as their JSON text), name, tool calls (function name + arguments), tool results (content and
    /// <c>tool_call_id</c>) and refusal; plus the JSON text of <c>tools</c> (and legacy <c>functions</c>) and of
    /// <c>response_format.json_schema</c>; plus reply priming.
    /// </summary>
    /// <param name="openAiChatRequest">The request body (a JSON object); unexpected shapes are counted, not rejected.</param>
    /// <param name="encoding">The model's encoding for an exact count, or null for the conservative UTF-8 byte bound.</param>
    public static long CountChatPrompt(JsonElement openAiChatRequest, BpeEncoding? encoding)
    {
        if (openAiChatRequest.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("A chat completions request is a JSON object.", nameof(openAiChatRequest));
        var counter = new Counter(encoding);

        if (openAiChatRequest.TryGetProperty("messages"u8, out var messages) && messages.ValueKind == JsonValueKind.Array)
        {
            foreach (var message in messages.EnumerateArray())
            {
                counter.Add(TokensPerMessage);
                if (message.ValueKind != JsonValueKind.Object)
                {
                    counter.Json(message);
                    continue;
                }
                foreach (var property in message.EnumerateObject())
                {
                    var value = property.Value;
                    if (property.NameEquals("role"u8) || property.NameEquals("tool_call_id"u8) || property.NameEquals("refusal"u8))
                        counter.Text(value);
                    else if (property.NameEquals("name"u8))
                    {
                        counter.Text(value);
                        counter.Add(TokensPerName);
                    }
                    else if (property.NameEquals("content"u8)) CountOpenAiContent(ref counter, value);
                    else if (property.NameEquals("tool_calls"u8) && value.ValueKind == JsonValueKind.Array)
                    {
                        foreach (var call in value.EnumerateArray()) CountOpenAiToolCall(ref counter, call);
                    }
                    else if (property.NameEquals("function_call"u8)) CountOpenAiFunction(ref counter, value);
                }
            }
        }
        if (openAiChatRequest.TryGetProperty("tools"u8, out var tools)) counter.Json(tools);
        if (openAiChatRequest.TryGetProperty("functions"u8, out var functions)) counter.Json(functions);
        if (openAiChatRequest.TryGetProperty("response_format"u8, out var format) && format.ValueKind == JsonValueKind.Object &&
            format.TryGetProperty("json_schema"u8, out var schema))
            counter.Json(schema);
        counter.Add(ReplyPrimingTokens);
        return counter.Total;
    }

    /// <summary>
    /// A conservative upper bound on the prompt tokens of an Anthropic <c>/v1/messages</c> request body (Anthropic's
    /// tokenizer is not public): the UTF-8 bytes of the system prompt (string or text blocks), of every message's
    /// role and content blocks (text; tool_use name + input JSON; tool_result content; thinking text; documents and
    /// unknown blocks as their JSON text), each image <see cref="ImageTokenAllowance"/>, the tools' JSON text plus
    /// <see cref="AnthropicToolSystemPromptTokens"/> when there are tools, and OpenAI-style framing overheads
    /// (<see cref="TokensPerMessage"/> for the system prompt and for each message, <see cref="ReplyPrimingTokens"/>).
    /// Anthropic publishes no per-message overhead; these are small next to the byte bound's slack on any real text.
    /// </summary>
    public static long CountAnthropicPrompt(JsonElement anthropicMessagesRequest)
    {
        if (anthropicMessagesRequest.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("A messages request is a JSON object.", nameof(anthropicMessagesRequest));
        var counter = new Counter(null);

        if (anthropicMessagesRequest.TryGetProperty("system"u8, out var system))
        {
            counter.Add(TokensPerMessage);
            CountAnthropicContent(ref counter, system);
        }
        if (anthropicMessagesRequest.TryGetProperty("messages"u8, out var messages) && messages.ValueKind == JsonValueKind.Array)
        {
            foreach (var message in messages.EnumerateArray())
            {
                counter.Add(TokensPerMessage);
                if (message.ValueKind != JsonValueKind.Object)
                {
                    counter.Json(message);
                    continue;
                }
                if (message.TryGetProperty("role"u8, out var role)) counter.Text(role);
                if (message.TryGetProperty("content"u8, out var content)) CountAnthropicContent(ref counter, content);
            }
        }
        if (anthropicMessagesRequest.TryGetProperty("tools"u8, out var tools) && tools.ValueKind == JsonValueKind.Array &&
            tools.GetArrayLength() > 0)
        {
            counter.Json(tools);
            counter.Add(AnthropicToolSystemPromptTokens);
        }
        counter.Add(ReplyPrimingTokens);
        return counter.Total;
    }

    private static void CountOpenAiContent(ref Counter counter, JsonElement content)
    {
        if (content.ValueKind == JsonValueKind.String)
        {
            counter.Text(content);
            return;
        }
        if (content.ValueKind != JsonValueKind.Array)
        {
            if (content.ValueKind != JsonValueKind.Null) counter.Json(content);
            return;
        }
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type"u8, out var type))
                counter.Json(part);
            else if (type.ValueEquals("text"u8) && part.TryGetProperty("text"u8, out var text))
                counter.Text(text);
            else if (type.ValueEquals("refusal"u8) && part.TryGetProperty("refusal"u8, out var refusal))
                counter.Text(refusal);
            else if (type.ValueEquals("image_url"u8))
                counter.Add(ImageTokenAllowance);
            else
                counter.Json(part);   // input_audio, file: their (base64) JSON text, generous for inline data
        }
    }

    private static void CountOpenAiToolCall(ref Counter counter, JsonElement call)
    {
        if (call.ValueKind != JsonValueKind.Object)
        {
            counter.Json(call);
            return;
        }
        if (call.TryGetProperty("function"u8, out var function)) CountOpenAiFunction(ref counter, function);
        else if (call.TryGetProperty("custom"u8, out var custom) && custom.ValueKind == JsonValueKind.Object)
        {
            if (custom.TryGetProperty("name"u8, out var name)) counter.Text(name);
            if (custom.TryGetProperty("input"u8, out var input)) counter.Text(input);
        }
    }

    private static void CountOpenAiFunction(ref Counter counter, JsonElement function)
    {
        if (function.ValueKind != JsonValueKind.Object) return;
        if (function.TryGetProperty("name"u8, out var name)) counter.Text(name);
        if (function.TryGetProperty("arguments"u8, out var arguments)) counter.Text(arguments);
    }

    private static void CountAnthropicContent(ref Counter counter, JsonElement content)
    {
        if (content.ValueKind == JsonValueKind.String)
        {
            counter.Text(content);
            return;
        }
        if (content.ValueKind != JsonValueKind.Array)
        {
            if (content.ValueKind != JsonValueKind.Null) counter.Json(content);
            return;
        }
        foreach (var block in content.EnumerateArray())
        {
            if (block.ValueKind != JsonValueKind.Object || !block.TryGetProperty("type"u8, out var type))
            {
                counter.Json(block);
                continue;
            }
            if (type.ValueEquals("text"u8) && block.TryGetProperty("text"u8, out var text)) counter.Text(text);
            else if (type.ValueEquals("image"u8)) counter.Add(ImageTokenAllowance);
            else if (type.ValueEquals("tool_use"u8))
            {
                if (block.TryGetProperty("name"u8, out var name)) counter.Text(name);
                if (block.TryGetProperty("input"u8, out var input)) counter.Json(input);
            }
            else if (type.ValueEquals("tool_result"u8))
            {
                if (block.TryGetProperty("tool_use_id"u8, out var id)) counter.Text(id);
                if (block.TryGetProperty("content"u8, out var result)) CountAnthropicContent(ref counter, result);
            }
            else if (type.ValueEquals("thinking"u8) && block.TryGetProperty("thinking"u8, out var thinking)) counter.Text(thinking);
            else counter.Json(block);   // document (base64 PDF or text source), redacted_thinking, server tool blocks, …
        }
    }

    /// <summary>
    /// Running total. Reads string values as UTF-8 straight from the parsed document (no string allocation),
    /// unescaping into a pooled buffer only when the value has escapes.
    /// </summary>
    private struct Counter(BpeEncoding? encoding)
    {
        public long Total;

        public void Add(long tokens) => Total += tokens;

        /// <summary>A string value's text; any other value as its JSON text.</summary>
        public void Text(JsonElement value)
        {
            if (value.ValueKind != JsonValueKind.String)
            {
                if (value.ValueKind != JsonValueKind.Null) Json(value);
                return;
            }
            var raw = JsonMarshal.GetRawUtf8Value(value);
            if (raw.Length >= 2 && raw[0] == '"') raw = raw[1..^1];
            if (raw.IndexOf((byte)'\\') < 0)
            {
                Utf8(raw);
                return;
            }
            var buffer = ArrayPool<byte>.Shared.Rent(raw.Length);
            try
            {
                Utf8(buffer.AsSpan(0, JsonUnescape(raw, buffer)));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        /// <summary>A value's JSON text as written in the request (nothing for null).</summary>
        public void Json(JsonElement value)
        {
            if (value.ValueKind != JsonValueKind.Null) Utf8(JsonMarshal.GetRawUtf8Value(value));
        }

        private void Utf8(ReadOnlySpan<byte> utf8) => Total += encoding?.CountTokensUtf8(utf8) ?? utf8.Length;
    }

    /// <summary>
    /// Unescapes the body of a JSON string (already validated by the parser) into UTF-8; the output is never longer
    /// than the input. An escaped lone surrogate becomes U+FFFD, as it does through <c>GetString()</c> and UTF-8.
    /// </summary>
    internal static int JsonUnescape(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var written = 0;
        var i = 0;
        while (i < source.Length)
        {
            var backslash = source[i..].IndexOf((byte)'\\');
            if (backslash < 0)
            {
                source[i..].CopyTo(destination[written..]);
                return written + source.Length - i;
            }
            source.Slice(i, backslash).CopyTo(destination[written..]);
            written += backslash;
            i += backslash + 1;
            var escape = source[i++];
            if (escape != 'u')
            {
                destination[written++] = escape switch
                {
                    (byte)'b' => (byte)'\b',
                    (byte)'f' => (byte)'\f',
                    (byte)'n' => (byte)'\n',
                    (byte)'r' => (byte)'\r',
                    (byte)'t' => (byte)'\t',
                    _ => escape,   // " \ /
                };
                continue;
            }
            int code = Hex4(source.Slice(i, 4));
            i += 4;
            if (char.IsHighSurrogate((char)code) && i + 6 <= source.Length && source[i] == '\\' && source[i + 1] == 'u')
            {
                var low = Hex4(source.Slice(i + 2, 4));
                if (char.IsLowSurrogate((char)low))
                {
                    code = char.ConvertToUtf32((char)code, (char)low);
                    i += 6;
                }
            }
            var rune = Rune.IsValid(code) ? new Rune(code) : Rune.ReplacementChar;
            written += rune.EncodeToUtf8(destination[written..]);
        }
        return written;
    }

    private static int Hex4(ReadOnlySpan<byte> hex) =>
        Utf8Parser.TryParse(hex, out ushort value, out var used, 'X') && used == 4
            ? value
            : throw new FormatException("Bad \\u escape in a JSON string.");
}
