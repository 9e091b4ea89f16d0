#!/usr/bin/env bash
# make canaries: builds qraft-sim once per planted bug and checks that the
# simulator catches every one within a bounded number of seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash tests/sim/canaries.sh "$@"
