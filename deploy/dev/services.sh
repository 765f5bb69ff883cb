# Sourced by the dev scripts (test.sh, demo.sh, bench.sh): moves to the repository root, sets up
# the local services (setup.sh) and takes their addresses and libtorch's path from var/dev.env.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
bash deploy/dev/setup.sh
# shellcheck source=/dev/null
source var/dev.env
# One OpenMP thread: on a loaded 2-core machine more threads ran libtorch ten times slower.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
