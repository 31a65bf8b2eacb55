using System.Buffers.Binary;
using System.Numerics;

namespace Tollgate.Features.Gateway.Tokens;

/// <summary>
/// The token ↔ byte-sequence table of one encoding: rank (= token id) → bytes, and bytes → rank without allocating.
/// </summary>
/// <remarks>
/// Every token's bytes live back to back in one array (<see cref="_bytes"/>, <see cref="_offsets"/> indexed by rank),
/// and an open-addressing hash table (linear probing, load ≤ 0.5) maps a byte span to its rank. Each slot keeps the
/// key's full 32-bit hash beside the rank, so a probe compares bytes only on a hash match. Compared with a
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

    private struct Slot
    {
        public int RankPlusOne;           // 0 = empty
        public uint Hash;
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
        for (var rank = 0; rank < count; rank++)
        {
            var key = TokenBytes(rank);
            if (key.IsEmpty) throw new InvalidDataException($"Token {rank} has no bytes.");
            var hash = Hash(key);
            var i = (int)hash & _mask;
            while (_slots[i].RankPlusOne != 0)
            {
                if (_slots[i].Hash == hash && TokenBytes(_slots[i].RankPlusOne - 1).SequenceEqual(key))
                    throw new InvalidDataException($"Tokens {_slots[i].RankPlusOne - 1} and {rank} have the same bytes.");
                i = (i + 1) & _mask;
            }
            _slots[i] = new Slot { RankPlusOne = rank + 1, Hash = hash };
        }
    }

    /// <summary>Number of ordinary (non-special) tokens; their ids are 0 .. Count - 1.</summary>
    public int Count => _offsets.Length - 1;

    public ReadOnlySpan<byte> TokenBytes(int rank) => _bytes.AsSpan(_offsets[rank], _offsets[rank + 1] - _offsets[rank]);

    /// <summary>Rank of the token whose bytes are exactly <paramref name="key"/>, or <see cref="NotFound"/>.</summary>
    public int Get(ReadOnlySpan<byte> key)
    {
        var hash = Hash(key);
        var slots = _slots;
        var i = (int)hash & _mask;
        while (true)
        {
            var slot = slots[i];
            if (slot.RankPlusOne == 0) return NotFound;
            if (slot.Hash == hash)
            {
                var rank = slot.RankPlusOne - 1;
                var start = _offsets[rank];
                if (_offsets[rank + 1] - start == key.Length && _bytes.AsSpan(start, key.Length).SequenceEqual(key)) return rank;
            }
            i = (i + 1) & _mask;
        }
    }

    /// <summary>
    /// A fast 64→32-bit mix over 8-byte words (most keys are 2-8 bytes, so usually one or two multiplies).
    /// Not for untrusted-collision resistance: the keys are the fixed token table, lookups only read it.
    /// </summary>
    private static uint Hash(ReadOnlySpan<byte> key)
    {
        var h = (ulong)key.Length * 0x9E3779B97F4A7C15UL;
        var i = 0;
        for (; i + 8 <= key.Length; i += 8)
        {
            h = (h ^ BinaryPrimitives.ReadUInt64LittleEndian(key[i..])) * 0xBF58476D1CE4E5B9UL;
            h ^= h >> 31;
        }
        ulong tail = 0;
        for (var k = key.Length - 1; k >= i; k--) tail = (tail << 8) | key[k];
        h = (h ^ tail) * 0x94D049BB133111EBUL;
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9UL;
        return (uint)(h >> 32);
    }
}
