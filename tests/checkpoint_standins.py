"""Stand-ins for what a checkpoint talks to besides the producer (pure-logic tests)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition


class Host:
    """The intake as a checkpoint sees it: every partition assigned; counts rewinds and
    records offset commits."""

    def __init__(self) -> None:
        self.rewinds = 0
        self.committed: list[list[tuple[str, int, int]]] = []

    def serve_group(self, seconds: float) -> None:
        pass

    def is_assigned(self, tp: Any) -> bool:
        return True

    def rewind(self) -> None:
        self.rewinds += 1

    def commit(self, offsets: list[TopicPartition]) -> None:
        self.committed.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def group_metadata(self) -> Any:
        return object()


class NullMetrics:
    """Accepts every metric call and records nothing."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *args, **kwargs: None
