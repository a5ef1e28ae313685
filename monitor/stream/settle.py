"""Batches scored and published, until their commit: in order, when the checkpoint says.

The worker hands each processed batch to ``Settler.add`` and, when no batch came,
calls ``settle``. Whether a batch may wait for a later commit, and when a full pipeline
must make room, is the checkpoint's call (``may_extend``, ``full``); the settler keeps
the batches in order, commits them (one transaction, or acknowledged ones at once), tells
the intake each batch is done, and hands committed batches to ``account`` for metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from monitor.stream.offsets import BatchOffsets, merged
from monitor.stream.publisher import Publisher

#: With every allowed batch unacknowledged, wait this long for the oldest one's
#: acknowledgements before taking the full path (flush everything, retry failures, or
#: give batches back).
MAKE_ROOM_S = 1.0


@dataclass
class Processed:
    """A batch scored and published, waiting for its commit (or transaction)."""

    offsets: BatchOffsets
    output_batch: int  # the publisher's batch number of its alerts and dead letters
    started: float  # perf_counter() when processing began
    outcome: Any  # what ``account`` needs once the batch is committed


class Checkpoint(Protocol):
    commits_acknowledged: bool

    def may_extend(self, waiting: int, next_ready: bool, age_s: float) -> bool: ...
    def full(self, waiting: int) -> bool: ...
    def commit(self, offsets: BatchOffsets) -> bool: ...
    def commit_acknowledged(self, offsets: BatchOffsets) -> bool: ...


class IntakeSide(Protocol):
    def ready(self) -> bool: ...
    def complete(self, offsets: BatchOffsets, committed: bool) -> None: ...


class Settler:
    """The processed batches not committed yet, oldest first."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        publisher: Publisher,
        intake: IntakeSide,
        account: Callable[[Processed], None],
        stopping: Callable[[], bool],
        rewound: Callable[[int], None] = lambda _n: None,
    ) -> None:
        self.checkpoint = checkpoint
        self.publisher = publisher
        self.intake = intake
        self.account = account
        self.stopping = stopping
        self.rewound = rewound  # told how many batches were given back
        self._waiting: list[Processed] = []
        self._since = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, batch: Processed) -> bool | None:
        """Take a processed batch; commit now or later, as the checkpoint decides.

        False when batches were given back (rewound) instead of committed; None when the
        batch waits for a later commit.
        """
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(batch)
        checkpoint, stopping = self.checkpoint, self.stopping()
        age = time.monotonic() - self._since
        if not stopping and checkpoint.may_extend(len(self._waiting), self.intake.ready(), age):
            if checkpoint.commits_acknowledged:
                self.settle_acknowledged()
            return None
        if not stopping and checkpoint.full(len(self._waiting)) and self._make_room():
            return None
        return self.settle()

    def settle(self) -> bool:
        """Commit every waiting batch (one transaction), or give them all back."""
        return self._commit(len(self._waiting), acknowledged=False)

    def settle_acknowledged(self) -> None:
        """Commit the oldest batches whose outputs are all acknowledged, without
        waiting. A delivery failure is left to the waiting ``settle``."""
        self.publisher.poll()
        if self.publisher.has_failures:
            return
        done = 0
        for batch in self._waiting:
            if not self.publisher.acknowledged(batch.output_batch):
                break
            done += 1
        if done:
            self._commit(done, acknowledged=True)

    def _make_room(self) -> bool:
        """Wait for the oldest batch's acknowledgements and commit what they allow.

        Flushing them all instead kept the worker waiting for the newest batch's too
        (``linger.ms`` included) while the next batch was ready. False when that did not
        make room within ``MAKE_ROOM_S`` or a delivery failed: ``settle`` takes over.
        """
        deadline = time.monotonic() + MAKE_ROOM_S
        while True:
            self.settle_acknowledged()
            if not self.checkpoint.full(len(self._waiting)):
                return True
            if self.publisher.has_failures or self.stopping() or time.monotonic() > deadline:
                return False
            self.publisher.poll(0.001)

    def _commit(self, count: int, acknowledged: bool) -> bool:
        batches: Sequence[Processed] = self._waiting[:count]
        self._waiting = self._waiting[count:]
        if not batches:
            return True
        offsets = merged([b.offsets for b in batches])
        if acknowledged:
            committed = self.checkpoint.commit_acknowledged(offsets)
        else:
            committed = self.checkpoint.commit(offsets)
        if committed:
            for batch in batches:
                self.account(batch)
        else:
            self.rewound(len(batches))
        for batch in batches:
            self.intake.complete(batch.offsets, committed)
        return committed
