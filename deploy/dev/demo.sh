#!/usr/bin/env bash
# The main job: sets up the local services (deploy/dev/setup.sh), builds the workers, then runs
# the whole pipeline on this machine with the saved channel pages and simulated people
# (oleg-demo). Arguments go to oleg-demo, e.g. --people 500 --rounds 20, or --keep to leave
# everything running for Prometheus (http://127.0.0.1:9090) until Ctrl-C.
set -euo pipefail
# shellcheck source=deploy/dev/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
echo "== building the workers (release)"
cargo build --release --locked --workspace --bins
exec target/release/oleg-demo "$@"
