using Microsoft.AspNetCore.Http.HttpResults;
using Tollgate.Features.Admin;
using Tollgate.Features.Keys;
using Tollgate.Infrastructure.Http;

namespace Tollgate.Features.Members;

public sealed record NewMemberInput(string? Email, string? Password, string? Role);
public sealed record SessionInput(string? Email, string? Password, string? AccountId);
public sealed record SessionResponse(string Token, DateTimeOffset ExpiresAt, string AccountId, string Role);

/// <summary>
/// Members and dashboard sessions: <c>POST /api/v1/sessions</c> signs in (email + password → a session token shown
/// once), <c>DELETE /api/v1/sessions/current</c> signs out; <c>/api/v1/members</c> lists, adds and removes the
/// account's members (changes need an owner or admin, or an API key); the admin API adds members to any account.
/// </summary>
internal static class MemberEndpoints
{
    public static void MapMembers(this IEndpointRouteBuilder routes)
    {
        var sessions = routes.MapGroup("/api/v1/sessions").WithTags("Members");
        sessions.MapPost("/", SignIn);
        sessions.MapDelete("/current", async Task<NoContent> (HttpContext http, MemberService members, CancellationToken ct) =>
        {
            if (AdminAuthFilter.BearerToken(http.Request) is { } token && MemberService.IsSessionToken(token)) await members.SignOutAsync(token, ct);
            return TypedResults.NoContent();
        });

        var group = routes.MapGroup("/api/v1/members").RequireApiKey().ManagersOnly().WithTags("Members");
        group.MapGet("/", async (HttpContext http, MemberService members, CancellationToken ct) =>
            TypedResults.Ok(new Dictionary<string, object> { ["data"] = await members.ListAsync(http.GetCaller().AccountId, ct) }));
        group.MapPost("/", (NewMemberInput input, HttpContext http, MemberService members, CancellationToken ct) => Add(http.GetCaller().AccountId, input, http.GetCaller(), members, ct));
        group.MapDelete("/{userId}", async Task<Results<NoContent, ProblemHttpResult>> (string userId, HttpContext http, MemberService members, CancellationToken ct) =>
            await members.RemoveAsync(http.GetCaller().AccountId, userId, ct)
                ? TypedResults.NoContent()
                : Problems.NotFound("removable member (an account keeps at least one owner)", userId));
    }

    public static void MapAdminMemberRoutes(RouteGroupBuilder accounts)
    {
        accounts.MapPost("/{id}/members", (string id, NewMemberInput input, MemberService members, CancellationToken ct) => Add(id, input, null, members, ct));
        accounts.MapGet("/{id}/members", async (string id, MemberService members, CancellationToken ct) =>
            TypedResults.Ok(new Dictionary<string, object> { ["data"] = await members.ListAsync(id, ct) }));
    }

    private static async Task<Results<Created<MemberView>, ProblemHttpResult>> Add(string accountId, NewMemberInput input, Caller? by, MemberService members, CancellationToken ct)
    {
        if (!MemberService.IsValidEmail(input.Email)) return Problems.BadRequest("invalid_request", "'email' must be an email address.", "email");
        var role = input.Role ?? Roles.Member;
        if (!Roles.IsValid(role)) return Problems.BadRequest("invalid_request", "'role' must be owner, admin, member or viewer.", "role");
        // Only an owner (or the operator, or an API key) can make owners.
        if (role == Roles.Owner && by?.Role is Roles.Admin) return Problems.Create(StatusCodes.Status403Forbidden, "forbidden", "Only an owner can add owners.");
        if (input.Password is { } p && (p.Length < MemberService.MinPasswordLength || p.Length > MemberService.MaxPasswordLength))
            return Problems.BadRequest("invalid_request", $"'password' must be {MemberService.MinPasswordLength}–{MemberService.MaxPasswordLength} characters.", "password");
        try
        {
            var member = await members.AddAsync(accountId, input.Email!, input.Password, role, ct);
            return member is null ? Problems.NotFound("account", accountId) : TypedResults.Created($"/api/v1/members/{member.UserId}", member);
        }
        catch (ArgumentException)
        {
            return Problems.BadRequest("invalid_request", "This email has no user yet: send a 'password' to create one.", "password");
        }
    }

    private static async Task<Results<Created<SessionResponse>, ProblemHttpResult>> SignIn(
        SessionInput input, HttpContext http, MemberService members, SignInAttempts attempts, CancellationToken ct)
    {
        if (string.IsNullOrEmpty(input.Email) || string.IsNullOrEmpty(input.Password) || input.Password.Length > MemberService.MaxPasswordLength)
            return Problems.BadRequest("invalid_request", "'email' and 'password' are required.", "email");
        var ip = http.Connection.RemoteIpAddress;
        if (attempts.RetryAfter(SignInAttempts.PasswordScope, ip, input.Email) is { } wait) return SignInAttempts.TooMany(http, wait);
        var session = await members.SignInAsync(input.Email, input.Password, input.AccountId, ct);
        if (session is not { } s)
        {
            attempts.RecordFailure(SignInAttempts.PasswordScope, ip, input.Email);
            return Problems.Unauthorized("Wrong email or password.");
        }
        attempts.RecordSuccess(SignInAttempts.PasswordScope, input.Email);
        return TypedResults.Created("/api/v1/sessions/current", new SessionResponse(s.Token, s.ExpiresAt, s.AccountId, s.Role));
    }
}
