#!/usr/bin/env bash
# make canaries: plants each known bug in turn and checks that a test
# catches it: the simulator for the core's, the node's and the transport's
# (tests/sim/canaries.sh), the power-cut test for qraft-kv's
# (tests/e2e/kv/canaries.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0
bash tests/sim/canaries.sh "$@" || rc=1
bash tests/e2e/kv/canaries.sh || rc=1
exit $rc
