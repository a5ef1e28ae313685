"""Stand-ins for what a checkpoint talks to besides the producer (pure-logic tests)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from monitor.stream.checkpoint import BatchOffsets


class Host:
    """The worker as a checkpoint sees it: every partition assigned, never stopping;
    records rewinds and offset commits."""

    consumer: Any = None

    def __init__(self) -> None:
        self.rewound: list[BatchOffsets] = []
        self.committed: list[list[tuple[str, int, int]]] = []

    def serve_group(self, seconds: float) -> None:
        pass

    def is_assigned(self, tp: Any) -> bool:
        return True

    def stopping_past_deadline(self) -> bool:
        return False

    def rewind(self, offsets: BatchOffsets) -> None:
        self.rewound.append(offsets)

    def commit_offsets(self, offsets: list[TopicPartition]) -> None:
        self.committed.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def group_metadata(self) -> Any:
        return object()


class NullMetrics:
    """Accepts every metric call and records nothing."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *args, **kwargs: None
