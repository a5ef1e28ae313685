"""The image, built by `make image`, run for real against the local broker.

One container runs the worker as Kubernetes would (deploy/k8s/deployment.yaml): as its
image's user, on a read-only root file system with a tmpfs at /tmp, the detector mounted
read-only, a CPU limit, and the host's network to reach the local broker. The tests check
what only a running container shows, in order: the user and the mounts, the health
endpoints and the image's own HEALTHCHECK, alerts for exactly the records the detector
flags on the host, dead letters for the malformed ones, the CPU quota seen from inside,
and a SIGTERM that flushes, commits and exits 0 within the grace period. Nothing is
skipped: no podman, no image or no broker fails the tests.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka.admin import AdminClient
from fixtures_kafka import consume_messages, create_topic, delete_topics, produce_messages
from podman_harness import (
    GRACE_S,
    START_S,
    Container,
    answers,
    build_image,
    free_port,
    podman,
    running,
)
from worker_harness import committed_offsets, json_record, metric_sum, scrape, wait_until

from monitor import load_detector

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(3900)]

SHUTDOWN_S = 10  # DMON_SHUTDOWN_TIMEOUT_S in compose and k8s
UID = "10001"
BAD = [
    (b"bad-json", b"{not json"),
    (b"bad-shape", orjson.dumps({"id": "bad-shape", "instance": [1.0, 2.0]})),
    (b"bad-empty", b""),
]


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def traffic(saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Clean rows and far-off rows; which of them the detector flags, scored on the host."""
    detector = load_detector(saved_detector_dir)
    x, _ = tiny_data
    far = (np.random.default_rng(7).normal(0, 1, (80, x.shape[1])) * 6).astype(np.float32)
    instances = np.concatenate([x[:60], far])
    ids = [f"c-{i}" for i in range(60)] + [f"a-{i}" for i in range(len(far))]
    scores = detector.score(instances)
    flagged = {i: float(s) for i, s in zip(ids, scores, strict=True) if s > detector.threshold}
    assert sum(1 for i in flagged if i.startswith("a-")) >= 5, "no clear adversarials"
    return {"ids": ids, "instances": instances, "flagged": flagged}


