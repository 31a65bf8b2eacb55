// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// A minimal ERC-20 with 6 decimals, standing in for USDC in Tollgate's crypto payment tests.
/// The whole supply is minted to the deployer. Compiled bytecode: tests/Tollgate.Tests/Payments/Crypto/TestUsdcBytecode.cs
/// (solc 0.8.28, optimizer on with 200 runs, evmVersion shanghai; see compile.js).
contract TestUsdc {
    event Transfer(address indexed from, address indexed to, uint256 value);

    string public constant name = "Test USD Coin";
    string public constant symbol = "USDC";
    uint8 public constant decimals = 6;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;

    constructor(uint256 supply) {
        totalSupply = supply;
        balanceOf[msg.sender] = supply;
        emit Transfer(address(0), msg.sender, supply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        require(balanceOf[msg.sender] >= value, "insufficient balance");
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }
}
