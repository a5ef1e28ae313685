"""Corruptions for tabular inputs, each in the features' own scale, at severities 1-5.

Tabular features have no common range (a wine's proline is in the hundreds, its hue
around 1), so every corruption is defined relative to per-feature statistics
(``FeatureStats``: mean, standard deviation, observed minimum and maximum) taken from
clean *training* data, never from the set being corrupted: the scale must not depend on
the inputs under test. Inputs of any shape (n, ...) are treated as n rows of
``prod(shape[1:])`` features. Everything is seeded by the ``rng`` passed in; outputs keep
the input's shape, are float32 and finite.

- ``gaussian_noise``: noise of 0.2-1.0 feature standard deviations on every feature.
- ``feature_dropout``: a share of each row's features (10% to 60%) set to the feature's
  mean, as a pipeline that fills missing values would.
- ``feature_swap``: pairs of features swap their standardised values within the row, as
  when columns arrive in the wrong order but each column's scale is kept.
- ``feature_shuffle``: a share of each row's features take that feature's value from
  another row of the set (each column keeps its distribution; the row's joint pattern
  breaks, as after a bad join).
- ``out_of_range``: a few features per row pushed beyond their observed range by
  0.25-2 standard deviations (an out-of-range sensor, a unit change).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.corruptions import SEVERITIES

# Share of a row's features each corruption touches, by severity (at least one feature).
SHARES = (0.1, 0.2, 0.3, 0.45, 0.6)
NOISE_STD = (0.2, 0.35, 0.5, 0.7, 1.0)
OUT_OF_RANGE_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25)
OUT_OF_RANGE_STD = (0.25, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature mean, standard deviation (1 where a feature is constant), min and max,
    each of shape (features,) for the flattened input."""

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]  # one row's shape, so attacks can reshape the scale

    @property
    def features(self) -> int:
        return int(self.mean.size)


def feature_stats(x: np.ndarray) -> FeatureStats:
    """Statistics of clean (training) inputs ``x`` of shape (n, ...), n >= 2."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(
            f"feature statistics need at least 2 rows of shape (n, ...), got {x.shape}"
        )
    flat = x.reshape(len(x), -1)
    if not np.all(np.isfinite(flat)):
        raise ValueError("feature statistics need finite inputs")
    std = flat.std(axis=0)
    return FeatureStats(
        mean=flat.mean(axis=0),
        std=np.where(std > 0, std, 1.0),
        low=flat.min(axis=0),
        high=flat.max(axis=0),
        shape=tuple(x.shape[1:]),
    )


TabularCorruption = Callable[[np.ndarray, int, np.random.Generator, FeatureStats], np.ndarray]


def _rows(x: np.ndarray, severity: int, stats: FeatureStats) -> np.ndarray:
    """``x`` as float64 rows of features, checked against the severity and the statistics."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if flat.shape[1] != stats.features:
        raise ValueError(f"inputs have {flat.shape[1]} features, the statistics {stats.features}")
    return flat


def _done(flat: np.ndarray, x: np.ndarray) -> np.ndarray:
    return flat.reshape(np.shape(x)).astype(np.float32)


def _count(share: float, features: int) -> int:
    return min(features, max(1, math.ceil(share * features)))


def _chosen(rng: np.random.Generator, n: int, d: int, k: int) -> np.ndarray:
    """Column indices (n, k): k distinct random features per row."""
    return np.argsort(rng.random((n, d)), axis=1)[:, :k]


def gaussian_noise(
    x: np.ndarray, severity: int, rng: np.random.Generator, stats: FeatureStats
) -> np.ndarray:
    flat = _rows(x, severity, stats)
    noise = rng.normal(0.0, 1.0, flat.shape) * NOISE_STD[severity - 1] * stats.std
    return _done(flat + noise, x)


def feature_dropout(
    x: np.ndarray, severity: int, rng: np.random.Generator, stats: FeatureStats
) -> np.ndarray:
    flat = _rows(x, severity, stats).copy()
    n, d = flat.shape
    cols = _chosen(rng, n, d, _count(SHARES[severity - 1], d))
    flat[np.arange(n)[:, None], cols] = stats.mean[cols]
    return _done(flat, x)


def feature_swap(
    x: np.ndarray, severity: int, rng: np.random.Generator, stats: FeatureStats
) -> np.ndarray:
    flat = _rows(x, severity, stats)
    n, d = flat.shape
    if d < 2:
        raise ValueError("feature_swap needs at least 2 features")
    # At least ``severity`` pairs where the row has room, so strength grows on few features.
    pairs = min(d // 2, max(severity, round(SHARES[severity - 1] * d / 2)))
    z = (flat - stats.mean) / stats.std
    cols = _chosen(rng, n, d, 2 * pairs)
    a, b = cols[:, :pairs], cols[:, pairs:]
    rows = np.arange(n)[:, None]
    z[rows, a], z[rows, b] = z[rows, b], z[rows, a]  # fancy indexing reads copies
    return _done(stats.mean + z * stats.std, x)


def feature_shuffle(
    x: np.ndarray, severity: int, rng: np.random.Generator, stats: FeatureStats
) -> np.ndarray:
    flat = _rows(x, severity, stats)
    n, d = flat.shape
    if n < 2:
        raise ValueError("feature_shuffle needs at least 2 rows to draw values from")
    cols = _chosen(rng, n, d, _count(SHARES[severity - 1], d))
    rows = np.arange(n)[:, None]
    donors = (rows + rng.integers(1, n, cols.shape)) % n  # always another row
    out = flat.copy()
    out[rows, cols] = flat[donors, cols]
    return _done(out, x)


def out_of_range(
    x: np.ndarray, severity: int, rng: np.random.Generator, stats: FeatureStats
) -> np.ndarray:
    flat = _rows(x, severity, stats).copy()
    n, d = flat.shape
    cols = _chosen(rng, n, d, _count(OUT_OF_RANGE_SHARES[severity - 1], d))
    beyond = OUT_OF_RANGE_STD[severity - 1] * stats.std[cols]
    above = rng.random(cols.shape) < 0.5
    values = np.where(above, stats.high[cols] + beyond, stats.low[cols] - beyond)
    flat[np.arange(n)[:, None], cols] = values
    return _done(flat, x)


TABULAR: dict[str, TabularCorruption] = {
    "gaussian_noise": gaussian_noise,
    "feature_dropout": feature_dropout,
    "feature_swap": feature_swap,
    "feature_shuffle": feature_shuffle,
    "out_of_range": out_of_range,
}


def attack_scale(stats: FeatureStats) -> np.ndarray:
    """Per-feature standard deviations shaped like one input row: an attack's epsilon
    in these units moves each feature by at most epsilon of its own spread."""
    return stats.std.reshape(stats.shape).astype(np.float32)
