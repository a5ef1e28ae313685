"""Sending records at a steady rate, and remembering what was sent.

Record ``i`` is due ``i / rate`` seconds after the start; the sender waits for it in
``producer.poll`` (which also serves delivery reports), so a pause (e.g. while the next
chunk of attacks is computed) is caught up right after and the average rate holds.
A delivery error stops the run: a demo whose records silently vanish proves nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from monitor.demo.traffic import CLEAN, MALFORMED, DemoRecord
from monitor.errors import DemoError

FLUSH_TIMEOUT_S = 30.0


@dataclass
class SentLog:
    """What was sent: the truth per id, and counts by kind."""

    truth: dict[str, tuple[str, bool | None]] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    harmful: int = 0
    harmless: int = 0
    seconds: float = 0.0

    def add(self, record: DemoRecord) -> None:
        self.truth[record.id] = (record.kind, record.harmful)
        self.kinds[record.kind] += 1
        self.harmful += record.harmful is True
        self.harmless += record.harmful is False

    @property
    def total(self) -> int:
        return len(self.truth)

    @property
    def malformed(self) -> int:
        return self.kinds[MALFORMED]

    @property
    def clean(self) -> int:
        return self.kinds[CLEAN]

    @property
    def corrupted(self) -> int:
        return self.total - self.clean - self.malformed

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def progress(self, elapsed: float, total: int) -> str:
        """``[ 12s] sent 2400/12000 | clean ... | corrupted ... | malformed ...``."""
        return (
            f"[{elapsed:4.0f}s] sent {self.total:6d}/{total} | clean {self.clean} | corrupted "
            f"{self.corrupted} (harmful {self.harmful}, harmless {self.harmless}) "
            f"| malformed {self.malformed}"
        )


Tick = Callable[[SentLog, float], None]


def _produce(producer: Producer, topic: str, record: DemoRecord, on_delivery: Any) -> None:
    while True:
        try:
            producer.produce(topic, record.value, record.id.encode(), on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: let librdkafka send some first
            producer.poll(0.1)


def send_steadily(
    producer: Producer,
    topic: str,
    records: Iterable[DemoRecord],
    rate: float,
    on_tick: Tick | None = None,
    tick_s: float = 1.0,
) -> SentLog:
    """Produce ``records`` at ``rate`` per second; return once the broker acknowledged all."""
    sent = SentLog()
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    start = time.monotonic()
    next_tick = start + tick_s
    for i, record in enumerate(records):
        while (wait := start + i / rate - time.monotonic()) > 0:
            producer.poll(min(wait, 0.05))
        _produce(producer, topic, record, delivered)
        sent.add(record)
        producer.poll(0)
        if errors:
            raise DemoError(f"the broker refused a record for {topic}: {errors[0].str()}")
        now = time.monotonic()
        if on_tick is not None and now >= next_tick:
            on_tick(sent, now - start)
            next_tick = now + tick_s
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    sent.seconds = time.monotonic() - start
    if errors or remaining:
        detail = errors[0].str() if errors else f"{remaining} records still queued"
        raise DemoError(f"not every record reached {topic}: {detail}")
    return sent
