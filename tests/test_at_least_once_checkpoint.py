"""At-least-once commits around an idempotent producer that fails fatally (pure logic:
stand-ins for the Kafka clients). The real-broker side is in test_worker_kafka."""

from __future__ import annotations

from typing import Any

import pytest
from checkpoint_standins import Host, NullMetrics
from confluent_kafka import KafkaError, KafkaException

from monitor.errors import DeliveryError
from monitor.stream.checkpoint import AtLeastOnceCheckpoint, BatchOffsets
from monitor.stream.publisher import Outgoing, Publisher
from monitor.stream.shorten import size_of

FATAL = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap", fatal=True)
OFFSETS = BatchOffsets({("in", 0): 0}, {("in", 0): 10})


def alert(n: int) -> Outgoing:
    return Outgoing("alerts", b"{}", f"r{n}".encode(), None, "alert")


class Producer:
    """Acknowledges everything at the next poll or flush; ``broken`` makes every call
    fail fatally, as librdkafka's do once the producer failed."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.produced: list[bytes | None] = []
        self.purged = False
        self._callbacks: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        if self.broken:
            raise KafkaException(FATAL)
        self.produced.append(key)
        self._callbacks.append(kw["on_delivery"])

    def poll(self, timeout: float) -> int:
        if self.broken:
            raise KafkaException(FATAL)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(None, None)
        return len(callbacks)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0

    def purge(self) -> None:
        self.purged = True


def checkpoint_with(first: Producer, fresh: Producer | None) -> tuple[Any, Host, Publisher]:
    host = Host()
    publisher = Publisher(first)  # type: ignore[arg-type]
    checkpoint = AtLeastOnceCheckpoint(
        host,  # type: ignore[arg-type]
        publisher,
        NullMetrics(),
        make_producer=(lambda: fresh) if fresh is not None else None,  # type: ignore[arg-type,return-value]
    )
    return checkpoint, host, publisher


def test_a_producer_that_fails_fatally_is_replaced_and_the_batch_given_back() -> None:
    broken, fresh = Producer(broken=True), Producer()
    checkpoint, host, publisher = checkpoint_with(broken, fresh)
    checkpoint.publish(alert(1))  # refused: no exception reaches the worker's loop
    checkpoint.publish(alert(2))
    assert checkpoint.broken is not None

    assert checkpoint.commit(OFFSETS) is False, "nothing of the batch was delivered"
    assert host.rewinds == 1 and not host.committed
    assert publisher.producer is fresh and broken.purged and checkpoint.broken is None

    checkpoint.publish(alert(1))  # the batch again, through the new producer
    checkpoint.publish(alert(2))
    assert checkpoint.commit(OFFSETS) is True
    assert fresh.produced == [b"r1", b"r2"]
    assert host.committed == [[("in", 0, 10)]]


def test_a_fatal_error_reported_by_the_producers_callback_replaces_it_at_the_commit() -> None:
    """librdkafka reports a fatal idempotence error through ``error_cb`` while serving
    delivery reports: what was produced before it may never be acknowledged."""
    first, fresh = Producer(), Producer()
    checkpoint, host, publisher = checkpoint_with(first, fresh)
    checkpoint.publish(alert(1))
    checkpoint.producer_failed(FATAL)
    checkpoint.publish(alert(2))  # not given to the broken producer
    assert first.produced == [b"r1"]
    assert checkpoint.commit(OFFSETS) is False
    assert host.rewinds == 1 and not host.committed
    assert publisher.producer is fresh


def test_a_flush_that_fails_fatally_replaces_the_producer() -> None:
    first, fresh = Producer(), Producer()
    checkpoint, host, publisher = checkpoint_with(first, fresh)
    checkpoint.publish(alert(1))
    first.broken = True
    assert checkpoint.commit(OFFSETS) is False
    assert host.rewinds == 1 and publisher.producer is fresh


def test_batches_acknowledged_before_the_failure_still_commit() -> None:
    first, fresh = Producer(), Producer()
    checkpoint, host, publisher = checkpoint_with(first, fresh)
    checkpoint.publish(alert(1))
    publisher.poll()
    checkpoint.producer_failed(FATAL)
    assert checkpoint.commit_acknowledged(OFFSETS) is True
    assert host.committed == [[("in", 0, 10)]]


def test_without_a_way_to_make_a_new_producer_the_failure_is_raised() -> None:
    checkpoint, _host, _ = checkpoint_with(Producer(broken=True), None)
    checkpoint.publish(alert(1))
    with pytest.raises(DeliveryError, match="cannot be replaced"):
        checkpoint.commit(OFFSETS)


def test_a_message_the_producer_refuses_for_its_size_is_produced_shortened() -> None:
    class Refusing(Producer):
        """Refuses any message above 2,000 bytes, as librdkafka's message.max.bytes does."""

        def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
            if len(value) > 2000:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
            super().produce(topic, value, key, **kw)

    producer = Refusing()
    checkpoint, host, publisher = checkpoint_with(producer, Producer())
    big = Outgoing("dead", b"x" * 100_000, b"k", [("dmon.reason", b"invalid_json")], "dead_letter")
    checkpoint.publish(big)
    assert checkpoint.broken is None
    assert producer.produced == [b"k"]
    assert checkpoint.commit(OFFSETS) is True
    assert host.committed == [[("in", 0, 10)]]
    # ...and the limit it learnt applies to the next one at once.
    assert publisher.limits.of("dead") < size_of(big.value, big.key, big.headers)


def test_a_non_fatal_refusal_holds_the_commit_instead_of_stopping_the_worker() -> None:
    class Refusing(Producer):
        refusals = 1

        def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
            if self.refusals:
                self.refusals -= 1
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, "no such topic"))
            super().produce(topic, value, key, **kw)

    producer = Refusing()
    checkpoint, host, _ = checkpoint_with(producer, Producer())
    checkpoint.publish(alert(1))  # refused: not raised
    assert checkpoint.broken is None
    assert producer.produced == []
    assert checkpoint.commit(OFFSETS) is True  # produced again before the commit
    assert producer.produced == [b"r1"]
    assert host.committed == [[("in", 0, 10)]]


def test_a_producer_that_acknowledges_nothing_for_three_flushes_is_replaced() -> None:
    """After a broker restart an idempotent producer was seen neither delivering nor
    failing its messages for good: the commit held for ever, retrying."""

    class Silent(Producer):
        def poll(self, timeout: float) -> int:
            return 0  # no delivery report, ever

        def flush(self, timeout: float) -> int:
            return len(self._callbacks)

    silent, fresh = Silent(), Producer()
    checkpoint, host, publisher = checkpoint_with(silent, fresh)
    checkpoint.flush_timeout = 0.01
    checkpoint.publish(alert(1))
    assert checkpoint.commit(OFFSETS) is False, "given back to be processed again"
    assert publisher.producer is fresh and silent.purged
    assert host.rewinds == 1 and not host.committed
