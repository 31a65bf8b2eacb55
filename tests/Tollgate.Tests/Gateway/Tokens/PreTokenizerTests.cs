using System.Text;
using System.Text.RegularExpressions;
using Tollgate.Features.Gateway.Tokens;

namespace Tollgate.Tests.Gateway.Tokens;

/// <summary>The split alone, on cases whose regex semantics are easy to get wrong.</summary>
public sealed class PreTokenizerTests
{
    private static string[] Split(SplitPattern pattern, string text)
    {
        var utf8 = Encoding.UTF8.GetBytes(text);
        var pieces = new List<string>();
        for (var start = 0; start < utf8.Length;)
        {
            var end = PreTokenizer.Next(pattern, utf8, start);
            Assert.True(end > start);
            pieces.Add(Encoding.UTF8.GetString(utf8, start, end - start));
            start = end;
        }
        return [.. pieces];
    }

    [Theory]
    [InlineData("hello world", new[] { "hello", " world" })]
    // \s+(?!\S): a run of spaces gives its last one to the next word; a single space before a digit stays alone.
    [InlineData("a   b", new[] { "a", "  ", " b" })]
    [InlineData("x 1", new[] { "x", " ", "1" })]
    [InlineData("x   ", new[] { "x", "   " })]
    // \s*[\r\n]+ ends at the run's last newline; the spaces after it go with the next word.
    [InlineData("a \n\n  b", new[] { "a", " \n\n", " ", " b" })]
    [InlineData("12345", new[] { "123", "45" })]
    [InlineData("I'm you're", new[] { "I", "'m", " you", "'re" })]
    [InlineData("!!!\n\nx", new[] { "!!!\n\n", "x" })]
    [InlineData("😀abc", new[] { "😀abc" })]
    public void NextCl100k_TrickyCases_MatchTiktokensSplit(string text, string[] expected)
    {
        Assert.Equal(expected, Split(SplitPattern.Cl100k, text));
    }

    [Theory]
    [InlineData("I'm you're", new[] { "I'm", " you're" })]
    [InlineData("HTTPServerError", new[] { "HTTPServer", "Error" })]
    [InlineData("camelCase", new[] { "camel", "Case" })]
    [InlineData("a//\n/b", new[] { "a", "//\n/", "b" })]
    [InlineData("e\u0301t\u00e9", new[] { "e\u0301t\u00e9" })]
    public void NextO200k_TrickyCases_MatchTiktokensSplit(string text, string[] expected)
    {
        Assert.Equal(expected, Split(SplitPattern.O200k, text));
    }

    [Fact]
    public void Split_NextLineAndByteOrderMark_FollowTiktokensWhiteSpaceNotJavaScripts()
    {
        // tiktoken's \s is Unicode White_Space (Rust regex): U+0085 is a space, U+FEFF is not. JavaScript's \s (and so
        // js-tiktoken, the test oracle) has it the other way round, which is why the vectors leave both out.
        Assert.Equal(["a", "\u0085", "\u0085b"], Split(SplitPattern.Cl100k, "a\u0085\u0085b"));
        Assert.Equal(["a", " \uFEFF", "b"], Split(SplitPattern.Cl100k, "a \uFEFFb"));
    }

    [Fact]
    public void Split_SupplementaryPlaneText_DiffersFromDotNetRegexWhichSeesSurrogates()
    {
        // Why PreTokenizer is not a Regex: "😀abc" is one piece for tiktoken (the emoji is the optional prefix of a
        // letter run), but .NET's regex can only take half of the surrogate pair as that prefix and splits it off.
        var regex = new Regex(PreTokenizer.Cl100kPattern);
        Assert.Equal(["😀", "abc"], regex.Matches("😀abc").Select(m => m.Value));
        Assert.Equal(["😀abc"], Split(SplitPattern.Cl100k, "😀abc"));
        // 𝐀 (U+1D400, a letter) is a letter run for tiktoken; for .NET's regex its surrogates are symbols.
        Assert.Equal(["a𝐀b"], Split(SplitPattern.Cl100k, "a𝐀b"));
        Assert.Equal(["a", "𝐀", "b"], regex.Matches("a𝐀b").Select(m => m.Value));
    }
}
