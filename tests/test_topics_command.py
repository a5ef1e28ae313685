"""``distillation-monitor topics`` and the worker's hint when its input topic is missing,
against the real local broker."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from fixtures_kafka import delete_topics
from worker_harness import running_worker, wait_until, worker_config

from monitor.cli import main

pytestmark = pytest.mark.kafka


def _names(prefix: str) -> dict[str, str]:
    tag = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return {role: f"{tag}-{role}" for role in ("in", "alerts", "dlq", "drift")}


@pytest.fixture
def topic_names(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    names = _names(request.node.name[:30])
    yield names
    delete_topics(kafka_admin, names.values())


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _partitions(admin: AdminClient, topic: str) -> int:
    meta = admin.list_topics(topic=topic, timeout=10).topics[topic]
    return len(meta.partitions) if meta.error is None else 0


def test_creates_the_four_topics_then_describes_them_unchanged(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topic_names: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    t = topic_names
    flags = [
        "--bootstrap-servers", kafka_bootstrap,
        "--input-topic", t["in"], "--alert-topic", t["alerts"],
        "--dead-letter-topic", t["dlq"], "--drift-topic", t["drift"],
    ]  # fmt: skip
    code, out, err = _run(["topics", *flags, "--describe"], capsys)
    assert code == 1 and out.count("MISSING") == 4, out + err

    code, out, err = _run(
        ["topics", *flags, "--partitions", "3", "--topic-config", "retention.ms=3600000"], capsys
    )
    assert code == 0, err
    for name in t.values():
        assert _partitions(kafka_admin, name) == 3
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert line.split()[-1] == "created" and " 1h " in line, out
    assert "drift" in out

    # Again with another count: existing topics are described, never changed.
    code, out, _ = _run(["topics", *flags, "--partitions", "5"], capsys)
    assert code == 0 and out.count("exists") == 4 and "created" not in out, out
    assert all(_partitions(kafka_admin, name) == 3 for name in t.values())
    code, out, _ = _run(["topics", *flags, "--describe"], capsys)
    assert code == 0 and out.count("exists") == 4, out


def test_reads_the_workers_config_file_and_environment(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topic_names: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same file and variables as `run`, detector included (and not needed)."""
    t = topic_names
    config = tmp_path / "worker.toml"
    config.write_text(
        f'bootstrap-servers = "{kafka_bootstrap}"\n'
        f'input-topic = "{t["in"]}"\n'
        f'alert-topic = "{t["alerts"]}"\n'
        'detector = "not/built/yet"\n'
        "max-batch-size = 64\n"
    )
    monkeypatch.setenv("DMON_DEAD_LETTER_TOPIC", t["dlq"])
    monkeypatch.setenv("DMON_DRIFT_TOPIC", t["drift"])
    code, _, err = _run(["topics", "--config", str(config), "--partitions", "2"], capsys)
    assert code == 0, err
    assert [_partitions(kafka_admin, t[r]) for r in ("in", "alerts", "dlq", "drift")] == [2] * 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bootstrap-servers", "127.0.0.1:1", "--timeout", "2"], "cannot reach Kafka"),
        (["--replication-factor", "9"], "needs 9 brokers"),
        (["--partitions", "0"], "--partitions must be at least 1"),
        (["--topic-config", "retention.ms"], "expected KEY=VALUE"),
        (["--input-topic", "same", "--alert-topic", "same"], "must differ"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["topics", "--bootstrap-servers", kafka_bootstrap, "--input-topic", "never-made"]
    code, _, err = _run([*base, *argv], capsys)
    assert code == 1
    assert err.strip().startswith("distillation-monitor: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_worker_without_its_input_topic_says_how_to_create_it(
    kafka_bootstrap: str,
    saved_detector_dir: Path,
    topic_names: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = topic_names
    config = worker_config(
        kafka_bootstrap, saved_detector_dir, t["in"], t["alerts"], t["dlq"], "g-" + t["in"]
    )
    with caplog.at_level(logging.WARNING, logger="monitor"), running_worker(config):
        wait_until(
            lambda: f"distillation-monitor topics --input-topic {t['in']}" in caplog.text,
            60,
            "the hint in the worker's log",
        )
