#!/usr/bin/env bash
# Ledger benchmark: starts a durable PostgreSQL cluster (fsync, synchronous_commit and full_page_writes on) on its
# own port, prints the machine, runs bench/Tollgate.Bench in Release on both engines and both shapes (ledger,
# naive baseline, fixed-rate run), prints the results table, and stops the cluster.
#   bench/run-ledger.sh                      # defaults: 10 s window, 3 s warm-up, 256 clients, 20000/s open loop
#   bench/run-ledger.sh --clients 1024 --seconds 30
# Extra arguments go to the benchmark (see: dotnet run -c Release --project bench/Tollgate.Bench -- --help).
# Environment: PGPORT (default 54330), PGROOT (default /tmp/tollgate-pg-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/bench-env.sh
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "postgres: $("$pgbin/postgres" --version)"
# WAL write/sync timing for the per-run breakdown (a few clock reads per flush; durability unchanged).
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_postgres psql -h "$PGROOT/sock" -p "$PGPORT" -U postgres -qtA \
  -c "ALTER SYSTEM SET track_wal_io_timing = on" -c "SELECT pg_reload_conf()" >/dev/null || true
echo

dotnet build -c Release bench/Tollgate.Bench -v q -nologo >/dev/null
TOLLGATE_BENCH_POSTGRES="$pg" dotnet run -c Release --no-build --project bench/Tollgate.Bench -- "$@"
