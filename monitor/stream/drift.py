"""Harmful drift on score windows: a two-sample Kolmogorov-Smirnov test.

Harmful inputs raise scores, so a window of recent scores whose distribution differs
from the reference scores saved with the detector (scores on clean threshold data) is
evidence of harmful drift even when few single records cross the threshold. Windows are
tumbling: each record is tested once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp


@dataclass(frozen=True)
class DriftResult:
    p_value: float
    statistic: float
    drifted: bool
    window: int
    #: Index, in the scores given to ``DriftWindow.add``, of the score that completed the
    #: window: the drift event names that row's record (its id is made from it).
    last: int = -1


def ks_drift(
    reference: np.ndarray, window: np.ndarray, p_value: float, last: int = -1
) -> DriftResult:
    """Test one window of scores against the reference scores."""
    result = ks_2samp(reference, window, alternative="two-sided", method="auto")
    p = float(result.pvalue)
    return DriftResult(
        p_value=p,
        statistic=float(result.statistic),
        drifted=p < p_value,
        window=len(window),
        last=last,
    )


class DriftWindow:
    """Collects scores and tests every full window of ``size`` records."""

    def __init__(self, reference: np.ndarray, size: int, p_value: float) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        reference = np.asarray(reference, dtype=np.float64).ravel()
        if reference.size < 2:
            raise ValueError(
                "the detector's manifest has too few reference scores for a drift test"
            )
        self.reference = reference
        self.size = size
        self.p_value = p_value
        self._buffer = np.empty(size, dtype=np.float64)
        self._filled = 0

    def add(self, scores: np.ndarray) -> list[DriftResult]:
        """Add a batch of scores; returns a result for each window it completed."""
        results: list[DriftResult] = []
        scores = np.asarray(scores, dtype=np.float64).ravel()
        start = 0
        while start < scores.size:
            take = min(self.size - self._filled, scores.size - start)
            self._buffer[self._filled : self._filled + take] = scores[start : start + take]
            self._filled += take
            start += take
            if self._filled == self.size:
                results.append(ks_drift(self.reference, self._buffer, self.p_value, start - 1))
                self._filled = 0
        return results
