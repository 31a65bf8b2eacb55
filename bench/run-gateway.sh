#!/usr/bin/env bash
# Gateway benchmark, all targets in ONE run on this machine so the comparison is a ratio at one time:
#   direct            wrk -> fake OpenAI upstream (node, bench/gateway/fake-upstream.mjs)
#   portkey           wrk -> Portkey AI gateway 1.15.2 (npm) -> fake upstream
#   tollgate-sqlite   wrk -> Tollgate (published Release build, fresh SQLite file) -> fake upstream
#   tollgate-postgres wrk -> Tollgate (durable PostgreSQL cluster of bench/bench-env.sh, fresh database) -> fake upstream
# Closed loop (wrk keeps each connection busy) at 1 and 32 connections; prints RESULT lines, the tollgate/portkey
# throughput ratio per connection count, and the processes' RSS. Then open loop (bench/Tollgate.Bench --suite
# http-open: a fixed arrival rate, latency from each request's release, whatever the backlog) at RATES requests/s
# against each target, and Tollgate's added latency = its p50/p99 minus the direct upstream's at the same rate.
#
#   bench/run-gateway.sh                 # the throughput comparison above
#   bench/run-gateway.sh stream          # streaming memory check: N concurrent long streams through Tollgate, RSS sampled
#
# Environment: D (seconds per wrk run, default 20), CONNS (default "1 32"), ENGINES (default "sqlite postgres"),
#   WARMUP (seconds of load at 8 connections on each target before it is measured, default 20: the .NET JIT keeps
#   re-compiling hot code with profile data for about that long, and V8 warms up too, so measurements are steady state),
#   RATES (open-loop arrival rates, default "1000"; "" skips the open-loop runs),
#   WORK (default /tmp/tollgate-gateway-bench: Portkey install, published Tollgate, logs, SQLite files),
#   UP_PORT (18080), PK_PORT (18787), TG_PORT (18090), PGPORT/PGROOT (bench/bench-env.sh: 54330, /tmp/tollgate-pg-bench),
#   TOLLGATE_DLL (skip the publish step and run this build instead).
#   Stream mode: STREAMS (default 200), STREAM_CHUNKS (default 600), STREAM_DELAY_MS (default 50): each stream
#   lasts about STREAM_CHUNKS x STREAM_DELAY_MS ms (30 s by default); ENGINES defaults to "sqlite" there.
# Needs node >= 18 and npm (Portkey), wrk (installed with apt-get when missing), the .NET SDK.
# Tollgate gets its provider and price through environment variables (see docs/BENCHMARKS.md, "Gateway").
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-http}
HERE=$ROOT/bench/gateway
D=${D:-20}; WARMUP=${WARMUP:-20}; CONNS=${CONNS:-"1 32"}; RATES=${RATES-1000}
WORK=${WORK:-/tmp/tollgate-gateway-bench}
UP_PORT=${UP_PORT:-18080}; PK_PORT=${PK_PORT:-18787}; TG_PORT=${TG_PORT:-18090}
if [ "$MODE" = stream ]; then ENGINES=${ENGINES:-sqlite}; else ENGINES=${ENGINES:-"sqlite postgres"}; fi
STREAMS=${STREAMS:-200}; STREAM_CHUNKS=${STREAM_CHUNKS:-600}; STREAM_DELAY_MS=${STREAM_DELAY_MS:-50}
ADMIN_KEY=tg_admin_bench_0123456789abcdefghijklmnopqrstuvwxyz
MODEL=fake/bench-model
mkdir -p "$WORK"

PIDS=()
PG_STARTED=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$PG_STARTED" ] && scripts/pg.sh stop
}
trap cleanup EXIT

say() { echo "== $*"; }

# --- machine + PostgreSQL (bench-env.sh prints the machine, starts the durable cluster and sets $pg)
if [[ " $ENGINES " == *" postgres "* ]]; then
  source bench/bench-env.sh
  PG_STARTED=1
  trap cleanup EXIT   # bench-env.sh set its own trap; ours stops the cluster too
else
  say machine
  echo "cores: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# --- tools
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v wrk >/dev/null; then
  say "installing wrk (apt-get)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null; }
fi
command -v wrk >/dev/null || { echo "wrk is required" >&2; exit 1; }
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq jq >/dev/null 2>&1
command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }
PORTKEY=$WORK/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
if [ ! -f "$PORTKEY" ]; then
  say "installing @portkey-ai/gateway@1.15.2 into $WORK/portkey"
  mkdir -p "$WORK/portkey" && (cd "$WORK/portkey" && npm init -y >/dev/null && npm install --no-audit --no-fund @portkey-ai/gateway@1.15.2 >/dev/null 2>&1)
