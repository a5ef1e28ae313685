"""The Kubernetes manifests as `kubectl apply -k` would send them.

No cluster runs here, so the tests read what `kubectl kustomize deploy/k8s` renders (kubectl
is on every machine of this project; a missing kubectl fails the test) and check what a
cluster would only find out later: every setting is accepted by the real configuration
loader, selectors match the pods, ports and names agree, the autoscaler stays within the
partition count, the PrometheusRule and dashboard are the compose stack's files, and no
placeholder Secret is applied.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from deploy_helpers import ROOT, dmon_env_is_known, load_env_config, load_yaml, make_detector_dir

from monitor.config import OPTION_BY_NAME, is_secret

K8S = ROOT / "deploy" / "k8s"
EXAMPLES = K8S / "examples"
NAME = "distillation-monitor"
SECRET_NAME = "distillation-monitor-kafka"
GENERATE = K8S / "generate.py"
# librdkafka's sasl.mechanism -> the KEDA kafka scaler's `sasl`
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


class Rendered:
    """The rendered objects, looked up by kind (and name where a kind repeats)."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str = NAME) -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]


def kustomize(directory: Path) -> Rendered:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (it carries kustomize)"
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize failed:\n{done.stderr}"
    return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    doc = load_yaml(EXAMPLES / "secret.yaml")
    assert doc["kind"] == "Secret"
    return doc


@pytest.fixture
def detector_dir(tmp_path: Path) -> Path:
    return make_detector_dir(tmp_path)


def pod_spec(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment")["spec"]["template"]["spec"]


def container(r: Rendered) -> dict[str, Any]:
    containers = pod_spec(r)["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_labels(r: Rendered) -> dict[str, str]:
    return r.one("Deployment")["spec"]["template"]["metadata"]["labels"]


def settings(r: Rendered) -> dict[str, str]:
    return r.one("ConfigMap")["data"]


def k8s_env(r: Rendered, secret: dict[str, Any]) -> dict[str, str]:
    """The environment the worker sees: ConfigMap, then Secret, then explicit env."""
    env: dict[str, str] = {}
    env.update(settings(r))
    env.update(secret["stringData"])
    env.update({e["name"]: e["value"] for e in container(r).get("env", []) if "value" in e})
    return env


def resolve_port(r: Rendered, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container(r)["ports"]}
    assert port in named, f"no container port named {port}"
    return int(named[port])


def input_partitions() -> int:
    """Partitions of the input topic in the compose stack, the project's one topic layout."""
    compose = load_yaml(ROOT / "docker-compose.yml")
    script = " ".join(compose["services"]["topics"]["command"])
    topic = compose["services"]["monitor"]["environment"]["DMON_INPUT_TOPIC"]
    match = re.search(rf"^\s*create {re.escape(topic)} (\d+)", script, re.M)
    assert match, f"compose creates no {topic}"
    return int(match.group(1))


# -- the kustomization -------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_and_names_no_namespace() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert "namespace" not in kustomization
    for name in manifests:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert "namespace" not in doc["metadata"], name


def test_renders_each_object_and_no_secret(rendered: Rendered) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered.docs)
    assert kinds == sorted(
        [
            ("ConfigMap", NAME),
            ("ConfigMap", f"{NAME}-dashboard"),
            ("PersistentVolumeClaim", f"{NAME}-detector"),
            ("Deployment", NAME),
            ("Service", f"{NAME}-metrics"),
            ("PodDisruptionBudget", NAME),
            ("NetworkPolicy", f"{NAME}-metrics"),
            ("ScaledObject", NAME),
            ("TriggerAuthentication", SECRET_NAME),
            ("PodMonitor", NAME),
            ("PrometheusRule", NAME),
        ]
    )
    assert rendered.all("Secret") == [], "a placeholder Secret would overwrite the real one"
    assert container(rendered)["image"] == "distillation-monitor:0.1.0"


def test_generated_copies_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATE), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the worker's settings ---------------------------------------------------------------------
def test_k8s_env_is_accepted_by_the_real_config_loader(
    rendered: Rendered, secret: dict[str, Any], detector_dir: Path
) -> None:
    for source in (settings(rendered), secret["stringData"]):
        assert all(isinstance(v, str) for v in source.values()), "k8s env values must be strings"
    env = k8s_env(rendered, secret)
    unknown = sorted(k for k in env if k.startswith("DMON_") and not dmon_env_is_known(k))
    assert unknown == []
    config = load_env_config(env, detector_dir)
    assert config.metrics_host == "0.0.0.0"
    assert config.kafka["sasl.username"] == "change-me"
    assert config.kafka["security.protocol"] == "SASL_SSL"


