using System.Buffers;
using System.Buffers.Text;
using System.Diagnostics;
using System.IO.Compression;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace Tollgate.Features.Gateway.Tokens;

/// <summary>
/// OpenAI's byte-pair encodings (tiktoken's <c>o200k_base</c> and <c>cl100k_base</c>), for counting prompt tokens
/// before a call. Token ids equal tiktoken's (checked against js-tiktoken 1.0.21 on ~500 test strings).
/// </summary>
/// <remarks>
/// Encoding a text, as tiktoken does:
/// <list type="number">
/// <item>UTF-16 → UTF-8 into a pooled buffer (a lone surrogate becomes U+FFFD, as <see cref="Encoding.UTF8"/> does).</item>
/// <item>Split into pieces with the encoding's split regex (<see cref="PreTokenizer"/>, a hand scanner over code points).</item>
/// <item>A piece that is itself a token is one token; otherwise byte-pair merge: start from single bytes and
/// repeatedly merge the adjacent pair whose concatenation has the lowest rank (leftmost on a tie) until no adjacent
/// pair is a token. Each remaining part is one token.</item>
/// </list>
/// <para>
/// <b>Special tokens are never special here.</b> <see cref="Encode"/> and <see cref="CountTokens"/> treat text such as
/// <c>&lt;|endoftext|&gt;</c> as ordinary text (several tokens), like tiktoken's
/// <c>encode(text, disallowed_special=())</c>. That is the right count for user-supplied text, which cannot inject a
/// control token into the model's input; it also means a billing count cannot be shrunk by typing one.
/// <see cref="Decode"/> does accept the special token ids.
/// </para>
/// Instances are immutable and thread-safe; the rank tables load once, lazily, from embedded resources.
/// </remarks>
public sealed class BpeEncoding
{
    private static readonly Lazy<BpeEncoding> O200k = new(() => Load("o200k_base", SplitPattern.O200k, PreTokenizer.O200kPattern));
    private static readonly Lazy<BpeEncoding> Cl100k = new(() => Load("cl100k_base", SplitPattern.Cl100k, PreTokenizer.Cl100kPattern));

    /// <summary>
    /// Pieces longer than this (in bytes) merge with a heap, O(n log n), instead of tiktoken's O(n²) scan. 32: the scan
    /// wins on the short pieces of most text, the heap from about there on (runs of CJK characters, see BENCHMARKS.md).
    /// </summary>
    internal const int HeapMergeThreshold = 32;

    /// <summary>Heap merges of pieces up to this many bytes keep their scratch arrays on the stack.</summary>
    private const int StackScratchLimit = 256;

    private readonly RankTable _ranks;
    private readonly SplitPattern _pattern;
    private readonly Dictionary<int, byte[]> _specialTokens;

    private BpeEncoding(string name, RankTable ranks, SplitPattern pattern, Dictionary<int, byte[]> specialTokens)
    {
        Name = name;
        _ranks = ranks;
        _pattern = pattern;
        _specialTokens = specialTokens;
    }

    /// <summary>o200k_base: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1/o3/o4, gpt-oss.</summary>
    public static BpeEncoding O200kBase => O200k.Value;

    /// <summary>cl100k_base: GPT-4, GPT-3.5, text-embedding-3, text-embedding-ada-002.</summary>
    public static BpeEncoding Cl100kBase => Cl100k.Value;

    /// <summary>tiktoken's name of the encoding, e.g. "o200k_base".</summary>
    public string Name { get; }

    internal RankTable Ranks => _ranks;

    internal SplitPattern Pattern => _pattern;

    /// <summary>Number of tokens <see cref="Encode"/> would return, without allocating (beyond pooled buffers).</summary>
    public int CountTokens(ReadOnlySpan<char> text)
    {
        var sink = new CountingSink();
        Tokenize(text, ref sink);
        return sink.Count;
    }