fi
[ -f "$PORTKEY" ] || { echo "Portkey install failed (see npm output in $WORK/portkey)" >&2; exit 1; }

TOLLGATE_DLL=${TOLLGATE_DLL:-}
if [ -z "$TOLLGATE_DLL" ]; then
  say "publishing Tollgate (Release) to $WORK/tollgate-bin"
  dotnet publish src/Tollgate -c Release -o "$WORK/tollgate-bin" -v q -nologo >"$WORK/publish.log" 2>&1 \
    || { tail -20 "$WORK/publish.log"; exit 1; }
  TOLLGATE_DLL=$WORK/tollgate-bin/tollgate.dll
fi

wait_http() {   # url, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  return 1
}
rss() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' '; }

# --- fake upstream
if [ "$MODE" = stream ]; then
  FAKE_STREAM_CHUNKS=$STREAM_CHUNKS FAKE_STREAM_DELAY_MS=$STREAM_DELAY_MS node "$HERE/fake-upstream.mjs" "$UP_PORT" >"$WORK/fake-upstream.log" 2>&1 &
else
  node "$HERE/fake-upstream.mjs" "$UP_PORT" >"$WORK/fake-upstream.log" 2>&1 &
fi
UP_PID=$!; PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/" 10 || { echo "fake upstream did not start" >&2; cat "$WORK/fake-upstream.log"; exit 1; }

