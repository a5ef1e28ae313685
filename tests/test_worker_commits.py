"""The worker's commit bookkeeping, without Kafka (pure logic: stand-ins for the clients)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from checkpoint_standins import NullMetrics
from confluent_kafka import KafkaError, Message, TopicPartition

from monitor.config import WorkerConfig
from monitor.stream.checkpoint import AtLeastOnceCheckpoint, BatchOffsets
from monitor.stream.publisher import Outgoing, Publisher
from monitor.stream.worker import MAX_UNACKED_BATCHES, Worker, _Processed


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])


def idle_worker() -> tuple[Worker, RecordingConsumer]:
    config = WorkerConfig(bootstrap_servers="127.0.0.1:1", input_topic="in", detector="unused")
    worker = Worker(config, handle_signals=False)
    consumer = RecordingConsumer()
    worker.consumer = consumer  # type: ignore[assignment]
    worker.metrics = NullMetrics()  # type: ignore[assignment]
    worker.checkpoint = AtLeastOnceCheckpoint(worker, None, worker.metrics)  # type: ignore[arg-type]
    worker._assigned = {("in", 0), ("in", 1)}
    return worker, consumer


def test_a_failed_asynchronous_commit_is_sent_again_when_the_worker_is_idle() -> None:
    """The last batches before a pause have no later commit to cover a failed one: the
    idle loop commits the latest offsets again, only for partitions still assigned."""
    worker, consumer = idle_worker()
    worker.commit_offsets([TopicPartition("in", 0, 10), TopicPartition("in", 1, 7)])
    worker.commit_offsets([TopicPartition("in", 0, 25)])
    worker._retry_failed_commit()
    assert len(consumer.commits) == 2, "nothing failed: nothing is sent again"

    worker._on_commit(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS), [])
    worker._on_revoke(worker.consumer, [TopicPartition("in", 1)])
    worker._retry_failed_commit()
    assert consumer.commits[-1] == [("in", 0, 25)]
    worker._retry_failed_commit()
    assert len(consumer.commits) == 3, "sent again once per failure"


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


class RecordingPrefetcher(RecordingConsumer):
    """With prefetching, the prefetch thread sends the commits."""

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        super().commit(offsets, asynchronous)

    def complete(self, offsets: Any, committed: bool) -> None:
        pass


def pipelined_worker(producer: SlowAcks) -> tuple[Worker, RecordingPrefetcher]:
    """An at-least-once worker with ``MAX_UNACKED_BATCHES`` batches awaiting acks, one
    alert each, in the four partitions of topic ``in``."""
    worker, _consumer = idle_worker()
    prefetcher = RecordingPrefetcher()
    worker.publisher = Publisher(producer)  # type: ignore[arg-type]
    worker.checkpoint = AtLeastOnceCheckpoint(worker, worker.publisher, worker.metrics)
    worker.prefetcher = prefetcher  # type: ignore[assignment]
    worker._assigned = {("in", p) for p in range(MAX_UNACKED_BATCHES)}
    decoded = SimpleNamespace(ignored=[], model_labels=[])
    for p in range(MAX_UNACKED_BATCHES):
        worker.publisher.produce(Outgoing("alerts", b"{}", b"k", None, "alert"))
        worker._unsettled.append(
            _Processed(
                [],
                decoded,  # type: ignore[arg-type]
                None,
                [],
                BatchOffsets({("in", p): 0}, {("in", p): 5}),
                0.0,
                [],
                worker.publisher.next_batch(),
                np.zeros(0),
            )
        )
    return worker, prefetcher


def test_a_full_pipeline_waits_only_for_its_oldest_batch() -> None:
    """With every batch allowed in flight unacknowledged, the worker commits the oldest
    once its outputs are acknowledged and goes on, instead of flushing them all (which
    waited for the newest batch's acknowledgements too)."""
    producer = SlowAcks()
    worker, consumer = pipelined_worker(producer)
    assert worker._pipeline_full()
    assert worker._make_room() is True
    assert consumer.commits == [[("in", 0, 5)]], "the oldest batch, and only it, committed"
    assert len(worker._unsettled) == MAX_UNACKED_BATCHES - 1
    assert producer.flushes == 0


def test_a_full_pipeline_with_a_failed_delivery_takes_the_full_path() -> None:
    worker, consumer = pipelined_worker(SlowAcks(fail=True))
    assert worker._make_room() is False, "the retries and rewinds of _settle take over"
    assert not consumer.commits
