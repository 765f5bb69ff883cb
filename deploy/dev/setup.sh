#!/usr/bin/env bash
# Installs and starts, where missing, what OLEG needs on a Debian machine with Rust:
# RabbitMQ (with its Prometheus plugin), the Mongo-wire server nx-27017 in a venv, a CPU-only
# libtorch 2.13.0 at a fixed absolute path, and Prometheus (for promtool). Running it again
# changes nothing. Given AMQP_URI or MONGODB_URI, it starts nothing for that service.
#
# It writes var/dev.env, which the other scripts source: AMQP_URI, MONGODB_URI, LIBTORCH,
# LD_LIBRARY_PATH, OLEG_NX_27017.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
var="$repo/var"
mkdir -p "$var"

LIBTORCH_VERSION=2.13.0
LIBTORCH_DIR=${OLEG_LIBTORCH_DIR:-/opt/oleg/libtorch-$LIBTORCH_VERSION}
NX_27017_VERSION=0.8.1
MONGO_PORT=${OLEG_DEV_MONGO_PORT:-27017}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then as_root apt-get update -q >/dev/null; apt_updated=1; fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do listening "$port" && return 0; sleep 0.5; done
  log "$what did not start listening on port $port"; return 1
}

# Debian packages: the broker, Prometheus (promtool), a venv-capable Python, a C compiler.
apt_install ca-certificates curl python3 python3-venv python3-pip gcc g++ prometheus
if [ -z "${AMQP_URI:-}" ]; then apt_install rabbitmq-server; fi

# RabbitMQ
if [ -z "${AMQP_URI:-}" ]; then
  if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
  fi
  as_root rabbitmqctl -q await_startup --timeout 120 >/dev/null
  # Queue figures for Prometheus and Grafana; enabling twice is a no-op.
  as_root rabbitmq-plugins -q enable rabbitmq_prometheus >/dev/null
  # The dead-letter queues' bound (docs/OPERATIONS.md); setting it again changes nothing.
  as_root rabbitmqctl -q set_policy --apply-to queues oleg-dead-letters '\.dead-letters$' \
    '{"max-length":100000,"overflow":"reject-publish"}' >/dev/null
  AMQP_URI="amqp://guest:guest@127.0.0.1:5672/%2f"
else
  log "using the broker at AMQP_URI"
fi

# The Mongo-wire server (development and CI only; production uses MongoDB 6/7).
venv="$var/venv"
installed=$("$venv/bin/pip" show nx-27017 2>/dev/null || true)
if [ ! -x "$venv/bin/nx-27017" ] || ! grep -qx "Version: $NX_27017_VERSION" <<<"$installed"; then
  log "installing nx-27017 $NX_27017_VERSION into var/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "nx-27017==$NX_27017_VERSION"
fi
if [ -z "${MONGODB_URI:-}" ]; then
  if ! listening "$MONGO_PORT"; then
    log "starting nx-27017 on 127.0.0.1:$MONGO_PORT (data in var/nx-27017)"
    mkdir -p "$var/nx-27017"
    nohup "$venv/bin/nx-27017" --host 127.0.0.1 --port "$MONGO_PORT" --data-dir "$var/nx-27017" \
      --log-file "$var/nx-27017.log" --pid-file "$var/nx-27017.pid" >>"$var/nx-27017.out" 2>&1 &
    wait_for_port "$MONGO_PORT" nx-27017
  fi
  MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
else
  log "using the store at MONGODB_URI"
fi

# libtorch 2.13.0, CPU only, assembled from PyPI's torch wheel (see deploy/libtorch.sh).
if [ ! -f "$LIBTORCH_DIR/.complete" ]; then
  log "assembling libtorch $LIBTORCH_VERSION (CPU) at $LIBTORCH_DIR"
  as_root env PIP="$venv/bin/pip" PYTHON="$venv/bin/python" bash "$repo/deploy/libtorch.sh" "$LIBTORCH_DIR"
fi

cat >"$var/dev.env" <<ENV
# Written by deploy/dev/setup.sh; sourced by the other scripts.
export AMQP_URI='$AMQP_URI'
export MONGODB_URI='$MONGODB_URI'
export LIBTORCH='$LIBTORCH_DIR'
export LD_LIBRARY_PATH='$LIBTORCH_DIR/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OLEG_NX_27017='$venv/bin/nx-27017'
ENV
log "ready: broker, store, libtorch $LIBTORCH_VERSION, promtool (var/dev.env)"
