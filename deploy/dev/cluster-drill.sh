#!/usr/bin/env bash
# The broker-cluster drill: a three-node RabbitMQ cluster on this machine (from the same Debian
# package as the local broker: three node names, ports 5701-5703 and data folders of their own),
# OLEG's quorum queues on it, the four workers and the bot with simulated people as load; the node
# leading the ingest queue is killed (SIGKILL) 15 % of the way in and started again 10 s later.
# oleg-cluster-drill checks that every vote is stored exactly once, that recommendations resume
# and that no worker restarted, prints the pause and the rates, and ends with a verdict. Every
# node it started is stopped on the way out.
#
#   bash deploy/dev/cluster-drill.sh            # the drill (the test command runs it in CI)
#   bash deploy/dev/cluster-drill.sh leader Q   # the number of the node leading queue Q
#   bash deploy/dev/cluster-drill.sh kill N     # SIGKILL node N
#   bash deploy/dev/cluster-drill.sh start N    # start node N (it rejoins the cluster)
set -euo pipefail
nodes_dir=/tmp/oleg-cluster-drill
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
ctl() { as_root rabbitmqctl -q -n "drill$1@localhost" "${@:2}"; }

start_node() {
  local n=$1 dir="$nodes_dir/n$1"
  as_root env RABBITMQ_NODENAME="drill$n@localhost" RABBITMQ_NODE_PORT=$((5700 + n)) \
    RABBITMQ_DIST_PORT=$((25700 + n)) RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$nodes_dir/enabled_plugins" rabbitmq-server -detached
  # The node registers with epmd a moment after it forks.
  for _ in $(seq 1 120); do ctl "$n" ping >/dev/null 2>&1 && break; sleep 0.5; done
  ctl "$n" await_startup --timeout 120 >/dev/null
}

case "${1:-drill}" in
  leader)
    for n in 1 2 3; do
      if out=$(ctl "$n" list_queues name leader 2>/dev/null); then
        awk -v q="$2" '$1 == q { sub(/^drill/, "", $2); sub(/@.*/, "", $2); print $2 }' <<<"$out"
        exit 0
      fi
    done
    echo "no node answered" >&2; exit 1 ;;
  kill) as_root kill -9 "$(cat "$nodes_dir/n$2/pid")" ;;
  start) start_node "$2" ;;
  drill) ;;
  *) echo "usage: $0 [leader QUEUE | kill N | start N]" >&2; exit 2 ;;
esac
[ "${1:-drill}" = drill ] || exit 0

# shellcheck source=deploy/dev/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
log() { printf '\033[1m[cluster-drill]\033[0m %s\n' "$*" >&2; }
started=$(date +%s)

# Stops every node, keeping their logs in var/cluster-drill/nodes.
stop_nodes() {
  for n in 1 2 3; do
    ctl "$n" stop >/dev/null 2>&1 || true
    if [ -f "$nodes_dir/n$n/pid" ]; then as_root kill -9 "$(cat "$nodes_dir/n$n/pid")" 2>/dev/null || true; fi
    if [ -d "$nodes_dir/n$n/log" ]; then
      mkdir -p "var/cluster-drill/nodes/n$n" && as_root cp -r "$nodes_dir/n$n/log/." "var/cluster-drill/nodes/n$n/"
    fi
  done
  as_root rm -rf "$nodes_dir"
}
trap stop_nodes EXIT
stop_nodes

log "starting three RabbitMQ nodes (ports 5701-5703) and joining them"
mkdir -p "$nodes_dir"
echo '[].' >"$nodes_dir/enabled_plugins"
for n in 1 2 3; do
  mkdir -p "$nodes_dir/n$n"
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' $((5700 + n)) >"$nodes_dir/n$n/rabbitmq.conf"
done
as_root chown -R rabbitmq:rabbitmq "$nodes_dir"
for n in 1 2 3; do start_node "$n"; done
for n in 2 3; do
  ctl "$n" stop_app && ctl "$n" join_cluster drill1@localhost && ctl "$n" start_app
done
ctl 1 cluster_status --formatter json | python3 -c \
  'import json,sys; s=json.load(sys.stdin); n=s["running_nodes"]; assert len(n)==3, n; print("running:", *n)' >&2

log "building the workers and the drill"
cargo build --workspace --bins --locked --quiet

log "the drill: load through the bot, the ingest queue's leader killed and brought back"
OLEG__AMQP__URI="amqp://guest:guest@127.0.0.1:5701/%2f,amqp://guest:guest@127.0.0.1:5702/%2f,amqp://guest:guest@127.0.0.1:5703/%2f" \
OLEG__AMQP__PREFIX=oleg-drill OLEG__MONGO__DATABASE=oleg_drill \
  target/debug/oleg-cluster-drill --control deploy/dev/cluster-drill.sh --people 100 --rounds 30
log "done in $(( $(date +%s) - started )) s"
