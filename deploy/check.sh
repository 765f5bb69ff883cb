#!/usr/bin/env bash
# Validates the deployment files without deploying anything:
# - Prometheus: both scrape configurations and the alert rules (promtool check), and the alert
#   unit tests (promtool test rules);
# - Kubernetes: every manifest against the Kubernetes API schemas (kubernetes-validate, from PyPI,
#   in var/tools), and the KEDA objects against the Deployments and queues they name;
# - Compose: `docker compose config`, where the Docker client has the compose plugin.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf '\033[1m[check]\033[0m %s\n' "$*" >&2; }

log "promtool: scrape configurations and rules"
promtool check config --syntax-only deploy/prometheus/prometheus.yml >/dev/null
promtool check rules deploy/prometheus/alerts.yml >/dev/null
compose_prometheus=$(mktemp -d)
trap 'rm -rf "$compose_prometheus"' EXIT
cp deploy/compose/prometheus.yml deploy/prometheus/alerts.yml "$compose_prometheus/"
promtool check config "$compose_prometheus/prometheus.yml" >/dev/null
log "promtool: alert unit tests"
(cd deploy/prometheus && promtool test rules alerts.test.yml >/dev/null)

tools="$repo/var/tools"
if ! "$tools/bin/kubernetes-validate" --version 2>/dev/null | grep -q "1.37.0"; then
  log "installing kubernetes-validate 1.37.0 into var/tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
log "Kubernetes manifests against the API schemas"
manifests=(deploy/k8s/namespace.yaml deploy/k8s/config.yaml deploy/k8s/secret.example.yaml
  deploy/k8s/scraper.yaml deploy/k8s/ingest.yaml deploy/k8s/trainer.yaml deploy/k8s/ranker.yaml
  deploy/k8s/bot.yaml)
"$tools/bin/kubernetes-validate" --strict --quiet "${manifests[@]}"
"$tools/bin/python" - deploy/k8s <<'PY'
# KEDA's resources are custom: check what they refer to instead of a schema.
import pathlib, sys, yaml
k8s = pathlib.Path(sys.argv[1])
listed = yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"]
missing = [r for r in listed if not (k8s / r).is_file()]
assert not missing, f"kustomization lists missing files: {missing}"
docs = [d for f in listed for d in yaml.safe_load_all((k8s / f).read_text()) if d]
deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
queues = {"ingest": "oleg.ingest", "ranker": "oleg.recommend"}
for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
    name, spec = scaled["metadata"]["name"], scaled["spec"]
    target = spec["scaleTargetRef"]["name"]
    assert target in deployments, f"ScaledObject {name} scales a missing Deployment {target}"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], f"ScaledObject {name}: replica bounds"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "rabbitmq", f"ScaledObject {name}: trigger {trigger['type']}"
        assert trigger["authenticationRef"]["name"] in auths, f"ScaledObject {name}: unknown authentication"
        meta = trigger["metadata"]
        assert meta["queueName"] == queues[target], f"ScaledObject {name} watches {meta['queueName']}"
        assert meta["mode"] in ("QueueLength", "MessageRate") and float(meta["value"]) > 0
print(f"{len(docs)} Kubernetes objects checked")
PY

if docker compose version >/dev/null 2>&1; then
  log "docker compose config"
  docker compose -f deploy/compose/docker-compose.yml config -q
else
  log "docker compose is not installed here: compose file not validated"
fi
log "deployment files valid"
