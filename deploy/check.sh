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
  deploy/k8s/bot.yaml deploy/k8s/retention.yaml deploy/k8s/networkpolicy.yaml)
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
# Network policies: everything denied, then only Prometheus to each pod's metrics port and the
# ingress controller to the bot's webhook port.
policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
deny = policies["oleg-deny-ingress"]
assert deny["ingress"] == [] and deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "oleg"}
named_ports = lambda d: {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
workers = [d for d in docs if d["kind"] == "Deployment"]
for d in workers:
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels.get("app.kubernetes.io/part-of") == "oleg", f"{d['metadata']['name']} is outside the policies"
    assert "metrics" in named_ports(d), f"{d['metadata']['name']} has no port named metrics"
for name, spec in policies.items():
    for rule in spec.get("ingress", []):
        ports = {p["port"] for p in rule["ports"]}
        sources = rule["from"]
        assert sources, f"{name} admits everyone"
        if ports == {"metrics"}:
            assert all(s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus" for s in sources), name
        else:
            assert ports == {"webhook"} and spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "bot"}, name
            assert "webhook" in named_ports(next(d for d in workers if d["metadata"]["name"] == "bot"))
print(f"{len(docs)} Kubernetes objects checked")
PY

log "compose: metrics stay on the internal network"
"$tools/bin/python" - deploy/compose/docker-compose.yml <<'PY'
# What `docker compose config` cannot say: who is reachable from where.
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
networks, services = compose["networks"], compose["services"]
assert networks["backend"].get("internal") is True, "the backend network must be internal"
workers = {"scraper", "ingest", "trainer", "ranker", "bot"}
assert workers <= services.keys(), f"missing workers: {workers - services.keys()}"
for name, service in services.items():
    for port in service.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    if name in workers:
        assert "ports" not in service, f"{name} publishes a port"
        assert "backend" in service["networks"], f"{name} is not on the backend network"
        outside = {"egress"} if name in ("scraper", "bot") else set()
        assert set(service["networks"]) == {"backend"} | outside, f"{name}: {service['networks']}"
print(f"{len(services)} compose services checked")
PY

if docker compose version >/dev/null 2>&1; then
  log "docker compose config"
  docker compose -f deploy/compose/docker-compose.yml config -q
else
  log "docker compose is not installed here: compose file not validated"
fi
log "deployment files valid"
