"""The publisher's per-batch acknowledgement bookkeeping (pure logic, a fake producer)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message

from monitor.stream.publisher import Outgoing, Publisher


class FakeProducer:
    """Keeps delivery callbacks until the test acknowledges them; a delivery report, like
    librdkafka's, carries topic, key and value but no headers."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.reports: list[Message] = []
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.callbacks.append(on_delivery)
        self.reports.append(Message(topic=topic, value=value, key=key))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def ack(self, index: int, err: KafkaError | None = None) -> None:
        self.callbacks[index](err, self.reports[index])


def out(n: int) -> Outgoing:
    return Outgoing("alerts", f"{n}".encode(), None, None, "alert")


def test_a_batch_is_acknowledged_once_all_its_messages_are_whatever_later_batches_do() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    first = publisher.batch
    publisher.produce(out(0))
    publisher.produce(out(1))
    assert publisher.next_batch() == first
    second = publisher.batch
    publisher.produce(out(2))
    publisher.next_batch()
    third = publisher.batch  # nothing produced: acknowledged at once
    assert not publisher.acknowledged(first) and not publisher.acknowledged(second)
    assert publisher.acknowledged(third)
    producer.ack(2)
    assert publisher.acknowledged(second) and not publisher.acknowledged(first)
    producer.ack(0)
    producer.ack(1)
    assert publisher.acknowledged(first)
    assert publisher.in_flight == 0 and not publisher.has_failures
    assert publisher.take_delivered()["alert"] == 3


def test_a_failed_delivery_counts_as_answered_and_is_reported() -> None:
    """A failure answers its message (the batch is no longer waiting) but shows in
    ``has_failures``, which keeps the worker from committing without retrying it."""
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    batch = publisher.batch
    publisher.produce(out(0))
    producer.ack(0, KafkaError(KafkaError._MSG_TIMED_OUT))
    assert publisher.acknowledged(batch)
    assert publisher.has_failures


def test_producing_does_not_poll_per_message() -> None:
    """Polling after every message handed the GIL to the intake thread each time."""
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    for n in range(50):
        publisher.produce(out(n))
    assert producer.polls == 0
    publisher.poll()
    assert producer.polls == 1


def test_a_failed_message_without_headers_is_rebuilt_from_its_delivery_report() -> None:
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    publisher.produce(Outgoing("alerts", b"payload", b"key-1", None, "alert"))
    publisher.produce(Outgoing("drift", b"event", None, None, "drift"))
    producer.ack(0, KafkaError(KafkaError._MSG_TIMED_OUT))
    producer.ack(1, KafkaError(KafkaError._MSG_TIMED_OUT))
    failed = [out for out, _err in publisher.flush(1.0)]
    assert failed == [
        Outgoing("alerts", b"payload", b"key-1", None, "alert"),
        Outgoing("drift", b"event", None, None, "drift"),
    ]


def test_a_failed_message_with_headers_is_kept_whole() -> None:
    """Delivery reports carry no headers: a dead letter's reason must survive a retry."""
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    dead = Outgoing("dlq", b"{bad", b"k", [("dmon.reason", b"invalid_json")], "dead_letter")
    publisher.produce(dead)
    producer.ack(0, KafkaError(KafkaError._MSG_TIMED_OUT))
    assert [out for out, _err in publisher.flush(1.0)] == [dead]


def test_messages_without_headers_share_one_callback_per_batch_and_kind() -> None:
    """A closure per message made every alert cost about twice as much."""
    producer = FakeProducer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    for n in range(3):
        publisher.produce(out(n))
    publisher.produce(Outgoing("drift", b"event", None, None, "drift"))
    publisher.next_batch()
    publisher.produce(out(3))
    first, second, third, drift, next_batch = producer.callbacks
    assert first is second is third
    assert drift is not first and next_batch is not first
    for index in range(5):
        producer.ack(index)
    assert publisher.take_delivered() == {"alert": 4, "drift": 1}
    assert publisher.in_flight == 0
