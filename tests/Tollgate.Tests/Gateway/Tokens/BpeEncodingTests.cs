using System.Text;
using System.Text.Json;
using Tollgate.Features.Gateway.Tokens;

namespace Tollgate.Tests.Gateway.Tokens;

/// <summary>
/// <see cref="BpeEncoding"/> against token ids computed by js-tiktoken 1.0.21 (tools/tiktoken-vectors/generate.mjs,
/// committed as tiktoken-vectors.json): ~500 strings, both encodings, exact id equality.
/// </summary>
public sealed class BpeEncodingTests
{
    internal sealed record Vector(string Text, int[] O200kBase, int[] Cl100kBase);

    internal static readonly IReadOnlyList<Vector> Vectors = LoadVectors();

    public static TheoryData<string> Encodings => new() { "o200k_base", "cl100k_base" };

    private static BpeEncoding Encoding(string name) => name == "o200k_base" ? BpeEncoding.O200kBase : BpeEncoding.Cl100kBase;

    private static int[] Expected(Vector v, string name) => name == "o200k_base" ? v.O200kBase : v.Cl100kBase;

    [Fact]
    public void Encode_HelloWorld_MatchesOpenAiPublishedIds()
    {
        Assert.Equal([24912, 2375], BpeEncoding.O200kBase.Encode("hello world"));
        Assert.Equal([15339, 1917], BpeEncoding.Cl100kBase.Encode("hello world"));
        Assert.Equal("o200k_base", BpeEncoding.O200kBase.Name);
        Assert.Equal("cl100k_base", BpeEncoding.Cl100kBase.Name);
    }

    [Theory, MemberData(nameof(Encodings))]
    public void Encode_EveryVector_EqualsTiktokenIds(string encodingName)
    {
        var encoding = Encoding(encodingName);
        Assert.True(Vectors.Count >= 400, $"only {Vectors.Count} vectors");
        var failures = new List<string>();
        foreach (var v in Vectors)
        {
            var expected = Expected(v, encodingName);
            var actual = encoding.Encode(v.Text);
            if (!actual.AsSpan().SequenceEqual(expected))
                failures.Add($"{JsonSerializer.Serialize(v.Text)}\n  expected [{string.Join(",", expected)}]\n  actual   [{string.Join(",", actual)}]");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {Vectors.Count} differ:\n" + string.Join("\n", failures.Take(10)));
    }

    [Theory, MemberData(nameof(Encodings))]
    public void CountTokens_EveryVector_EqualsTiktokenLength(string encodingName)
    {
        var encoding = Encoding(encodingName);
        foreach (var v in Vectors) Assert.True(Expected(v, encodingName).Length == encoding.CountTokens(v.Text), v.Text);
    }

    [Theory, MemberData(nameof(Encodings))]
    public void Decode_EveryVector_RoundTripsToTheText(string encodingName)
    {
        var encoding = Encoding(encodingName);
        foreach (var v in Vectors) Assert.Equal(v.Text, encoding.Decode(Expected(v, encodingName)));
    }

    [Theory, MemberData(nameof(Encodings))]
    public void Encode_SpecialTokenText_IsOrdinaryText(string encodingName)
    {
        var encoding = Encoding(encodingName);
        var tokens = encoding.Encode("<|endoftext|>");
        Assert.True(tokens.Length > 1);
        Assert.DoesNotContain(encodingName == "o200k_base" ? 199999 : 100257, tokens);
        Assert.Equal("<|endoftext|>", encoding.Decode(tokens));
    }

    [Fact]
    public void Decode_SpecialTokenId_GivesItsText()
    {
        Assert.Equal("a<|endoftext|>", BpeEncoding.O200kBase.Decode([64, 199999]));
        Assert.Equal("<|endoftext|>", BpeEncoding.Cl100kBase.Decode([100257]));
    }

    [Fact]
    public void Decode_UnknownId_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => BpeEncoding.Cl100kBase.Decode([100256]));
        Assert.Throws<ArgumentOutOfRangeException>(() => BpeEncoding.O200kBase.Decode([-1]));
    }

    [Fact]
    public void Decode_HalfOfAMultiByteCharacter_GivesReplacementCharacter()
    {
        var firstByteOfEmoji = BpeEncoding.O200kBase.Ranks.Get([0xF0]);
        Assert.NotEqual(-1, firstByteOfEmoji);
        Assert.Equal("a\uFFFD", BpeEncoding.O200kBase.Decode([64, firstByteOfEmoji]));
    }

    [Fact]
    public void Encode_LoneSurrogate_IsEncodedAsReplacementCharacter()
    {
        Assert.Equal(BpeEncoding.O200kBase.Encode("a\uFFFDb"), BpeEncoding.O200kBase.Encode("a\uD800b"));
    }

    [Theory, MemberData(nameof(Encodings))]
    public void MergeByHeap_RandomPieces_SameTokensAsTiktokensScan(string encodingName)
    {
        // Pieces longer than HeapMergeThreshold use the heap merge; it must pick the same merges as the scan, at any length.
        // Pieces: random bytes biased to a few values (so pairs merge), and runs from the vectors' texts.
        var encoding = Encoding(encodingName);
        var random = new Random(7);
        var pieces = new List<byte[]>();
        for (var i = 0; i < 300; i++)
        {
            var alphabet = Enumerable.Range(0, random.Next(1, 12)).Select(_ => (byte)(random.Next(2) == 0 ? random.Next(97, 123) : random.Next(256))).ToArray();
            pieces.Add(Enumerable.Range(0, random.Next(2, 200)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
        }
        pieces.AddRange(Vectors.Select(v => System.Text.Encoding.UTF8.GetBytes(v.Text))
            .Where(b => b.Length is >= 2 and <= 200));

        foreach (var piece in pieces)
        {
            var scan = encoding.MergeForTesting(piece, heap: false);
            Assert.Equal(scan, encoding.MergeForTesting(piece, heap: true));
            Assert.Equal(piece, Concat(encoding, scan));   // the parts cover the piece, in order
        }
    }

    [Fact]
    public void Encodings_AreLoadedOnceAndShared()
    {
        Assert.Same(BpeEncoding.O200kBase, BpeEncoding.O200kBase);
        var loaded = new BpeEncoding[8];
        Parallel.For(0, loaded.Length, i => loaded[i] = BpeEncoding.Cl100kBase);
        Assert.All(loaded, e => Assert.Same(BpeEncoding.Cl100kBase, e));
    }

    private static byte[] Concat(BpeEncoding encoding, int[] tokens) =>
        tokens.SelectMany(t => encoding.Ranks.TokenBytes(t).ToArray()).ToArray();

    private static List<Vector> LoadVectors()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "Gateway", "Tokens", "tiktoken-vectors.json");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.GetProperty("vectors").EnumerateArray()
            .Select(v => new Vector(
                v.GetProperty("text").GetString()!,
                v.GetProperty("o200k_base").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                v.GetProperty("cl100k_base").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
            .ToList();
    }
}
