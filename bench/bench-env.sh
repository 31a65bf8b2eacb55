# Sourced by the bench/run-*.sh scripts: prints the machine and starts the durable PostgreSQL cluster
# (fsync, synchronous_commit and full_page_writes on) on its own port; sets $pg to its connection string and
# stops the cluster on exit. Environment: PGPORT (default 54330), PGROOT (default /tmp/tollgate-pg-bench).
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
