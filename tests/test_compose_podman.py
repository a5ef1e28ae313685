"""docker-compose.yml's own services, run with podman as far as this kind of machine allows.

No compose engine and no registry are here, so the services whose images can be built
locally (`detector`, `monitor`, `producer`: the project's image) run with podman exactly as
the compose file defines them (entrypoint, command, environment, volumes), in the compose
order: the one-shot detector fills a named volume and exits 0, the monitor starts from it
read-only and becomes healthy, the producer sends demo traffic the monitor scores. What
the file cannot give here is replaced, and only that: the `kafka` and `topics` services
(their image cannot be pulled) by the local broker and per-test topics, so the broker
address, topic names, group and metrics port are overridden. Prometheus and Grafana (no
image either) keep the static cross-reference tests of test_deploy_manifests.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from fixtures_kafka import consume_messages, create_topic, delete_topics
from podman_harness import (
    GRACE_S,
    ROOT,
    START_S,
    Container,
    answers,
    build_image,
    free_port,
    podman,
    running,
)
from worker_harness import metric_sum, scrape, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(3900)]

TRAIN_S = 900  # the demo detector's training, on a busy 2-core machine


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"dmon-test-detector-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def topics(kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    """Stand-ins for the `topics` service's topics (same partitions for the input)."""
    tag = uuid.uuid4().hex[:12]
    names = {
        "DMON_INPUT_TOPIC": create_topic(kafka_admin, f"compose-in-{tag}", 4),
        "DMON_ALERT_TOPIC": create_topic(kafka_admin, f"compose-alerts-{tag}"),
        "DMON_DEAD_LETTER_TOPIC": create_topic(kafka_admin, f"compose-dlq-{tag}"),
    }
    yield names
    delete_topics(kafka_admin, list(names.values()))


def run_options(service: dict[str, Any], volume: str) -> list[str]:
    """podman run options for a compose service: host network, its volumes and entrypoint."""
    options = ["--network", "host"]
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        assert source == "detector", f"only the detector volume is expected, not {source}"
        options += ["--volume", ":".join([volume, target, *mode])]
    if "entrypoint" in service:
        options += ["--entrypoint", json.dumps(service["entrypoint"])]
    return options


def run_to_completion(image: str, options: list[str], command: list[str], timeout: float) -> str:
    with running(image, *options, command=tuple(command)) as container:
        done = podman("wait", container.name, timeout=timeout, check=False)
        assert done.returncode == 0, done.stderr
        logs = container.logs()
        assert done.stdout.strip() == "0", f"exited {done.stdout.strip()}:\n{logs[-3000:]}"
    return logs


@pytest.fixture(scope="module")
def detector_filled(image: str, services: dict[str, dict[str, Any]], volume: str) -> str:
    """The one-shot `detector` service, run to completion (compose: before the monitor)."""
    service = services["detector"]
    return run_to_completion(
        image, run_options(service, volume), service["command"], timeout=TRAIN_S
    )


@pytest.fixture(scope="module")
def monitor(
    image: str,
    services: dict[str, dict[str, Any]],
    volume: str,
    topics: dict[str, str],
    kafka_bootstrap: str,
    detector_filled: str,
) -> Iterator[tuple[Container, int, dict[str, str]]]:
    service = services["monitor"]
    port = free_port()
    env = {k: str(v) for k, v in service["environment"].items()}
    env.update(topics)
    env.update(
        DMON_BOOTSTRAP_SERVERS=kafka_bootstrap,
        DMON_GROUP_ID=f"compose-group-{uuid.uuid4().hex[:12]}",
        DMON_METRICS_PORT=str(port),
    )
    options = run_options(service, volume)
    options += [arg for k, v in env.items() for arg in ("--env", f"{k}={v}")]
    with running(image, *options, command=tuple(service["command"])) as container:
        yield container, port, env


def test_the_one_shot_detector_service_trains_once_into_the_volume(
    image: str, services: dict[str, dict[str, Any]], volume: str, detector_filled: str
) -> None:
    assert "detector saved to /detector/demo" in detector_filled
    again = run_to_completion(
        image, run_options(services["detector"], volume), services["detector"]["command"], 120
    )
    assert "training" not in again, "a second run must find the detector in the volume"


def test_the_monitor_starts_from_the_volume_read_only_and_becomes_healthy(
    monitor: tuple[Container, int, dict[str, str]],
) -> None:
    container, port, _ = monitor
    deadline = time.monotonic() + START_S
    while not answers(port, "/healthz"):
        assert container.state() == "running", "the monitor exited while starting"
        assert time.monotonic() < deadline, f"/healthz not answering after {START_S}s"
        time.sleep(0.5)
    wait_until(lambda: answers(port, "/readyz"), START_S, "/readyz")
    health = podman("healthcheck", "run", container.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    mounts = container.exec("cat", "/proc/self/mounts").stdout.splitlines()
    [detector] = [m.split() for m in mounts if m.split()[1] == "/detector"]
    assert "ro" in detector[3].split(",")


def test_the_producer_service_sends_demo_traffic_that_the_monitor_scores(
    image: str,
    services: dict[str, dict[str, Any]],
    volume: str,
    monitor: tuple[Container, int, dict[str, str]],
    kafka_bootstrap: str,
) -> None:
    _, port, env = monitor
    service = services["producer"]
    command = list(service["command"])
    for flag, value in (
        ("--bootstrap-servers", kafka_bootstrap),
        ("--topic", env["DMON_INPUT_TOPIC"]),
        ("--duration", "5"),
    ):
        command[command.index(flag) + 1] = value
    run_to_completion(image, run_options(service, volume), command, timeout=START_S)
    consumed = "distillation_monitor_records_consumed_total"
    wait_until(lambda: metric_sum(scrape(port), consumed) >= 500, 120, "demo traffic scored")
    alerts = consume_messages(kafka_bootstrap, env["DMON_ALERT_TOPIC"], 1, timeout=60)
    assert alerts, "30% of the demo traffic is corrupted: some of it must alert"


def test_stop_within_the_compose_grace_period_exits_0(
    monitor: tuple[Container, int, dict[str, str]], services: dict[str, dict[str, Any]]
) -> None:
    container, _, _ = monitor
    grace = int(services["monitor"]["stop_grace_period"].removesuffix("s"))
    assert grace == GRACE_S
    code, seconds = container.stop_with("TERM", timeout=grace + 30)
    assert code == 0, container.logs()[-3000:]
    assert seconds < grace
