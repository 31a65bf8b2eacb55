// Writes tokenizer test vectors for Tollgate's BpeEncoding from js-tiktoken 1.0.21 (the oracle).
//   npm ci && node generate.mjs [output path]
// Default output: tests/Tollgate.Tests/Gateway/Tokens/tiktoken-vectors.json. Deterministic: same input, same file.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Tiktoken } from "js-tiktoken/lite";
import o200k_base from "js-tiktoken/ranks/o200k_base";
import cl100k_base from "js-tiktoken/ranks/cl100k_base";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? path.join(here, "../../tests/Tollgate.Tests/Gateway/Tokens/tiktoken-vectors.json");
const encodings = { o200k_base: new Tiktoken(o200k_base), cl100k_base: new Tiktoken(cl100k_base) };

// Seeded PRNG (mulberry32) so the file only changes when this script does.
let seed = 0x70c0ffee;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (xs) => xs[Math.floor(random() * xs.length)];
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));

const texts = [];
const add = (t) => { if (!texts.includes(t)) texts.push(t); };

// Hand-written cases: the split regex's alternatives one by one, and the usual suspects.
[
  "", "hello world", "Hello, World!", " hello", "hello ", "  hello  world  ", "\thello\tworld",
  "I'm", "I'M", "you're", "YOU'RE", "we've", "they'll", "he'd", "it's", "It'S", "can't", "don't", "o'clock",
  "'s", "'", "''", "'''", "rock 'n' roll", "Jack's and Jill's", "l'été", "DON'T STOP", "McDonald's",
  "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "camelCaseIdentifier", "PascalCaseName",
  "snake_case_name", "SCREAMING_SNAKE", "HTTPServerError", "XMLHttpRequest", "iPhone", "eBay", "ÉCOLE", "Ǆemal ǅ ǆ",
  "1", "12", "123", "1234", "12345678901234567890", "3.14159", "-42", "1,000,000", "1e10", "0x1F", "v1.2.3",
  "2026-11-21T11:37:10Z", "$19.99", "100%", "+1 (555) 123-4567", "١٢٣٤٥", "０１２３", "Ⅻ", "½ ¾", "²³",
  "\n", "\n\n", "\r\n", "\r\n\r\n", "a\nb", "a\r\nb", "a \nb", "a  \n  b", "a\n\n\nb", " \n \n ", "\t\n\t", "\r", "\r\r\n",
  " ", "  ", "   ", "\t", "\t\t", " \t ", "a  b", "a   b", "a \t b", "x   ", "   x", "\u00a0", "a\u00a0b", "a\u2003\u2003b", "\u3000日本",
  "\v\f", "a\vb\fc", "...", "!!!", "?!", " !!! ", "a!!!\n\n", "a//\n/b", "// comment\n", "http://example.com/a/b?c=d&e=f#g",
  "foo@example.com", "#hashtag", "@mention", "<|endoftext|>", "<|endofprompt|>", "text<|endoftext|>more", "<|fim_prefix|>x<|fim_suffix|>",
  "emoji 😀 test", "😀", "😀😀😀", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇩🇪", "❤️", "😀abc", "abc😀", "a😀b", " 😀", "😀\n", "x😀😀y",
  "日本語のテキスト", "中文文本测试", "한국어 텍스트", "ไทย ภาษา", "Ελληνικά κείμενο", "Русский текст", "עברית", "العربية نص تجريبي",
  "हिन्दी पाठ", "Tiếng Việt có dấu", "Ünïcödé àccénts", "naïve café résumé", "Straße", "ﬁ ligature", "e\u0301", "a\u0301\u0302\u0303b",
  "\u0301", " \u0301x", "x\u0301\u0301", "Ａｂｃ", "𝐀𝐁𝐂 𝐚𝐛𝐜", "𝒳 𝓎", "𠀀𠀁 𪚥", "a𝐀b", "𝐀bc", "ab𝐀", "\u{10000}", "\u{1F600}\u{1F601}",
  "{\"key\": \"value\", \"n\": 42}", "[1, 2, 3]", "function f(x) { return x * 2; }", "def foo(bar):\n    return bar + 1\n",
  "if (a && b || !c) {\n\treturn;\n}", "SELECT * FROM users WHERE id = 1;", "<div class=\"x\">Hi</div>", "a->b", "a=>b", "x != y",
  "    indented", "        deeply indented\n    less\n", "```python\nprint('hi')\n```", "# Title\n\n- item 1\n- item 2\n",
  "C:\\Users\\name\\file.txt", "~/.bashrc", "$HOME/bin:$PATH", "a\\nb", "tab\tseparated\tvalues\n1\t2\t3",
].forEach(add);

// Long runs: the merge loop on long pieces (a letter run is one piece, so is a whitespace or punctuation run).
for (const [unit, n] of [["a", 3000], [" ", 1000], ["\n", 500], ["0", 1000], ["!", 2000], ["ab", 1500], ["é", 800],
  ["日", 600], ["😀", 300], ["\r\n", 300], [" a", 1000], ["- ", 400], ["=", 1500], ["z", 17], ["Ab", 700]]) add(unit.repeat(n));

