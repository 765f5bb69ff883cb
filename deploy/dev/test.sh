#!/usr/bin/env bash
# The test command: sets up the local services (deploy/dev/setup.sh), validates the deployment
# files (deploy/check.sh), then runs the format check, clippy with warnings as errors, and every
# test of the workspace against the real services (the end-to-end pipeline test included), then
# the broker-cluster drill (deploy/dev/cluster-drill.sh).
set -euo pipefail
# shellcheck source=deploy/dev/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

echo "== deployment files (promtool, Kubernetes schemas, compose)"
bash deploy/check.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== broker cluster drill: a RabbitMQ node lost under load"
bash deploy/dev/cluster-drill.sh
