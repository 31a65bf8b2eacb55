using System.Buffers;
using System.Text.Json;

namespace Tollgate.Features.Gateway;

/// <summary>
/// Reads the few fields the relays need from one stream event's JSON with <see cref="Utf8JsonReader"/>, allocating
/// nothing per event (a <see cref="JsonDocument"/> per chunk was most of the relay's own garbage on long streams).
/// Behaves as the <see cref="JsonElement"/> code it replaces: the whole document is validated first (invalid JSON
/// throws <see cref="JsonException"/> before anything is counted), a repeated property name means its last
/// occurrence (as <see cref="JsonElement.TryGetProperty(string, out JsonElement)"/>), and looking into something that
/// is not an object throws <see cref="InvalidOperationException"/> where <see cref="JsonElement"/> would.
/// </summary>
internal static class StreamChunkScanner
{
    private static readonly byte[][] RootFields = ["choices"u8.ToArray(), "usage"u8.ToArray()];
    private static readonly byte[][] ChoiceFields = ["delta"u8.ToArray(), "finish_reason"u8.ToArray()];
    // The order OpenAiWire.ForEachText reads them in; tool_calls last.
    private static readonly byte[][] DeltaFields =
        ["content"u8.ToArray(), "reasoning_content"u8.ToArray(), "reasoning"u8.ToArray(), "refusal"u8.ToArray(), "tool_calls"u8.ToArray()];
    private static readonly byte[][] CallFields = ["function"u8.ToArray()];
    private static readonly byte[][] FunctionFields = ["name"u8.ToArray(), "arguments"u8.ToArray()];
    private static readonly byte[][] AnthropicRootFields = ["delta"u8.ToArray()];
    // The order AnthropicWire.DeltaText tries them in.
    private static readonly byte[][] AnthropicDeltaFields = ["text"u8.ToArray(), "partial_json"u8.ToArray(), "thinking"u8.ToArray()];

    /// <summary>What an OpenAI chat completion chunk told the relay.</summary>
    public readonly record struct OpenAiChunk(bool IsObject, bool ChoicesEmpty, bool Finished, int UsageAt, int UsageLength);

