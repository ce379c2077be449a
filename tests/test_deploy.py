"""deploy/: the Kubernetes manifests hold together, use only KubeRay's documented fields, and keep Ray's
ports private and token-protected. Nothing here talks to a cluster; a wrong name would only show there.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tuneforge.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "kuberay.md"

# KubeRay's RayCluster CRD, ray.io/v1 (https://ray-project.github.io/kuberay/reference/api/).
RAYCLUSTER_SPEC = {
    "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations", "enableInTreeAutoscaling",
    "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs", "authOptions",
}  # fmt: skip
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {
    "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
    "rayStartParams", "template", "scaleStrategy", "numOfHosts",
}  # fmt: skip
# Settings the Ray executor (branch h-ray) adds to settings.py; read by the code once both are merged.
RAY_EXECUTOR_SETTINGS = {"TUNEFORGE_EXECUTOR", "TUNEFORGE_RAY_ADDRESS"}


def _documents() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append({**doc, "_file": path.name})
    return docs


DOCS = _documents()


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"deploy/ holds {len(found)} {kind} {name or ''}"
    return found[0]


def _pods() -> dict[str, dict]:
    """Pod spec of every workload: the Deployment, the StatefulSet, the Ray head and each worker group."""
    pods = {}
    for d in DOCS:
        if d["kind"] in ("Deployment", "StatefulSet"):
            pods[d["metadata"]["name"]] = d["spec"]["template"]
        elif d["kind"] == "RayCluster":
            pods["ray-head"] = d["spec"]["headGroupSpec"]["template"]
            for group in d["spec"]["workerGroupSpecs"]:
                pods[f"ray-{group['groupName']}"] = group["template"]
    return pods


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _containers():
    for pod, template in _pods().items():
        for c in template["spec"]["containers"]:
            yield pod, template, c


def test_every_manifest_parses_and_names_its_object():
    assert {p.name for p in DEPLOY.glob("*.yaml")} >= {"raycluster.yaml", "tuneforge.yaml", "storage.yaml"}
    for d in DOCS:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d["_file"]


def test_raycluster_uses_only_kuberays_documented_fields():
    spec = _one("RayCluster")["spec"]
    assert _one("RayCluster")["apiVersion"] == "ray.io/v1"
    assert set(spec) <= RAYCLUSTER_SPEC, set(spec) - RAYCLUSTER_SPEC
    assert set(spec["headGroupSpec"]) <= HEAD_GROUP, set(spec["headGroupSpec"]) - HEAD_GROUP
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in groups:  # `ray start` flags: the CRD takes strings only
        bad = {k: v for k, v in (group.get("rayStartParams") or {}).items() if not isinstance(v, str)}
        assert not bad, f"rayStartParams values must be strings: {bad}"


def test_ray_ports_stay_inside_the_cluster():
    head = _one("RayCluster")["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")
    assert not [d for d in DOCS if d["kind"] == "Ingress"], "no Ingress: the console's is the user's choice"
    services = [d for d in DOCS if d["kind"] == "Service"]
    public = [d["metadata"]["name"] for d in services if d["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert not public, f"Services on node or public addresses: {public}"
    for pod, _, c in _containers():
        assert not [p for p in c.get("ports", []) if "hostPort" in p], f"{pod} binds a host port"


def test_every_ray_pod_and_the_control_plane_hold_the_same_ray_token():
    refs = set()
    for pod, _, c in _containers():
        if pod == "tuneforge-postgres":
            continue
        env = _env(c)
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{pod}: RAY_AUTH_MODE=token missing"
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{pod}: RAY_AUTH_TOKEN must come from a Secret"
        refs.add((ref["name"], ref["key"]))
    assert len(refs) == 1, f"one token for the whole cluster, got {refs}"


def test_secrets_the_manifests_read_are_the_ones_the_docs_create():
    created = set(re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", DOC.read_text()))
    used = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for _, _, c in _containers()
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert used and used <= created, f"docs/kuberay.md does not create {used - created}"
    assert not [d for d in DOCS if d["kind"] == "Secret"], "no secret material in the repository"


def test_every_pod_but_the_database_mounts_the_shared_home_where_tuneforge_home_says():
    claim = _one("PersistentVolumeClaim", "tuneforge-home")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "all nodes write job folders there"
    claims = {d["metadata"]["name"] for d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    for pod, template, c in _containers():
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{pod}: unknown claim"
        if pod == "tuneforge-postgres":
            continue
        mounts = {
            m["mountPath"]
            for m in c.get("volumeMounts", [])
            if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == "tuneforge-home"
        }
        assert mounts == {_env(c)["TUNEFORGE_HOME"]["value"]}, (
            f"{pod}: TUNEFORGE_HOME is not the shared volume"
        )


def _read_by_code() -> set[str]:
    names = {env_name(field) for field in Settings.model_fields}
    for path in (ROOT / "src" / "tuneforge").rglob("*.py"):
        names |= set(re.findall(r"\bTUNEFORGE_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return names | RAY_EXECUTOR_SETTINGS


def test_tuneforge_variables_are_ones_the_code_reads():
    known = _read_by_code()
    for pod, _, c in _containers():
        unknown = {n for n in _env(c) if n.startswith("TUNEFORGE_")} - known
        assert not unknown, f"{pod} sets {unknown}, which tuneforge never reads"


def test_addresses_point_at_the_services_that_exist():
    env = _env(_one("Deployment", "tuneforge")["spec"]["template"]["spec"]["containers"][0])
    ray = _one("RayCluster")
    head = ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    dashboard = next(p["containerPort"] for p in head["ports"] if p["name"] == "dashboard")
    address = urlsplit(env["TUNEFORGE_RAY_ADDRESS"]["value"])
    assert (address.hostname, address.port) == (f"{ray['metadata']['name']}-head-svc", dashboard)
    db = urlsplit(env["TUNEFORGE_DATABASE_URL"]["value"])
    pg = _one("Service", "tuneforge-postgres")
    assert (db.hostname, db.port) == (pg["metadata"]["name"], pg["spec"]["ports"][0]["port"])
    assert db.password == "$(POSTGRES_PASSWORD)" and "POSTGRES_PASSWORD" in env  # defined before use
    names = list(env)
    assert names.index("POSTGRES_PASSWORD") < names.index("TUNEFORGE_DATABASE_URL")


@pytest.mark.parametrize(
    "service", [d for d in DOCS if d["kind"] == "Service"], ids=lambda d: d["metadata"]["name"]
)
def test_services_select_pods_that_exist(service):
    selector = service["spec"]["selector"].items()
    assert any(selector <= t["metadata"]["labels"].items() for t in _pods().values()), service["metadata"][
        "name"
    ]


def test_the_docs_apply_every_manifest():
    applied = set(re.findall(r"kubectl apply -f deploy/(\S+\.yaml)", DOC.read_text()))
    assert applied == {p.name for p in DEPLOY.glob("*.yaml")}
