// Compiles TestUsdc.sol with the npm solc package (pinned: npm install solc@0.8.28 in a scratch folder, then
// `NODE_PATH=<scratch>/node_modules node compile.js`). Prints the creation bytecode as hex; the tests ship it as a constant.
const fs = require('fs');
const path = require('path');
const solc = require('solc');
const input = {
  language: 'Solidity',
  sources: { 'TestUsdc.sol': { content: fs.readFileSync(path.join(__dirname, 'TestUsdc.sol'), 'utf8') } },
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: 'shanghai', outputSelection: { '*': { '*': ['evm.bytecode.object'] } } },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) if (e.severity === 'error') { console.error(e.formattedMessage); process.exit(1); }
console.log(solc.version());
console.log(out.contracts['TestUsdc.sol'].TestUsdc.evm.bytecode.object);