    /// <summary>Token ids of <paramref name="text"/>; special-token text is encoded as ordinary text (see remarks).</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sink = new ListSink(new List<int>(text.Length / 3 + 4));
        Tokenize(text, ref sink);
        return sink.Tokens.ToArray();
    }

    /// <summary>
    /// The text of <paramref name="tokens"/> (special token ids included). Bytes that are not valid UTF-8 on their own,
    /// e.g. half of a multi-byte character, decode to U+FFFD, like tiktoken's <c>decode(errors="replace")</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token id is not in this encoding.</exception>
    public string Decode(ReadOnlySpan<int> tokens)
    {
        var length = 0;
        foreach (var t in tokens) length += TokenBytes(t).Length;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
        try
        {
            var at = 0;
            foreach (var t in tokens)
            {
                var bytes = TokenBytes(t);
                bytes.CopyTo(buffer.AsSpan(at));
                at += bytes.Length;
            }
            return Encoding.UTF8.GetString(buffer, 0, length);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private ReadOnlySpan<byte> TokenBytes(int token)
    {
        if ((uint)token < (uint)_ranks.Count) return _ranks.TokenBytes(token);
        return _specialTokens.TryGetValue(token, out var special)
            ? special
            : throw new ArgumentOutOfRangeException(nameof(token), token, $"Token {token} is not in {Name}.");
    }

    /// <summary>Number of tokens of UTF-8 text (must be valid UTF-8, e.g. a JSON string value or a transcoded string).</summary>
    internal int CountTokensUtf8(ReadOnlySpan<byte> utf8)
    {
        var sink = new CountingSink();
        TokenizeUtf8(utf8, ref sink);
        return sink.Count;
    }

    private void Tokenize<TSink>(ReadOnlySpan<char> text, ref TSink sink) where TSink : struct, ITokenSink
    {
        if (text.IsEmpty) return;
        var byteCount = Encoding.UTF8.GetByteCount(text);
        byte[]? rented = null;
        var utf8 = byteCount <= 1024 ? stackalloc byte[1024] : (rented = ArrayPool<byte>.Shared.Rent(byteCount));
        try
        {
            TokenizeUtf8(utf8[..Encoding.UTF8.GetBytes(text, utf8)], ref sink);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private void TokenizeUtf8<TSink>(ReadOnlySpan<byte> utf8, ref TSink sink) where TSink : struct, ITokenSink
    {
        var start = 0;
        while (start < utf8.Length)
        {
            var end = PreTokenizer.Next(_pattern, utf8, start);
            EncodePiece(utf8[start..end], ref sink);
            start = end;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EncodePiece<TSink>(ReadOnlySpan<byte> piece, ref TSink sink) where TSink : struct, ITokenSink
    {
        var whole = _ranks.Get(piece);
        if (whole != RankTable.NotFound)
        {
            sink.Add(whole);
            return;
        }
        if (piece.Length <= HeapMergeThreshold) MergeByScan(piece, ref sink);
        else MergeByHeap(piece, ref sink);
    }

    /// <summary>
    /// tiktoken's <c>_byte_pair_merge</c>: parts[k] starts at starts[k]; ranks[k] is the rank of parts k and k+1
    /// merged (int.MaxValue if that is no token). Each step finds the lowest rank by a linear scan (the leftmost on a
    /// tie), merges, and re-ranks the two neighbouring pairs. O(n²) but cache-friendly for the short pieces of real
    /// text. <paramref name="piece"/> has at least two bytes (a single byte is always a token) and is short enough to
    /// keep its two arrays on the stack (<see cref="HeapMergeThreshold"/>; tests call it with up to 200).
    /// </summary>
    private void MergeByScan<TSink>(ReadOnlySpan<byte> piece, ref TSink sink) where TSink : struct, ITokenSink
    {
        Span<int> starts = stackalloc int[piece.Length + 1];
        Span<int> ranks = stackalloc int[piece.Length];
        var parts = piece.Length;                 // live parts; starts[parts] = piece.Length is the end sentinel
        for (var k = 0; k < parts; k++) starts[k] = k;
        starts[parts] = piece.Length;
        for (var k = 0; k < parts - 1; k++) ranks[k] = RankOf(piece[k..(k + 2)]);
        ranks[parts - 1] = int.MaxValue;

        while (true)
        {
            var min = int.MaxValue;
            var at = -1;
            for (var k = 0; k < parts - 1; k++)
            {
                if (ranks[k] < min)
                {
                    min = ranks[k];
                    at = k;
                }
            }
            if (at < 0) break;

            // Merge parts at and at+1: drop starts[at+1] and ranks[at+1].
            starts[(at + 2)..(parts + 1)].CopyTo(starts[(at + 1)..]);
            ranks[(at + 2)..parts].CopyTo(ranks[(at + 1)..]);
            parts--;
            ranks[at] = at + 1 < parts ? RankOf(piece[starts[at]..starts[at + 2]]) : int.MaxValue;
            if (at > 0) ranks[at - 1] = RankOf(piece[starts[at - 1]..starts[at + 1]]);
        }

        if (!TSink.NeedsIds)
        {
            sink.AddCount(parts);
            return;
        }
        for (var k = 0; k < parts; k++) sink.Add(_ranks.Get(piece[starts[k]..starts[k + 1]]));
    }

    /// <summary>
    /// The same merges as <see cref="MergeByScan"/> in O(n log n) for long pieces (a 100 KB run of one letter is a
    /// single piece): parts form a linked list keyed by their start byte, and a min-heap holds (rank, start) of every
    /// adjacent pair, so the pop order is "lowest rank, then leftmost", exactly the scan's choice. Entries made stale
    /// by a merge are skipped when popped (a pair's rank identifies its bytes, so a changed pair has another rank).
    /// </summary>
    private void MergeByHeap<TSink>(ReadOnlySpan<byte> piece, ref TSink sink) where TSink : struct, ITokenSink
    {
        var n = piece.Length;
        // Scratch on the stack up to StackScratchLimit bytes (≈ 9 KB at most), else pooled: a pool shared with other
        // threads may hand out fresh arrays, and counting should not allocate in steady state.
        int[]? rentedInts = null;
        long[]? rentedHeap = null;
        var ints = n <= StackScratchLimit ? stackalloc int[3 * n] : (rentedInts = ArrayPool<int>.Shared.Rent(3 * n));
        var heapItems = n <= StackScratchLimit ? stackalloc long[3 * n] : (rentedHeap = ArrayPool<long>.Shared.Rent(3 * n));
        try
        {
            var next = ints[..n];
            var prev = ints.Slice(n, n);
            var pairRank = ints.Slice(2 * n, n);          // rank of (part at k, its next part); int.MaxValue = none; -1 = k is dead
            var heap = new MinHeap(heapItems);           // ≤ n - 1 initial pairs + 2 per merge ≤ 3n entries: never full
            for (var k = 0; k < n; k++)
            {
                next[k] = k + 1;                         // n = end of the piece
                prev[k] = k - 1;
                pairRank[k] = k + 1 < n ? RankOf(piece[k..(k + 2)]) : int.MaxValue;
                if (pairRank[k] != int.MaxValue) heap.Push(pairRank[k], k);
            }
            var parts = n;
            while (heap.TryPop(out var rank, out var at))
            {
                if (pairRank[at] != rank) continue;      // stale: at died or its pair changed
                var right = next[at];
                next[at] = next[right];
                if (next[right] < n) prev[next[right]] = at;
                pairRank[right] = -1;
                parts--;

                var end = next[at];
                pairRank[at] = end < n ? RankOf(piece[at..next[end]]) : int.MaxValue;
                if (pairRank[at] != int.MaxValue) heap.Push(pairRank[at], at);
                var left = prev[at];
                if (left >= 0)
                {
                    pairRank[left] = RankOf(piece[left..end]);
                    if (pairRank[left] != int.MaxValue) heap.Push(pairRank[left], left);
                }
            }

            if (!TSink.NeedsIds)
            {
                sink.AddCount(parts);
                return;
            }
            for (var k = 0; k < n; k = next[k]) sink.Add(_ranks.Get(piece[k..next[k]]));
        }
        finally
        {
            if (rentedInts is not null) ArrayPool<int>.Shared.Return(rentedInts);
            if (rentedHeap is not null) ArrayPool<long>.Shared.Return(rentedHeap);
        }
    }

    /// <summary>Token ids of one piece by the chosen merge (for tests that compare the two merges).</summary>
    internal int[] MergeForTesting(ReadOnlySpan<byte> piece, bool heap)
    {
        var sink = new ListSink([]);
        if (heap) MergeByHeap(piece, ref sink);
        else MergeByScan(piece, ref sink);
        return [.. sink.Tokens];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int RankOf(ReadOnlySpan<byte> bytes)
    {
        var rank = _ranks.Get(bytes);
        return rank == RankTable.NotFound ? int.MaxValue : rank;
    }

    /// <summary>Reads <c>tokens/{name}.tiktoken.gz</c> (lines <c>base64(bytes) rank</c>) and <c>tokens/{name}.json</c>.</summary>
    private static BpeEncoding Load(string name, SplitPattern pattern, string implementedPattern)
    {
        var assembly = typeof(BpeEncoding).Assembly;
        Stream Resource(string file) => assembly.GetManifestResourceStream("tokens/" + file)
                                        ?? throw new InvalidOperationException($"Embedded resource tokens/{file} is missing.");

        byte[] text;
        using (var gzip = new GZipStream(Resource(name + ".tiktoken.gz"), CompressionMode.Decompress))
        using (var buffer = new MemoryStream())
        {
            gzip.CopyTo(buffer);
            text = buffer.ToArray();
        }

        // Token bytes are at most 3/4 of their base64 text, so the text's length bounds the blob.
        var bytes = new byte[text.Length];
        var offsets = new List<int>(200_001) { 0 };
        var span = text.AsSpan();
        var written = 0;
        while (!span.IsEmpty)
        {
            var eol = span.IndexOf((byte)'\n');
            var line = eol < 0 ? span : span[..eol];
            span = eol < 0 ? default : span[(eol + 1)..];
            if (line.IsEmpty) continue;
            var space = line.IndexOf((byte)' ');
            if (space <= 0 || !Utf8Parser.TryParse(line[(space + 1)..], out int rank, out var used) || used != line.Length - space - 1)
                throw new InvalidDataException($"{name}: bad line {offsets.Count}.");
            if (rank != offsets.Count - 1)
                throw new InvalidDataException($"{name}: ranks must be 0, 1, 2, … in order; line {offsets.Count} has {rank}.");
            if (Base64.DecodeFromUtf8(line[..space], bytes.AsSpan(written), out _, out var decoded) != OperationStatus.Done)
                throw new InvalidDataException($"{name}: bad base64 on line {offsets.Count}.");
            written += decoded;
            offsets.Add(written);
        }
        var ranks = new RankTable(bytes.AsSpan(0, written).ToArray(), [.. offsets]);
        for (var b = 0; b < 256; b++)
        {
            // The merge starts from single bytes, so each must be a token.
            if (ranks.Get([(byte)b]) == RankTable.NotFound) throw new InvalidDataException($"{name}: byte {b} is not a token.");
        }

        using var json = JsonDocument.Parse(Resource(name + ".json"));
        var patStr = json.RootElement.GetProperty("pat_str").GetString();
        if (patStr != implementedPattern)
            throw new InvalidDataException($"{name}: the data file's split regex differs from the one PreTokenizer implements.");
        var specials = new Dictionary<int, byte[]>();
        foreach (var special in json.RootElement.GetProperty("special_tokens").EnumerateObject())
            specials.Add(special.Value.GetInt32(), Encoding.UTF8.GetBytes(special.Name));

        return new BpeEncoding(name, ranks, pattern, specials);
    }

    private interface ITokenSink
    {
        /// <summary>False when only the number of tokens matters (lets the merge skip the final id lookups).</summary>
        static abstract bool NeedsIds { get; }

        void Add(int token);

        void AddCount(int tokens);
    }

    private struct CountingSink : ITokenSink
    {
        public int Count;

        public static bool NeedsIds => false;

        public void Add(int token) => Count++;

        public void AddCount(int tokens) => Count += tokens;
    }

    private readonly struct ListSink(List<int> tokens) : ITokenSink
    {
        public List<int> Tokens { get; } = tokens;

        public static bool NeedsIds => true;

        public void Add(int token) => Tokens.Add(token);

        public void AddCount(int tokens) => throw new UnreachableException();
    }

    /// <summary>Binary min-heap of (rank, start) packed into longs, over caller-provided storage.</summary>
    private ref struct MinHeap(Span<long> items)
    {
        private readonly Span<long> _items = items;
        private int _count;

        public void Push(int rank, int start)
        {
            if (_count == _items.Length) throw new UnreachableException("Merge heap capacity exceeded.");
            var item = ((long)rank << 32) | (uint)start;
            var i = _count++;
            while (i > 0)
            {
                var parent = (i - 1) >> 1;
                if (_items[parent] <= item) break;
                _items[i] = _items[parent];
                i = parent;
            }
            _items[i] = item;
        }

        public bool TryPop(out int rank, out int start)
        {
            if (_count == 0)
            {
                rank = start = 0;
                return false;
            }
            var top = _items[0];
            var last = _items[--_count];
            var i = 0;
            while (true)
            {
                var child = 2 * i + 1;
                if (child >= _count) break;
                if (child + 1 < _count && _items[child + 1] < _items[child]) child++;
                if (_items[child] >= last) break;
                _items[i] = _items[child];
                i = child;
            }
            _items[i] = last;
            rank = (int)(top >> 32);
            start = (int)(uint)top;
            return true;
        }
    }
}
