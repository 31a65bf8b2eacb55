using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Tollgate.Features.Gateway.Tokens;

/// <summary>
/// The token ↔ byte-sequence table of one encoding: rank (= token id) → bytes, and bytes → rank without allocating.
/// </summary>
/// <remarks>
/// Every token's bytes live back to back in one array (<see cref="_bytes"/>, <see cref="_offsets"/> indexed by rank),
/// and an open-addressing hash table (linear probing, load ≤ 0.5) maps a byte span to its rank. Each slot keeps the
/// key's length and first 8 bytes beside the rank, so most probes never touch the byte array; keys of one or two
/// bytes (every first step of a merge) are read from a direct 65,792-entry table instead. Compared with a
/// <c>Dictionary&lt;byte[], int&gt;</c> this avoids 200k small arrays (≈ 10 MB of object headers and pointers for
/// o200k) and a lookup needs no key object: the BPE merge loop looks up slices of a pooled buffer.
/// </remarks>
internal sealed class RankTable
{
    public const int NotFound = -1;

    private readonly byte[] _bytes;
    private readonly int[] _offsets;      // token r is _bytes[_offsets[r] .. _offsets[r + 1])
    private readonly Slot[] _slots;
    private readonly int _mask;
    private readonly int[] _shortRanks;   // rank of every 1-byte key [0, 256) and 2-byte key 256 + (b0 | b1 << 8); -1 = none

    /// <summary>
    /// 16 bytes: the key's length and first 8 bytes travel with the rank, so a probe for a key of up to 8 bytes (most
    /// merge candidates) is decided by one cache line, without touching <see cref="_bytes"/>.
    /// </summary>
    private struct Slot
    {
        public ulong Head;                // the key's first ≤ 8 bytes, little-endian, zero-padded
        public int Length;
        public int RankPlusOne;           // 0 = empty
    }

    /// <param name="bytes">Token bytes back to back, token 0 first.</param>
    /// <param name="offsets">Start of each token in <paramref name="bytes"/>, plus one final end offset.</param>
    public RankTable(byte[] bytes, int[] offsets)
    {
        _bytes = bytes;
        _offsets = offsets;
        var count = offsets.Length - 1;
        var capacity = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, count * 2));
        _slots = new Slot[capacity];
        _mask = capacity - 1;
        _shortRanks = new int[256 + 65_536];
        _shortRanks.AsSpan().Fill(NotFound);
        for (var rank = 0; rank < count; rank++)
        {
            var key = TokenBytes(rank);
            if (key.IsEmpty) throw new InvalidDataException($"Token {rank} has no bytes.");
            if (key.Length <= 2)
            {
                // The merge's first step looks up every adjacent byte pair: a direct table keeps those off the hash.
                var index = key.Length == 1 ? key[0] : 256 + BinaryPrimitives.ReadUInt16LittleEndian(key);
                if (_shortRanks[index] != NotFound) throw new InvalidDataException($"Tokens {_shortRanks[index]} and {rank} have the same bytes.");
                _shortRanks[index] = rank;
                continue;
            }
            if (Get(key) != NotFound) throw new InvalidDataException($"Tokens {Get(key)} and {rank} have the same bytes.");
            var head = Head(key);
            var i = (int)Hash(key, head) & _mask;
            while (_slots[i].RankPlusOne != 0) i = (i + 1) & _mask;
            _slots[i] = new Slot { Head = head, Length = key.Length, RankPlusOne = rank + 1 };
        }
    }

    /// <summary>Number of ordinary (non-special) tokens; their ids are 0 .. Count - 1.</summary>
    public int Count => _offsets.Length - 1;

    public ReadOnlySpan<byte> TokenBytes(int rank) => _bytes.AsSpan(_offsets[rank], _offsets[rank + 1] - _offsets[rank]);

    /// <summary>Rank of the token whose bytes are exactly <paramref name="key"/>, or <see cref="NotFound"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Get(ReadOnlySpan<byte> key)
    {
        if (key.Length <= 2)
        {
            return key.Length == 2 ? _shortRanks[256 + BinaryPrimitives.ReadUInt16LittleEndian(key)]
                : key.Length == 1 ? _shortRanks[key[0]] : NotFound;
        }
        var head = Head(key);
        var slots = _slots;
        var i = (int)Hash(key, head) & _mask;
        while (true)
        {
            ref readonly var slot = ref slots[i];
            if (slot.RankPlusOne == 0) return NotFound;
            if (slot.Head == head && slot.Length == key.Length &&
                (key.Length <= 8 || _bytes.AsSpan(_offsets[slot.RankPlusOne - 1] + 8, key.Length - 8).SequenceEqual(key[8..])))
                return slot.RankPlusOne - 1;
            i = (i + 1) & _mask;
        }
    }

    /// <summary>The first ≤ 8 bytes as a little-endian word, zero-padded; word reads instead of a byte loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Head(ReadOnlySpan<byte> key)
    {
        switch (key.Length)
        {
            case 0: return 0;
            case 1: return key[0];
            case 2: return BinaryPrimitives.ReadUInt16LittleEndian(key);
            case 3: return BinaryPrimitives.ReadUInt16LittleEndian(key) | ((ulong)key[2] << 16);
            case 4: return BinaryPrimitives.ReadUInt32LittleEndian(key);
            case 5: return BinaryPrimitives.ReadUInt32LittleEndian(key) | ((ulong)key[4] << 32);
            case 6: return BinaryPrimitives.ReadUInt32LittleEndian(key) | ((ulong)BinaryPrimitives.ReadUInt16LittleEndian(key[4..]) << 32);
            case 7:
                return BinaryPrimitives.ReadUInt32LittleEndian(key) | ((ulong)BinaryPrimitives.ReadUInt16LittleEndian(key[4..]) << 32) |
                       ((ulong)key[6] << 48);
            default: return BinaryPrimitives.ReadUInt64LittleEndian(key);
        }
    }

    /// <summary>
    /// A fast 64→32-bit mix of the head word, the length and any further 8-byte words. Not meant to resist crafted
    /// collisions: the keys are the fixed token table; a lookup only reads it, and probing stays bounded by its load.
    /// </summary>
    private static uint Hash(ReadOnlySpan<byte> key, ulong head)
    {
        var h = (head ^ ((ulong)key.Length << 59)) * 0x9E3779B97F4A7C15UL;
        for (var i = 8; i < key.Length; i += 8)
        {
            var word = i + 8 <= key.Length ? BinaryPrimitives.ReadUInt64LittleEndian(key[i..]) : Head(key[i..]);
            h = (h ^ (h >> 29) ^ word) * 0xBF58476D1CE4E5B9UL;
        }
        h ^= h >> 32;
        h *= 0x94D049BB133111EBUL;
        return (uint)(h >> 32);
    }
}
