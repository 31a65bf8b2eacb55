#!/usr/bin/env bash
# Usage-ingestion benchmark: starts the durable PostgreSQL cluster of bench/run-ledger.sh (fsync, synchronous_commit
# and full_page_writes on), prints the machine, boots the real app in-process and drives POST /api/v1/usage/events
# over HTTP (bench/Tollgate.Bench --suite usage), prints the results table, and stops the cluster.
#   bench/run-usage.sh                          # PostgreSQL, 16 in flight, batches of 100, 15 s window after 5 s warm-up
#   bench/run-usage.sh --engine all --breakdown # SQLite too; then each stage timed alone
# Extra arguments go to the benchmark (see: dotnet run -c Release --project bench/Tollgate.Bench -- --help).
# Environment: PGPORT (default 54330), PGROOT (default /tmp/tollgate-pg-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGPORT=${PGPORT:-54330}
export PGROOT=${PGROOT:-/tmp/tollgate-pg-bench}

echo "== machine"
echo "cores:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:  $(free -h | awk '/^Mem:/ {print $2}')"
echo "disk:    $(df -h "$(dirname "$PGROOT")" | awk 'NR==2 {print $1 " " $2 " (" $5 " used)"}'), $(findmnt -no FSTYPE,OPTIONS -T "$(dirname "$PGROOT")" 2>/dev/null || echo '?')"
echo "kernel:  $(uname -r)"
echo "dotnet:  $(dotnet --version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"

pg=$(scripts/pg.sh start --durable)
trap 'scripts/pg.sh stop' EXIT
echo

dotnet build -c Release bench/Tollgate.Bench -v q -nologo >/dev/null
TOLLGATE_BENCH_POSTGRES="$pg" dotnet run -c Release --no-build --project bench/Tollgate.Bench -- --suite usage "$@"
