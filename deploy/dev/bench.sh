#!/usr/bin/env bash
# Runs every worker's benchmark and the main job, and writes each one's figures, with the command,
# machine and date, into its block of docs/BENCHMARKS.md (between `<!-- bench:NAME -->` and
# `<!-- /bench:NAME -->`; the discussion around the blocks is kept). Takes about 35 minutes, most
# of it the trainer at 10 million votes and the scale run (7 minutes); OLEG_BENCH_ONLY=ranker,scraper
# runs only those.
set -euo pipefail
# shellcheck source=deploy/dev/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cargo build --release --locked --workspace --bins

machine="$(nproc --all) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), \
$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), \
$(. /etc/os-release && echo "$PRETTY_NAME"), RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?')"

wanted() { [ -z "${OLEG_BENCH_ONLY:-}" ] || [[ ",$OLEG_BENCH_ONLY," == *",$1,"* ]]; }

# bench NAME COMMAND...: runs COMMAND and puts its output in the NAME block.
bench() {
  local name=$1; shift
  wanted "$name" || return 0
  printf '\033[1m[bench]\033[0m %s: %s\n' "$name" "$*" >&2
  local out
  out=$(mktemp)
  "$@" | tee "$out"
  python3 - docs/BENCHMARKS.md "$name" "$*" "$machine" "$out" <<'PY'
import datetime, pathlib, sys
doc, name, command, machine, output = sys.argv[1:]
path = pathlib.Path(doc)
text = path.read_text()
start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
if start not in text or end not in text:
    sys.exit(f"{doc} has no {start} … {end} block")
body = pathlib.Path(output).read_text().strip()
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
block = f"{start}\n`{command}` — {stamp}; {machine}.\n\n{body}\n{end}"
before, rest = text.split(start, 1)
path.write_text(before + block + rest.split(end, 1)[1])
PY
  rm -f "$out"
}

bench ingest cargo bench -q --locked -p oleg-ingest --bench throughput
bench trainer-ciao target/release/oleg-trainer eval --votes ../shared/data/ciao/votes.csv --plot docs/ciao-loss.svg
bench trainer-ciao-time target/release/oleg-trainer eval --votes ../shared/data/ciao/votes.csv --split time
bench trainer-step cargo bench -q --locked -p oleg-trainer --bench step
bench trainer-scale cargo bench -q --locked -p oleg-trainer --bench scale
bench trainer-year cargo bench -q --locked -p oleg-trainer --bench scale -- --year
bench ranker cargo bench -q --locked -p oleg-ranker --bench latency
bench scraper cargo bench -q --locked -p oleg-scraper --bench parse
bench bot cargo bench -q --locked -p oleg-bot --bench interactions
bench demo target/release/oleg-demo --no-prometheus
bench demo-generated target/release/oleg-demo --no-prometheus --world generated
bench pipeline-scale target/release/oleg-scale
echo "docs/BENCHMARKS.md updated" >&2
