"""A histogram fed with whole numpy arrays, exposed through a custom collector.

prometheus_client's ``Histogram.observe`` is one Python call (and one lock) per value; at
100k+ records/s that alone would cost a core. Here one call per batch finds every value's
bucket with ``np.searchsorted`` and adds the counts with ``np.bincount``; the lock is held
only for the in-place additions. Scrapes build a ``HistogramMetricFamily`` from a copy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.metrics.buckets import validate_buckets

LabelValues = tuple[str, ...]


class VectorHistogram(Collector):
    """Cumulative histogram with optional labels; ``observe`` takes arrays.

    Non-finite values (NaN, +-Inf) are counted in the ``+Inf`` bucket (NaN and +Inf) or
    the first bucket (-Inf) but left out of ``_sum``, so a single bad score cannot turn
    the sum, and every average derived from it, into NaN forever.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Iterable[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = np.asarray(validate_buckets(buckets), dtype=np.float64)
        self._nbuckets = self.bounds.size + 1  # + the implicit +Inf bucket
        self._lock = threading.Lock()
        self._counts: dict[LabelValues, np.ndarray] = {}
        self._sums: dict[LabelValues, float] = {}
        if not self.labelnames:
            self._state(())

    def _state(self, key: LabelValues) -> np.ndarray:
        """Per-bucket (non-cumulative) counts for one label set, created at zero. Hold the lock."""
        counts = self._counts.get(key)
        if counts is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            counts = self._counts[key] = np.zeros(self._nbuckets, dtype=np.int64)
            self._sums[key] = 0.0
        return counts

    def preset(self, key: LabelValues) -> None:
        """Expose a label set at zero before its first observation."""
        with self._lock:
            self._state(key)

    def _bucket_index(self, values: np.ndarray) -> np.ndarray:
        # le semantics: a value v goes to the first bound b with v <= b. NaN sorts last.
        return np.searchsorted(self.bounds, values, side="left")

    def observe(self, values: np.ndarray, key: LabelValues = ()) -> None:
        """Add every value of a 1-D array to the histogram of one label set."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        counts = np.bincount(self._bucket_index(v), minlength=self._nbuckets)
        total = _finite_sum(v)
        with self._lock:
            self._state(key)[:] += counts
            self._sums[key] += total

    def observe_grouped(
        self, values: np.ndarray, codes: np.ndarray, keys: Sequence[LabelValues]
    ) -> None:
        """Add values to several label sets at once: row i goes to ``keys[codes[i]]``."""
        v = np.asarray(values, dtype=np.float64).ravel()
        c = np.asarray(codes, dtype=np.intp).ravel()
        if v.shape != c.shape:
            raise ValueError(f"{self.name}: {v.size} values but {c.size} group codes")
        if v.size == 0:
            return
        ngroups = len(keys)
        flat = c * self._nbuckets + self._bucket_index(v)
        counts = np.bincount(flat, minlength=ngroups * self._nbuckets)
        counts = counts.reshape(ngroups, self._nbuckets)
        finite = np.isfinite(v)
        sums = np.bincount(c, weights=np.where(finite, v, 0.0), minlength=ngroups)
        present = np.flatnonzero(counts.sum(axis=1))
        with self._lock:
            for g in present:
                key = keys[int(g)]
                self._state(key)[:] += counts[g]
                self._sums[key] += float(sums[g])

    def snapshot(self) -> dict[LabelValues, tuple[np.ndarray, float]]:
        """Copies of the cumulative bucket counts (``+Inf`` last) and sums per label set."""
        with self._lock:
            return {k: (np.cumsum(c), self._sums[k]) for k, c in self._counts.items()}

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for key, (cumulative, total) in sorted(self.snapshot().items()):
            buckets = [(le, float(n)) for le, n in zip(les, cumulative, strict=True)]
            family.add_metric(list(key), buckets, total)
        yield family


def _finite_sum(v: np.ndarray) -> float:
    total = float(v.sum())
    if np.isfinite(total):
        return total
    return float(v[np.isfinite(v)].sum())
