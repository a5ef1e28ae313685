"""The streaming worker's metric set, registered on an injected registry.

Naming follows the Prometheus practices for batch/stream processing: items in
(``records_consumed_total``), out (``records_scored_total``, ``records_flagged_total``),
failures next to attempts (``commits_total`` / ``commit_failures_total``), the timestamp of
the last item processed, base units, ``_total`` counters, bounded labels. Known label values
(dead-letter reasons, transaction outcomes) are pre-set to 0 so that ``increase()`` sees
their first occurrence.

Every per-record input is a numpy array handled in one call per batch; nothing here loops
over records in Python.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from monitor._version import __version__
from monitor.metrics.buckets import (
    BATCH_DURATION_BUCKETS,
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    default_score_buckets,
)
from monitor.metrics.histogram import VectorHistogram
from monitor.metrics.kafka_stats import KafkaStatsCollector
from monitor.metrics.labels import UNKNOWN, LabelLimiter, clean_value
from monitor.metrics.window import FlagWindow

PREFIX = "distillation_monitor_"
MODEL_LABELS = ("model_name", "model_version", "namespace")
TRANSACTION_OUTCOMES = ("committed", "aborted")
BROKER_ERROR_CODES = ("_TRANSPORT", "_ALL_BROKERS_DOWN")
DETECTOR_INFO_KEYS = ("name", "version", "loss_type", "temperature", "manifest_hash")

ModelLabels = tuple[str, str, str]


class WorkerMetrics:
    """All metrics one worker exports; thread-safe; the worker calls it once per batch.

    ``threshold`` anchors the default score buckets (see
    :func:`monitor.metrics.buckets.default_score_buckets`); buckets stay fixed for the life
    of the process even if a reloaded detector has another threshold, so that rates over
    the histogram stay comparable. ``rate_window`` is the number of most recent scored
    records behind ``distillation_monitor_adversarial_ratio``. ``max_label_values`` bounds
    each label dimension: further model label tuples, dead-letter reasons, ignored kinds or
    broker error codes are counted under "other".
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        input_topic: str,
        detector_name: str,
        threshold: float,
        score_buckets: Sequence[float] | None = None,
        rate_window: int = 1000,
        max_label_values: int = 50,
        dead_letter_reasons: Sequence[str] = (),
        ignored_kinds: Sequence[str] = (),
        include_process: bool = False,
    ) -> None:
        p, r = PREFIX, registry
        self.registry = registry
        self._models = LabelLimiter(max_label_values, width=len(MODEL_LABELS))
        self._reasons = LabelLimiter(max_label_values, width=1)
        self._kinds = LabelLimiter(max_label_values, width=1)
        self._codes = LabelLimiter(max_label_values, width=1)
        self._window = FlagWindow(rate_window)

        # Records through the pipeline.
        self._consumed = Counter(
            f"{p}records_consumed", "Records read from the input topic.", registry=r
        )
        self._scored = Counter(
            f"{p}records_scored", "Records scored by the detector.", MODEL_LABELS, registry=r
        )
        self._flagged = Counter(
            f"{p}records_flagged",
            "Scored records above the detector threshold (adversarial or harmful).",
            MODEL_LABELS,
            registry=r,
        )
        self._dead = Counter(
            f"{p}records_dead_lettered",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self._ignored = Counter(
            f"{p}records_ignored",
            "Records skipped on purpose (e.g. tombstones, foreign formats), by kind.",
            ["kind"],
            registry=r,
        )
        # Side effects and their failures.
        self._alerts = Counter(
            f"{p}alerts_published", "Alerts acknowledged by the broker.", registry=r
        )
        self._alert_failures = Counter(
            f"{p}alert_publish_failures", "Alerts the broker did not acknowledge.", registry=r
        )
        self._shortened = Counter(
            f"{p}outputs_shortened",
            "Dead letters and alerts produced shortened because they were larger than their "
            "topic accepts, by kind.",
            ["kind"],
            registry=r,
        )
        for kind in ("dead_letter", "alert"):
            self._shortened.labels(kind)
        self._commits = Counter(f"{p}commits", "Successful offset commits.", registry=r)
        self._commit_failures = Counter(f"{p}commit_failures", "Failed offset commits.", registry=r)
        self._decoder_failures = Counter(
            f"{p}decoder_process_failures",
            "Batches the decoding child process failed (died, hung or broke its pipe); each "
            "was decoded in the worker instead and the child restarted.",
            registry=r,
        )
        self._transactions = Counter(
            f"{p}transactions",
            "Kafka transactions finished in exactly-once mode, by outcome.",
            ["outcome"],
            registry=r,
        )
        self._broker_errors = Counter(
            f"{p}broker_errors",
            "Client-level Kafka errors reported by librdkafka's error callback, by code.",
            ["code"],
            registry=r,
        )
        # Scores and timings.
        bounds = default_score_buckets(threshold) if score_buckets is None else score_buckets
        self._scores = VectorHistogram(
            f"{p}instance_score",
            "Harmfulness score (distillation loss) of each scored record.",
            bounds,
            MODEL_LABELS,
        )
        self._latency = VectorHistogram(
            f"{p}end_to_end_latency_seconds",
            "Time from the record's Kafka timestamp until its batch's alerts were acknowledged.",
            LATENCY_BUCKETS,
        )
        r.register(self._scores)
        r.register(self._latency)
        self._batch_size = Histogram(
            f"{p}batch_size", "Records per micro-batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self._batch_seconds = Histogram(
            f"{p}batch_duration_seconds",
            "Wall time to decode, score and publish one micro-batch.",
            buckets=BATCH_DURATION_BUCKETS,
            registry=r,
        )
        self._ratio = Gauge(
            f"{p}adversarial_ratio",
            f"Fraction of flagged records among the last {rate_window} scored.",
            registry=r,
        )
        self._window_records = Gauge(
            f"{p}adversarial_window_records",
            "Scored records currently in the adversarial_ratio window (up to its size).",
            registry=r,
        )
        # State.
        self._up = Gauge(f"{p}up", "1 while the worker loop runs, 0 once it stops.", registry=r)
        self._ready = Gauge(
            f"{p}ready", "1 while the worker has partitions and a detector, else 0.", registry=r
        )
        self._partitions = Gauge(
            f"{p}assigned_partitions", "Input partitions assigned to this worker.", registry=r
        )
        self._last_record = Gauge(
            f"{p}last_record_timestamp_seconds",
            "Kafka timestamp of the most recent record processed.",
            registry=r,
        )
        self._last_batch = Gauge(
            f"{p}last_batch_timestamp_seconds",
            "Wall-clock time at which the most recent micro-batch finished.",
            registry=r,
        )
        # Detector.
        self._detector = Info(
            f"{p}detector", "The detector in use; replaced on reload.", registry=r
        )
        self._threshold = Gauge(
            f"{p}detector_threshold", "Score above which a record is flagged.", registry=r
        )
        self._reloads = Counter(f"{p}detector_reloads", "Successful detector reloads.", registry=r)
        self._reload_failures = Counter(
            f"{p}detector_reload_failures",
            "Detector reloads refused (the previous detector stays in use).",
            registry=r,
        )
        # Drift on score windows.
        self._drift_p = Gauge(
            f"{p}drift_p_value",
            "p-value of the Kolmogorov-Smirnov test of the latest score window against the "
            "reference scores; NaN until the first window is complete.",
            registry=r,
        )
        self._drift_flag = Gauge(
            f"{p}drift_detected", "1 if the latest score window drifted, else 0.", registry=r
        )
        self._drift_events = Counter(f"{p}drift_events", "Drift events published.", registry=r)
        # Kafka client statistics (lag, broker connections).
        self._kafka = KafkaStatsCollector(p)
        r.register(self._kafka)
        Info(f"{p}worker", "Static facts about this worker.", registry=r).info(
            {"input_topic": clean_value(input_topic), "version": __version__}
        )

        self._drift_p.set(float("nan"))
        self.set_detector(
            name=detector_name,
            version=UNKNOWN,
            loss_type=UNKNOWN,
            temperature=UNKNOWN,
            manifest_hash=UNKNOWN,
            threshold=threshold,
        )
        for (reason,) in self._reasons.preset([(x,) for x in dead_letter_reasons]):
            self._dead.labels(reason)
        for (kind,) in self._kinds.preset([(x,) for x in ignored_kinds]):
            self._ignored.labels(kind)
        for (code,) in self._codes.preset([(x,) for x in BROKER_ERROR_CODES]):
            self._broker_errors.labels(code)
        for outcome in TRANSACTION_OUTCOMES:
            self._transactions.labels(outcome)
        if include_process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # -- records -------------------------------------------------------------------------

    def records_consumed(self, n: int) -> None:
        if n:
            self._consumed.inc(n)

    def records_scored(
        self,
        scores: np.ndarray,
        flagged: np.ndarray,
        labels: Sequence[tuple[str, str, str]] | None = None,
    ) -> None:
        """Count a scored batch, add its scores to the histogram, slide the rate window.

        ``labels`` gives (model_name, model_version, namespace) per row, or None when the
        records carry no such metadata (all counted as "unknown").
        """
        s = np.asarray(scores, dtype=np.float64).ravel()
        f = np.asarray(flagged, dtype=np.bool_).ravel()
        if s.shape != f.shape:
            raise ValueError(f"{s.size} scores but {f.size} flags")
        if s.size == 0:
            return
        keys, codes = self._group(labels, s.size)
        if codes is None:
            self._scored.labels(*keys[0]).inc(s.size)
            if nflagged := int(np.count_nonzero(f)):
                self._flagged.labels(*keys[0]).inc(nflagged)
            self._scores.observe(s, keys[0])
        else:
            n_scored = np.bincount(codes, minlength=len(keys))
            n_flagged = np.bincount(codes[f], minlength=len(keys))
            for g, key in enumerate(keys):
                if n_scored[g]:
                    self._scored.labels(*key).inc(int(n_scored[g]))
                if n_flagged[g]:
                    self._flagged.labels(*key).inc(int(n_flagged[g]))
            self._scores.observe_grouped(s, codes, keys)
        ratio, filled = self._window.add(f)
        self._ratio.set(ratio)
        self._window_records.set(filled)

    def _group(
        self, labels: Sequence[tuple[str, str, str]] | None, n: int
    ) -> tuple[list[ModelLabels], np.ndarray | None]:
        """Distinct bounded label tuples and each row's index into them (None: all one)."""
        if labels is None:
            return [(UNKNOWN, UNKNOWN, UNKNOWN)], None
        if len(labels) != n:
            raise ValueError(f"{n} scores but {len(labels)} label tuples")
        # First-seen order (so the label limit admits the earliest); hashing runs in C.
        distinct = list(dict.fromkeys(labels))
        bounded = [self._model_key(t) for t in distinct]
        if len(set(bounded)) == 1:
            return [bounded[0]], None
        keys = sorted(set(bounded))
        position = {k: i for i, k in enumerate(keys)}
        raw_to_key = {raw: position[b] for raw, b in zip(distinct, bounded, strict=True)}
        codes = np.fromiter(map(raw_to_key.__getitem__, labels), dtype=np.intp, count=n)
        return keys, codes

    def _model_key(self, raw: tuple[str, str, str]) -> ModelLabels:
        a, b, c = self._models.get(tuple(raw))
        return (a, b, c)

    def records_dead_lettered(self, reason: str, n: int = 1) -> None:
        if n:
            self._dead.labels(*self._reasons.get((reason,))).inc(n)

    def records_ignored(self, kind: str, n: int = 1) -> None:
        if n:
            self._ignored.labels(*self._kinds.get((kind,))).inc(n)

    # -- side effects --------------------------------------------------------------------

    def alerts_published(self, n: int) -> None:
        if n:
            self._alerts.inc(n)

    def alert_publish_failed(self, n: int = 1) -> None:
        if n:
            self._alert_failures.inc(n)

    def output_shortened(self, kind: str) -> None:
        self._shortened.labels(kind).inc()

    def commit_succeeded(self) -> None:
        self._commits.inc()

    def commit_failed(self) -> None:
        self._commit_failures.inc()

    def decoder_process_failed(self) -> None:
        self._decoder_failures.inc()

    def transaction(self, outcome: str) -> None:
        """Count a finished transaction; outcome is "committed" or "aborted"."""
        if outcome not in TRANSACTION_OUTCOMES:
            raise ValueError(f"transaction outcome must be one of {TRANSACTION_OUTCOMES}")
        self._transactions.labels(outcome).inc()

    # -- timings -------------------------------------------------------------------------

    def batch_processed(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._batch_seconds.observe(max(0.0, seconds))
        self._last_batch.set(time.time())

    def end_to_end_latency(self, seconds: np.ndarray) -> None:
        """Per-record latencies of a batch; negative ones (clock skew) count as 0."""
        v = np.asarray(seconds, dtype=np.float64).ravel()
        self._latency.observe(np.maximum(v, 0.0))

    def last_record_timestamp(self, ts_seconds: float) -> None:
        self._last_record.set(ts_seconds)

    # -- state ---------------------------------------------------------------------------

    def set_assigned_partitions(self, n: int) -> None:
        self._partitions.set(n)

    def set_up(self, up: bool) -> None:
        self._up.set(1 if up else 0)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    # -- detector ------------------------------------------------------------------------

    def set_detector(
        self,
        *,
        name: str,
        version: str,
        loss_type: str,
        temperature: float | str,
        manifest_hash: str,
        threshold: float,
    ) -> None:
        """Replace the detector info series (one at a time) and the threshold gauge."""
        values = (name, version, loss_type, temperature, manifest_hash)
        self._detector.info(
            {k: clean_value(v) for k, v in zip(DETECTOR_INFO_KEYS, values, strict=True)}
        )
        self._threshold.set(float(threshold))

    def detector_reloaded(self) -> None:
        self._reloads.inc()

    def detector_reload_failed(self) -> None:
        self._reload_failures.inc()

    # -- Kafka client --------------------------------------------------------------------

    def update_from_stats(self, stats_json: str | bytes) -> None:
        """Feed librdkafka's ``stats_cb`` string; never raises (see KafkaStatsCollector)."""
        self._kafka.update(stats_json)

    def consumer_lag_total(self) -> int:
        """Records behind, summed over the partitions (from the latest statistics)."""
        return sum(v for v in self._kafka.lag().values() if v > 0)

    def broker_error(self, code: str) -> None:
        """Count an ``error_cb`` error by its code name, e.g. "_TRANSPORT"."""
        self._broker_errors.labels(*self._codes.get((code,))).inc()

    # -- drift ---------------------------------------------------------------------------

    def set_drift(self, p_value: float, drifted: bool) -> None:
        self._drift_p.set(p_value)
        self._drift_flag.set(1 if drifted else 0)

    def drift_event(self) -> None:
        self._drift_events.inc()
