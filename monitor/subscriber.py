"""Tailing the alert topic the way a subscriber should: read-committed, checked, each once.

The consumer is assigned every partition of the topics (no consumer group joins, nothing
is committed: reading never disturbs the workers or another reader) and reads with
``isolation.level=read_committed``, so alerts of aborted transactions never show.
Without ``follow`` it stops at the end each partition had when it was reached (the last
stable offset); with it, it waits for more until ``stop`` is set. Every message is
checked (``alert_events.read_event``): one that breaks the contract is logged and
counted, never printed. Repeats of an event already printed (at-least-once re-sends
share their ``ce_id``) are dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from monitor.alert_events import Event, NotAnEvent, Seen, json_line, read_event, text_line
from monitor.errors import TopicError

log = logging.getLogger("monitor.subscriber")
POLL_S = 0.5


@dataclass
class Counts:
    """What one reading did; logged at the end."""

    read: int = 0
    printed: int = 0
    duplicates: int = 0
    invalid: int = 0


@dataclass(frozen=True)
class Reading:
    topics: Sequence[str]
    follow: bool = False
    from_end: bool = False
    json: bool = False
    max_events: int | None = None


def tail(
    conf: dict[str, Any],
    reading: Reading,
    write: Callable[[str], None],
    stop: threading.Event,
    timeout: float = 30.0,
) -> Counts:
    """Read ``reading.topics`` with consumer settings ``conf``; ``write`` each new event."""
    consumer = Consumer({**conf, "enable.partition.eof": True})
    try:
        partitions = _partitions(consumer, reading.topics, timeout)
        start = OFFSET_END if reading.from_end else OFFSET_BEGINNING
        consumer.assign([TopicPartition(t, p, start) for t, p in partitions])
        return _read(consumer, set(partitions), reading, write, stop)
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topics: Sequence[str], timeout: float) -> list[tuple[str, int]]:
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        detail = err.str() if isinstance(err, KafkaError) else str(err)
        raise TopicError(f"cannot reach Kafka: {detail}") from None
    found: list[tuple[str, int]] = []
    for topic in topics:
        meta = metadata.get(topic)
        if meta is None or meta.error is not None:
            raise TopicError(f"topic {topic} does not exist")
        found += [(topic, p) for p in sorted(meta.partitions)]
    return found


def _read(
    consumer: Consumer,
    partitions: set[tuple[str, int]],
    reading: Reading,
    write: Callable[[str], None],
    stop: threading.Event,
) -> Counts:
    counts, seen, at_end = Counts(), Seen(), set[tuple[str, int]]()
    show = json_line if reading.json else text_line
    while not stop.is_set():
        if not reading.follow and at_end >= partitions:
            break
        for message in consumer.consume(num_messages=500, timeout=POLL_S):
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add((message.topic() or "", message.partition() or 0))
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("Kafka: %s", err.str(), extra={"event": "kafka_error"})
                continue
            at_end.discard((message.topic() or "", message.partition() or 0))
            event = _event(message, counts)
            if event is None:
                continue
            if not seen.first(event):
                counts.duplicates += 1
                continue
            write(show(event))
            counts.printed += 1
            if reading.max_events is not None and counts.printed >= reading.max_events:
                return counts
    return counts


def _event(message: Message, counts: Counts) -> Event | None:
    counts.read += 1
    topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    try:
        return read_event(pairs, message.value(), topic, partition, offset or 0)
    except NotAnEvent as exc:
        counts.invalid += 1
        log.warning(
            "skipped %s[%d]@%s: %s",
            topic,
            partition,
            offset,
            exc,
            extra={"event": "invalid", "topic": topic, "partition": partition, "offset": offset},
        )
        return None
