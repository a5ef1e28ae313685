"""Deployment files point at things that exist: compose and Dockerfile cross-references.

Where no container engine runs these stand in for `docker compose up`: mounted paths exist,
the Prometheus files the stack mounts are the ones promtool tests, every ``DMON_*``
variable is accepted by the real configuration loader, and the metrics port agrees
everywhere it is written down. The Kubernetes manifests have tests of their own
(test_k8s_manifests.py).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from deploy_helpers import ROOT, dmon_env_is_known, load_env_config, load_yaml, make_detector_dir

from monitor.cli import build_parser
from monitor.config import OPTION_BY_NAME

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE_DIR = ROOT / "deploy" / "image"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

DETECTOR_VOLUME = "detector"
EXPECTED_SERVICES = {"kafka", "topics", "detector", "monitor", "producer", "prometheus", "grafana"}


# -- loading ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture
def detector_dir(tmp_path: Path) -> Path:
    return make_detector_dir(tmp_path)


def env_map(raw: Mapping[str, Any] | list[str] | None) -> dict[str, str]:
    """Compose `environment:` in map or list form, as the strings a process would see."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {k: "" if v is None else str(v) for k, v in raw.items()}


def volumes_of(service: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source, target, read_only) for short and long volume syntax."""
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1]
            yield source, target, len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            yield vol["source"], vol["target"], bool(vol.get("read_only", False))


def bind_mounts(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, str, bool]]:
    for name, service in services.items():
        for source, target, ro in volumes_of(service):
            if source.startswith((".", "/")):
                yield name, source, target, ro


def container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []):
        text = str(entry["target"]) if isinstance(entry, dict) else str(entry)
        ports.add(int(text.split("/")[0].rsplit(":", 1)[-1]))
    return ports


def host_path_for(service: dict[str, Any], container_path: str) -> Path:
    """The repository path a container path resolves to through the service's bind mounts."""
    want = PurePosixPath(container_path)
    for source, target, _ in volumes_of(service):
        if source.startswith(".") and want.is_relative_to(target):
            return (ROOT / source / want.relative_to(target)).resolve()
    raise AssertionError(f"{container_path} is not inside any bind mount")


def parse_cli(argv: list[str]) -> Any:
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"distillation-monitor rejects {shlex.join(argv)}")


# -- Dockerfile parsing --------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def dockerfile_args() -> dict[str, str]:
    args = {}
    for instr, rest in dockerfile_instructions():
        if instr == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    return args


def dockerfile_user_uid() -> int:
    users = [rest for instr, rest in dockerfile_instructions() if instr == "USER"]
    assert users, "the Dockerfile never switches away from root"
    return int(users[-1].split(":")[0])


# -- compose ---------------------------------------------------------------------------------
def test_compose_has_the_whole_stack_and_the_producer_only_in_the_demo_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == EXPECTED_SERVICES
    assert services["producer"]["profiles"] == ["demo"]
    assert [n for n, s in services.items() if "profiles" in s] == ["producer"]


