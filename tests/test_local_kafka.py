"""The project's local broker: real Kafka semantics the product relies on, and loud failures."""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import kafka as local_kafka
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fixtures_kafka import consume_messages, produce_messages

from monitor.errors import LocalKafkaError

SCRIPT = Path(local_kafka.__file__)


def _values(records: list) -> list[bytes | None]:
    return [r.value for r in records]


# --- the broker's configuration (no broker needed) ----------------------------------------


def test_cluster_id_is_16_random_bytes_in_unpadded_urlsafe_base64() -> None:
    ids = {local_kafka.new_cluster_id() for _ in range(20)}
    assert len(ids) == 20
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_server_listens_on_loopback_only_with_single_replica_internal_topics() -> None:
    props = dict(
        line.split("=", 1)
        for line in local_kafka.server_properties().splitlines()
        if line and not line.startswith("#")
    )
    for url in props["listeners"].split(","):
        assert url.split("://")[1].startswith("127.0.0.1:"), url
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert f"SASL_PLAINTEXT://127.0.0.1:{local_kafka.SASL_PORT}" in props["listeners"]


def test_pinned_kafka_version_in_pom_matches_the_script() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(local_kafka.POM).getroot()
    assert root.findtext("m:properties/m:kafka.version", namespaces=ns) == local_kafka.KAFKA_VERSION
    assert local_kafka.KAFKA_VERSION.startswith("4.")


# --- loud, specific failures ----------------------------------------------------------------


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(LocalKafkaError, match="java not found"):
        local_kafka._java()


def test_missing_maven_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local_kafka, "HOME", tmp_path)
    monkeypatch.setattr(local_kafka, "LIBS_DIR", tmp_path / "libs")
    monkeypatch.setattr(local_kafka, "_LIBS_STAMP", tmp_path / "libs" / ".pom-sha256")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="mvn not found"):
        local_kafka.fetch_jars()


@pytest.mark.slow
def test_unreachable_maven_repository_is_reported_after_a_retry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mirror on a closed loopback port and an empty local repository: every download fails.
    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text(
        "<settings><mirrors><mirror><id>nowhere</id><mirrorOf>*</mirrorOf>"
        "<url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>"
    )
    monkeypatch.setenv("MAVEN_OPTS", f"-Duser.home={home}")
    monkeypatch.setattr(local_kafka, "HOME", tmp_path / "kafka")
    monkeypatch.setattr(local_kafka, "LIBS_DIR", tmp_path / "kafka" / "libs")
    monkeypatch.setattr(local_kafka, "_LIBS_STAMP", tmp_path / "kafka" / "libs" / ".stamp")
    (tmp_path / "kafka").mkdir()
    with pytest.raises(LocalKafkaError, match="could not reach Maven Central"):
        local_kafka.fetch_jars()
    assert "retrying with -U" in capsys.readouterr().err
    assert not (tmp_path / "kafka" / "libs").exists()


def test_port_taken_by_another_process_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # A checkout with no broker of its own, whose client port someone else holds.
        monkeypatch.setattr(local_kafka, "PID_FILE", tmp_path / "kafka.pid")
        monkeypatch.setattr(local_kafka, "PORT", port)
        with pytest.raises(LocalKafkaError, match=f"port 127.0.0.1:{port} is taken"):
            local_kafka.ensure_up(timeout=5)
    assert not (tmp_path / "kafka.pid").exists()


def test_broker_not_ready_in_time_reports_the_log_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "ERROR the last words\n")
    monkeypatch.setattr(local_kafka, "LOG_FILE", log)
    monkeypatch.setattr(local_kafka, "STDOUT_FILE", tmp_path / "out")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setattr(local_kafka, "PORT", probe.getsockname()[1])
    stand_in = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(LocalKafkaError, match="not ready within 1s") as info:
            local_kafka._wait_ready(stand_in.pid, timeout=1)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert "ERROR the last words" in str(info.value)


