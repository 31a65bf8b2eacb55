using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Tollgate.Features.Payments.Crypto;
using BcBigInteger = Org.BouncyCastle.Math.BigInteger;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>
/// A test-only Ethereum account: signs like a wallet's <c>personal_sign</c> (RFC 6979 deterministic k, low s, v = 27/28),
/// so tests can produce real SIWE signatures. The app itself only verifies.
/// </summary>
internal sealed class TestWallet
{
    private static readonly Org.BouncyCastle.Asn1.X9.X9ECParameters Curve = Org.BouncyCastle.Asn1.Sec.SecNamedCurves.GetByName("secp256k1");
    private static readonly ECDomainParameters Domain = new(Curve.Curve, Curve.G, Curve.N, Curve.H);
    private readonly BcBigInteger _key;

    public TestWallet(string privateKeyHex)
    {
        _key = new BcBigInteger(1, Convert.FromHexString(privateKeyHex.StartsWith("0x") ? privateKeyHex[2..] : privateKeyHex));
        var publicKey = Curve.G.Multiply(_key).Normalize().GetEncoded(false);
        Address = Ethereum.AddressOfPublicKey(publicKey.AsSpan(1));
    }

    /// <summary>A fresh random account.</summary>
    public static TestWallet Random() => new(Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)));

    /// <summary>Lower case.</summary>
    public string Address { get; }
    public string ChecksumAddress => Ethereum.ToChecksumAddress(Address);

    /// <summary><c>personal_sign(message)</c>: 0x + r ‖ s ‖ v as 130 hex digits.</summary>
    public string PersonalSign(string message)
    {
        var hash = Ethereum.PersonalMessageHash(message);
        var signer = new ECDsaSigner(new HMacDsaKCalculator(new Sha256Digest()));
        signer.Init(true, new ECPrivateKeyParameters(_key, Domain));
        var rs = signer.GenerateSignature(hash);
        var (r, s) = (rs[0], rs[1]);
        if (s.CompareTo(Curve.N.ShiftRight(1)) > 0) s = Curve.N.Subtract(s);
        var body = new byte[65];
        var rb = r.ToByteArrayUnsigned();
        var sb = s.ToByteArrayUnsigned();
        rb.CopyTo(body, 32 - rb.Length);
        sb.CopyTo(body, 64 - sb.Length);
        for (byte v = 27; v <= 28; v++)
        {
            body[64] = v;
            if (Ethereum.RecoverAddress(hash, body) == Address) return "0x" + Convert.ToHexStringLower(body);
        }
        throw new InvalidOperationException("No recovery id reproduces the key.");
    }
}
