"""Bounded label values: the first N distinct values keep their name, later ones become "other".

Label values come from record headers and decoders, i.e. from other people's data. Each new
value is a new time series in Prometheus, so an unbounded set would eventually exhaust it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

OTHER = "other"
UNKNOWN = "unknown"
MAX_VALUE_LENGTH = 100


def clean_value(value: object) -> str:
    """A printable, bounded label value; empty means unknown (Prometheus drops empty labels)."""
    text = str(value) if value is not None else ""
    if not text:
        return UNKNOWN
    return text[:MAX_VALUE_LENGTH]


class LabelLimiter:
    """Maps label-value tuples to themselves until ``max_values`` are known, then to "other"."""

    def __init__(self, max_values: int, width: int) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be >= 1, got {max_values}")
        self.max_values = max_values
        self.other: tuple[str, ...] = (OTHER,) * width
        self._known: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def preset(self, values: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """Admit known values up front (they count towards the limit)."""
        return [self.get(v) for v in values]

    def get(self, values: tuple[object, ...]) -> tuple[str, ...]:
        key = tuple(clean_value(v) for v in values)
        if len(key) != len(self.other):
            raise ValueError(f"expected {len(self.other)} label values, got {len(key)}: {key}")
        with self._lock:
            if key in self._known:
                return key
            if len(self._known) < self.max_values:
                self._known.add(key)
                return key
        return self.other
