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
from collections.abc import Callable
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Message, Producer

from monitor.errors import DeliveryError
from monitor.stream.alerts import Headers

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One message to produce; ``kind`` is alert, dead_letter or drift (for metrics).

    A named tuple: one is made per alert, and a frozen dataclass cost three times as much.
    """

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers | None
    kind: str


class Publisher:
    """Producer wrapper that tracks delivery of everything produced since the last flush."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._in_flight = 0
        self._failed: list[tuple[Outgoing, KafkaError]] = []
        self.delivered: Counter[str] = Counter()
        # Unacknowledged messages per batch number, so that a batch whose outputs are all
        # acknowledged can commit while later batches' outputs are still on their way.
        self.batch = 0
        self._unacked: dict[int, int] = {}
        self._shared: dict[str, Callable[[KafkaError | None, Message], None]] = {}

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

    @property
    def has_failures(self) -> bool:
        return bool(self._failed)

    def produce(self, out: Outgoing) -> None:
        """Queue one message; waits for room when librdkafka's queue is full.

        Delivery callbacks run in ``poll``/``flush``, once per batch: polling after every
        message released the GIL each time, and getting it back from the prefetch
        thread could take a whole switch interval.
        """
        on_delivery = self._answer(out)
        while True:
            try:
                self.producer.produce(
                    out.topic, out.value, out.key, headers=out.headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.05)
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
