using System.Text;
using Tollgate.Features.Gateway.Tokens;

namespace Tollgate.Features.Gateway;

/// <summary>
/// Counts the tokens of streamed output. Counting each delta separately overcounts (a delta "one " is two tokens,
/// the same word inside a sentence is one), which would overcharge estimates and cut streams off early. So the text is
/// kept and counted whole when it matters: <see cref="Exceeds"/> uses the cheap per-delta sum as a bound and counts
/// exactly only when that bound passes the limit (then restarts the bound from the exact count, so a long stream is
/// recounted a handful of times, not per delta); <see cref="Count"/> is exact. Past <see cref="MaxKeptChars"/> the
/// per-delta sum is used, bounding memory per stream.
/// </summary>
internal sealed class OutputCounter(BpeEncoding encoding)
{
    public const int MaxKeptChars = 4 << 20;

    private readonly StringBuilder _text = new();
    private long _bound;
    private long _overflowTokens;
    private bool _overflowed;

    public void Append(string? text) => Append(text.AsSpan());

    public void Append(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty) return;
        var tokens = encoding.CountTokens(text);
        _bound += tokens;
        if (_overflowed || _text.Length + text.Length > MaxKeptChars)
        {
            _overflowed = true;
            _overflowTokens += tokens;
        }
        else _text.Append(text);
    }

    /// <summary>The text kept so far (what <see cref="Count"/> counts, without the overflow).</summary>
    internal string KeptText => _text.ToString();

    /// <summary>The exact count of the kept text (plus the per-delta count of any overflow).</summary>
    public long Count => (_text.Length == 0 ? 0 : encoding.CountTokens(_text.ToString())) + _overflowTokens;

    /// <summary>True when the output counted so far is more than <paramref name="limit"/> tokens.</summary>
    public bool Exceeds(long limit)
    {
        if (_bound <= limit) return false;
        var exact = Count;
        _bound = exact;
        return exact > limit;
    }
}
