"""Fraction of flagged records among the last N scored, updated a whole batch at a time."""

from __future__ import annotations

import threading

import numpy as np


class FlagWindow:
    """Ring buffer of the last ``size`` flags; ``add`` is O(batch + size), never per record."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"rate window must be >= 1 record, got {size}")
        self.size = size
        self._buf = np.zeros(size, dtype=np.bool_)
        self._pos = 0
        self._filled = 0
        self._lock = threading.Lock()

    def add(self, flagged: np.ndarray) -> tuple[float, int]:
        """Append flags; returns (flagged fraction over the window, records in the window)."""
        f = np.asarray(flagged, dtype=np.bool_).ravel()
        with self._lock:
            if f.size >= self.size:
                self._buf[:] = f[-self.size :]
                self._pos = 0
                self._filled = self.size
            elif f.size:
                end = self._pos + f.size
                if end <= self.size:
                    self._buf[self._pos : end] = f
                else:
                    split = self.size - self._pos
                    self._buf[self._pos :] = f[:split]
                    self._buf[: end - self.size] = f[split:]
                self._pos = end % self.size
                self._filled = min(self.size, self._filled + f.size)
            return self._ratio()

    def _ratio(self) -> tuple[float, int]:
        if self._filled == 0:
            return 0.0, 0
        # Unfilled slots are False, so counting the whole buffer is exact.
        return int(np.count_nonzero(self._buf)) / self._filled, self._filled