def test_sasl_credentials_live_in_the_example_secret_only(
    rendered: Rendered, secret: dict[str, Any]
) -> None:
    assert secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == {"DMON_KAFKA_SASL_USERNAME", "DMON_KAFKA_SASL_PASSWORD"}
    assert not [k for k in settings(rendered) if is_secret(k) or "SASL_USERNAME" in k]
    refs = container(rendered)["envFrom"]
    assert {"configMapRef": {"name": NAME}} in refs
    assert {"secretRef": {"name": SECRET_NAME}} in refs


def test_metrics_port_agrees_with_probes_service_podmonitor_and_networkpolicy(
    rendered: Rendered, secret: dict[str, Any], detector_dir: Path
) -> None:
    config = load_env_config(k8s_env(rendered, secret), detector_dir)
    c = container(rendered)
    assert config.metrics_port == 9108
    assert {p["containerPort"] for p in c["ports"]} == {config.metrics_port}
    probes = {name: c[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    probes["startupProbe"] = c["startupProbe"]["httpGet"]
    assert probes["startupProbe"]["path"] == "/healthz"
    for name, probe in probes.items():
        assert resolve_port(rendered, probe["port"]) == config.metrics_port, name
    service_ports = rendered.one("Service", f"{NAME}-metrics")["spec"]["ports"]
    assert [resolve_port(rendered, p["targetPort"]) for p in service_ports] == [9108]
    endpoints = rendered.one("PodMonitor")["spec"]["podMetricsEndpoints"]
    assert [resolve_port(rendered, e["port"]) for e in endpoints] == [9108]
    assert [e.get("path", "/metrics") for e in endpoints] == ["/metrics"]
    ingress = rendered.one("NetworkPolicy", f"{NAME}-metrics")["spec"]["ingress"]
    allowed = [resolve_port(rendered, p["port"]) for rule in ingress for p in rule["ports"]]
    assert allowed == [9108]


def test_selectors_match_the_pod_labels(rendered: Rendered) -> None:
    labels = pod_labels(rendered)
    selectors = {
        "Deployment": rendered.one("Deployment")["spec"]["selector"]["matchLabels"],
        "Service": rendered.one("Service", f"{NAME}-metrics")["spec"]["selector"],
        "PodMonitor": rendered.one("PodMonitor")["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": rendered.one("PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
        "NetworkPolicy": rendered.one("NetworkPolicy", f"{NAME}-metrics")["spec"]["podSelector"][
            "matchLabels"
        ],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), kind


# -- the pod -----------------------------------------------------------------------------------
def test_grace_period_exceeds_the_worker_shutdown_bound(
    rendered: Rendered, secret: dict[str, Any], detector_dir: Path
) -> None:
    config = load_env_config(k8s_env(rendered, secret), detector_dir)
    assert config.shutdown_timeout_s == 10.0
    assert pod_spec(rendered)["terminationGracePeriodSeconds"] > config.shutdown_timeout_s


def test_pod_is_non_root_with_a_read_only_root_and_a_writable_tmp(rendered: Rendered) -> None:
    spec, c = pod_spec(rendered), container(rendered)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    keras_home = {e["name"]: e.get("value") for e in c.get("env", [])}["KERAS_HOME"]
    assert PurePosixPath(keras_home).is_relative_to("/tmp")


def test_the_dockerfile_user_is_the_pod_user(rendered: Rendered) -> None:
    users = [
        line.split()[1]
        for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert (
        users and int(users[-1].split(":")[0]) == pod_spec(rendered)["securityContext"]["runAsUser"]
    )


def test_detector_comes_read_only_from_the_claimed_volume(rendered: Rendered) -> None:
    spec, c = pod_spec(rendered), container(rendered)
    detector_path = settings(rendered)["DMON_DETECTOR"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == detector_path)
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == rendered.one("PersistentVolumeClaim", f"{NAME}-detector")["metadata"]["name"]


def test_requests_and_limits_are_set(rendered: Rendered) -> None:
    resources = container(rendered)["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind


# -- availability and scaling ------------------------------------------------------------------
def test_disruption_budget_evicts_one_worker_at_a_time(rendered: Rendered) -> None:
    spec = rendered.one("PodDisruptionBudget")["spec"]
    assert spec == {"maxUnavailable": 1, "selector": spec["selector"]}


def test_the_autoscaler_owns_the_replica_count(rendered: Rendered) -> None:
    assert "replicas" not in rendered.one("Deployment")["spec"]


def test_keda_scales_the_deployment_on_the_workers_group_lag_up_to_the_partitions(
    rendered: Rendered,
) -> None:
    scaled = rendered.one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == rendered.one("Deployment")["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= input_partitions()
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta, cfg = trigger["metadata"], settings(rendered)
    assert meta["bootstrapServers"] == cfg["DMON_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == cfg["DMON_GROUP_ID"]
    assert meta["topic"] == cfg["DMON_INPUT_TOPIC"]
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"


def test_keda_logs_in_as_the_workers_do(rendered: Rendered, secret: dict[str, Any]) -> None:
    meta, cfg = rendered.one("ScaledObject")["spec"]["triggers"][0]["metadata"], settings(rendered)
    assert meta["sasl"] == KEDA_SASL[cfg["DMON_KAFKA_SASL_MECHANISM"]]
    tls = cfg["DMON_KAFKA_SECURITY_PROTOCOL"] in ("SSL", "SASL_SSL")
    assert meta["tls"] == ("enable" if tls else "disable")
    auth_name = rendered.one("ScaledObject")["spec"]["triggers"][0]["authenticationRef"]["name"]
    refs = rendered.one("TriggerAuthentication", auth_name)["spec"]["secretTargetRef"]
    assert {(r["parameter"], r["name"], r["key"]) for r in refs} == {
        ("username", SECRET_NAME, "DMON_KAFKA_SASL_USERNAME"),
        ("password", SECRET_NAME, "DMON_KAFKA_SASL_PASSWORD"),
    }
    assert {r["key"] for r in refs} == set(secret["stringData"])


def test_the_hpa_alternative_scales_the_same_deployment_on_an_exported_metric(
    rendered: Rendered,
) -> None:
    hpa = load_yaml(EXAMPLES / "hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": rendered.one("Deployment")["metadata"]["name"],
    }
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"] <= input_partitions()
    [metric] = spec["metrics"]
    assert metric["external"]["metric"]["name"] == "distillation_monitor_consumer_lag"
    topic = metric["external"]["metric"]["selector"]["matchLabels"]["topic"]
    assert topic == settings(rendered)["DMON_INPUT_TOPIC"]
    lag_threshold = rendered.one("ScaledObject")["spec"]["triggers"][0]["metadata"]["lagThreshold"]
    assert metric["external"]["target"]["averageValue"] == lag_threshold


def test_the_hpa_alternative_renders_as_the_readme_says(tmp_path: Path) -> None:
    """README: replace the two keda-*.yaml entries with examples/hpa.yaml."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = load_yaml(copy / "kustomization.yaml")
    resources = [r for r in kustomization["resources"] if not r.startswith("keda-")]
    assert len(resources) == len(kustomization["resources"]) - 2
    kustomization["resources"] = [*resources, "examples/hpa.yaml"]
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    hpa = kustomize(copy)
    assert not hpa.all("ScaledObject") and not hpa.all("TriggerAuthentication")
    assert hpa.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == NAME


# -- Prometheus and Grafana --------------------------------------------------------------------
def test_prometheus_rule_has_exactly_the_rules_promtool_tests(rendered: Rendered) -> None:
    rule = rendered.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = load_yaml(ROOT / "deploy" / "prometheus" / "alerts.yml")
    assert set(alerts) == {"groups"}
    assert rule["spec"] == {"groups": alerts["groups"]}
    names = [r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert "DistillationMonitorAdversarialRateHigh" in names


def test_dashboard_configmap_is_the_provisioned_dashboard_for_the_sidecar(
    rendered: Rendered,
) -> None:
    configmap = rendered.one("ConfigMap", f"{NAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    path = ROOT / "deploy" / "grafana" / "dashboards" / "distillation-monitor.json"
    assert list(configmap["data"]) == [path.name]
    assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
    assert len(json.dumps(configmap["data"])) < 1_000_000, "a ConfigMap holds at most 1 MiB"


def test_networkpolicy_admits_only_prometheus_and_only_ingress(rendered: Rendered) -> None:
    spec = rendered.one("NetworkPolicy", f"{NAME}-metrics")["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    [peer] = rule["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "namespaceSelector" in peer


# -- the README ----------------------------------------------------------------------------------
def test_k8s_readme_explains_scaling_the_secret_and_a_stable_transactional_id() -> None:
    text = (K8S / "README.md").read_text()
    assert "partition" in text and "maxReplicaCount" in text
    assert "examples/hpa.yaml" in text and "examples/secret.yaml" in text
    assert "StatefulSet" in text
    assert OPTION_BY_NAME["transactional_id"].env in text
    assert "fieldPath: metadata.name" in text