def test_compose_uses_official_pinned_images_and_kafka_matches_the_local_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    pom = (ROOT / "deploy" / "local" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    assert services["topics"]["image"] == services["kafka"]["image"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("kafka", "prometheus", "grafana"):
        assert not services[name]["image"].endswith(":latest"), name


def test_compose_builds_monitor_and_producer_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("detector", "monitor", "producer"):
        build = services[name]["build"]
        assert (ROOT / build["context"]).resolve() == ROOT
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_every_compose_bind_mount_exists_in_the_repo(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = list(bind_mounts(services))
    # Only configuration from the repository: nothing that a host Python must build first.
    assert {name for name, *_ in mounts} == {"prometheus", "grafana"}
    for name, source, _, _ in mounts:
        assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_the_one_shot_detector_service_fills_the_volume_the_workers_read(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert DETECTOR_VOLUME in compose["volumes"]
    one_shot = services["detector"]
    assert list(volumes_of(one_shot)) == [(DETECTOR_VOLUME, "/detector", False)]
    assert one_shot["restart"] == "no"
    [script] = one_shot["command"]
    assert one_shot["entrypoint"] == ["/bin/sh", "-c"]
    test, _, run = script.partition(" || exec ")
    detector_path = env_map(services["monitor"]["environment"])["DMON_DETECTOR"]
    assert test == f"test -f {detector_path}/manifest.json"
    argv = shlex.split(run)
    assert argv[0] == "distillation-monitor"
    args = parse_cli(argv[1:])
    assert args.command == "demo-detector" and args.out == detector_path
    producer = services["producer"]["command"]
    assert producer[producer.index("--detector") + 1] == detector_path
    for name in ("monitor", "producer"):
        assert list(volumes_of(services[name])) == [(DETECTOR_VOLUME, "/detector", True)], name
        assert services[name]["depends_on"]["detector"] == {
            "condition": "service_completed_successfully"
        }


def test_the_image_lets_its_user_write_an_empty_detector_volume() -> None:
    """A new named volume takes the owner of the image's directory it is mounted on."""
    runs = " ".join(rest for instr, rest in dockerfile_instructions() if instr == "RUN")
    assert "install -d -o 10001 -g 10001 /detector" in runs
    assert dockerfile_user_uid() == 10001


def test_services_wait_on_conditions_and_healthy_means_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    image_has_healthcheck = any(instr == "HEALTHCHECK" for instr, _ in dockerfile_instructions())
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for other, rule in depends.items():
            assert rule["condition"] in {"service_healthy", "service_completed_successfully"}
            if rule["condition"] == "service_healthy":
                check = services[other].get("healthcheck", {})
                own = "test" in check and not check.get("disable")
                built = "build" in services[other] and image_has_healthcheck
                assert own or (built and not check.get("disable")), f"{other} has no healthcheck"
    assert services["prometheus"]["depends_on"]["monitor"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_compose_prometheus_mounts_the_config_and_rules_promtool_tests(
    services: dict[str, dict[str, Any]],
) -> None:
    prom = services["prometheus"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in prom["command"] if "=" in a)
    config_path = host_path_for(prom, flags["config.file"])
    assert config_path == PROMETHEUS_DIR / "prometheus.yml"
    config = load_yaml(config_path)
    container_dir = PurePosixPath(flags["config.file"]).parent
    rules = {host_path_for(prom, str(container_dir / r)) for r in config.get("rule_files", [])}
    assert rules == {PROMETHEUS_DIR / "alerts.yml"}
    assert (PROMETHEUS_DIR / "alerts.yml").is_file()


def test_the_promtool_rule_tests_test_the_mounted_alerts_file() -> None:
    tested: set[Path] = set()
    for path in PROMETHEUS_DIR.rglob("*.y*ml"):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "tests" in doc and "rule_files" in doc:
            tested |= {(path.parent / r).resolve() for r in doc["rule_files"]}
    assert PROMETHEUS_DIR / "alerts.yml" in tested, "no promtool test file uses alerts.yml"


def test_compose_monitor_env_is_accepted_by_the_real_config_loader(
    services: dict[str, dict[str, Any]], detector_dir: Path
) -> None:
    env = env_map(services["monitor"]["environment"])
    unknown = sorted(k for k in env if k.startswith("DMON_") and not dmon_env_is_known(k))
    assert unknown == []
    config = load_env_config(env, detector_dir)
    assert config.metrics_host == "0.0.0.0"
    assert PurePosixPath(env["DMON_DETECTOR"]).is_relative_to("/detector")
    assert config.input_topic == "inference-records"


def test_compose_monitor_command_is_accepted_by_the_cli(
    services: dict[str, dict[str, Any]],
) -> None:
    assert parse_cli(services["monitor"]["command"]).command == "run"


def test_compose_producer_command_is_accepted_by_the_cli(
    services: dict[str, dict[str, Any]],
) -> None:
    assert parse_cli(services["producer"]["command"]).command == "produce-demo"


def test_compose_metrics_port_agrees_with_container_port_and_prometheus_target(
    services: dict[str, dict[str, Any]], detector_dir: Path
) -> None:
    config = load_env_config(env_map(services["monitor"]["environment"]), detector_dir)
    assert config.metrics_port == 9108
    assert container_ports(services["monitor"]) == {config.metrics_port}
    prom = services["prometheus"]
    scrape = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    targets = [
        t
        for job in scrape.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for t in static.get("targets", [])
    ]
    monitor_ports = {int(t.rsplit(":", 1)[1]) for t in targets if t.split(":")[0] == "monitor"}
    assert monitor_ports == {config.metrics_port}, (
        f"no target monitor:{config.metrics_port} in {targets}"
    )
    assert container_ports(prom) == {9090}


def test_compose_topics_service_creates_every_topic_the_monitor_and_producer_use(
    services: dict[str, dict[str, Any]],
) -> None:
    script = " ".join(services["topics"]["command"])
    assert "kafka-topics.sh" in script and "--create" in script
    env = env_map(services["monitor"]["environment"])
    producer = services["producer"]["command"]
    wanted = {
        env["DMON_INPUT_TOPIC"],
        env["DMON_ALERT_TOPIC"],
        env["DMON_DEAD_LETTER_TOPIC"],
        producer[producer.index("--topic") + 1],
    }
    created = set(re.findall(r"^\s*create (\S+) \d+", script, re.M))
    assert wanted == created
    assert services["monitor"]["depends_on"]["topics"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_clients_use_a_listener_the_broker_advertises(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka_env = env_map(services["kafka"]["environment"])
    advertised = {
        listener.split("://", 1)[1]
        for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    producer = services["producer"]["command"]
    assert env_map(services["monitor"]["environment"])["DMON_BOOTSTRAP_SERVERS"] in advertised
    assert producer[producer.index("--bootstrap-servers") + 1] in advertised
    assert "--bootstrap-server kafka:9092" in " ".join(services["topics"]["command"])
    assert "kafka:9092" in advertised


def test_compose_kafka_is_a_single_kraft_node_that_supports_transactions(
    services: dict[str, dict[str, Any]],
) -> None:
    env = env_map(services["kafka"]["environment"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


def test_compose_stop_grace_period_exceeds_the_worker_shutdown_bound(
    services: dict[str, dict[str, Any]], detector_dir: Path
) -> None:
    config = load_env_config(env_map(services["monitor"]["environment"]), detector_dir)
    grace = services["monitor"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace)
    assert int(grace[:-1]) > config.shutdown_timeout_s


def test_compose_grafana_provisions_the_dashboard_and_the_prometheus_datasource(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    env = env_map(grafana["environment"])
    assert env["GF_SECURITY_ADMIN_USER"] == "admin"
    assert "GF_SECURITY_ADMIN_PASSWORD" in env
    assert container_ports(grafana) == {3000}
    assert host_path_for(grafana, "/etc/grafana/provisioning") == GRAFANA_DIR / "provisioning"

    providers = [
        p
        for f in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml"))
        for p in load_yaml(f).get("providers", [])
    ]
    assert providers, "no dashboard provider in deploy/grafana/provisioning/dashboards"
    dashboard_dirs = {host_path_for(grafana, p["options"]["path"]) for p in providers}
    assert dashboard_dirs == {GRAFANA_DIR / "dashboards"}
    assert (GRAFANA_DIR / "dashboards" / "distillation-monitor.json").is_file()
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert host_path_for(grafana, home).is_file()

    datasources = [
        d
        for f in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"))
        for d in load_yaml(f).get("datasources", [])
    ]
    prometheus_urls = {d["url"] for d in datasources if d.get("type") == "prometheus"}
    assert prometheus_urls, "no Prometheus datasource provisioned"
    # Inside compose, Grafana reaches Prometheus by service name; other URLs would be dead.
    assert "http://prometheus:9090" in {u.rstrip("/") for u in prometheus_urls}


def test_compose_dashboard_datasource_uids_are_provisioned() -> None:
    uids = {
        d.get("uid")
        for f in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"))
        for d in load_yaml(f).get("datasources", [])
    }
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "distillation-monitor.json").read_text())
    used = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
                used.add(ds["uid"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    # Template variables (${DS...}) and Grafana's built-in sources are resolved at run time.
    fixed = {u for u in used if not u.startswith("$") and not u.startswith("-- ")}
    assert fixed <= uids, f"dashboard uses datasource uids {fixed - uids} nobody provisions"


# -- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_is_multistage_on_slim_python_311() -> None:
    args = dockerfile_args()
    froms = [rest for instr, rest in dockerfile_instructions() if instr == "FROM"]
    assert len(froms) >= 2
    for line in froms:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    copies = [rest for instr, rest in dockerfile_instructions() if instr == "COPY"]
    assert any(c.startswith("--from=build ") for c in copies)


def test_dockerfile_entrypoint_is_the_console_script_and_runs_the_worker() -> None:
    instructions = dict(dockerfile_instructions())
    assert json.loads(instructions["ENTRYPOINT"]) == ["distillation-monitor"]
    assert json.loads(instructions["CMD"]) == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["distillation-monitor"] == "monitor.cli:main"


def test_dockerfile_healthcheck_hits_healthz_with_urllib_on_the_metrics_port() -> None:
    checks = [rest for instr, rest in dockerfile_instructions() if instr == "HEALTHCHECK"]
    assert len(checks) == 1
    command = json.loads(checks[0][checks[0].index("CMD") + 3 :].strip())
    code = command[-1]
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in code
    assert "/healthz" in code
    assert "'DMON_METRICS_PORT', '9108'" in code
    assert not [i for i in dockerfile_instructions() if "curl" in i[1]]
    default_port = OPTION_BY_NAME["metrics_port"].default
    exposed = [int(rest) for instr, rest in dockerfile_instructions() if instr == "EXPOSE"]
    assert exposed == [default_port] == [9108]


def test_dockerfile_listens_beyond_loopback_and_mounts_the_detector() -> None:
    env_lines = " ".join(rest for instr, rest in dockerfile_instructions() if instr == "ENV")
    assert "DMON_METRICS_HOST=0.0.0.0" in env_lines.split()
    assert "DMON_DETECTOR=/detector" in env_lines.split()


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    text = DOCKERFILE.read_text() + (IMAGE_DIR / "requirements.py").read_text()
    assert '["project"]["dependencies"]' in text
    assert "optional-dependencies" not in text
    assert not re.search(r"\[(dev|eval)", text)
    sources = [
        rest.split()[:-1]
        for instr, rest in dockerfile_instructions()
        if instr == "COPY" and not rest.startswith("--from")
    ]
    assert sorted(s for src in sources for s in src) == [
        "README.md",
        "deploy/image/constraints.txt",
        "deploy/image/requirements.py",
        "monitor",
        "pyproject.toml",
        "setup.py",
    ]
    mounts = re.findall(r"--mount=type=bind,source=(\S+),target=/wheels", text)
    assert mounts and set(mounts) == {"deploy/image/wheelhouse"}
    assert (IMAGE_DIR / "wheelhouse").is_dir()


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent of it decides."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, bare) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_local_state_out_and_the_copied_sources_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".local/kafka", ".git", "tests/x.py", "deploy/k8s/pdb.yaml"):
        assert dockerignored(excluded, patterns), excluded
    for needed in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "monitor/cli.py",
        "deploy/image/requirements.py",
        "deploy/image/constraints.txt",
        "deploy/image/wheelhouse/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl",
    ):
        assert not dockerignored(needed, patterns), needed
