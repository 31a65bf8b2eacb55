using System.Reflection;
using Microsoft.Extensions.Options;

namespace Tollgate.Infrastructure.Configuration;

/// <summary>Options that are a set of named entries under one section (plans, credit packs, add-ons): <c>{section}:{id}:…</c>.</summary>
public static class NamedOptions
{
    /// <summary>
    /// Binds every child of <paramref name="section"/> to a <typeparamref name="T"/> keyed by its name, validated at
    /// start-up by <paramref name="validate"/> (which throws an <see cref="OptionsValidationException"/> listing every problem).
    /// A setting <typeparamref name="T"/> does not have (a misspelt <c>IncludedRequest</c> would otherwise leave a plan
    /// unlimited) or a value that does not convert is listed among those problems too; keys starting with '_' are comments.
    /// </summary>
    public static void Add<T>(IServiceCollection services, string section, Func<Dictionary<string, T>, bool> validate) where T : new() =>
        services.AddOptions<Dictionary<string, T>>()
            .Configure<IConfiguration>((d, config) =>
            {
                foreach (var child in config.GetSection(section).GetChildren())
                    d[child.Key] = TryBind<T>(child, out _) ?? new T();
            })
            .Validate<IConfiguration>((d, config) =>
            {
                var problems = BindingProblems<T>(config.GetSection(section));
                try
                {
                    validate(d);
                }
                catch (OptionsValidationException e) when (problems.Count > 0)
                {
                    throw new OptionsValidationException(section, typeof(T), [.. problems, .. e.Failures]);
                }
                if (problems.Count > 0) throw new OptionsValidationException(section, typeof(T), problems);
                return true;
            }).ValidateOnStart();

    private static T? TryBind<T>(IConfigurationSection entry, out string? problem)
    {
        problem = null;
        try
        {
            return entry.Get<T>();
        }
        catch (InvalidOperationException e)
        {
            problem = $"{entry.Path}: {e.Message}";
            return default;
        }
    }

    /// <summary>Every unknown setting and unconvertible value under the section's entries.</summary>
    private static List<string> BindingProblems<T>(IConfigurationSection section)
    {
        var known = typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name)
            .ToHashSet(StringComparer.OrdinalIgnoreCase);
        var problems = new List<string>();
        foreach (var entry in section.GetChildren())
        {
            foreach (var setting in entry.GetChildren())
                if (!setting.Key.StartsWith('_') && !known.Contains(setting.Key))
                    problems.Add($"{setting.Path} is not a setting (known: {string.Join(", ", known.Order(StringComparer.Ordinal))}).");
            TryBind<T>(entry, out var problem);
            if (problem is not null) problems.Add(problem);
        }
        return problems;
    }
}
