using System.Text;
using Tollgate.Features.Payments.Crypto;

namespace Tollgate.Tests.Payments.Crypto;

/// <summary>
/// Keccak-256, EIP-191, EIP-55, secp256k1 recovery and SIWE against published/cross-checked vectors (computed with
/// @noble/hashes 1.8.0, @noble/curves 1.9.7, js-sha3 0.13.0 and ethers 6; copied here so the tests read nothing outside the repo).
/// </summary>
public sealed class EthereumTests
{
    private const string HardhatKey0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    private const string HardhatAddress0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    private const string SiweWithStatement =
        "gateway.example.com wants you to sign in with your Ethereum account:\n0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\nSign in to Example Gateway to top up credits.\n\nURI: https://gateway.example.com/login\nVersion: 1\nChain ID: 8453\nNonce: Qm9vYmFyYmF6MTIz\nIssued At: 2025-01-01T00:00:00.000Z\nExpiration Time: 2025-01-01T00:10:00.000Z";
    private const string SiweWithStatementSignature =
        "0x91ea6e665017e615e76410255a232be6deb8af665b871377959054cf317280126b79ff198e66a703df394769de300b93eb5eb4fa84c633fdbfc1d4e52a1c52341c";
    private const string SiweWithoutStatement =
        "gateway.example.com wants you to sign in with your Ethereum account:\n0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\n\nURI: https://gateway.example.com/login\nVersion: 1\nChain ID: 8453\nNonce: Qm9vYmFyYmF6MTIz\nIssued At: 2025-01-01T00:00:00.000Z";
    private const string SiweWithoutStatementSignature =
        "0x3dd4b02cddb07bdb1f4709cf0d8e09a2a34a45200a025df7d59c062201a251102b80c046b1cca031b61ee8adde802a0aa735e353060bb19a9a318956b0c4c8021c";

