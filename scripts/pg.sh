#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL cluster on 127.0.0.1 for tests and benchmarks, installing PostgreSQL from
# Debian's packages if it is missing. Prints the connection string on stdout.
#   scripts/pg.sh start [--durable]   # --durable keeps fsync/synchronous_commit on (benchmarks, crash tests)
#   scripts/pg.sh stop
# Environment: PGPORT (default 54329), PGROOT (default /tmp/tollgate-pg).
set -euo pipefail
cmd=${1:-start}
durable=${2:-}
PGPORT=${PGPORT:-54329}
PGROOT=${PGROOT:-/tmp/tollgate-pg}
PGDATA=$PGROOT/data
PGSOCK=$PGROOT/sock

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

if [ "$cmd" = stop ]; then
  bin=$(pgbin)
  [ -n "$bin" ] && [ -f "$PGDATA/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  exit 0
fi

if [ -z "$(pgbin)" ] || [ ! -x "$(pgbin)/pg_ctl" ]; then
  echo "Installing PostgreSQL from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql postgresql-contrib >&2
fi
PGBIN=$(pgbin)

mkdir -p "$PGDATA" "$PGSOCK"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGROOT" "$PGDATA" "$PGSOCK"; fi
chmod 700 "$PGDATA"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi

if [ "$durable" = "--durable" ]; then
  settings="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
else
  # Test speed only: not crash-safe for the OS, but a killed client process still loses nothing.
  settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
if as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGROOT/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGSOCK -c max_connections=300 $settings" start >/dev/null

P="psql -h $PGSOCK -p $PGPORT -U postgres -v ON_ERROR_STOP=1 -qtA"
as_postgres $P -c "SELECT 1 FROM pg_roles WHERE rolname='tollgate'" | grep -q 1 \
  || as_postgres $P -c "CREATE ROLE tollgate LOGIN CREATEDB PASSWORD 'tollgate'" >/dev/null
as_postgres $P -c "SELECT 1 FROM pg_database WHERE datname='tollgate'" | grep -q 1 \
  || as_postgres $P -c "CREATE DATABASE tollgate OWNER tollgate" >/dev/null
echo "Host=127.0.0.1;Port=$PGPORT;Username=tollgate;Password=tollgate;Database=tollgate"