// Random text from word lists, code-ish tokens and Unicode ranges (assigned, long-standing blocks).
const words = ("the of and to in is you that it he was for on are as with his they I at be this have from or one had by word but " +
  "not what all were we when your can said there use an each which she do how their if will up other about out many then them " +
  "tokenizer gateway credit ledger balance invoice usage prompt completion streaming latency throughput idempotency").split(" ");
const punct = [".", ",", "!", "?", ";", ":", "-", "—", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "/", "\\", "*", "&", "%", "$", "#", "@", "…", "«", "»", "¿", "¡"];
const spaces = [" ", " ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "   ", "\u00a0", "\u2009", "\u3000", "\v", "\f"];
const ranges = [
  [0x21, 0x7e], [0xc0, 0xff], [0x100, 0x17f], [0x180, 0x24f], [0x300, 0x36f], [0x391, 0x3c9], [0x410, 0x44f], [0x5d0, 0x5ea],
  [0x621, 0x64a], [0x660, 0x669], [0x905, 0x939], [0x93e, 0x94d], [0xe01, 0xe3a], [0x1100, 0x1112], [0x2000, 0x200a],
  [0x2010, 0x2027], [0x2070, 0x209c], [0x20a0, 0x20b5], [0x2150, 0x218b], [0x2190, 0x21ff], [0x2460, 0x24ff], [0x3041, 0x3096],
  [0x30a1, 0x30fa], [0x4e00, 0x9fa5], [0xac00, 0xd7a3], [0xff01, 0xff5e], [0x1d400, 0x1d6a5], [0x1f300, 0x1f5ff],
  [0x1f600, 0x1f64f], [0x20000, 0x2a6d6], [0x10400, 0x1044f],
];
// JavaScript's \s differs from tiktoken's (Rust regex, Unicode White_Space) on U+0085 and U+FEFF; leave them out.
const excluded = /[\u0085\ufeff]|\p{Cn}|\p{Cs}|\p{Co}/u;
function randomCodePoint() {
  for (;;) {
    const [lo, hi] = pick(ranges);
    const s = String.fromCodePoint(int(lo, hi));
    if (!excluded.test(s)) return s;
  }
}
function randomWord() {
  const w = pick(words);
  switch (int(0, 6)) {
    case 0: return w[0].toUpperCase() + w.slice(1);
    case 1: return w.toUpperCase();
    case 2: return w + pick(["'s", "'t", "'re", "'ll", "'d", "'m", "'ve", "'S", "'LL"]);
    default: return w;
  }
}
for (let i = 0; i < 120; i++) {   // prose-like
  let s = "";
  for (let n = int(1, 40); n > 0; n--) {
    s += randomWord();
    s += random() < 0.2 ? pick(punct) : "";
    s += random() < 0.1 ? String(int(0, 100000)) : "";
    s += pick(spaces);
  }
  add(random() < 0.5 ? s : s.trimEnd());
}
for (let i = 0; i < 120; i++) {   // random Unicode soup
  let s = "";
  for (let n = int(1, 60); n > 0; n--) s += random() < 0.15 ? pick(spaces) : randomCodePoint();
  add(s);
}
for (let i = 0; i < 40; i++) {    // JSON and code
  const obj = { id: int(0, 1e9), name: randomWord(), tags: [randomWord(), randomWord()], score: int(0, 1e6) / 1000,
    nested: { ok: random() < 0.5, text: Array.from({ length: int(0, 6) }, randomCodePoint).join("") } };
  add(random() < 0.5 ? JSON.stringify(obj) : JSON.stringify(obj, null, int(1, 4)));
  add(`const ${randomWord()}_${i} = (${randomWord()}) => {\n${"  ".repeat(int(1, 3))}return ${randomWord()}[${int(0, 999)}] ?? null;\n};\n`);
}

const vectors = texts.map((text) => ({
  text,
  o200k_base: encodings.o200k_base.encode(text, [], []),
  cl100k_base: encodings.cl100k_base.encode(text, [], []),
}));
// Guard the oracle itself with the published example.
const hello = vectors.find((v) => v.text === "hello world");
if (hello.o200k_base.join() !== "24912,2375" || hello.cl100k_base.join() !== "15339,1917") throw new Error("oracle mismatch on 'hello world'");

writeFileSync(out, JSON.stringify({
  generator: "tools/tiktoken-vectors/generate.mjs",
  oracle: "js-tiktoken 1.0.21 (encode(text, [], []): special tokens as ordinary text)",
  vectors,
}, null, 0).replace(/\},\{"text"/g, '},\n{"text"') + "\n");
console.log(`${vectors.length} vectors, ${vectors.reduce((n, v) => n + v.o200k_base.length, 0)} o200k tokens -> ${out}`);
