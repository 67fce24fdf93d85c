#!/usr/bin/env bash
# Configures and builds scimrun. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# SCIMRUN_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
args=(-DSCIMRUN_WERROR=ON)
if [ "${SCIMRUN_SANITIZE:-0}" = "1" ]; then args+=(-DSCIMRUN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug); fi
cmake -S . -B "$dir" "${args[@]}" "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
