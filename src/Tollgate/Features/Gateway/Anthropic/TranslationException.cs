namespace Tollgate.Features.Gateway.Anthropic;

/// <summary>
/// An OpenAI chat request that cannot be sent to an Anthropic model without changing what the client asked for
/// (e.g. <c>n &gt; 1</c>, <c>logprobs</c>), or that is malformed where the translation needs it. The gateway answers
/// 400 with the OpenAI error body <c>{"error":{"message","type":"invalid_request_error","code","param"}}</c> built
/// from <see cref="Param"/>, <see cref="Exception.Message"/> and <see cref="Code"/>. Thrown only before anything is
/// sent upstream, so nothing has been spent.
/// </summary>
public sealed class TranslationException(string param, string message, string code = TranslationException.UnsupportedParameter)
    : Exception(message)
{
    /// <summary>The parameter the client can drop or change for the request to succeed.</summary>
    public const string UnsupportedParameter = "unsupported_parameter";
    /// <summary>The parameter is present and supported but its value is malformed or out of range.</summary>
    public const string InvalidValue = "invalid_value";

    /// <summary>OpenAI-style parameter path, e.g. <c>n</c> or <c>messages[2].tool_calls[0].function.arguments</c>.</summary>
    public string Param { get; } = param;

    /// <summary><see cref="UnsupportedParameter"/> or <see cref="InvalidValue"/>.</summary>
    public string Code { get; } = code;
}
