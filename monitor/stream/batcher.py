"""Micro-batch boundaries: a batch closes at a size or an age, whichever comes first.

Pure logic (no Kafka) so the rule is unit-tested with a fake clock. The age counts from
the batch's first record, not from the last poll, so a trickle of records still gets
scored within ``max_wait_s`` of arriving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Accumulates items into one open batch."""

    def __init__(
        self, max_size: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._items: list[T] = []
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def room(self) -> int:
        """How many more items fit before the batch is full."""
        return self.max_size - len(self._items)

    def add(self, items: Iterable[T]) -> None:
        """Append items; the first one starts the batch's clock."""
        before = len(self._items)
        self._items.extend(items)
        if before == 0 and self._items:
            self._opened_at = self._clock()

    def time_left(self) -> float:
        """Seconds until the open batch is due by age (``max_wait_s`` when empty)."""
        if self._opened_at is None:
            return self.max_wait_s
        return max(0.0, self._opened_at + self.max_wait_s - self._clock())

    def is_due(self) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_size or self.time_left() <= 0.0

    def take(self) -> list[T]:
        """Close the batch and return its items."""
        items, self._items, self._opened_at = self._items, [], None
        return items

    def drop_where(self, predicate: Callable[[T], bool]) -> int:
        """Remove items matching ``predicate`` (records of revoked partitions); returns the count."""
        kept = [item for item in self._items if not predicate(item)]
        dropped = len(self._items) - len(kept)
        self._items = kept
        if not kept:
            self._opened_at = None
        return dropped
