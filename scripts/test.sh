#!/usr/bin/env bash
# The README's test command: installs the Debian packages, builds, runs every test (C unit
# tests and the busted suites, each a ctest test). SCIMRUN_SANITIZE=1 does the same in an
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# the npm packages of the interop servers and of the browser spec (puppeteer-core): installed
# when absent, and again when the lockfile changed
for d in spec/interop spec/browser; do
  if [ -f "$d/package-lock.json" ] && { [ ! -f "$d/node_modules/.package-lock.json" ] ||
    [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; }; then
    npm ci --prefix "$d" --no-audit --no-fund --loglevel=error
  fi
done
dir=build
if [ "${SCIMRUN_SANITIZE:-0}" = "1" ]; then
  dir=build-asan
  # LuaJIT keeps its own allocations alive until lua_close; report real leaks only at exit.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
./scripts/build.sh "$dir"
cd "$dir"
ctest --output-on-failure -j 2 "$@"
