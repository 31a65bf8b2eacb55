using System.Text.Json;
using System.Text.Json.Serialization;

namespace Tollgate.Infrastructure.Http;

/// <summary>
/// Refuses JSON strings containing U+0000. PostgreSQL text cannot store it (SQLite can), so without this a name,
/// reason or transfer field with a NUL was a 500/503 on PostgreSQL and accepted on SQLite; now it is a 400 on both.
/// JSON inside <c>metadata</c> is not affected: it is kept as text with the character escaped.
/// </summary>
internal sealed class NulRejectingStringConverter : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var value = reader.GetString();
        if (value is not null && value.Contains('\0')) throw new JsonException("Strings must not contain the NUL character (U+0000).");
        return value;
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}