def test_broker_dying_during_start_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "out").write_text("Error: Could not find or load main class kafka.Kafka\n")
    monkeypatch.setattr(local_kafka, "LOG_FILE", tmp_path / "server.log")
    monkeypatch.setattr(local_kafka, "STDOUT_FILE", tmp_path / "out")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(LocalKafkaError, match="exited during start-up") as info:
        local_kafka._wait_ready(dead.pid, timeout=10)
    assert "Could not find or load main class" in str(info.value)


def test_cli_fails_with_a_clear_line_and_nonzero_exit(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "JAVA_HOME": str(tmp_path / "none")}
    env["DMON_LOCAL_DIR"] = str(tmp_path / "local")  # a checkout without a broker
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "up", "--timeout", "5"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("kafka: error: java not found")
    assert result.stdout == ""


# --- the running broker -------------------------------------------------------------------


@pytest.mark.kafka
def test_second_up_finds_the_running_broker(kafka_bootstrap: str) -> None:
    pid = local_kafka.running_pid()
    assert pid is not None and local_kafka.is_running()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "up"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == kafka_bootstrap == local_kafka.BOOTSTRAP
    assert local_kafka.running_pid() == pid
    status = subprocess.run(
        [sys.executable, str(SCRIPT), "status"], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0 and f"pid {pid}, answering" in status.stdout


@pytest.mark.kafka
def test_logs_command_shows_the_broker_log(make_topic: Callable[..., str]) -> None:
    topic = make_topic()  # the broker logs the creation of the topic's partition
    deadline = time.monotonic() + 20
    shown = ""
    while topic not in shown and time.monotonic() < deadline:
        shown = subprocess.run(
            [sys.executable, str(SCRIPT), "logs", "-n", "3000"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert topic in shown, "the broker's log4j output never mentioned the new topic"


@pytest.mark.kafka
def test_records_come_back_in_order_with_keys_and_headers(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic()
    sent = [(f"k{i}".encode(), f"v{i}".encode(), [("id", str(i).encode())]) for i in range(25)]
    produce_messages(kafka_bootstrap, topic, sent)
    got = consume_messages(kafka_bootstrap, topic, 25)
    assert [(r.key, r.value, r.headers) for r in got] == sent
    assert [r.offset for r in got] == list(range(25))


@pytest.mark.kafka
def test_topics_get_the_partitions_asked_for_and_keys_stick_to_one(
    kafka_bootstrap: str, kafka_admin: AdminClient, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3, prefix="keyed")
    assert topic.startswith("keyed-")
    assert len(kafka_admin.list_topics(topic=topic, timeout=10).topics[topic].partitions) == 3
    produce_messages(kafka_bootstrap, topic, [(f"k{i % 5}", str(i)) for i in range(60)])
    got = consume_messages(kafka_bootstrap, topic, 60)
    partitions_per_key: dict[bytes | None, set[int]] = {}
    for r in got:
        partitions_per_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_per_key.values())
    assert len({r.partition for r in got}) > 1


@pytest.mark.kafka
def test_second_consumer_in_a_group_resumes_after_the_committed_offset(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_group: str
) -> None:
    topic = make_topic()
    produce_messages(kafka_bootstrap, topic, [(None, f"m{i}") for i in range(10)])
    first = consume_messages(kafka_bootstrap, topic, 4, group=unique_group, commit=True)
    assert _values(first) == [f"m{i}".encode() for i in range(4)]

    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_group})
    try:
        [committed] = probe.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset == 4

    rest = consume_messages(kafka_bootstrap, topic, 6, group=unique_group)
    assert [r.offset for r in rest] == list(range(4, 10))
    assert _values(rest) == [f"m{i}".encode() for i in range(4, 10)]


@pytest.mark.kafka
def test_read_committed_consumer_sees_committed_transactions_but_not_aborted_ones(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic()
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    for batch, finish in (
        ("committed", producer.commit_transaction),
        ("aborted", producer.abort_transaction),
        ("after", producer.commit_transaction),
    ):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, value=f"{batch}-{i}")
        producer.flush(30)
        finish(30)

    committed = consume_messages(kafka_bootstrap, topic, 6, read_committed=True)
    expected = [f"{b}-{i}".encode() for b in ("committed", "after") for i in range(3)]
    assert _values(committed) == expected
    # The aborted records are really in the log: an uncommitted reader sees them.
    everything = consume_messages(kafka_bootstrap, topic, 9)
    assert [v for v in _values(everything) if v and v.startswith(b"aborted")] == [
        b"aborted-0",
        b"aborted-1",
        b"aborted-2",
    ]


@pytest.mark.kafka
def test_sasl_listener_accepts_the_configured_user(
    kafka_bootstrap: str, kafka_sasl_config: dict[str, str], make_topic: Callable[..., str]
) -> None:
    topic = make_topic()
    sasl = kafka_sasl_config
    assert sasl["sasl.username"] == local_kafka.SASL_USER
    assert sasl["bootstrap.servers"] == local_kafka.SASL_BOOTSTRAP != kafka_bootstrap
    produce_messages(sasl["bootstrap.servers"], topic, [(b"k", b"secret-ok")], config=sasl)
    got = consume_messages(sasl["bootstrap.servers"], topic, 1, config=sasl)
    assert _values(got) == [b"secret-ok"]


@pytest.mark.kafka
def test_sasl_listener_rejects_a_wrong_password(kafka_bootstrap: str) -> None:
    errors: list[KafkaError] = []
    config = {**local_kafka.sasl_config(password="not-the-password"), "log_level": 0}
    producer = Producer({**config, "error_cb": errors.append})

    def refusals() -> list[KafkaError]:
        return [e for e in errors if e.code() == KafkaError._AUTHENTICATION]

    deadline = time.monotonic() + 20
    while not refusals() and time.monotonic() < deadline:
        producer.poll(0.2)
    assert refusals(), f"no authentication error for a wrong SASL password, only {errors}"
    assert "Invalid username or password" in refusals()[0].str()


@pytest.mark.kafka
def test_kcat_reads_what_confluent_kafka_produced(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: run `make tools` (Debian package kcat)"
    topic = make_topic(partitions=2)
    sent = {f"key-{i}": f"value-{i}" for i in range(20)}
    produce_messages(kafka_bootstrap, topic, list(sent.items()))
    consume_all = ["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"]
    result = subprocess.run(
        [kcat, "-b", kafka_bootstrap, *consume_all],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    read = dict(line.split("\t") for line in result.stdout.splitlines())
    assert read == sent


@pytest.mark.kafka
def test_kcat_authenticates_on_the_sasl_listener(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: run `make tools` (Debian package kcat)"
    topic = make_topic()
    produce_messages(kafka_bootstrap, topic, [(b"a", b"via-plaintext")])
    sasl = [f"-X{k}={v}" for k, v in local_kafka.sasl_config().items() if k != "bootstrap.servers"]
    result = subprocess.run(
        [kcat, "-b", local_kafka.SASL_BOOTSTRAP, *sasl, "-C", "-t", topic, "-e", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "via-plaintext"


@pytest.mark.kafka
def test_broker_restart_keeps_topics_records_and_committed_offsets(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    restart_broker: Callable[..., str],
) -> None:
    topic = make_topic(partitions=2)
    produce_messages(kafka_bootstrap, topic, [(f"k{i}", f"before-{i}") for i in range(10)])
    consume_messages(kafka_bootstrap, topic, 10, group=unique_group, commit=True)
    pid = local_kafka.running_pid()

    assert restart_broker() == kafka_bootstrap
    assert local_kafka.running_pid() not in (None, pid)

    again = consume_messages(kafka_bootstrap, topic, 10)
    assert {r.value for r in again} == {f"before-{i}".encode() for i in range(10)}
    produce_messages(kafka_bootstrap, topic, [(None, "after")], partition=0)
    # The group resumes after its committed offsets: only the new record is left for it.
    resumed = consume_messages(
        kafka_bootstrap, topic, 2, group=unique_group, timeout=3, strict=False
    )
    assert _values(resumed) == [b"after"]
