// Fake OpenAI upstream for the gateway benchmark: answers POST /v1/chat/completions with a fixed JSON body incl. a
// usage block; with "stream": true in the request it streams SSE chunks instead (role chunk, N content chunks, finish
// chunk, the usage chunk only when stream_options.include_usage is true, then data: [DONE]).
// Binds 127.0.0.1 only. Usage: node fake-upstream.mjs [port]   (default 18080)
// Long streams (streaming memory check): FAKE_STREAM_CHUNKS (default 16) content chunks, FAKE_STREAM_DELAY_MS
// (default 0) between chunks; a request query ?chunks=N&delay_ms=M overrides both (when the gateway forwards it).
// Origin: /work/shared/bench/fake-upstream.mjs; streaming added for Tollgate's bench/run-gateway.sh.
import http from 'node:http';
const port = Number(process.argv[2] ?? 18080);
const defaultChunks = Number(process.env.FAKE_STREAM_CHUNKS ?? 16);
const defaultDelay = Number(process.env.FAKE_STREAM_DELAY_MS ?? 0);
const body = JSON.stringify({
  id: 'chatcmpl-fake0001', object: 'chat.completion', created: 1700000000, model: 'gpt-4o-mini',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello! This is a canned response from the fake upstream.' }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 12, completion_tokens: 13, total_tokens: 25 },
  system_fingerprint: 'fp_fake'
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stream(req, res, parsed, url) {
  const chunks = Number(url.searchParams.get('chunks') ?? defaultChunks);
  const delay = Number(url.searchParams.get('delay_ms') ?? defaultDelay);
  const includeUsage = parsed?.stream_options?.include_usage === true;
  const model = typeof parsed?.model === 'string' ? parsed.model : 'gpt-4o-mini';
  let closed = false;
  res.on('close', () => { closed = true; });
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const frame = (choices, extra) => 'data: ' + JSON.stringify({
    id: 'chatcmpl-fakestream', object: 'chat.completion.chunk', created: 1700000000, model, system_fingerprint: 'fp_fake',
    choices, ...(includeUsage ? { usage: null } : {}), ...extra }) + '\n\n';
  res.write(frame([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
  for (let i = 0; i < chunks && !closed; i++) {
    if (delay > 0) await sleep(delay);
    res.write(frame([{ index: 0, delta: { content: `tok${i} ` }, logprobs: null, finish_reason: null }]));
  }
  if (closed) return;
  res.write(frame([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]));
  if (includeUsage) res.write(frame([], { usage: { prompt_tokens: 12, completion_tokens: chunks, total_tokens: 12 + chunks } }));
  res.end('data: [DONE]\n\n');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = new URL(req.url, 'http://localhost');
    if (req.method === 'POST' && url.pathname.startsWith('/v1/chat/completions')) {
      const raw = Buffer.concat(chunks);
      // Only look inside the body when it can be a streaming request: the closed-loop path stays as cheap as before.
      let parsed = null;
      if (raw.includes('"stream"')) { try { parsed = JSON.parse(raw); } catch { parsed = null; } }
      if (parsed?.stream === true) { stream(req, res, parsed, url); return; }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"not found"}}');
    }
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => console.log(`fake upstream on http://127.0.0.1:${port}`));
