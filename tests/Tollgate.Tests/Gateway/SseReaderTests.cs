using System.Text;
using Tollgate.Features.Gateway;

namespace Tollgate.Tests.Gateway;

/// <summary><see cref="SseReader"/> framing, with the body arriving in pieces of every size (down to one byte per read).</summary>
public sealed class SseReaderTests
{
    private const string Body =
        ": comment line\r\n" +
        "event: message_start\r\n" +
        "data: {\"a\":1}\r\n" +
        "\r\n" +
        "data: first line\n" +
        "data:second line without space\n" +
        "id: 7\n" +
        "retry: 1000\n" +
        "\n" +
        "event: custom_event\r" +
        "data: cr only\r" +
        "\r" +
        "event: no data, dropped\n" +
        "\n" +
        "data: [DONE]\n" +
        "\n" +
        "data: trailing without blank line";

    private static readonly (string? Name, string Data)[] Expected =
    [
        ("message_start", "{\"a\":1}"),
        (null, "first line\nsecond line without space"),
        ("custom_event", "cr only"),
        (null, "[DONE]"),
        (null, "trailing without blank line"),
    ];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(4096)]
    public async Task ReadAsync_BodyInPiecesOfAnySize_GivesTheSameEvents(int piece)
    {
        var events = await ReadAllAsync(Encoding.UTF8.GetBytes(Body), piece);
        Assert.Equal(Expected, events);
        Assert.True(events[3].Data == "[DONE]");
    }

    [Fact]
    public async Task ReadAsync_EventLargerThanTheReadBuffer_ArrivesWhole()
    {
        var big = new string('x', 100_000);
        var events = await ReadAllAsync(Encoding.UTF8.GetBytes($"event: content_block_delta\ndata: {big}\n\ndata: next\n\n"), 1000);
        Assert.Equal([("content_block_delta", big), (null, "next")], events);
    }

    [Fact]
    public async Task ReadAsync_EventOverTheBound_Throws()
    {
        var body = Encoding.UTF8.GetBytes("data: " + new string('x', SseReader.MaxEventBytes + 1) + "\n\n");
        await Assert.ThrowsAsync<InvalidDataException>(() => ReadAllAsync(body, 64 * 1024));
    }

    private static async Task<List<(string? Name, string Data)>> ReadAllAsync(byte[] body, int piece)
    {
        var events = new List<(string?, string)>();
        await using var reader = new SseReader(new PiecewiseStream(body, piece));
        while (await reader.ReadAsync(CancellationToken.None) is { } e)
        {
            events.Add((e.Name, Encoding.UTF8.GetString(e.Data.Span)));
            // A reader that hands out the last event again and again must fail here, not fill the memory.
            Assert.True(events.Count < 100, "the reader did not end");
        }
        Assert.Null(await reader.ReadAsync(CancellationToken.None));
        Assert.Equal(body.Length, reader.BytesRead);
        return events;
    }

    /// <summary>A body that hands out at most <c>piece</c> bytes per read, asynchronously, as a network stream does.</summary>
    private sealed class PiecewiseStream(byte[] data, int piece) : Stream
    {
        private int _at;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Yield();
            var n = Math.Min(Math.Min(piece, buffer.Length), data.Length - _at);
            data.AsMemory(_at, n).CopyTo(buffer);
            _at += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