@pytest.fixture(scope="module")
def detector_mount(saved_detector_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The detector, readable by the image's user (pytest's own temp dirs are 0700)."""
    target = tmp_path_factory.mktemp("container") / "detector"
    shutil.copytree(saved_detector_dir, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture(scope="module")
def topics(kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:12]
    names = {
        "input": create_topic(kafka_admin, f"container-in-{tag}", 2),
        "alerts": create_topic(kafka_admin, f"container-alerts-{tag}"),
        "dead": create_topic(kafka_admin, f"container-dlq-{tag}"),
        "group": f"container-group-{tag}",
    }
    yield names
    delete_topics(kafka_admin, [names["input"], names["alerts"], names["dead"]])


@pytest.fixture(scope="module")
def records(kafka_bootstrap: str, topics: dict[str, str], traffic: dict[str, Any]) -> int:
    """Everything the worker will read, produced before it starts."""
    rows = [
        (rid.encode(), json_record(rid, inst, user="u1"))
        for rid, inst in zip(traffic["ids"], traffic["instances"], strict=True)
    ]
    rows[30:30] = BAD
    produce_messages(kafka_bootstrap, topics["input"], rows)
    return len(rows)


@pytest.fixture(scope="module")
def worker(
    image: str, kafka_bootstrap: str, topics: dict[str, str], detector_mount: Path, records: int
) -> Iterator[tuple[Container, int]]:
    port = free_port()
    env = {
        "DMON_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DMON_INPUT_TOPIC": topics["input"],
        "DMON_ALERT_TOPIC": topics["alerts"],
        "DMON_DEAD_LETTER_TOPIC": topics["dead"],
        "DMON_GROUP_ID": topics["group"],
        "DMON_METRICS_PORT": str(port),
        "DMON_MAX_BATCH_SIZE": "32",
        "DMON_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S),
    }
    options = [
        *("--network", "host", "--cpus", "1"),
        *("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777,size=256m"),
        *("--volume", f"{detector_mount}:/detector:ro"),
        *(arg for key, value in env.items() for arg in ("--env", f"{key}={value}")),
    ]
    with running(image, *options) as container:
        yield container, port


# -- the container as Kubernetes runs it ----------------------------------------------------------
def test_runs_as_the_unprivileged_user_of_the_image(worker: tuple[Container, int]) -> None:
    container, _ = worker
    assert container.exec("id", "-u").stdout.strip() == UID
    assert container.exec("id", "-g").stdout.strip() == UID


def test_root_and_detector_are_read_only_and_tmp_is_writable(
    worker: tuple[Container, int],
) -> None:
    container, _ = worker
    mounts = {
        fields[1]: set(fields[3].split(","))
        for line in container.exec("cat", "/proc/self/mounts").stdout.splitlines()
        if len(fields := line.split()) >= 4
    }
    assert "ro" in mounts["/"]
    assert "ro" in mounts["/detector"]
    assert "rw" in mounts["/tmp"]
    probe = (
        "import errno, sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        open(path, 'w').close(); print(path, 'written')\n"
        "    except OSError as exc:\n"
        "        print(path, errno.errorcode[exc.errno])\n"
    )
    paths = ["/opt/venv/x", "/home/monitor/x", "/detector/x", "/tmp/x"]
    out = container.exec("python", "-c", probe, *paths).stdout.split("\n")
    assert out[:4] == [f"{p} {r}" for p, r in zip(paths, ["EROFS"] * 3 + ["written"], strict=True)]


def test_health_endpoints_answer_and_the_image_healthcheck_passes(
    worker: tuple[Container, int],
) -> None:
    container, port = worker
    deadline = time.monotonic() + START_S
    while not answers(port, "/healthz"):
        assert container.state() == "running", "the worker exited while starting"
        assert time.monotonic() < deadline, f"/healthz not answering after {START_S}s"
        time.sleep(0.5)
    wait_until(lambda: answers(port, "/readyz"), START_S, "/readyz (partitions assigned)")
    done = podman("healthcheck", "run", container.name, check=False)
    assert done.returncode == 0, f"HEALTHCHECK failed: {done.stdout}{done.stderr}"


def test_alerts_exactly_the_records_the_detector_flags_and_dead_letters_the_bad_ones(
    worker: tuple[Container, int],
    kafka_bootstrap: str,
    topics: dict[str, str],
    traffic: dict[str, Any],
    records: int,
) -> None:
    _, port = worker
    flagged = traffic["flagged"]
    got = consume_messages(kafka_bootstrap, topics["alerts"], len(flagged), timeout=120)
    bodies = {orjson.loads(m.value)["id"]: orjson.loads(m.value) for m in got}
    assert set(bodies) == set(flagged)
    for rid, body in bodies.items():
        # tensorflow-cpu in the image, tensorflow on the host: the same scores.
        assert body["score"] == pytest.approx(flagged[rid], rel=1e-4, abs=1e-6)
        assert body["context"] == {"user": "u1"}
    dead = consume_messages(kafka_bootstrap, topics["dead"], len(BAD), timeout=60)
    assert sorted(m.key for m in dead) == sorted(k for k, _ in BAD)
    assert {m.key: m.value for m in dead} == dict(BAD)
    wait_until(
        lambda: metric_sum(scrape(port), "distillation_monitor_records_consumed_total") >= records,
        60,
        "every record counted",
    )
    extra = consume_messages(
        kafka_bootstrap, topics["alerts"], len(flagged) + 1, timeout=3, strict=False
    )
    assert len(extra) == len(flagged), "no alert beyond the flagged records"


def test_inside_the_container_the_cpu_limit_sizes_tensorflow(
    worker: tuple[Container, int],
) -> None:
    """--cpus 1 is a CFS quota in the container's cgroup; the node has more cores."""
    container, _ = worker
    code = (
        "import importlib.metadata as m, os\n"
        "from monitor.cpus import available_cpus, cpu_quota\n"
        "from monitor.stream.scoring import tensorflow_threads\n"
        "print(len(os.sched_getaffinity(0)), cpu_quota(), available_cpus(), tensorflow_threads(0))\n"
        "print(m.version('tensorflow-cpu'), [d for d in ('tensorflow',) if "
        "any(x.metadata['Name'] == d for x in m.distributions())])\n"
    )
    lines = container.exec("python", "-c", code).stdout.splitlines()
    affinity, quota, available, threads = lines[0].split()
    assert float(quota) == 1.0
    assert (available, threads) == ("1", "1")
    assert int(affinity) >= 1
    version, others = lines[1].split(" ", 1)
    assert version.startswith("2.21.")
    assert others == "[]", "the image has tensorflow-cpu only"


def test_sigterm_commits_and_exits_0_within_the_grace_period(
    worker: tuple[Container, int], kafka_bootstrap: str, topics: dict[str, str], records: int
) -> None:
    container, _ = worker
    code, seconds = container.stop_with("TERM", timeout=GRACE_S + 30)
    assert code == 0, container.logs()[-3000:]
    assert seconds < GRACE_S, f"took {seconds:.1f}s, the grace period is {GRACE_S}s"
    assert sum(committed_offsets(kafka_bootstrap, topics["group"], topics["input"], 2)) == records
