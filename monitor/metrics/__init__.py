"""Prometheus metrics of the streaming worker.

``WorkerMetrics`` registers everything on a registry the caller owns (tests use a fresh
``CollectorRegistry()``); :mod:`monitor.http` serves it with the health endpoints.
Histograms of per-record values take numpy arrays, one call per batch.
"""

from __future__ import annotations

from monitor.metrics.buckets import default_score_buckets
from monitor.metrics.histogram import VectorHistogram
from monitor.metrics.kafka_stats import KafkaStatsCollector, parse_stats
from monitor.metrics.worker import PREFIX, WorkerMetrics

__all__ = [
    "PREFIX",
    "KafkaStatsCollector",
    "VectorHistogram",
    "WorkerMetrics",
    "default_score_buckets",
    "parse_stats",
]
