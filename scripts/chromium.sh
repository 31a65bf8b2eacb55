#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium for the browser and PDF tests, installing Debian's chromium package
# (and chromedriver) if it is missing. Exits non-zero if it cannot; the tests then fail and say so (they never skip).
set -euo pipefail
find_chromium() { command -v chromium || command -v chromium-browser || true; }
path=$(find_chromium)
if [ -z "$path" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "Installing chromium from apt (browser and PDF tests)..." >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >&2
  path=$(find_chromium)
fi
[ -n "$path" ] || { echo "chromium could not be installed" >&2; exit 1; }
echo "$path"
