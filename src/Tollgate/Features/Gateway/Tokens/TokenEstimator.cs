// TEMPORARY stand-in until the tokenizer branch is merged (same public surface); replaced by that branch's file.
using System.Text;
using System.Text.Json;

namespace Tollgate.Features.Gateway.Tokens;

public sealed class BpeEncoding
{
    public static BpeEncoding O200kBase { get; } = new();
    public static BpeEncoding Cl100kBase { get; } = new();
    public int CountTokens(ReadOnlySpan<char> text) => Math.Max(text.IsEmpty ? 0 : 1, Encoding.UTF8.GetByteCount(text) / 4);
}

public static class TokenEstimator
{
    public static BpeEncoding? ForModel(string provider, string model) => provider is "openai" or "demo" ? BpeEncoding.O200kBase : null;
    public static long CountChatPrompt(JsonElement request, BpeEncoding? encoding) => Encoding.UTF8.GetByteCount(request.GetProperty("messages").GetRawText()) + 3;
    public static long CountAnthropicPrompt(JsonElement request) => Encoding.UTF8.GetByteCount(request.GetRawText());
    public static long CountText(ReadOnlySpan<char> text, BpeEncoding? encoding) => encoding?.CountTokens(text) ?? Encoding.UTF8.GetByteCount(text);
}
