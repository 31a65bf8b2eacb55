using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using System.Text;

namespace Tollgate.Features.Gateway;

/// <summary>One server-sent event: its <c>event:</c> name (null when absent) and its <c>data:</c> lines joined by LF.</summary>
internal readonly record struct SseEvent(string? Name, ReadOnlyMemory<byte> Data)
{
    public bool IsDone => Data.Span.SequenceEqual("[DONE]"u8);
}

/// <summary>
/// Reads server-sent events from an upstream body as they arrive (WHATWG framing): lines end in LF, CR or CRLF; a
/// blank line ends an event; <c>data:</c> lines are joined with LF (one leading space stripped); comment lines
/// (<c>:</c>…) and <c>id:</c>/<c>retry:</c> are ignored. An event split across reads is reassembled. The returned
/// event's data is valid until the next call.
/// </summary>
internal sealed class SseReader(Stream body) : IAsyncDisposable
{
    /// <summary>Bound on one event, so a misbehaving upstream cannot make us buffer without limit.</summary>
    public const int MaxEventBytes = 8 << 20;

    // A thousand open streams mostly wait: zero-byte reads wait for data without holding a buffer, so a buffer is
    // rented only while an event is being read (and 4 KB holds the usual chunk; a larger event spans segments).
    private readonly PipeReader _pipe = PipeReader.Create(body, new StreamPipeReaderOptions(bufferSize: 4096, leaveOpen: true, useZeroByteReads: true));
    private readonly ArrayBufferWriter<byte> _data = new(4096);
    private string? _name;
    private bool _hasData;
    private bool _skipLeadingLf;
    private bool _ended;

    /// <summary>Bytes read from the upstream so far (to tell "nothing arrived" from "something arrived").</summary>
    public long BytesRead { get; private set; }

    /// <summary>The next event, or null at the end of the body (a trailing event without its blank line is still returned).</summary>
    /// <remarks>Called once per event and usually waits, so its state machine is pooled rather than allocated per call.</remarks>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SseEvent?> ReadAsync(CancellationToken ct)
    {
        _data.ResetWrittenCount();
        _name = null;
        _hasData = false;
        if (_ended) return null;
        while (true)
        {
            var read = await _pipe.ReadAsync(ct);
            var buffer = read.Buffer;
            var consumedBefore = buffer.Length;
            var dispatched = TryParse(ref buffer);
            BytesRead += consumedBefore - buffer.Length;
            if (_data.WrittenCount > MaxEventBytes) throw new InvalidDataException($"An upstream event exceeded {MaxEventBytes} bytes.");
            if (dispatched)
            {
                // Only what this event used counts as examined: the next event may already be buffered (a provider
                // often flushes several in one packet), and marking it examined would make the next read wait for
                // more bytes instead of returning it — forever, if the provider then stalls.
                _pipe.AdvanceTo(buffer.Start);
                return new SseEvent(_name, _data.WrittenMemory);
            }
            if (read.IsCompleted)
            {
                // The body ended: a last line without its line break still counts, and it is consumed, so the next
                // call ends instead of reading the same bytes (and returning the same event) forever.
                if (!buffer.IsEmpty) { BytesRead += buffer.Length; ProcessLine(buffer.IsSingleSegment ? buffer.FirstSpan : buffer.ToArray()); }
                _pipe.AdvanceTo(buffer.End);
                _ended = true;
                return _hasData ? new SseEvent(_name, _data.WrittenMemory) : null;
            }
            _pipe.AdvanceTo(buffer.Start, buffer.End);
            if (buffer.Length > MaxEventBytes || _data.WrittenCount > MaxEventBytes)
                throw new InvalidDataException($"An upstream event exceeded {MaxEventBytes} bytes.");
        }
    }

    /// <summary>Consumes whole lines; true when a blank line ended an event that has data.</summary>
    private bool TryParse(ref ReadOnlySequence<byte> buffer)
    {
        var reader = new SequenceReader<byte>(buffer);
        while (true)
        {
            if (_skipLeadingLf)
            {
                if (reader.End) break;
                reader.IsNext((byte)'\n', advancePast: true);
                _skipLeadingLf = false;
                buffer = buffer.Slice(reader.Position);
            }
            if (!reader.TryReadToAny(out ReadOnlySequence<byte> line, "\r\n"u8, advancePastDelimiter: false)) break;
            reader.TryRead(out var delimiter);
            // CRLF: the LF may not have arrived yet.
            if (delimiter == '\r') _skipLeadingLf = !reader.IsNext((byte)'\n', advancePast: true) && reader.End;
            buffer = buffer.Slice(reader.Position);
            if (line.IsEmpty)
            {
                if (_hasData) return true;
                _name = null;
                continue;
            }
            if (line.IsSingleSegment) ProcessLine(line.FirstSpan);
            else ProcessLine(line.ToArray());
        }
        return false;
    }

    private void ProcessLine(ReadOnlySpan<byte> line)
    {
        if (line.IsEmpty || line[0] == ':') return;
        var colon = line.IndexOf((byte)':');
        var field = colon < 0 ? line : line[..colon];
        var value = colon < 0 ? [] : line[(colon + 1)..];
        if (!value.IsEmpty && value[0] == ' ') value = value[1..];
        if (field.SequenceEqual("data"u8))
        {
            if (_hasData) _data.Write("\n"u8);
            _data.Write(value);
            _hasData = true;
        }
        else if (field.SequenceEqual("event"u8)) _name = EventName(value);
    }

    /// <summary>Anthropic names every event; the common names are shared strings rather than one allocation per event.</summary>
    private static readonly string[] KnownNames =
        ["content_block_delta", "content_block_start", "content_block_stop", "message_start", "message_delta", "message_stop", "ping", "error"];

    private static string EventName(ReadOnlySpan<byte> value)
    {
        foreach (var known in KnownNames)
            if (value.Length == known.Length && Ascii.Equals(value, known)) return known;
        return Encoding.UTF8.GetString(value);
    }

    public ValueTask DisposeAsync() => _pipe.CompleteAsync();
}
