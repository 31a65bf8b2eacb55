using System.Diagnostics;

namespace Tollgate.Tests.Alerts;

/// <summary>
/// A second, independent verifier of Tollgate's webhook signatures: Node.js's own <c>crypto</c> (OpenSSL), run as a child
/// process, as a receiver written in JavaScript would check them (the scheme Stripe documents: split
/// <c>t=…,v1=…</c>, HMAC-SHA256 keyed with the secret over <c>"{t}." + raw body</c>, hex, timing-safe compare, a
/// tolerance on <c>t</c>). Node is required (scripts/test.sh installs it for the EVM tests); never skipped.
/// </summary>
internal static class NodeVerifier
{
    private const string Script = """
        const crypto = require('crypto');
        const fs = require('fs');
        const [bodyFile, header, secret, nowSeconds, toleranceSeconds] = process.argv.slice(2);
        const body = fs.readFileSync(bodyFile);
        const parts = header.split(',').map(p => p.split('='));
        const t = (parts.find(([k]) => k === 't') || [])[1];
        const signatures = parts.filter(([k]) => k === 'v1').map(([, v]) => v);
        if (!t || signatures.length === 0 || !/^\d+$/.test(t)) { console.log('malformed'); process.exit(2); }
        if (Math.abs(Number(nowSeconds) - Number(t)) > Number(toleranceSeconds)) { console.log('stale'); process.exit(3); }
        const expected = crypto.createHmac('sha256', secret).update(Buffer.concat([Buffer.from(t + '.', 'utf8'), body])).digest();
        const ok = signatures.some(s => /^[0-9a-f]{64}$/.test(s) && crypto.timingSafeEqual(Buffer.from(s, 'hex'), expected));
        console.log(ok ? 'valid' : 'invalid');
        process.exit(ok ? 0 : 1);
        """;

    /// <summary>Node's verdict: <c>valid</c>, <c>invalid</c>, <c>stale</c> or <c>malformed</c>.</summary>
    public static async Task<string> VerifyAsync(string header, byte[] body, string secret, DateTimeOffset now, int toleranceSeconds = 300)
    {
        var dir = Directory.CreateTempSubdirectory("tollgate-webhook-verify-");
        try
        {
            var scriptFile = Path.Combine(dir.FullName, "verify.js");
            var bodyFile = Path.Combine(dir.FullName, "body.bin");
            await File.WriteAllTextAsync(scriptFile, Script);
            await File.WriteAllBytesAsync(bodyFile, body);
            var start = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[] { scriptFile, bodyFile, header, secret, now.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture),
                         toleranceSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) })
                start.ArgumentList.Add(arg);
            Process process;
            try
            {
                process = Process.Start(start) ?? throw new InvalidOperationException("node did not start.");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException("`node` is not on PATH; the webhook signature test verifies with Node.js's crypto (scripts/test.sh installs it).", e);
            }
            using (process)
            {
                var output = await process.StandardOutput.ReadToEndAsync();
                var errors = await process.StandardError.ReadToEndAsync();
                await process.WaitForExitAsync();
                Assert.True(errors.Length == 0, $"node failed: {errors}");
                return output.Trim();
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
