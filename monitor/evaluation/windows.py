"""How the window drift test reacts to contamination: KS p-values of mixed score windows.

Each trial draws a window of ``window`` scores in which a fraction comes from a
contaminant pool (scores of harmful, or of harmless, corrupted inputs) and the rest from
the clean pool, plus a reference sample from the clean pool that shares no row with the
window, and runs the worker's own test (``monitor.stream.drift.ks_drift``). A curve is
the share of trials flagged, and the p-value quantiles, at each contamination fraction.

Trials at fraction 0 draw nothing from the contaminant, and their random stream does not
depend on the contaminant either, so every curve of a run shares the same all-clean
trials.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.stream.drift import ks_drift

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(11))
# The reference sample needs enough rows for the KS test to mean something.
MIN_REFERENCE = 50


@dataclass(frozen=True)
class TrialCurve:
    """Detection rate and p-value quantiles (10%, 50%, 90%) per contamination fraction."""

    fractions: tuple[float, ...]
    detected: tuple[float, ...]
    p_low: tuple[float, ...]
    p_median: tuple[float, ...]
    p_high: tuple[float, ...]
    trials: int
    pool: int
    with_replacement: bool

    def rate_at(self, fraction: float) -> float | None:
        for f, d in zip(self.fractions, self.detected, strict=True):
            if abs(f - fraction) < 1e-9:
                return d
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "detected": list(self.detected),
            "p_value_q10": list(self.p_low),
            "p_value_median": list(self.p_median),
            "p_value_q90": list(self.p_high),
            "trials": self.trials,
            "pool": self.pool,
            "with_replacement": self.with_replacement,
        }


def reference_size_for(n_clean: int, window: int, wanted: int) -> int:
    """Reference rows per trial: ``wanted``, or what the clean pool leaves after a window."""
    size = min(wanted, n_clean - window)
    if size < MIN_REFERENCE:
        raise ValueError(
            f"{n_clean} clean scores are too few for windows of {window} plus a reference "
            f"of at least {MIN_REFERENCE}: use smaller windows or more clean data"
        )
    return size


def draw_trial(
    rng: np.random.Generator,
    clean: np.ndarray,
    contaminant: np.ndarray,
    fraction: float,
    window: int,
    reference_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, window) for one trial; the reference shares no clean row with the window."""
    k = round(fraction * window)
    if k and contaminant.size == 0:
        raise ValueError("cannot contaminate a window from an empty pool")
    order = rng.permutation(clean.size)
    n_clean = window - k
    window_clean = clean[order[:n_clean]]
    reference = clean[order[n_clean : n_clean + reference_size]]
    if k == 0:
        return reference, window_clean
    picked = rng.choice(contaminant.size, size=k, replace=k > contaminant.size)
    return reference, np.concatenate([window_clean, contaminant[picked]])


def _trial_rng(seed: int, fraction: float, name: str) -> np.random.Generator:
    key = [seed, round(fraction * 1000)]
    if fraction > 0:
        key.append(zlib.crc32(name.encode()))
    return np.random.default_rng(key)


def contamination_trials(
    clean: np.ndarray,
    contaminant: np.ndarray,
    *,
    name: str,
    seed: int,
    p_value: float,
    window: int = 200,
    trials: int = 500,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    reference_size: int = 500,
) -> TrialCurve:
    """Run ``trials`` KS tests per fraction; ``name`` keys the contaminant's random stream."""
    clean = np.asarray(clean, dtype=np.float64).ravel()
    contaminant = np.asarray(contaminant, dtype=np.float64).ravel()
    ref_size = reference_size_for(clean.size, window, reference_size)
    detected, low, median, high = [], [], [], []
    for fraction in fractions:
        rng = _trial_rng(seed, fraction, name)
        p = np.empty(trials)
        for t in range(trials):
            reference, scores = draw_trial(rng, clean, contaminant, fraction, window, ref_size)
            p[t] = ks_drift(reference, scores, p_value).p_value
        detected.append(float(np.mean(p < p_value)))
        q10, q50, q90 = np.quantile(p, [0.1, 0.5, 0.9])
        low.append(float(q10))
        median.append(float(q50))
        high.append(float(q90))
    return TrialCurve(
        fractions=tuple(float(f) for f in fractions),
        detected=tuple(detected),
        p_low=tuple(low),
        p_median=tuple(median),
        p_high=tuple(high),
        trials=trials,
        pool=int(contaminant.size),
        with_replacement=round(max(fractions) * window) > contaminant.size,
    )


def fixed_reference_rate(
    reference: np.ndarray,
    clean: np.ndarray,
    contaminant: np.ndarray,
    fraction: float,
    *,
    seed: int,
    p_value: float,
    window: int = 200,
    trials: int = 500,
) -> float:
    """Share of windows flagged against one fixed reference (the manifest's, as the worker does)."""
    reference = np.asarray(reference, dtype=np.float64).ravel()
    clean = np.asarray(clean, dtype=np.float64).ravel()
    contaminant = np.asarray(contaminant, dtype=np.float64).ravel()
    if clean.size < window:
        raise ValueError(f"{clean.size} clean scores are too few for windows of {window}")
    rng = np.random.default_rng([seed, round(fraction * 1000), 7])
    flagged = 0
    for _ in range(trials):
        _, scores = draw_trial(rng, clean, contaminant, fraction, window, 0)
        flagged += ks_drift(reference, scores, p_value).drifted
    return flagged / trials