# --- Tollgate: start on a fresh database, configure provider + price by environment, create account/credits/key
TG_PID=""; TG_KEY=""
start_tollgate() {   # engine
  local engine=$1 db
  if [ "$engine" = sqlite ]; then
    db=$WORK/tollgate-bench-$$.db; rm -f "$db" "$db-wal" "$db-shm"
  else
    local dbname=tollgate_gateway_bench
    psql -h "$PGROOT/sock" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA -c "SET client_min_messages = warning" \
      -c "DROP DATABASE IF EXISTS $dbname" -c "CREATE DATABASE $dbname OWNER tollgate" >/dev/null
    db="Host=127.0.0.1;Port=$PGPORT;Username=tollgate;Password=tollgate;Database=$dbname"
  fi
  # Configuration keys contain the model id "fake/bench-model": Linux environment variable names may contain '/',
  # bash cannot export them, but env(1) can pass them, and .NET maps "__" to ":".
  (cd "$WORK" && exec env \
    TOLLGATE_ADMIN_KEY="$ADMIN_KEY" \
    Logging__LogLevel__Default=Warning \
    Tollgate__Providers__fake__Kind=openai \
    Tollgate__Providers__fake__BaseUrl="http://127.0.0.1:$UP_PORT/v1" \
    Tollgate__Providers__fake__ApiKey=sk-fake \
    "Tollgate__Pricing__Models__${MODEL}__InputMtok=0.15" \
    "Tollgate__Pricing__Models__${MODEL}__OutputMtok=0.60" \
    dotnet "$TOLLGATE_DLL" serve --database "$db" --urls "http://127.0.0.1:$TG_PORT") \
    >"$WORK/tollgate-$engine.log" 2>&1 &
  TG_PID=$!; PIDS+=("$TG_PID")
  if ! wait_http "http://127.0.0.1:$TG_PORT/health" 60; then
    echo "Tollgate ($engine) did not start:" >&2; tail -20 "$WORK/tollgate-$engine.log" >&2; return 1
  fi
  local admin=(-s -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json")
  local account key priced
  account=$(curl "${admin[@]}" -X POST "http://127.0.0.1:$TG_PORT/admin/v1/accounts" -d '{"name":"bench"}' | jq -r .id)
  [ -n "$account" ] && [ "$account" != null ] || { echo "account creation failed" >&2; return 1; }
  curl "${admin[@]}" -X POST "http://127.0.0.1:$TG_PORT/admin/v1/accounts/$account/credits" \
    -d "{\"amount_micros\":1000000000000,\"idempotency_key\":\"bench-grant-$$\",\"reason\":\"benchmark\"}" | jq -e .balance_micros >/dev/null \
    || { echo "credit grant failed" >&2; return 1; }
  TG_KEY=$(curl "${admin[@]}" -X POST "http://127.0.0.1:$TG_PORT/admin/v1/accounts/$account/keys" -d '{"name":"bench"}' | jq -r .key)
  [ -n "$TG_KEY" ] && [ "$TG_KEY" != null ] || { echo "key creation failed" >&2; return 1; }
  # The price set through the environment must be visible in the public catalog (proves the '/' key reached the options).
  priced=$(curl -s "http://127.0.0.1:$TG_PORT/api/v1/pricing?provider=fake" | jq -r --arg m "$MODEL" '[.models[] | select(.id == $m or .key == $m)] | length')
  echo "tollgate-$engine: up (pid $TG_PID, $(rss "$TG_PID") kB), account $account, key ${TG_KEY:0:12}…, $MODEL priced: $([ "${priced:-0}" -ge 1 ] && echo yes || echo NO)"
}
stop_tollgate() {
  [ -n "$TG_PID" ] && kill "$TG_PID" 2>/dev/null && wait "$TG_PID" 2>/dev/null
  TG_PID=""
}
# The gateway route answers 200 with a completion when it exists; until then this reports what it returns.
tollgate_chat_status() {
  curl -s -o "$WORK/probe.json" -w '%{http_code}' -X POST "http://127.0.0.1:$TG_PORT/v1/chat/completions" \
    -H "Authorization: Bearer $TG_KEY" -H "Content-Type: application/json" \
    -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"max_tokens\":16}"
}

# --- Portkey (binds every interface by default; the preload keeps it on 127.0.0.1)
NODE_ENV=production node --import "$HERE/bind-localhost.mjs" "$PORTKEY" --port="$PK_PORT" --headless >"$WORK/portkey.log" 2>&1 &
PK_PID=$!; PIDS+=("$PK_PID")
wait_http "http://127.0.0.1:$PK_PORT/" 20 || { echo "Portkey did not start" >&2; tail "$WORK/portkey.log"; exit 1; }
PKH=(-H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1")

# =====================================================================================================================
# Streaming memory check: STREAMS concurrent streams of STREAM_CHUNKS chunks, RSS of the process in the middle sampled
# every second (idle before, peak during, after).
measure_streams() {   # target url pid model key [extra curl-style headers for portkey]
  local target=$1 url=$2 pid=$3 model=$4 key=$5 idle peak after r cl
  idle=$(rss "$pid"); peak=$idle
  STREAM_HEADERS=${6:-} node "$HERE/stream-client.mjs" "$url" "$STREAMS" "$model" "$key" >"$WORK/stream-result.txt" &
  cl=$!
  local samples=()
  while kill -0 "$cl" 2>/dev/null; do
    r=$(rss "$pid"); [ -n "$r" ] && { samples+=("$r"); [ "$r" -gt "$peak" ] && peak=$r; }
    sleep 1
  done
  wait "$cl"
  after=$(rss "$pid")
  sed "s/^RESULT/RESULT mode=stream target=$target/" "$WORK/stream-result.txt"
  echo "RESULT mode=stream target=$target rss_idle_kb=$idle rss_peak_kb=$peak rss_after_kb=$after per_stream_kb=$(( (peak - idle) / STREAMS )) samples_kb=\"${samples[*]}\""
}

if [ "$MODE" = stream ]; then
  say "$STREAMS concurrent streams x $STREAM_CHUNKS chunks x $STREAM_DELAY_MS ms"
  measure_streams direct "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$UP_PID" gpt-4o-mini sk-fake-test-key
  measure_streams portkey "http://127.0.0.1:$PK_PORT/v1/chat/completions" "$PK_PID" gpt-4o-mini sk-fake-test-key \
    "x-portkey-provider: openai|x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1"
  for engine in $ENGINES; do
    start_tollgate "$engine" || exit 1
    status=$(tollgate_chat_status)
    if [ "$status" != 200 ]; then
      echo "RESULT mode=stream target=tollgate-$engine skipped: POST /v1/chat/completions -> $status ($(head -c 200 "$WORK/probe.json")) — gateway not present yet"
      stop_tollgate; continue
    fi
    measure_streams "tollgate-$engine" "http://127.0.0.1:$TG_PORT/v1/chat/completions" "$TG_PID" "$MODEL" "$TG_KEY"
    stop_tollgate
  done
  exit 0
fi

OPEN_DLL=$ROOT/bench/Tollgate.Bench/bin/Release/net10.0/Tollgate.Bench.dll
if [ -n "$RATES" ]; then
  say "building the open-loop client (bench/Tollgate.Bench)"
  dotnet build bench/Tollgate.Bench -c Release -v q -nologo >"$WORK/bench-build.log" 2>&1 || { tail -20 "$WORK/bench-build.log"; exit 1; }
fi

declare -A RPS
declare -A P50 P99
run_open() {   # target rate url [--header 'Name: value' ...] [--body JSON]
  local target=$1 rate=$2 url=$3; shift 3
  local r
  r=$(dotnet "$OPEN_DLL" --suite http-open --url "$url" --rate "$rate" --seconds "$D" --warmup 3 "$@" | grep RESULT)
  echo "RESULT mode=open target=$target ${r#RESULT }"
  P50[$target/$rate]=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$r")
  P99[$target/$rate]=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$r")
}
added() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "") printf "%.3f", a - b; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
run_wrk() {   # target conns url script [headers...]
  local target=$1 c=$2 url=$3 script=$4; shift 4
  local t=$(( c < 2 ? 1 : 2 ))
  local r
  r=$(wrk -t$t -c$c -d${D}s --timeout 10s -s "$script" "$@" "$url" | grep RESULT)
  echo "RESULT target=$target conns=$c ${r#RESULT }"
  RPS[$target/$c]=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$r")
}

say "warm-up"
wrk -t1 -c8 -d${WARMUP}s -s "$HERE/chat.lua" "http://127.0.0.1:$UP_PORT/v1/chat/completions" >/dev/null
wrk -t1 -c8 -d${WARMUP}s -s "$HERE/chat.lua" "${PKH[@]}" "http://127.0.0.1:$PK_PORT/v1/chat/completions" >/dev/null
say "direct and portkey (${D}s per run)"
for c in $CONNS; do
  run_wrk direct "$c" "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$HERE/chat.lua"
  run_wrk portkey "$c" "http://127.0.0.1:$PK_PORT/v1/chat/completions" "$HERE/chat.lua" "${PKH[@]}"
  echo "RESULT ratio target=portkey/direct conns=$c rps_ratio=$(ratio "${RPS[portkey/$c]:-0}" "${RPS[direct/$c]:-0}")"
done
for rate in $RATES; do
  run_open direct "$rate" "http://127.0.0.1:$UP_PORT/v1/chat/completions" --header "Authorization: Bearer sk-fake-test-key"
  run_open portkey "$rate" "http://127.0.0.1:$PK_PORT/v1/chat/completions" --header "Authorization: Bearer sk-fake-test-key" \
    --header "x-portkey-provider: openai" --header "x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1"
done
echo "portkey RSS(kB): $(rss "$PK_PID")"

for engine in $ENGINES; do
  say "tollgate-$engine"
  start_tollgate "$engine" || { echo "RESULT target=tollgate-$engine failed: could not start or set up (log: $WORK/tollgate-$engine.log)"; continue; }
  status=$(tollgate_chat_status)
  if [ "$status" != 200 ]; then
    echo "RESULT target=tollgate-$engine skipped: POST /v1/chat/completions -> $status ($(head -c 200 "$WORK/probe.json")) — gateway not present yet"
    stop_tollgate; continue
  fi
  export TOLLGATE_KEY=$TG_KEY
  wrk -t1 -c8 -d${WARMUP}s -s "$HERE/chat-tollgate.lua" "http://127.0.0.1:$TG_PORT/v1/chat/completions" >/dev/null
  for c in $CONNS; do
    run_wrk "tollgate-$engine" "$c" "http://127.0.0.1:$TG_PORT/v1/chat/completions" "$HERE/chat-tollgate.lua"
    echo "RESULT ratio target=tollgate-$engine/portkey conns=$c rps_ratio=$(ratio "${RPS[tollgate-$engine/$c]:-0}" "${RPS[portkey/$c]:-0}")"
  done
  for rate in $RATES; do
    run_open "tollgate-$engine" "$rate" "http://127.0.0.1:$TG_PORT/v1/chat/completions" --header "Authorization: Bearer $TG_KEY" \
      --body "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello in one short sentence.\"}],\"max_tokens\":16}"
    echo "RESULT added target=tollgate-$engine rate=$rate added_p50_ms=$(added "${P50[tollgate-$engine/$rate]:-}" "${P50[direct/$rate]:-}") added_p99_ms=$(added "${P99[tollgate-$engine/$rate]:-}" "${P99[direct/$rate]:-}")"
  done
  echo "tollgate-$engine RSS(kB): $(rss "$TG_PID")"
  # The ledger's own view of the whole run: batches, commands per batch, time per batch, and (PostgreSQL) how many
  # batches committed from the writer's cached state in one round trip.
  curl -s -H "Authorization: Bearer $ADMIN_KEY" "http://127.0.0.1:$TG_PORT/metrics" | awk -v t="tollgate-$engine" '
    /^tollgate_ledger_batch_commands_sum / { cmds = $2 } /^tollgate_ledger_batch_commands_count / { batches = $2 }
    /^tollgate_ledger_commit_seconds_sum / { secs = $2 } /^tollgate_ledger_speculated_batches_total / { spec = $2 }
    /^tollgate_ledger_speculation_stale_total / { stale = $2 }
    END { if (batches > 0) printf "LEDGER target=%s batches=%d commands_per_batch=%.1f ms_per_batch=%.3f speculated=%d stale=%d\n", t, batches, cmds / batches, 1000 * secs / batches, spec, stale }'
  stop_tollgate
done
