#!/usr/bin/env bash
# Soak test: one Tollgate process (published Release build) on PostgreSQL (the durable cluster of bench/bench-env.sh)
# driven at a fixed rate for DURATION seconds by bench/soak/soak-client.mjs with a mix of non-streaming and streaming
# gateway calls (fake OpenAI upstream, bench/gateway/fake-upstream.mjs), credit top-ups (10 % replayed), usage queries
# and signed Stripe-style webhooks (20 % replayed). Afterwards it checks the ledger invariants (GET
# /admin/v1/ledger/audit), that no hold is left and no account overdrew, and reports RSS over time (VmRSS of the
# server sampled every RSS_EVERY seconds) and p50/p99 latency per minute and kind. Not part of the test suite.
#
#   bench/soak.sh                       # 10 minutes at 200 req/s
#   DURATION=120 RATE=150 bench/soak.sh # a short run
#
# Environment: DURATION (s, 600), RATE (req/s, 200), MIX (chat=60,stream=20,topup=5,usage=10,webhook=5),
#   ACCOUNTS (customer accounts, each with a key, 20), RSS_EVERY (s, 5), STREAM_CHUNKS (16) / STREAM_DELAY_MS (20)
#   for the upstream's streams, WORK (/tmp/tollgate-soak), UP_PORT (18380), TG_PORT (18390),
#   PGPORT/PGROOT (bench/bench-env.sh: 54330, /tmp/tollgate-pg-bench), TOLLGATE_DLL (run this build, skip publish).
# Exit status: 0 when the audit is clean, nothing is held, no account is negative and no request failed with 5xx.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-600}; RATE=${RATE:-200}; ACCOUNTS=${ACCOUNTS:-20}; RSS_EVERY=${RSS_EVERY:-5}
MIX=${MIX:-chat=60,stream=20,topup=5,usage=10,webhook=5}
STREAM_CHUNKS=${STREAM_CHUNKS:-16}; STREAM_DELAY_MS=${STREAM_DELAY_MS:-20}
WORK=${WORK:-/tmp/tollgate-soak}
UP_PORT=${UP_PORT:-18380}; TG_PORT=${TG_PORT:-18390}
ADMIN_KEY=tg_admin_soak_0123456789abcdefghijklmnopqrstuvwxyz
WEBHOOK_SECRET=whsec_soak_0123456789abcdef
MODEL=fake/bench-model
TG=http://127.0.0.1:$TG_PORT
mkdir -p "$WORK"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  scripts/pg.sh stop
}
source bench/bench-env.sh
trap cleanup EXIT
say() { echo "== $*"; }
for tool in jq node curl; do command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }; done

TOLLGATE_DLL=${TOLLGATE_DLL:-}
if [ -z "$TOLLGATE_DLL" ]; then
  say "publishing Tollgate (Release) to $WORK/tollgate-bin"
  dotnet publish src/Tollgate -c Release -o "$WORK/tollgate-bin" -v q -nologo >"$WORK/publish.log" 2>&1 \
    || { tail -20 "$WORK/publish.log"; exit 1; }
  TOLLGATE_DLL=$WORK/tollgate-bin/tollgate.dll
