"""Small Kafka helpers the benchmark stages share: topics, offsets, a fast producer."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

#: The local broker (``make kafka-up``), on the port ``DMON_LOCAL_KAFKA_PORT`` moves it to.
BOOTSTRAP = f"127.0.0.1:{os.environ.get('DMON_LOCAL_KAFKA_PORT', '19092')}"
PREFIX = "bench-"


def admin(bootstrap: str = BOOTSTRAP) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def create_topic(
    client: AdminClient, name: str, partitions: int, config: Mapping[str, str] | None = None
) -> None:
    """Create a topic and wait until its partitions have leaders (the broker won't auto-create)."""
    futures = client.create_topics(
        [NewTopic(name, partitions, 1, config=dict(config or {}))], operation_timeout=30
    )
    futures[name].result(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = client.list_topics(name, timeout=10).topics.get(name)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} has no leaders after 30s")


def delete_topics(client: AdminClient, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    for future in client.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone: fine
            future.result(timeout=60)


def stale_topics(client: AdminClient) -> list[str]:
    """Topics left behind by an interrupted benchmark run."""
    return [t for t in client.list_topics(timeout=10).topics if t.startswith(PREFIX)]


def partitions_of(client: AdminClient, topic: str) -> list[int]:
    return sorted(client.list_topics(topic, timeout=10).topics[topic].partitions)


def end_offsets(topic: str, partitions: list[int], bootstrap: str = BOOTSTRAP) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{PREFIX}watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


class CommitWatcher:
    """Reads a group's committed offsets (OffsetFetch, without joining the group)."""

    def __init__(self, group: str, topic: str, partitions: list[int], bootstrap: str = BOOTSTRAP):
        self.tps = [TopicPartition(topic, p) for p in partitions]
        # read_uncommitted: don't wait for offsets of open transactions (they would make
        # every fetch retry until the transaction ends); the committed ones are what counts.
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
        self.last = 0

    def total(self) -> int:
        """Records committed so far (the last answer again if the broker is slow to reply)."""
        try:
            committed = self.consumer.committed(self.tps, timeout=10)
        except KafkaException:
            return self.last
        self.last = sum(max(tp.offset, 0) for tp in committed)
        return self.last

    def close(self) -> None:
        self.consumer.close()


def fast_producer(bootstrap: str = BOOTSTRAP, **extra: Any) -> Producer:
    """A producer tuned for bulk loading: big batches, lz4, no idempotence bookkeeping."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 100_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
            "enable.idempotence": False,
            "acks": 1,
            **extra,
        }
    )


def produce_all(
    producer: Producer,
    topic: str,
    n: int,
    value_of: Callable[[int], bytes],
    partitions: int,
    start: int = 0,
) -> None:
    """Produce records ``start .. start+n-1`` round-robin over the partitions, then flush."""
    produce = producer.produce
    for i in range(start, start + n):
        while True:
            try:
                produce(topic, value_of(i), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 50_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records not delivered to {topic}")


def read_all(
    topic: str, partitions: list[int], bootstrap: str = BOOTSTRAP, timeout: float = 60.0
) -> list[tuple[bytes, int]]:
    """(value, timestamp ms) of every committed message of a topic (read_committed)."""
    ends = end_offsets(topic, partitions, bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{PREFIX}reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out: list[tuple[bytes, int]] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        open_parts = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while open_parts and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(m.partition() or 0)
                    continue
                out.append((m.value() or b"", m.timestamp()[1]))
    finally:
        consumer.close()
    return out
