using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Tollgate.Features.Gateway.Tokens;

/// <summary>Which tiktoken split regex (<c>pat_str</c>) a <see cref="PreTokenizer"/> scan follows.</summary>
internal enum SplitPattern
{
    Cl100k,
    O200k,
}

/// <summary>
/// Splits UTF-8 text into the pieces tiktoken's split regex (<c>pat_str</c>) would match, without a regex.
/// </summary>
/// <remarks>
/// Why not <see cref="System.Text.RegularExpressions.Regex"/>: .NET's regex works on UTF-16 code units, so
/// <c>\p{L}</c> never matches a letter outside the Basic Multilingual Plane (𝐀, 𠀀: a surrogate pair is two "Cs"
/// units) and <c>[^\r\n\p{L}\p{N}]?</c> can take half of an emoji. tiktoken (Rust <c>regex</c>) and js-tiktoken
/// (a <c>u</c>-flag RegExp) match code points, so "😀abc" is one piece for them and two for .NET's regex. A hand
/// scanner over code points gets that right, allocates nothing and is several times faster than the regex.
///
/// Each <c>Next*</c> method returns the end of the piece starting at <c>start</c>, following the regex's
/// leftmost-first alternation with backtracking exactly (worked out per alternative in the comments). Classes:
/// <c>\s</c> is Unicode White_Space (what Rust's <c>\s</c> and .NET's <see cref="Rune.IsWhiteSpace"/> mean; note
/// JavaScript's <c>\s</c> differs on U+0085 and U+FEFF), <c>\p{L}</c>, <c>\p{N}</c>, <c>\p{M}</c> Unicode general
/// categories from .NET's tables. The input is valid UTF-8 (transcoded from UTF-16 with lone surrogates replaced by
/// U+FFFD); an invalid sequence would be classed like U+FFFD (a symbol).
/// </remarks>
internal static class PreTokenizer
{
    /// <summary>The cl100k_base <c>pat_str</c> this scanner implements (checked against the data file at load).</summary>
    public const string Cl100kPattern =
        @"('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The o200k_base <c>pat_str</c> this scanner implements (checked against the data file at load).</summary>
    public const string O200kPattern =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    // Class bits of one code point.
    private const int Letter = 1;      // \p{L}
    private const int Number = 2;      // \p{N}
    private const int Upper = 4;       // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
    private const int Lower = 8;       // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
    private const int Space = 16;      // \s
    private const int Newline = 32;    // [\r\n]
    private const int End = 64;        // past the end of the text: matches no class

    private static readonly byte[] AsciiClasses = BuildAsciiClasses();

    public static int Next(SplitPattern pattern, ReadOnlySpan<byte> s, int start) =>
        pattern == SplitPattern.O200k ? NextO200k(s, start) : NextCl100k(s, start);

    /// <summary>End (exclusive) of the cl100k_base piece that starts at <paramref name="i"/> (&lt; s.Length).</summary>
    public static int NextCl100k(ReadOnlySpan<byte> s, int i)
    {
        var f0 = Classify(s, i, out var l0);

        // 1. ('s|'t|'re|'ve|'m|'ll|'d), ASCII case-insensitive.
        if (s[i] == '\'')
        {
            var c = Contraction(s, i);
            if (c > 0) return i + c;
        }

        // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : the optional prefix can only be taken when a letter follows it.
        if ((f0 & Letter) != 0) return Run(s, i, Letter);
        if ((f0 & (Newline | Letter | Number | End)) == 0 && (Classify(s, i + l0, out _) & Letter) != 0) return Run(s, i + l0, Letter);

        // 3. \p{N}{1,3}
        if ((f0 & Number) != 0) return Digits(s, i);

        // 4. ' '?[^\s\p{L}\p{N}]+[\r\n]*
        var symbols = SymbolsAt(s, i, f0, l0);
        if (symbols >= 0) return TrailingNewlines(s, RunUntil(s, symbols, Space | Letter | Number), slash: false);

        // 5.-7. Only whitespace is left (every letter, number or symbol matched above).
        return Whitespace(s, i);
    }

