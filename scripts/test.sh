#!/usr/bin/env bash
# Runs every test: starts a throwaway PostgreSQL (installing it if needed), runs the test project against
# SQLite and PostgreSQL, stops PostgreSQL, and prints one "N passed, N failed, N skipped" line.
set -uo pipefail
cd "$(dirname "$0")/.."
results=artifacts/test-results
rm -rf "$results" "${TMPDIR:-/tmp}/tollgate-tests"; mkdir -p "$results"

if pg=$(scripts/pg.sh start); then
  export TOLLGATE_TEST_POSTGRES="$pg"
else
  echo "PostgreSQL could not be started; the PostgreSQL tests will fail (they never skip)." >&2
fi
trap 'scripts/pg.sh stop' EXIT
if chromium=$(scripts/chromium.sh); then export TOLLGATE_TEST_CHROMIUM="$chromium"; else echo "Chromium could not be installed; the PDF and browser tests will fail (they never skip)." >&2; fi

# The crypto payment tests run a real local EVM node: ganache, pinned in tests/evm/package-lock.json.
if ! (cd tests/evm && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null); then
  echo "npm ci in tests/evm failed; the EVM tests will fail (they never skip)." >&2
fi

dotnet test tests/Tollgate.Tests/Tollgate.Tests.csproj -c Release --logger trx --results-directory "$results" "$@"
status=$?

p=0; f=0; s=0
while IFS= read -r t; do
  c=$(grep -o '<Counters [^>]*>' "$t") || continue
  g() { sed -E "s/.* $1=\"([0-9]+)\".*/\1/" <<<"$c"; }
  p=$((p + $(g passed))); f=$((f + $(g failed) + $(g error) + $(g timeout) + $(g aborted))); s=$((s + $(g total) - $(g executed)))
done < <(find "$results" -name '*.trx')
echo "$p passed, $f failed, $s skipped"
if [ "$status" -ne 0 ] || [ "$f" -ne 0 ] || [ "$p" -eq 0 ]; then exit 1; fi