fi
wait_http() { for _ in $(seq 1 $(( $2 * 10 ))); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

FAKE_STREAM_CHUNKS=$STREAM_CHUNKS FAKE_STREAM_DELAY_MS=$STREAM_DELAY_MS node bench/gateway/fake-upstream.mjs "$UP_PORT" >"$WORK/fake-upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/" 10 || { echo "fake upstream did not start" >&2; exit 1; }

dbname=tollgate_soak
psql -h "$PGROOT/sock" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA -c "SET client_min_messages = warning" \
  -c "DROP DATABASE IF EXISTS $dbname" -c "CREATE DATABASE $dbname OWNER tollgate" >/dev/null
db="Host=127.0.0.1;Port=$PGPORT;Username=tollgate;Password=tollgate;Database=$dbname;Maximum Pool Size=40"
# Stripe is enabled with a test key whose API calls go nowhere real (ApiBaseUrl is the fake upstream): only signed
# webhooks are exercised.
(cd "$WORK" && exec env \
  TOLLGATE_ADMIN_KEY="$ADMIN_KEY" \
  Logging__LogLevel__Default=Warning \
  Tollgate__Providers__fake__Kind=openai \
  Tollgate__Providers__fake__BaseUrl="http://127.0.0.1:$UP_PORT/v1" \
  Tollgate__Providers__fake__ApiKey=sk-fake \
  "Tollgate__Pricing__Models__${MODEL}__InputMtok=0.15" \
  "Tollgate__Pricing__Models__${MODEL}__OutputMtok=0.60" \
  Tollgate__Stripe__SecretKey=sk_test_soak_not_a_real_key \
  Tollgate__Stripe__ApiBaseUrl="http://127.0.0.1:$UP_PORT" \
  Tollgate__Stripe__WebhookSecrets__0="$WEBHOOK_SECRET" \
  dotnet "$TOLLGATE_DLL" serve --database "$db" --urls "$TG") >"$WORK/tollgate.log" 2>&1 &
TG_PID=$!; PIDS+=("$TG_PID")
wait_http "$TG/health" 90 || { echo "Tollgate did not start:" >&2; tail -20 "$WORK/tollgate.log" >&2; exit 1; }

say "setting up $ACCOUNTS accounts with keys"
admin=(-s -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json")
ACCOUNT_IDS=(); KEYS=()
GRANT=100000000   # $100 each: far more than the run spends, so 402s mean a bug
for i in $(seq 1 "$ACCOUNTS"); do
  a=$(curl "${admin[@]}" -X POST "$TG/admin/v1/accounts" -d "{\"name\":\"soak $i\"}" | jq -r .id)
  curl "${admin[@]}" -X POST "$TG/admin/v1/accounts/$a/credits" -d "{\"amount_micros\":$GRANT,\"idempotency_key\":\"soak-seed\",\"reason\":\"soak\"}" >/dev/null
  k=$(curl "${admin[@]}" -X POST "$TG/admin/v1/accounts/$a/keys" -d '{"name":"soak"}' | jq -r .key)
  [ "$a" != null ] && [ "$k" != null ] || { echo "setup failed" >&2; exit 1; }
  ACCOUNT_IDS+=("$a"); KEYS+=("$k")
done
probe=$(curl -s -o /dev/null -w '%{http_code}' "$TG/v1/chat/completions" -H "Authorization: Bearer ${KEYS[0]}" -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"probe\"}]}")
[ "$probe" = 200 ] || { echo "probe call answered $probe" >&2; tail -20 "$WORK/tollgate.log" >&2; exit 1; }

RSS_FILE=$WORK/rss.tsv
: >"$RSS_FILE"
( t0=$(date +%s); while kill -0 "$TG_PID" 2>/dev/null; do
    echo -e "$(( $(date +%s) - t0 ))\t$(awk '/^VmRSS/ {print $2}' /proc/$TG_PID/status)" >>"$RSS_FILE"; sleep "$RSS_EVERY"; done ) &
SAMPLER=$!; PIDS+=("$SAMPLER")

say "soak: $RATE req/s for $DURATION s, mix $MIX, load $(cut -d' ' -f1-3 /proc/loadavg)"
TG_URL=$TG ADMIN_KEY=$ADMIN_KEY KEYS=$(IFS=,; echo "${KEYS[*]}") ACCOUNTS=$(IFS=,; echo "${ACCOUNT_IDS[*]}") \
  RATE=$RATE DURATION=$DURATION MIX=$MIX WEBHOOK_SECRET=$WEBHOOK_SECRET MODEL=$MODEL OUT=$WORK/summary.json \
  node bench/soak/soak-client.mjs
kill "$SAMPLER" 2>/dev/null

say "RSS of the server (VmRSS, MB) per minute: min / max"
awk -v every="$RSS_EVERY" '{ m = int($1 / 60); kb = $2; if (!(m in mn) || kb < mn[m]) mn[m] = kb; if (kb > mx[m]) mx[m] = kb; last = m }
  END { for (i = 0; i <= last; i++) if (i in mn) printf "minute %d: %.0f / %.0f\n", i, mn[i] / 1024, mx[i] / 1024 }' "$RSS_FILE"
echo "samples: $(wc -l <"$RSS_FILE") every ${RSS_EVERY} s; first $(head -1 "$RSS_FILE" | awk '{printf "%.0f", $2/1024}') MB, last $(tail -1 "$RSS_FILE" | awk '{printf "%.0f", $2/1024}') MB"

say "checks"
sleep 2
failed=0
audit=$(curl "${admin[@]}" "$TG/admin/v1/ledger/audit")
violations=$(echo "$audit" | jq '.violations | length')
echo "ledger audit: $violations violation(s) $(echo "$audit" | jq -c 'del(.violations)' | cut -c1-300)"
[ "$violations" = 0 ] || { echo "$audit" | jq .violations | head -40; failed=1; }
held=0; negative=0
for a in "${ACCOUNT_IDS[@]}"; do
  acc=$(curl "${admin[@]}" "$TG/admin/v1/accounts/$a")
  held=$(( held + $(echo "$acc" | jq .held_micros) ))
  [ "$(echo "$acc" | jq .balance_micros)" -lt 0 ] && negative=$(( negative + 1 ))
done
echo "held after the run: $held µ\$ (must be 0); accounts below zero: $negative"
[ "$held" = 0 ] && [ "$negative" = 0 ] || failed=1
errors=$(jq '[.statuses[] | to_entries[] | select((.key | test("^[0-9]+$") | not) or (.key | tonumber) >= 500) | .value] | add // 0' "$WORK/summary.json")
echo "requests that failed (5xx, connection errors, incomplete streams): $errors"
[ "$errors" = 0 ] || failed=1
echo "server log warnings/errors: $(grep -c -E '^(warn|fail|crit)' "$WORK/tollgate.log")"
[ "$failed" = 0 ] && echo "SOAK OK" || echo "SOAK FAILED"
exit "$failed"
