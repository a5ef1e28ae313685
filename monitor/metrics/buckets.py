"""Histogram bucket bounds chosen for what each histogram measures.

The web-latency defaults of prometheus_client say nothing about harmfulness scores: a score
only means something relative to the detector's threshold, so score buckets are spaced in
multiples of the threshold, densest around it, with the threshold itself a bound so that
``le="<threshold>"`` counts exactly the records that were *not* flagged (flagged means
score > threshold).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

# Quarter-decade steps from threshold/100 to threshold*100 (17 bounds) ...
_COARSE_FACTORS = tuple(10.0 ** (k / 4) for k in range(-8, 9))
# ... plus dense steps near the threshold, where flagging decisions are made.
_DENSE_FACTORS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.05, 1.1, 1.25, 1.5, 2.0)


def _sig(x: float, digits: int = 3) -> float:
    """Round to significant digits so ``le`` labels stay readable."""
    return float(f"{x:.{digits}g}")


# Used when the threshold cannot anchor the buckets (zero, negative, non-finite).
FALLBACK_SCORE_BUCKETS: tuple[float, ...] = tuple(_sig(10.0 ** (k / 4)) for k in range(-16, 9))

BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**k) for k in range(15))
BATCH_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
)  # fmt: skip


def default_score_buckets(threshold: float) -> tuple[float, ...]:
    """Bounds from threshold/100 to threshold*100, dense near the threshold, threshold included.

    The threshold is kept exactly (not rounded), every other bound to three significant
    digits. A threshold that is not a positive finite number falls back to fixed
    log-spaced bounds from 1e-4 to 100.
    """
    t = float(threshold)
    if not math.isfinite(t) or t <= 0.0:
        return FALLBACK_SCORE_BUCKETS
    others = {_sig(t * f) for f in (*_COARSE_FACTORS, *_DENSE_FACTORS)}
    # Rounding puts a near-duplicate of the threshold in the set; keep the exact value only.
    others = {b for b in others if abs(b - t) > 0.02 * t}
    return tuple(sorted({*others, t}))


def validate_buckets(bounds: Iterable[float]) -> tuple[float, ...]:
    """Finite, strictly increasing upper bounds; ``+Inf`` is implicit and dropped if given."""
    out = tuple(float(b) for b in bounds if not (math.isinf(b) and b > 0))
    if not out:
        raise ValueError("histogram needs at least one finite bucket bound")
    if any(not math.isfinite(b) for b in out):
        raise ValueError(f"bucket bounds must be finite: {out}")
    if any(b >= c for b, c in itertools.pairwise(out)):
        raise ValueError(f"bucket bounds must be strictly increasing: {out}")
    return out


__all__ = [
    "BATCH_DURATION_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "FALLBACK_SCORE_BUCKETS",
    "LATENCY_BUCKETS",
    "default_score_buckets",
    "validate_buckets",
]
