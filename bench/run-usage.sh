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
source bench/bench-env.sh
echo

dotnet build -c Release bench/Tollgate.Bench -v q -nologo >/dev/null
TOLLGATE_BENCH_POSTGRES="$pg" dotnet run -c Release --no-build --project bench/Tollgate.Bench -- --suite usage "$@"