    [Theory]
    [InlineData("", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")]
    [InlineData("abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")]
    [InlineData("Transfer(address,address,uint256)", "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")]
    public void Keccak256_KnownInputs_MatchVectors(string input, string expected) =>
        Assert.Equal(expected, Convert.ToHexStringLower(Ethereum.Keccak256(Encoding.UTF8.GetBytes(input))));

    [Fact]
    public void Keccak256_IsNotFipsSha3() =>
        // sha3_256("") = a7ffc6f8…; Keccak's padding byte differs, so must every output.
        Assert.NotEqual("a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a", Convert.ToHexStringLower(Ethereum.Keccak256([])));

    [Fact]
    public void TransferTopic_IsKeccakOfTheEventSignature() =>
        Assert.Equal(Ethereum.TransferTopic, "0x" + Convert.ToHexStringLower(Ethereum.Keccak256(Encoding.ASCII.GetBytes("Transfer(address,address,uint256)"))));

    [Theory]
    [InlineData("hello", "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750")]
    [InlineData("", "5f35dce98ba4fba25530a026ed80b2cecdaa31091ba4958b99b52ea1d068adad")]
    [InlineData(SiweWithStatement, "f4a6582145909efda68e2e8596a8b747191d1c1ddd774c25c134f7c01c2a8a1d")]
    [InlineData(SiweWithoutStatement, "dfaebfab9b4a74946814831a6c0b146997306807fa3f225f2e529774c27cc17d")]
    public void PersonalMessageHash_MatchesVectors(string message, string expected) =>
        Assert.Equal(expected, Convert.ToHexStringLower(Ethereum.PersonalMessageHash(message)));

    [Theory]
    [InlineData("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    [InlineData("0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")]
    [InlineData("0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")]
    public void ToChecksumAddress_MatchesEip55(string lower, string expected) => Assert.Equal(expected, Ethereum.ToChecksumAddress(lower));

    [Fact]
    public void RecoverAddress_HelloSignature_RecoversHardhatAccount0()
    {
        var sig = Convert.FromHexString("f16ea9a3478698f695fd1401bfe27e9e4a7e8e3da94aa72b021125e31fa899cc573c48ea3fe1d4ab61a9db10c19032026e3ed2dbccba5a178235ac27f94504311c");
        Assert.Equal(HardhatAddress0.ToLowerInvariant(), Ethereum.RecoverAddress(Ethereum.PersonalMessageHash("hello"), sig));
    }

    [Fact]
    public void TestWallet_SignsLikeEthers() =>
        // RFC 6979 is deterministic, so our test signer must reproduce the ethers/noble signature byte for byte.
        Assert.Equal("0xf16ea9a3478698f695fd1401bfe27e9e4a7e8e3da94aa72b021125e31fa899cc573c48ea3fe1d4ab61a9db10c19032026e3ed2dbccba5a178235ac27f94504311c",
            new TestWallet(HardhatKey0).PersonalSign("hello"));

    [Fact]
    public void TestWallet_AddressOfHardhatKey0() => Assert.Equal(HardhatAddress0, new TestWallet(HardhatKey0).ChecksumAddress);

    [Fact]
    public void RecoverAddress_TrailingNewlineAdded_RecoversADifferentAddress()
    {
        var sig = Convert.FromHexString(SiweWithStatementSignature[2..]);
        Assert.Equal("0xa4e262633c52852128522c58f6615f75d7fb1b49", Ethereum.RecoverAddress(Ethereum.PersonalMessageHash(SiweWithStatement + "\n"), sig));
    }

    [Fact]
    public void RecoverAddress_HighSOrBadV_IsRejected()
    {
        var hash = Ethereum.PersonalMessageHash(SiweWithStatement);
        var sig = Convert.FromHexString(SiweWithStatementSignature[2..]);
        var badV = (byte[])sig.Clone();
        badV[64] = 29;
        Assert.Null(Ethereum.RecoverAddress(hash, badV));
        // s' = n − s is the malleable twin of the same signature; EIP-2 allows only the low one.
        var n = new System.Numerics.BigInteger(Convert.FromHexString("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"), isUnsigned: true, isBigEndian: true);
        var s = new System.Numerics.BigInteger(sig.AsSpan(32, 32), isUnsigned: true, isBigEndian: true);
        var high = (byte[])sig.Clone();
        (n - s).ToByteArray(isUnsigned: true, isBigEndian: true).CopyTo(high, 32);
        high[64] = 27;
        Assert.Null(Ethereum.RecoverAddress(hash, high));
    }

    [Fact]
    public void SiweVerifier_ReferenceVector_ValidBeforeExpiry()
    {
        var check = SiweVerifier.Check(SiweWithStatement, SiweWithStatementSignature, "gateway.example.com", "https://gateway.example.com/login", 8453,
            DateTimeOffset.Parse("2025-01-01T00:05:00Z"));
        Assert.True(check.Valid, check.Detail);
        Assert.Equal(HardhatAddress0, check.Message!.Address);
        Assert.Equal("Qm9vYmFyYmF6MTIz", check.Message.Nonce);
        Assert.Equal("Sign in to Example Gateway to top up credits.", check.Message.Statement);
    }

    [Fact]
    public void SiweVerifier_NoStatementVector_Valid()
    {
        var check = SiweVerifier.Check(SiweWithoutStatement, SiweWithoutStatementSignature, "gateway.example.com", "https://gateway.example.com/login", 8453,
            DateTimeOffset.Parse("2025-01-01T00:05:00Z"));
        Assert.True(check.Valid, check.Detail);
        Assert.Null(check.Message!.Statement);
    }

    [Theory]
    [InlineData("2025-01-01T00:10:00Z", "gateway.example.com", 8453, "message_expired")]
    [InlineData("2025-01-01T01:00:00Z", "gateway.example.com", 8453, "message_expired")]
    [InlineData("2025-01-01T00:05:00Z", "gateway.example.org", 8453, "domain_mismatch")]
    [InlineData("2025-01-01T00:05:00Z", "gateway.example.com", 84532, "chain_mismatch")]
    [InlineData("2024-12-31T23:58:00Z", "gateway.example.com", 8453, "message_not_yet_valid")]
    public void SiweVerifier_ReferenceVector_RejectedWhenContextDiffers(string now, string domain, long chain, string code) =>
        Assert.Equal(code, SiweVerifier.Check(SiweWithStatement, SiweWithStatementSignature, domain, "https://gateway.example.com/login", chain,
            DateTimeOffset.Parse(now)).Code);

    [Fact]
    public void SiweVerifier_ChangedByte_SignatureFails()
    {
        var tampered = SiweWithStatement.Replace("top up credits", "top up credit$");
        Assert.Equal("invalid_signature", SiweVerifier.Check(tampered, SiweWithStatementSignature, "gateway.example.com", "https://gateway.example.com/login", 8453,
            DateTimeOffset.Parse("2025-01-01T00:05:00Z")).Code);
    }

    [Theory]
    [InlineData("\n")] // trailing newline
    [InlineData("\nResources:\n- https://x.example\nExtra")] // a line after the resources
    public void SiweMessage_TrailingContent_Rejected(string suffix) =>
        Assert.False(SiweMessage.TryParse(SiweWithStatement + suffix, out _, out _));

    [Fact]
    public void SiweMessage_Crlf_Rejected() => Assert.False(SiweMessage.TryParse(SiweWithStatement.Replace("\n", "\r\n"), out _, out _));

    [Fact]
    public void SiweMessage_UnchecksummedAddress_Rejected() =>
        Assert.False(SiweMessage.TryParse(SiweWithStatement.Replace(HardhatAddress0, HardhatAddress0.ToLowerInvariant()), out _, out var error) || error.Length == 0);

    [Fact]
    public void SiweMessage_FieldsOutOfOrder_Rejected() =>
        Assert.False(SiweMessage.TryParse(SiweWithStatement.Replace("Version: 1\nChain ID: 8453", "Chain ID: 8453\nVersion: 1"), out _, out _));

    [Fact]
    public void SiweMessage_RoundTrips()
    {
        Assert.True(SiweMessage.TryParse(SiweWithStatement, out var m, out _));
        Assert.Equal(SiweWithStatement, m!.ToString());
        Assert.True(SiweMessage.TryParse(SiweWithoutStatement, out var m2, out _));
        Assert.Equal(SiweWithoutStatement, m2!.ToString());
    }

    [Fact]
    public void TransferLogVector_DecodesTo12Point5Usdc()
    {
        Assert.Equal("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", Ethereum.AddressFromTopic("0x000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb92266"));
        Assert.Equal("0x70997970c51812dc3a010c7d01b50e0d17dc79c8", Ethereum.AddressFromTopic("0x00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"));
        Assert.Null(Ethereum.AddressFromTopic("0x010000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb92266"));
        Assert.Equal(12_500_000, (long)Ethereum.ParseUint256("0x0000000000000000000000000000000000000000000000000000000000bebc20")!.Value);
        Assert.Equal(24_000_000L - 23_999_984 + 1, Ethereum.ParseQuantity("0x16e3600") - Ethereum.ParseQuantity("0x16e35f0") + 1);
        Assert.Equal(17, Ethereum.ParseQuantity("0x16e3600") - Ethereum.ParseQuantity("0x16e35f0") + 1);
    }
}