    /// <summary>End (exclusive) of the o200k_base piece that starts at <paramref name="i"/> (&lt; s.Length).</summary>
    public static int NextO200k(ReadOnlySpan<byte> s, int i)
    {
        var f0 = Classify(s, i, out var l0);
        // The optional [^\r\n\p{L}\p{N}] prefix of alternatives 1 and 2: tried taken first, then empty.
        var prefixable = (f0 & (Newline | Letter | Number | End)) == 0;

        // 1. prefix? Upper* Lower+ contraction?
        if (prefixable)
        {
            var e = UpperThenLower(s, i + l0);
            if (e >= 0) return e;
        }
        if ((f0 & (Upper | Lower)) != 0)
        {
            var e = UpperThenLower(s, i);
            if (e >= 0) return e;
        }

        // 2. prefix? Upper+ Lower* contraction?
        if (prefixable)
        {
            var e = UpperRun(s, i + l0);
            if (e >= 0) return e;
        }
        if ((f0 & Upper) != 0) return UpperRun(s, i);

        // 3. \p{N}{1,3}
        if ((f0 & Number) != 0) return Digits(s, i);

        // 4. ' '?[^\s\p{L}\p{N}]+[\r\n/]*
        var symbols = SymbolsAt(s, i, f0, l0);
        if (symbols >= 0) return TrailingNewlines(s, RunUntil(s, symbols, Space | Letter | Number), slash: true);

        // 5.-7.
        return Whitespace(s, i);
    }

    /// <summary>
    /// [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+ contraction? from <paramref name="i"/>, or -1.
    /// The greedy Upper* backtracks until Lower+ can start: Lower+ starts at the end of the Upper run if a Lower
    /// follows it (and then runs on), else at the last Upper-run character that is also Lower (Lm, Lo, M), and then
    /// ends right after it (the next one is Upper but not Lower).
    /// </summary>
    private static int UpperThenLower(ReadOnlySpan<byte> s, int i)
    {
        var u = i;
        var lastLowerEnd = -1;
        while (true)
        {
            var f = Classify(s, u, out var len);
            if ((f & Upper) == 0) break;
            u += len;
            if ((f & Lower) != 0) lastLowerEnd = u;
        }
        int end;
        if ((Classify(s, u, out _) & Lower) != 0) end = Run(s, u, Lower);
        else if (lastLowerEnd >= 0) end = lastLowerEnd;
        else return -1;
        return end + Contraction(s, end);
    }

    /// <summary>[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]* contraction? from <paramref name="i"/>, or -1.</summary>
    private static int UpperRun(ReadOnlySpan<byte> s, int i)
    {
        var u = Run(s, i, Upper);
        if (u == i) return -1;
        var end = Run(s, u, Lower);
        return end + Contraction(s, end);
    }

    /// <summary>
    /// Where the [^\s\p{L}\p{N}]+ run of alternative 4 starts (after the optional single space), or -1 if it cannot.
    /// </summary>
    private static int SymbolsAt(ReadOnlySpan<byte> s, int i, int f0, int l0)
    {
        const int notSymbol = Space | Letter | Number | End;
        if ((f0 & notSymbol) == 0) return i;
        if (s[i] == ' ' && (Classify(s, i + 1, out _) & notSymbol) == 0) return i + 1;
        return -1;
    }

    /// <summary>[\r\n]* (or [\r\n/]*) after a symbol run.</summary>
    private static int TrailingNewlines(ReadOnlySpan<byte> s, int j, bool slash)
    {
        while (j < s.Length && (s[j] == '\r' || s[j] == '\n' || (slash && s[j] == '/'))) j++;
        return j;
    }

