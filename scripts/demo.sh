#!/usr/bin/env bash
# The README's main job: installs, builds, and provisions examples/data/users.csv into the
# embedded SCIM sandbox while it misbehaves on purpose (5% 503s, 2% 429s, lost responses and
# a 3-second outage), so retries, the circuit breaker and the summary show in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build
state=$(mktemp -d)/state.db
faults=${SCIMRUN_DEMO_FAULTS:-"503:0.05,429:0.02@retry-after=1,lost:0.01,latency:5ms,outage:3s@after=1s"}
set +e
./build/scimrun examples/onboard.lua --sandbox="$faults" --state "$state" --policy demo "$@"
code=$?
set -e
echo
echo "state file: $state   (try: ./build/scimrun runs list --state $state)"
exit $code
