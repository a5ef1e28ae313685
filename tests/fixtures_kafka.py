"""Kafka fixtures: the project's real local broker and a private topic per test.

The broker is started once (``deploy/local/kafka.py``) and left running after the session,
so the next ``make test`` reuses it (``make kafka-down`` stops it). A broker that cannot
start makes every Kafka test fail with the reason; nothing is skipped.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import kafka as local_kafka  # deploy/local/kafka.py, on pytest's pythonpath
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from contract import check_if_ours

from monitor.errors import LocalKafkaError

Headers = Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None
Record = tuple[bytes | str | None, bytes | str | None] | tuple[Any, Any, Headers]


class Consumed(NamedTuple):
    """One record read back, detached from librdkafka's Message object."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _detach(msg: Message) -> Consumed:
    """The record, detached; an alert or drift event is validated against the contract
    on the way (``contract.check_if_ours``), so every test reading one checks it."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]
    check_if_ours(headers, msg.value())
    return Consumed(topic, partition, offset, msg.key(), msg.value(), headers)


def wait_for_topic(admin: AdminClient, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Block until metadata shows every partition of ``topic`` with a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not ready with {partitions} partitions in {timeout}s")


def create_topic(
    admin: AdminClient,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
) -> str:
    """Create ``name`` and wait until producers and consumers can really use it."""
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
    wait_for_topic(admin, name, partitions)
    return name


def delete_topics(admin: AdminClient, names: Iterable[str]) -> None:
    """Delete topics, tolerating ones already gone (a test may delete its own)."""
    names = list(names)
    if not names:
        return
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                print(f"fixtures_kafka: could not delete {name}: {exc}", file=sys.stderr)


def produce_messages(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    partition: int | None = None,
    config: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce (key, value[, headers]) records and wait for every ack; return (partition, offset)s."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **(config or {})})
    acks: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            acks.append((msg.partition(), msg.offset()))

    for record in records:
        key, value, *rest = record
        headers = rest[0] if rest else None
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": delivered}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise AssertionError(f"{remaining} undelivered, delivery errors: {errors[:3]}")
    return acks


def consume_messages(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    timeout: float = 30.0,
    group: str | None = None,
    read_committed: bool = False,
    strict: bool = True,
    commit: bool = False,
    config: dict[str, Any] | None = None,
) -> list[Consumed]:
    """Read up to ``count`` records from the start (or the group's committed offsets).

    ``strict`` fails when fewer arrive within ``timeout``; with ``strict=False`` whatever
    arrived is returned, which is how a test shows that something did NOT arrive.
    ``commit`` commits the offsets of what was returned before closing.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"fixture-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **(config or {}),
        }
    )
    got: list[Consumed] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=count - len(got), timeout=0.2):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                got.append(_detach(msg))
        if commit and got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    if strict and len(got) < count:
        raise AssertionError(f"read {len(got)} of {count} records from {topic} in {timeout}s")
    return got


def restart_local_broker(timeout: float = local_kafka.DEFAULT_TIMEOUT) -> str:
    """Stop and start the shared broker, keeping its data (for fault tests)."""
    return local_kafka.restart(timeout)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of the local broker, started here if needed (fails, never skips)."""
    try:
        return local_kafka.ensure_up()
    except LocalKafkaError as exc:
        pytest.fail(f"the local Kafka broker could not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An admin client on the local broker, shared by the session."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def kafka_sasl_config(kafka_bootstrap: str) -> dict[str, str]:
    """Client settings for the broker's SASL_PLAINTEXT/PLAIN listener with the right user."""
    return local_kafka.sasl_config()


@pytest.fixture
def make_topic(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(partitions=1, prefix=None, config=None) -> name``.

    Names carry the test's name and a uuid, so tests never see each other's records;
    every topic made is deleted at teardown.
    """
    made: list[str] = []
    default_prefix = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(
        partitions: int = 1, prefix: str | None = None, config: dict[str, str] | None = None
    ) -> str:
        name = f"{prefix or default_prefix}-{uuid.uuid4().hex[:12]}"
        made.append(name)
        return create_topic(kafka_admin, name, partitions, config)

    yield make
    try:
        delete_topics(kafka_admin, made)
    except KafkaException as exc:  # e.g. a fault test left the broker down
        print(f"fixtures_kafka: teardown could not delete {made}: {exc}", file=sys.stderr)


@pytest.fixture
def unique_group() -> str:
    """A consumer group id no other test uses."""
    return f"group-{uuid.uuid4().hex}"


@pytest.fixture
def restart_broker(kafka_bootstrap: str) -> Callable[..., str]:
    """``restart_broker(timeout=...) -> bootstrap``: stop and start the broker, data kept."""
    return restart_local_broker
