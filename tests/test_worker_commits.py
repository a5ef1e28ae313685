"""The worker's commit bookkeeping, without Kafka (pure logic: stand-ins for the clients)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from monitor.config import WorkerConfig
from monitor.stream.checkpoint import AtLeastOnceCheckpoint
from monitor.stream.worker import Worker


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])


class NullMetrics:
    def __getattr__(self, _name: str) -> Any:
        return lambda *args, **kwargs: None


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
