"""Topics for the demo: create them (brokers often refuse automatic creation), read them back.

``read_all`` reads a topic from its start up to the high watermark it had when called:
how the demo's summary sees exactly what the worker published, as any subscriber would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from monitor.errors import DemoError
from monitor.kafka_properties import for_client
from monitor.logs import kafka_logger

TIMEOUT_S = 30.0


def _admin(conf: dict[str, Any]) -> AdminClient:
    # librdkafka logs an info line when an admin client is freed with events unread.
    settings: dict[str, Any] = {"log_level": 4, **for_client("admin", conf)}
    settings["logger"] = kafka_logger("admin")
    return AdminClient(settings)


def _cluster(conf: dict[str, Any], timeout: float = 10.0) -> Any:
    try:
        return _admin(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise DemoError(
            f"cannot reach Kafka at {conf.get('bootstrap.servers')}: {exc.args[0]}"
        ) from None


def topic_names(conf: dict[str, Any]) -> set[str]:
    return set(_cluster(conf).topics)


def _ready(conf: dict[str, Any], names: Sequence[str], timeout: float) -> None:
    """Wait until every partition of every topic has a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = _cluster(conf).topics
        if all(
            n in topics
            and topics[n].error is None
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise DemoError(f"topics {', '.join(names)} have no leader after {timeout:g}s")


def create_topics(
    conf: dict[str, Any], names: Sequence[str], partitions: int = 1, timeout: float = TIMEOUT_S
) -> None:
    """Create ``names`` (existing ones are fine) and wait until they can be used."""
    brokers = max(1, len(_cluster(conf).brokers))
    new = [
        NewTopic(n, num_partitions=partitions, replication_factor=min(3, brokers)) for n in names
    ]
    admin = _admin(conf)  # must outlive the futures
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DemoError(f"cannot create topic {name}: {exc.args[0].str()}") from None
    _ready(conf, names, timeout)


def delete_topics(conf: dict[str, Any], names: Sequence[str], timeout: float = TIMEOUT_S) -> None:
    """Delete ``names``; ones already gone are fine."""
    if not names:
        return
    admin = _admin(conf)  # must outlive the futures
    for name, future in admin.delete_topics(list(names), operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise DemoError(f"cannot delete topic {name}: {exc.args[0].str()}") from None


def read_all(conf: dict[str, Any], topic: str, timeout: float = TIMEOUT_S) -> list[bytes]:
    """Every message value of ``topic`` up to its current end, in partition order."""
    meta = _cluster(conf).topics.get(topic)
    if meta is None or meta.error is not None:
        raise DemoError(f"topic {topic} does not exist")
    consumer = Consumer(
        {
            **for_client("consumer", conf),
            "logger": kafka_logger("consumer"),
            "group.id": f"dmon-demo-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    values: list[bytes] = []
    try:
        ends: dict[int, int] = {}
        starts = []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                partition, offset = msg.partition(), msg.offset()
                value = msg.value()
                if msg.error() is None and value is not None:
                    values.append(value)
                if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                    del ends[partition]
        if ends:
            raise DemoError(f"could not read {topic} to its end within {timeout:g}s")
    finally:
        consumer.close()
    return values
