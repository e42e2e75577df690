"""deploy/k8s: every manifest is a schema-valid Kubernetes object (strict: no
unknown field), offline, and the set keeps its promises: 3 replicas with the
runbook's resources, health probes, non-root, exactly the RBAC the kill switch
needs, no secret value committed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # the [test] extra; bundles the schemas (offline)
import pytest
import yaml

from tests.integration.deploy.conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifests() -> list[Path]:
    return [K8S / name for name in _kustomization()["resources"]]


def objects() -> list[dict[str, Any]]:
    out = []
    for path in manifests():
        out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return out


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.name for p in manifests()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert all(p.is_file() for p in manifests())


@pytest.mark.parametrize("obj", objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_manifest_is_schema_valid_offline(obj: dict[str, Any]) -> None:
    # strict: an unknown (misspelt) field is an error, not silently ignored.
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_schema_validation_can_fail() -> None:
    broken = _one("Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    typo = {**_one("Service"), "spec": {**_one("Service")["spec"], "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_deployment_keeps_the_runbook_shape() -> None:
    deployment = _one("Deployment", "cockpit")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "cockpit"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    [container] = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path == "/health" or path.startswith("/health/"), (probe, path)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/command-bus"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    for name in ("COCKPIT_DATABASE_URL", "COCKPIT_NATS_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "cockpit-secrets", name
    # Labels select the pods, the Service and the PDB alike.
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert _one("Service")["spec"]["selector"] == selector
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert _one("Service")["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_settings_in_the_configmap_are_real_settings() -> None:
    from cockpit.settings import Settings

    data = _one("ConfigMap", "cockpit-config")["data"]
    fields = set(Settings.model_fields)
    for key in data:
        if not key.startswith("COCKPIT_"):
            continue
        top = key[len("COCKPIT_"):].split("__", 1)[0].lower()
        assert top in fields, f"{key} is not a Cockpit setting"
    env = {key: value for key, value in data.items() if key.startswith("COCKPIT_")}
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("COCKPIT_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings()  # the ConfigMap's values, read as the pod would
    assert settings.db_pool_size == 20 and settings.db_max_overflow == 10 and settings.db_pool_timeout == 30
    assert settings.gateway.host == "0.0.0.0" and settings.c2l.kubeconfig == "/etc/cockpit/kubeconfig/config"


def test_in_cluster_kubeconfig_loads_the_service_account_credentials(tmp_path: Path) -> None:
    """The mounted kubeconfig, read by the real Kubernetes client as the kill switch does."""
    from kubernetes import client, config

    deployment = _one("Deployment", "cockpit")["spec"]["template"]["spec"]
    [volume] = [v for v in deployment["volumes"] if v["name"] == "kubeconfig"]
    [mount] = [m for m in deployment["containers"][0]["volumeMounts"] if m["name"] == "kubeconfig"]
    kubeconfig_map = _one("ConfigMap", volume["configMap"]["name"])
    setting = _one("ConfigMap", "cockpit-config")["data"]["COCKPIT_C2L__KUBECONFIG"]
    assert setting == f"{mount['mountPath']}/config" and "config" in kubeconfig_map["data"]

    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    (tmp_path / "token").write_text("sa-token-123")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    text = kubeconfig_map["data"]["config"].replace(sa_dir, str(tmp_path))
    assert sa_dir not in text
    (tmp_path / "config").write_text(text)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(tmp_path / "config"), client_configuration=configuration)
    assert configuration.host == "https://kubernetes.default.svc"
    assert configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert configuration.api_key["BearerToken"] == "Bearer sa-token-123"  # what the API calls send


def test_rbac_grants_exactly_what_the_kill_switch_needs() -> None:
    role = _one("Role", "cockpit-kill-switch")
    rules = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("", "pods"): ["delete", "get", "list"],
        ("", "pods/log"): ["get"],
        ("networking.k8s.io", "networkpolicies"): ["create", "delete", "get"],
    }
    assert not [o for o in objects() if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = _one("RoleBinding", "cockpit-kill-switch")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    sa = _one("ServiceAccount", "cockpit")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cockpit", "namespace": sa["metadata"]["namespace"]}]


def test_no_secret_values_are_committed() -> None:
    assert not [o for o in objects() if o["kind"] == "Secret"]
    assert "secretGenerator" not in _kustomization()
    secret_key = re.compile(r"^\s*-?\s*(password|passwd|token|api[_-]?key|secret)\s*:", re.IGNORECASE | re.MULTILINE)
    for path in manifests():
        assert not secret_key.search(path.read_text()), path


def test_cockpit_has_its_own_network_policy() -> None:
    policy = _one("NetworkPolicy", "cockpit")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "cockpit"
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {8000}
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 4222, 9092, 443} <= egress


def test_migration_job_runs_cockpit_migrate() -> None:
    job = _one("Job", "cockpit-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == _one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
