"""When processed batches commit (pure logic: stand-ins for the Kafka clients)."""

from __future__ import annotations

from typing import Any

from checkpoint_standins import Host, NullMetrics
from confluent_kafka import KafkaError, Message

from monitor.stream.checkpoint import (
    MAX_UNACKED_BATCHES,
    AtLeastOnceCheckpoint,
    TransactionalCheckpoint,
)
from monitor.stream.offsets import BatchOffsets
from monitor.stream.publisher import Outgoing, Publisher
from monitor.stream.settle import Processed, Settler


class SlowAcks:
    """A producer whose messages are acknowledged one per ``poll`` call, oldest first."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.flushes = 0
        self._waiting: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        self._waiting.append((kw["on_delivery"], Message(topic=topic, value=value, key=key)))

    def poll(self, timeout: float) -> int:
        if not self._waiting:
            return 0
        err = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail else None
        on_delivery, report = self._waiting.pop(0)
        on_delivery(err, report)
        return 1

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        while self._waiting:
            self.poll(0)
        return 0


class IntakeSide(Host):
    """The intake as the settler sees it: whether a next batch waits, and which batches
    were completed."""

    def __init__(self, next_ready: bool = False) -> None:
        super().__init__()
        self.next_ready = next_ready
        self.completed: list[tuple[BatchOffsets, bool]] = []

    def ready(self) -> bool:
        return self.next_ready

    def complete(self, offsets: BatchOffsets, committed: bool) -> None:
        self.completed.append((offsets, committed))


def batch(publisher: Publisher, partition: int) -> Processed:
    """A batch of partition ``partition`` whose one alert is being delivered."""
    publisher.produce(Outgoing("alerts", b"{}", b"k", None, "alert"))
    offsets = BatchOffsets({("in", partition): 0}, {("in", partition): 5})
    return Processed(offsets, publisher.next_batch(), 0.0, None)


def settler_with(producer: SlowAcks) -> tuple[Settler, IntakeSide, list[Processed]]:
    intake = IntakeSide()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    checkpoint = AtLeastOnceCheckpoint(intake, publisher, NullMetrics())  # type: ignore[arg-type]
    accounted: list[Processed] = []
    settler = Settler(checkpoint, publisher, intake, accounted.append, lambda: False)
    return settler, intake, accounted


def test_at_least_once_batches_wait_for_their_acks_up_to_the_pipelines_bound() -> None:
    producer = SlowAcks()
    settler, intake, _ = settler_with(producer)
    publisher = settler.publisher
    for p in range(MAX_UNACKED_BATCHES - 1):
        assert settler.add(batch(publisher, p)) is None, "the next batch need not wait"
    # acknowledged on the way: the oldest commit as their acks come in
    assert intake.committed, "acknowledged batches commit without waiting for the others"
    assert producer.flushes == 0


def test_a_full_pipeline_waits_only_for_its_oldest_batch() -> None:
    """With every batch allowed in flight unacknowledged, the oldest commits once its
    outputs are acknowledged and the next goes on, instead of flushing them all (which
    waited for the newest batch's acknowledgements too)."""
    producer = SlowAcks()
    settler, intake, accounted = settler_with(producer)
    publisher = settler.publisher
    batches = [batch(publisher, p) for p in range(MAX_UNACKED_BATCHES)]
    settler._waiting = batches[:-1]
    assert settler.add(batches[-1]) is None
    assert intake.committed[0] == [("in", 0, 5)], "the oldest batch committed first"
    assert settler.waiting < MAX_UNACKED_BATCHES
    assert accounted[0] is batches[0]
    assert producer.flushes == 0


def test_a_full_pipeline_with_a_failed_delivery_takes_the_full_path() -> None:
    settler, intake, _ = settler_with(SlowAcks(fail=True))
    publisher = settler.publisher
    batches = [batch(publisher, p) for p in range(MAX_UNACKED_BATCHES)]
    settler._waiting = batches
    assert settler._make_room() is False, "the retries and rewinds of settle take over"
    assert not intake.committed


def test_a_transaction_takes_the_next_batch_only_while_it_waits_and_is_young() -> None:
    intake = IntakeSide(next_ready=True)
    checkpoint = TransactionalCheckpoint(
        intake,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        NullMetrics(),
        transaction_s=0.1,
    )
    assert checkpoint.may_extend(1, next_ready=True, age_s=0.0)
    assert not checkpoint.may_extend(1, next_ready=False, age_s=0.0), "a trickle commits at once"
    assert not checkpoint.may_extend(5, next_ready=True, age_s=0.2), "old enough: commit"
    assert not checkpoint.full(100)


def test_committed_batches_are_completed_in_order_and_accounted() -> None:
    producer = SlowAcks()
    settler, intake, accounted = settler_with(producer)
    publisher = settler.publisher
    batches = [batch(publisher, p) for p in range(2)]
    settler._waiting = list(batches)
    assert settler.settle() is True
    assert [offsets for offsets, _ in intake.completed] == [b.offsets for b in batches]
    assert accounted == batches
