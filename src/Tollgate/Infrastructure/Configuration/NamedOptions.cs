using Microsoft.Extensions.Options;

namespace Tollgate.Infrastructure.Configuration;

/// <summary>Options that are a set of named entries under one section (plans, credit packs, add-ons): <c>{section}:{id}:…</c>.</summary>
public static class NamedOptions
{
    /// <summary>
    /// Binds every child of <paramref name="section"/> to a <typeparamref name="T"/> keyed by its name, validated at
    /// start-up by <paramref name="validate"/> (which throws an <see cref="OptionsValidationException"/> listing every problem).
    /// </summary>
    public static void Add<T>(IServiceCollection services, string section, Func<Dictionary<string, T>, bool> validate) where T : new() =>
        services.AddOptions<Dictionary<string, T>>()
            .Configure<IConfiguration>((d, config) =>
            {
                foreach (var child in config.GetSection(section).GetChildren())
                    d[child.Key] = child.Get<T>() ?? new T();
            })
            .Validate(validate).ValidateOnStart();
}
