"""Producing alerts and dead letters, and knowing which ones the broker acknowledged.

The delivery callback only records; errors surface in ``flush()``, on the worker's
thread, where the batch's commit can be held back. Failed messages are kept whole (or,
without headers, rebuilt from their delivery reports) so that they, and only they, can be
produced again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from monitor.errors import DeliveryError
from monitor.stream.alerts import Outgoing
from monitor.stream.shorten import RECORD_OVERHEAD, shortened, size_of

log = logging.getLogger(__name__)


#: Errors that refuse a message for its size: it will never be accepted as it is.
SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
#: Kafka's own default ``max.message.bytes``, for topics whose limit is unknown.
KAFKA_DEFAULT_LIMIT = 1_048_588
MIN_BATCH_BYTES = 16 * 1024


class OutputLimits:
    """The largest message each output topic takes, as far as the worker knows.

    Read from the topics' ``max.message.bytes`` at start; lowered when the producer or a
    broker refuses a message for its size (a topic's limit changed meanwhile), so that
    the same message, produced again, is shortened instead of refused again.
    """

    def __init__(self, limits: dict[str, int] | None = None, default: int = KAFKA_DEFAULT_LIMIT):
        self._limits = dict(limits or {})
        self.default = default

    @classmethod
    def aligned(
        cls, topic_limits: dict[str, int], outputs: Sequence[str], kafka: Mapping[str, Any]
    ) -> tuple[OutputLimits, dict[str, Any]]:
        """The limits of ``outputs`` and the producer settings that match them.

        The producer refuses messages above its ``message.max.bytes`` and joins messages
        into batches of up to ``batch.size``, which a topic refuses whole when they are
        above its ``max.message.bytes``. Unless set in ``kafka`` (the user's settings),
        the first becomes the largest output topic's limit (so the producer refuses
        nothing a topic would take) and the second fits the smallest one.
        """
        limits = {t: topic_limits.get(t, KAFKA_DEFAULT_LIMIT) for t in outputs if t}
        settings: dict[str, Any] = {}
        if "message.max.bytes" in kafka:
            cap = int(kafka["message.max.bytes"])
            limits = {t: min(limit, cap) for t, limit in limits.items()}
        elif limits:
            settings["message.max.bytes"] = max(1000, max(limits.values()))
        if "batch.size" not in kafka and limits:
            # (not below 16 KiB: a topic limit that low is a misconfiguration that holds
            # the commits anyway, and single-message batches would only slow it down)
            smallest = min(limits.values()) - RECORD_OVERHEAD
            settings["batch.size"] = min(1_000_000, max(smallest, MIN_BATCH_BYTES))
        return cls(limits), settings

    def of(self, topic: str) -> int:
        return self._limits.get(topic, self.default)

    def refused(self, topic: str, size: int) -> None:
        """A message of ``size`` bytes was refused for its size: the limit is below."""
        self._limits[topic] = min(self.of(topic), max(size - 1, 0))


class Publisher:
    """Producer wrapper that tracks delivery of everything produced since the last flush.

    A message larger than its topic's limit is produced shortened (``shorten.shortened``)
    when that makes it fit; ``on_shortened(kind)`` counts it.
    """

    def __init__(
        self,
        producer: Producer,
        limits: OutputLimits | None = None,
        on_shortened: Callable[[str], None] | None = None,
    ) -> None:
        self.producer = producer
        self.limits = limits or OutputLimits()
        self._on_shortened = on_shortened
        self._in_flight = 0
        self._failed: list[tuple[Outgoing, KafkaError]] = []
        self.delivered: Counter[str] = Counter()
        # Unacknowledged messages per batch number, so that a batch whose outputs are all
        # acknowledged can commit while later batches' outputs are still on their way.
        self.batch = 0
        self._unacked: dict[int, int] = {}
        self._shared: dict[str, Callable[[KafkaError | None, Message], None]] = {}

    def _fitted(self, out: Outgoing, limit: int) -> Outgoing:
        """``out`` shortened when that makes it fit ``limit``; else ``out`` itself, whose
        refusal then holds its batch back until the topic takes it (a topic limit of a
        few hundred bytes is a misconfiguration to fix, not a record to cut)."""
        shorter = shortened(out, limit)
        if shorter is out or size_of(shorter.value, shorter.key, shorter.headers) > limit:
            return out
        size = size_of(out.value, out.key, out.headers)
        log.warning(
            "%s for %s shortened: %d bytes, over the topic's limit of %d",
            out.kind,
            out.topic,
            size,
            limit,
            extra={
                "event": "shortened",
                "kind": out.kind,
                "topic": out.topic,
                "bytes": size,
                "limit": limit,
            },
        )
        if self._on_shortened is not None:
            self._on_shortened(out.kind)
        return shorter

    def next_batch(self) -> int:
        """Tag what is produced from now on with a new batch number; returns the old one."""
        self.batch += 1
        self._shared = {}
        return self.batch - 1

    def acknowledged(self, batch: int) -> bool:
        """True when every message produced under ``batch`` is acknowledged (serve the
        delivery callbacks with ``poll`` first); failures are in ``has_failures``."""
        return batch not in self._unacked

    def poll(self, timeout: float = 0.0) -> None:
        """Run the delivery callbacks that are due, waiting at most ``timeout`` for one."""
        self.producer.poll(timeout)

    def refused(self, out: Outgoing, err: KafkaError) -> None:
        """``out`` was refused at once (not for its size): it counts as undelivered, so
        its batch holds its commit and produces it again later."""
        self._failed.append((out, err))

    @property
    def has_failures(self) -> bool:
        return bool(self._failed)

    def produce(self, out: Outgoing) -> None:
        """Queue one message; waits for room when librdkafka's queue is full.

        Delivery callbacks run in ``poll``/``flush``, once per batch: polling after every
        message released the GIL each time, and getting it back from the intake
        thread could take a whole switch interval.
        """
        limit = self.limits.of(out.topic)
        if size_of(out.value, out.key, out.headers) > limit:
            out = self._fitted(out, limit)
        on_delivery = self._answer(out)
        learnt = False
        while True:
            try:
                self.producer.produce(
                    out.topic, out.value, out.key, headers=out.headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if learnt or not isinstance(err, KafkaError) or err.code() not in SIZE_ERRORS:
                    raise
                # The producer's own limit is lower than the topic's: learn it, once.
                learnt = True
                self.limits.refused(out.topic, size_of(out.value, out.key, out.headers))
                shorter = self._fitted(out, self.limits.of(out.topic))
                if shorter is out:
                    raise
                out, on_delivery = shorter, self._answer(shorter)
        self._in_flight += 1
        batch = self.batch
        self._unacked[batch] = self._unacked.get(batch, 0) + 1

    def _answer(self, out: Outgoing) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback for ``out``.

        Messages without headers share one callback per batch and kind: a closure per
        message made every alert cost twice as much. A failed one is rebuilt from the
        delivery report, which carries topic, key and value but never headers: a message
        with headers gets its own callback that keeps it whole.
        """
        if out.headers is not None:
            return self._callback(self.batch, out.kind, out)
        shared = self._shared.get(out.kind)
        if shared is None:
            shared = self._shared[out.kind] = self._callback(self.batch, out.kind, None)
        return shared

    def _callback(
        self, batch: int, kind: str, whole: Outgoing | None
    ) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self._in_flight -= 1
            left = self._unacked.get(batch, 0) - 1
            if left > 0:
                self._unacked[batch] = left
            else:
                self._unacked.pop(batch, None)
            if err is None:
                self.delivered[kind] += 1
            else:
                out = whole or Outgoing(
                    msg.topic() or "", msg.value() or b"", msg.key(), None, kind
                )
                if err.code() in SIZE_ERRORS:  # produced again, it will be shortened
                    self.limits.refused(out.topic, size_of(out.value, out.key, out.headers))
                self._failed.append((out, err))

        return on_delivery

    def flush(self, timeout: float) -> list[tuple[Outgoing, KafkaError]]:
        """Wait for every acknowledgement; returns (and forgets) the failures.

        Raises ``DeliveryError`` when some messages are still unacknowledged after
        ``timeout``: the caller must not commit then.
        """
        deadline = time.monotonic() + timeout
        while self._in_flight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(
                    f"{self._in_flight} message(s) not acknowledged by the broker within {timeout:g}s"
                )
            self.producer.flush(min(left, 1.0))
        failed, self._failed = self._failed, []
        return failed

    def replace(self, producer: Producer) -> None:
        """Use a new producer; nothing produced through the old one is tracked any more."""
        self.producer = producer
        self._in_flight = 0
        self._failed = []
        self.delivered = Counter()
        self._unacked = {}
        self._shared = {}

    def take_failures_after_commit(self) -> list[tuple[Outgoing, KafkaError]]:
        """Forget recorded failures once a transaction settled them (committed or aborted)."""
        self.producer.poll(0)
        failed, self._failed = self._failed, []
        self._in_flight = max(0, self._in_flight)
        return failed

    def take_delivered(self) -> Counter[str]:
        """Counts acknowledged since the last call, by kind."""
        counts, self.delivered = self.delivered, Counter()
        return counts

    @property
    def in_flight(self) -> int:
        return self._in_flight


def describe(err: Any) -> str:
    """One-line text for a KafkaError (or anything else)."""
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)