    /// <summary>
    /// Scans an OpenAI <c>chat.completion.chunk</c>: appends each choice's generated text (as
    /// <see cref="OpenAiWire.ForEachText"/> reads it) to <paramref name="output"/> and reports whether a choice finished
    /// and where the <c>usage</c> value is (for <see cref="OpenAiWire.ReadUsage"/> when it is an object).
    /// </summary>
    public static OpenAiChunk ScanOpenAiChunk(ReadOnlySpan<byte> json, OutputCounter output)
    {
        Span<int> root = stackalloc int[2];
        if (!ValidateRoot(json, RootFields, root)) return new OpenAiChunk(false, true, false, -1, 0);
        var choicesEmpty = true;
        var finished = false;
        if (root[0] >= 0 && Kind(json, root[0]) == JsonTokenType.StartArray)
        {
            var reader = new Utf8JsonReader(json[root[0]..]);
            reader.Read();
            Span<int> choice = stackalloc int[2];
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                choicesEmpty = false;
                if (reader.TokenType != JsonTokenType.StartObject) throw NotAnObject();
                var at = root[0] + (int)reader.TokenStartIndex;
                reader.Skip();
                FindLast(json, at, ChoiceFields, choice);
                if (choice[0] >= 0 && Kind(json, choice[0]) == JsonTokenType.StartObject) AppendDeltaText(json, choice[0], output);
                if (choice[1] >= 0 && Kind(json, choice[1]) == JsonTokenType.String) finished = true;
            }
        }
        var usageLength = 0;
        if (root[1] >= 0)
        {
            var reader = new Utf8JsonReader(json[root[1]..]);
            reader.Read();
            reader.Skip();
            usageLength = (int)reader.BytesConsumed;
        }
        return new OpenAiChunk(true, choicesEmpty, finished, root[1], usageLength);
    }

    /// <summary>
    /// Appends the generated text of an Anthropic <c>content_block_delta</c> event (<see cref="AnthropicWire.DeltaText"/>
    /// of its <c>delta</c>) to <paramref name="output"/>.
    /// </summary>
    public static void ScanAnthropicContentDelta(ReadOnlySpan<byte> json, OutputCounter output)
    {
        Span<int> root = stackalloc int[1];
        if (!ValidateRoot(json, AnthropicRootFields, root)) throw NotAnObject();
        if (root[0] < 0) return;
        if (Kind(json, root[0]) != JsonTokenType.StartObject) throw NotAnObject();
        Span<int> fields = stackalloc int[3];
        FindLast(json, root[0], AnthropicDeltaFields, fields);
        foreach (var at in fields)
            if (at >= 0 && Kind(json, at) == JsonTokenType.String)
            {
                AppendString(json, at, output);
                return;
            }
    }

    /// <summary>The texts of one message delta, in <see cref="OpenAiWire.ForEachText"/>'s order.</summary>
    private static void AppendDeltaText(ReadOnlySpan<byte> json, int deltaAt, OutputCounter output)
    {
        Span<int> fields = stackalloc int[5];
        FindLast(json, deltaAt, DeltaFields, fields);
        for (var i = 0; i < 4; i++)
            if (fields[i] >= 0 && Kind(json, fields[i]) == JsonTokenType.String) AppendString(json, fields[i], output);
        if (fields[4] < 0 || Kind(json, fields[4]) != JsonTokenType.StartArray) return;
        var reader = new Utf8JsonReader(json[fields[4]..]);
        reader.Read();
        Span<int> call = stackalloc int[1];
        Span<int> function = stackalloc int[2];
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject) throw NotAnObject();
            var at = fields[4] + (int)reader.TokenStartIndex;
            reader.Skip();
            FindLast(json, at, CallFields, call);
            if (call[0] < 0 || Kind(json, call[0]) != JsonTokenType.StartObject) continue;
            FindLast(json, call[0], FunctionFields, function);
            foreach (var f in function)
                if (f >= 0 && Kind(json, f) == JsonTokenType.String) AppendString(json, f, output);
        }
    }

    /// <summary>
    /// Reads the whole document (throwing <see cref="JsonException"/> as <see cref="JsonDocument.Parse(ReadOnlyMemory{byte}, JsonDocumentOptions)"/>
    /// would); when the root is an object, <paramref name="offsets"/> gets where each of <paramref name="names"/>' last
    /// value starts (-1: absent). False when the root is not an object.
    /// </summary>
    private static bool ValidateRoot(ReadOnlySpan<byte> json, byte[][] names, Span<int> offsets)
    {
        offsets.Fill(-1);
        var reader = new Utf8JsonReader(json);
        reader.Read();
        var isObject = reader.TokenType == JsonTokenType.StartObject;
        if (isObject)
        {
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var match = Match(ref reader, names);
                reader.Read();
                if (match >= 0) offsets[match] = (int)reader.TokenStartIndex;
                reader.Skip();
            }
        }
        else reader.Skip();
        while (reader.Read()) { }
        return isObject;
    }

    /// <summary>Where the last value of each of <paramref name="names"/> in the (valid) object at <paramref name="objectAt"/> starts, -1 if absent.</summary>
    private static void FindLast(ReadOnlySpan<byte> json, int objectAt, byte[][] names, Span<int> offsets)
    {
        offsets.Fill(-1);
        var reader = new Utf8JsonReader(json[objectAt..]);
        reader.Read();
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var match = Match(ref reader, names);
            reader.Read();
            if (match >= 0) offsets[match] = objectAt + (int)reader.TokenStartIndex;
            reader.Skip();
        }
    }

    private static int Match(ref Utf8JsonReader reader, byte[][] names)
    {
        for (var i = 0; i < names.Length; i++)
            if (reader.ValueTextEquals(names[i])) return i;
        return -1;
    }

    private static JsonTokenType Kind(ReadOnlySpan<byte> json, int at)
    {
        var reader = new Utf8JsonReader(json[at..]);
        reader.Read();
        return reader.TokenType;
    }

    /// <summary>Appends the string value at <paramref name="at"/>, unescaped (invalid UTF-8 or a lone surrogate throws, as GetString does).</summary>
    private static void AppendString(ReadOnlySpan<byte> json, int at, OutputCounter output)
    {
        var reader = new Utf8JsonReader(json[at..]);
        reader.Read();
        // Unescaped UTF-16 is never longer than the raw UTF-8 between the quotes.
        var max = reader.ValueSpan.Length;
        char[]? rented = null;
        var chars = max <= 256 ? stackalloc char[256] : (rented = ArrayPool<char>.Shared.Rent(max));
        try
        {
            output.Append(chars[..reader.CopyString(chars)]);
        }
        finally
        {
            if (rented is not null) ArrayPool<char>.Shared.Return(rented);
        }
    }

    private static InvalidOperationException NotAnObject() => new("The stream event's JSON has a value that is not an object where one was expected.");
}
