#!/usr/bin/env bash
# The test command: sets up the local services (deploy/dev/setup.sh), validates the deployment
# files (deploy/check.sh), then runs the format check, clippy with warnings as errors, and every
# test of the workspace against the real services (the end-to-end pipeline test included).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

bash deploy/dev/setup.sh
# shellcheck source=/dev/null
source var/dev.env
# One OpenMP thread: on a loaded 2-core machine more threads ran libtorch ten times slower.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== deployment files (promtool, Kubernetes schemas, compose)"
bash deploy/check.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
