// Open-loop load for bench/soak.sh: fires requests at a fixed rate (whatever the answers' latency) with a mix of
// non-streaming and streaming gateway calls, credit top-ups (some replayed with the same idempotency key), usage
// queries and signed Stripe-style webhooks (some replayed), and records every answer's latency per wall-clock minute.
// Prints per-minute p50/p99 per kind and writes the raw summary as JSON to $OUT.
// Environment: TG_URL, ADMIN_KEY, KEYS (comma list), ACCOUNTS (comma list, same order), RATE (req/s), DURATION (s),
//   MIX ("chat=60,stream=20,topup=5,usage=10,webhook=5"), WEBHOOK_SECRET (whsec_…, empty = no webhooks), MODEL,
//   MAX_OUTSTANDING (default 4000: beyond it a tick is skipped and counted as "backlog").
import crypto from 'node:crypto';
import fs from 'node:fs';

const env = process.env;
const url = env.TG_URL;
const adminKey = env.ADMIN_KEY;
const keys = env.KEYS.split(',');
const accounts = env.ACCOUNTS.split(',');
const rate = Number(env.RATE ?? 100);
const duration = Number(env.DURATION ?? 600);
const model = env.MODEL ?? 'fake/bench-model';
const webhookSecret = env.WEBHOOK_SECRET ?? '';
const maxOutstanding = Number(env.MAX_OUTSTANDING ?? 4000);
const mix = Object.fromEntries((env.MIX ?? 'chat=60,stream=20,topup=5,usage=10,webhook=5').split(',').map((p) => {
  const [k, v] = p.split('='); return [k, Number(v)];
}));
if (!webhookSecret) delete mix.webhook;
const kinds = Object.keys(mix);
const totalWeight = kinds.reduce((s, k) => s + mix[k], 0);

const pick = (arr) => arr[Math.floor(Math.random() * arr.length)];
function chooseKind() {
  let r = Math.random() * totalWeight;
  for (const k of kinds) { if ((r -= mix[k]) < 0) return k; }
  return kinds[0];
}

const topups = [];      // [accountIndex, idempotencyKey, amount] already sent, for replays
const events = [];      // bodies of webhook events already sent, for replays
let seq = 0;

async function chat(stream) {
  const i = Math.floor(Math.random() * keys.length);
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${keys[i]}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream, max_tokens: 64, messages: [{ role: 'user', content: `soak ${seq++} hello there` }] }),
  });
  const text = await res.text();
  if (res.status === 200 && stream && !text.includes('data: [DONE]')) return 'incomplete_stream';
  return res.status;
}

async function topup() {
  let a, key, amount;
  if (topups.length > 0 && Math.random() < 0.1) [a, key, amount] = pick(topups);   // replay: same answer, no new money
  else { a = Math.floor(Math.random() * accounts.length); key = `soak-topup-${process.pid}-${seq++}`; amount = 1000 + Math.floor(Math.random() * 9000); topups.push([a, key, amount]); }
  const res = await fetch(`${url}/admin/v1/accounts/${accounts[a]}/credits`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ amount_micros: amount, idempotency_key: key, reason: 'soak top-up' }),
  });
  await res.arrayBuffer();
  return res.status;
}

async function usage() {
  const res = await fetch(`${url}/api/v1/usage?limit=20`, { headers: { authorization: `Bearer ${pick(keys)}` } });
  await res.arrayBuffer();
  return res.status;
}

async function webhook() {
  let body;
  if (events.length > 0 && Math.random() < 0.2) body = pick(events);
  else {
    // An event type Tollgate verifies, records once and otherwise ignores: the signature, parsing and the
    // event-id deduplication are exercised without a real Stripe account.
    body = JSON.stringify({ id: `evt_soak_${process.pid}_${seq++}`, object: 'event', type: 'customer.updated', livemode: false,
      created: Math.floor(Date.now() / 1000), data: { object: { id: `cus_soak_${seq}`, object: 'customer' } } });
    events.push(body);
  }
  const t = Math.floor(Date.now() / 1000);
  const sig = crypto.createHmac('sha256', webhookSecret).update(`${t}.${body}`).digest('hex');
  const res = await fetch(`${url}/webhooks/stripe`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': `t=${t},v1=${sig}` }, body,
  });
  await res.arrayBuffer();
  return res.status;
}

const run = { chat: () => chat(false), stream: () => chat(true), topup, usage, webhook };
const minutes = [];     // minute index -> { kind -> latencies[] }
const statuses = {};    // kind -> { status -> count }
let outstanding = 0, sent = 0, backlog = 0;
const start = performance.now();

function record(kind, minute, ms, status) {
  (minutes[minute] ??= {});
  (minutes[minute][kind] ??= []).push(ms);
  (statuses[kind] ??= {});
  statuses[kind][status] = (statuses[kind][status] ?? 0) + 1;
}

function fire() {
  const kind = chooseKind();
  const t0 = performance.now();
  const minute = Math.floor((t0 - start) / 60000);
  outstanding++; sent++;
  run[kind]().then((status) => record(kind, minute, performance.now() - t0, status),
    (err) => record(kind, minute, performance.now() - t0, `error:${err.cause?.code ?? err.name}`))
    .finally(() => { outstanding--; });
}

const end = start + duration * 1000;
await new Promise((resolve) => {
  const timer = setInterval(() => {
    const now = performance.now();
    if (now >= end) { clearInterval(timer); resolve(); return; }
    const due = Math.floor(((now - start) / 1000) * rate);
    while (sent + backlog < due) {
      if (outstanding >= maxOutstanding) { backlog++; continue; }
      fire();
    }
  }, 5);
});
// Let the calls in flight finish (bounded).
const drainUntil = performance.now() + 30000;
while (outstanding > 0 && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 50));

const pct = (sorted, p) => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))];
const summary = { rate, duration, sent, backlog, unfinished: outstanding, statuses, minutes: [] };
console.log(`\n== latency per minute (ms; open loop at ${rate}/s, mix ${JSON.stringify(mix)})`);
console.log(['minute', ...kinds.map((k) => `${k} n / p50 / p99`)].join(' | '));
minutes.forEach((m, i) => {
  const row = { minute: i };
  const cells = kinds.map((k) => {
    const xs = (m?.[k] ?? []).slice().sort((a, b) => a - b);
    row[k] = { n: xs.length, p50: pct(xs, 50), p99: pct(xs, 99) };
    return `${xs.length} / ${pct(xs, 50).toFixed(1)} / ${pct(xs, 99).toFixed(1)}`;
  });
  summary.minutes.push(row);
  console.log([i, ...cells].join(' | '));
});
console.log(`\n== answers by kind and status: ${JSON.stringify(statuses)}`);
console.log(`sent ${sent}, skipped for client backlog ${backlog}, unfinished at the end ${outstanding}`);
if (env.OUT) fs.writeFileSync(env.OUT, JSON.stringify(summary, null, 1));
