"""Where a batch starts and ends in each partition: what is committed, or rewound to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

TP = tuple[str, int]


@dataclass
class BatchOffsets:
    """First offset and next offset (last + 1) of every partition in one batch."""

    first: dict[TP, int] = field(default_factory=dict)
    next: dict[TP, int] = field(default_factory=dict)

    @classmethod
    def of(cls, messages: Sequence[Message]) -> BatchOffsets:
        first: dict[TP, int] = {}
        nxt: dict[TP, int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            off = m.offset() or 0
            if tp not in first:
                first[tp] = off
            nxt[tp] = off + 1
        return cls(first, nxt)

    def commit_list(self, keep: Callable[[TP], bool] = lambda _tp: True) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.next.items() if keep((t, p))]

    def rewind_list(self, keep: Callable[[TP], bool] = lambda _tp: True) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.first.items() if keep((t, p))]


def merged(parts: Sequence[BatchOffsets]) -> BatchOffsets:
    """The offsets of consecutive batches as one: earliest first, latest next."""
    if len(parts) == 1:
        return parts[0]
    first: dict[TP, int] = {}
    nxt: dict[TP, int] = {}
    for part in parts:
        for tp, offset in part.first.items():
            first.setdefault(tp, offset)
        nxt.update(part.next)
    return BatchOffsets(first, nxt)
