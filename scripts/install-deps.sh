#!/usr/bin/env bash
# Installs exactly the Debian packages scimrun needs to build, run its tests, lint and bench.
# Safe to run twice: apt-get install is idempotent. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libluajit-5.1-dev libuv1-dev libcurl4-openssl-dev libssl-dev libsqlite3-dev libhttp-parser-dev
  lua-busted lua-cjson lua-check
  clang-format valgrind sqlite3 curl procps openssl tmux mandoc
  wrk nginx-light python3 python3-requests python3-tenacity
  prometheus # promtool: the metrics spec checks the textfile and unit-tests contrib/prometheus/ rules
  postgresql libpq-dev # the PostgreSQL store (libpq) and the throwaway cluster its specs start
  chromium fonts-dejavu-core # spec/browser drives scimrun ui in headless Chromium (puppeteer-core)
)

# The interop suite runs an npm server (scimmy) and the browser spec puppeteer-core. Machines
# here come with Node.js; only a machine without it gets Debian's.
if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
