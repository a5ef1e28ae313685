"""Micro-batch boundaries: a batch closes at a count, a size in bytes or an age, whichever
comes first.

Pure logic (no Kafka) so the rule is unit-tested with a fake clock. The age counts from
the batch's first record, not from the last poll, so a trickle of records still gets
scored within ``max_wait_s`` of arriving. The byte bound keeps a batch of large records
(images, say) from holding as much memory, and as many model activations, as a batch of
small ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Accumulates items into one open batch."""

    def __init__(
        self,
        max_size: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int | None = None,
        bytes_of: Callable[[Iterable[T]], int] = lambda _items: 0,
    ) -> None:
        """``bytes_of`` gives the total size of some items; with ``max_bytes`` a batch
        closes once it holds that many bytes, and never holds more (an item larger than
        ``max_bytes`` is a batch of its own)."""
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_bytes = max_bytes
        self._bytes_of = bytes_of
        self._clock = clock
        self._items: list[T] = []
        self._bytes = 0
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
        if self.max_bytes is not None:
            self._bytes += self._bytes_of(islice(self._items, before, None))
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
        return (
            len(self._items) >= self.max_size
            or (self.max_bytes is not None and self._bytes >= self.max_bytes)
            or self.time_left() <= 0.0
        )

    def take(self) -> list[T]:
        """Close the batch and return its items: all of them, or past ``max_bytes`` the
        longest run from the start that fits (at least one); the rest opens the next batch."""
        if self.max_bytes is None or self._bytes <= self.max_bytes:
            items, self._items, self._opened_at, self._bytes = self._items, [], None, 0
            return items
        cut, total = 0, 0
        for item in self._items:
            total += self._bytes_of((item,))
            if total > self.max_bytes:
                break
            cut += 1
        cut = max(cut, 1)
        items, self._items = self._items[:cut], self._items[cut:]
        self._bytes = self._bytes_of(self._items)
        self._opened_at = self._clock()
        return items

    def drop_where(self, predicate: Callable[[T], bool]) -> int:
        """Remove items matching ``predicate`` (records of revoked partitions); returns the count."""
        kept = [item for item in self._items if not predicate(item)]
        dropped = len(self._items) - len(kept)
        self._items = kept
        if self.max_bytes is not None:
            self._bytes = self._bytes_of(kept)
        if not kept:
            self._opened_at = None
        return dropped