    /// <summary>
    /// Alternatives 5-7 on a whitespace run [i, j):
    /// 5. \s*[\r\n]+ : \s* backtracks to the last \r or \n of the run, so the piece ends right after it;
    /// 6. \s+(?!\S)  : the whole run at the end of the text, else the run minus its last character (which then
    ///                 joins the next piece, e.g. " world"), if that leaves at least one character;
    /// 7. \s+        : the whole run (a single whitespace character before a non-space).
    /// </summary>
    private static int Whitespace(ReadOnlySpan<byte> s, int i)
    {
        var j = i;
        var lastStart = i;
        var afterNewline = -1;
        while (true)
        {
            var f = Classify(s, j, out var len);
            if ((f & Space) == 0) break;
            if ((f & Newline) != 0) afterNewline = j + len;
            lastStart = j;
            j += len;
        }
        if (afterNewline >= 0) return afterNewline;
        if (j == s.Length) return j;
        return lastStart > i ? lastStart : j;
    }

    /// <summary>\p{N}{1,3}</summary>
    private static int Digits(ReadOnlySpan<byte> s, int i)
    {
        for (var n = 0; n < 3; n++)
        {
            if ((Classify(s, i, out var len) & Number) == 0) break;
            i += len;
        }
        return i;
    }

    /// <summary>Length of a contraction ('s|'t|'re|'ve|'m|'ll|'d, ASCII case-insensitive) at <paramref name="i"/>, else 0.</summary>
    private static int Contraction(ReadOnlySpan<byte> s, int i)
    {
        if (i + 1 >= s.Length || s[i] != '\'') return 0;
        switch (s[i + 1] | 0x20)
        {
            case 's' or 't' or 'm' or 'd': return 2;
            case 'r' or 'v': return i + 2 < s.Length && (s[i + 2] | 0x20) == 'e' ? 3 : 0;
            case 'l': return i + 2 < s.Length && (s[i + 2] | 0x20) == 'l' ? 3 : 0;
            default: return 0;
        }
    }

    /// <summary>End of the run of code points from <paramref name="i"/> that have any bit of <paramref name="any"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Run(ReadOnlySpan<byte> s, int i, int any)
    {
        while (true)
        {
            var f = Classify(s, i, out var len);
            if ((f & any) == 0) return i;
            i += len;
        }
    }

    /// <summary>End of the run of code points from <paramref name="i"/> that have none of the bits of <paramref name="none"/>.</summary>
    private static int RunUntil(ReadOnlySpan<byte> s, int i, int none)
    {
        while (true)
        {
            var f = Classify(s, i, out var len);
            if ((f & (none | End)) != 0) return i;
            i += len;
        }
    }

    /// <summary>Class bits of the code point at <paramref name="i"/> and its UTF-8 length; <see cref="End"/> past the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Classify(ReadOnlySpan<byte> s, int i, out int length)
    {
        if ((uint)i >= (uint)s.Length)
        {
            length = 0;
            return End;
        }
        var b = s[i];
        if (b < 0x80)
        {
            length = 1;
            return AsciiClasses[b];
        }
        return ClassifyNonAscii(s[i..], out length);
    }

    private static int ClassifyNonAscii(ReadOnlySpan<byte> s, out int length)
    {
        if (Rune.DecodeFromUtf8(s, out var rune, out length) != System.Buffers.OperationStatus.Done)
            rune = Rune.ReplacementChar;
        if (length == 0) length = 1;
        return ClassOf(rune);
    }

    private static int ClassOf(Rune rune)
    {
        if (Rune.IsWhiteSpace(rune)) return rune.Value is '\r' or '\n' ? Space | Newline : Space;
        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.TitlecaseLetter => Letter | Upper,
            UnicodeCategory.LowercaseLetter => Letter | Lower,
            UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Letter | Upper | Lower,
            UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark => Upper | Lower,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Number,
            _ => 0,
        };
    }

    private static byte[] BuildAsciiClasses()
    {
        var t = new byte[128];
        for (var c = 0; c < 128; c++) t[c] = (byte)ClassOf(new Rune(c));
        return t;
    }
}
