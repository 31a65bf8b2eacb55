// Opens N concurrent streaming chat completions against a target and waits for all of them; prints one RESULT line.
// Usage: node stream-client.mjs URL N [model] [bearer-key]   (STREAM_HEADERS='name: value|name: value' adds headers)
// A stream counts as complete when it ended with "data: [DONE]"; content chunks are counted by their delta content.
import http from 'node:http';
const [url, nArg, model = 'gpt-4o-mini', key = 'sk-fake-test-key'] = process.argv.slice(2);
const n = Number(nArg ?? 100);
const body = JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 100000 });
const extra = Object.fromEntries((process.env.STREAM_HEADERS ?? '').split('|').filter((h) => h.includes(':'))
  .map((h) => [h.slice(0, h.indexOf(':')).trim(), h.slice(h.indexOf(':') + 1).trim()]));
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const started = Date.now();
let complete = 0, failed = 0, chunks = 0, firstByteMs = [];
function one() {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const req = http.request(url, { method: 'POST', agent, headers: { ...extra, 'content-type': 'application/json', authorization: `Bearer ${key}`, 'content-length': Buffer.byteLength(body) } }, (res) => {
      let tail = '', first = true;
      if (res.statusCode !== 200) { failed++; res.resume(); res.on('end', resolve); return; }
      res.setEncoding('utf8');
      res.on('data', (d) => {
        if (first) { firstByteMs.push(Date.now() - t0); first = false; }
        const text = tail + d;
        const frames = text.split('\n\n');
        tail = frames.pop();
        for (const f of frames) if (f.includes('"content":"tok')) chunks++;
        if (text.includes('data: [DONE]')) tail = '[DONE]';
      });
      res.on('end', () => { if (tail.includes('[DONE]')) complete++; else failed++; resolve(); });
      res.on('error', () => { failed++; resolve(); });
    });
    req.on('error', () => { failed++; resolve(); });
    req.end(body);
  });
}
await Promise.all(Array.from({ length: n }, one));
firstByteMs.sort((a, b) => a - b);
const p50 = firstByteMs.length ? firstByteMs[Math.floor(firstByteMs.length / 2)] : -1;
console.log(`RESULT streams=${n} complete=${complete} failed=${failed} content_chunks=${chunks} first_byte_p50_ms=${p50} wall_s=${((Date.now() - started) / 1000).toFixed(1)}`);
