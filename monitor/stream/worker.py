"""The long-running worker: take a decoded batch, score it, publish, settle. Repeat.

Read ``Worker.run`` top to bottom for the whole story. The consumer belongs to the
``intake`` (consuming, batching and decoding on its own thread); when a batch commits
is the checkpoint's call (``settle``); outgoing messages are built in ``outputs``. This
module only sequences them and owns the clients' lifecycle. Threads and processes:
``monitor/stream/__init__.py``.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType
from typing import cast

import numpy as np
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CollectorRegistry

from monitor.config import WorkerConfig
from monitor.http import HealthServer
from monitor.metrics import WorkerMetrics
from monitor.stream.alerts import Outgoing
from monitor.stream.batcher import Batcher
from monitor.stream.checkpoint import (
    FENCING_ERRORS,
    AtLeastOnceCheckpoint,
    TransactionalCheckpoint,
)
from monitor.stream.decode_process import decoding
from monitor.stream.drift import DriftResult, DriftWindow
from monitor.stream.events import source_of
from monitor.stream.headers import Headers, header_bytes
from monitor.stream.intake import Intake, Prepared
from monitor.stream.outputs import alerts, dead_letter, drift_events
from monitor.stream.publisher import OutputLimits, Publisher, describe
from monitor.stream.records import DecodedBatch, InputSpec, Reason, RecordFormat
from monitor.stream.scoring import BatchScores, DetectorHandle, limit_tensorflow_threads
from monitor.stream.settle import Processed, Settler
from monitor.stream.topics import ensure_topics, message_limits

log = logging.getLogger("monitor.worker")

IDLE_POLL_S = 0.5
#: With batches waiting for their commit: how long to wait for the next batch before
#: committing them without it.
SETTLE_POLL_S = 0.02
LIVENESS_STALL_S = 300.0
READINESS_STALL_S = 60.0
SCORING_ERROR = "scoring_error"
#: Net allocations of container objects between collections of the youngest generation
#: (``Worker._raise_gc_threshold``).
GC_YOUNG_THRESHOLD = 10_000


@dataclass(frozen=True)
class ScoringFailed:
    """Scoring raised: the batch's records go to the dead-letter topic with ``detail``."""

    detail: str


@dataclass
class RunSummary:
    """What one ``run()`` did; also logged at exit."""

    consumed: int = 0
    scored: int = 0
    flagged: int = 0
    dead_lettered: int = 0
    ignored: int = 0
    batches: int = 0
    rewound_batches: int = 0


@dataclass(frozen=True)
class Outcome:
    """What a processed batch did, counted once it commits."""

    records: int
    decoded: DecodedBatch
    scores: BatchScores | None
    drift: list[DriftResult]
    dead_reasons: list[str]
    times: np.ndarray  # of its records (``record_times``), for the end-to-end latency


class Worker:
    """Consumes inference records, scores them in micro-batches, publishes alerts."""

    def __init__(
        self,
        config: WorkerConfig,
        registry: CollectorRegistry | None = None,
        handle_signals: bool = True,
        started: float | None = None,
    ) -> None:
        """``started``: when the process began (``time.monotonic()``), for the one log
        line that says how long the worker took to become ready; default: now."""
        self.config = config
        self.ce_source = source_of(config.group_id)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.handle_signals = handle_signals
        self.summary = RunSummary()
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._reload = threading.Event()
        self._last_loop = time.monotonic()
        self._producer_sizes: dict[str, object] = {}
        self._started = time.monotonic()
        self._began = self._started if started is None else started
        self._ready_logged = False
        self._last_summary = time.monotonic()
        self._summary_base = RunSummary()

    # -- control from outside (signals, tests) -----------------------------------------
    def request_stop(self) -> None:
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # -- the loop ------------------------------------------------------------------------
    def run(self, max_records: int | None = None) -> RunSummary:
        """Run until stopped (signal, ``request_stop``) or ``max_records`` were consumed."""
        with ExitStack() as stack:
            self._start(stack)
            while not self._stop.is_set():
                self._last_loop = time.monotonic()
                self._maybe_reload()
                wait = SETTLE_POLL_S if self.settler.waiting else IDLE_POLL_S
                prepared = self.intake.next(wait)
                if prepared is not None:
                    self._process(prepared)
                else:
                    self.settler.settle()
                if not self._ready_logged:
                    self._maybe_log_ready()
                self._maybe_log_summary()
                if max_records is not None and self.summary.consumed >= max_records:
                    break
            self.settler.settle()  # batches of a transaction still open
            self.metrics.set_ready(False)
        self._log_summary(final=True)
        return self.summary

    def _process(self, batch: Prepared) -> None:
        """Score one decoded batch, publish what it gives, and hand it to the settler.

        Dead letters go out first: librdkafka sends them while TensorFlow scores.
        """
        started = time.perf_counter()
        messages, decoded, cfg = batch.messages, batch.decoded, self.config
        publish = self.checkpoint.publish
        self.checkpoint.begin(batch.offsets)
        dead_reasons = [str(d.reason) for d in decoded.dead]
        for d in decoded.dead:
            publish(dead_letter(messages[d.index], str(d.reason), d.detail, cfg.dead_letter_topic))
        scored = self._score(decoded)
        scores = scored if isinstance(scored, BatchScores) else None
        if isinstance(scored, ScoringFailed):
            for index in sorted(set(decoded.row_message.tolist())):
                publish(
                    dead_letter(
                        messages[index], SCORING_ERROR, scored.detail, cfg.dead_letter_topic
                    )
                )
                dead_reasons.append(SCORING_ERROR)
        elif scores is not None:
            for out in alerts(messages, decoded, scores, cfg.alert_topic, self.ce_source):
                publish(out)
        drift = [] if scores is None or self.drift is None else self.drift.add(scores.scores)
        for out in self._drift_events(drift, batch):
            publish(out)
        outcome = Outcome(len(messages), decoded, scores, drift, dead_reasons, batch.times)
        self.settler.add(Processed(batch.offsets, self.publisher.next_batch(), started, outcome))

    def _score(self, decoded: DecodedBatch) -> BatchScores | ScoringFailed | None:
        """Score a decoded batch (None when it has no rows). A failure is returned, not
        raised: the batch's records are dead-lettered with it."""
        if not len(decoded.X):
            return None
        try:
            use_output = self.config.use_record_output
            return self.handle.score(decoded.X, decoded.outputs if use_output else None)
        except Exception as exc:  # a scoring bug must not lose the records
            log.exception("scoring failed for a batch of %d rows", len(decoded.X))
            return ScoringFailed(f"scoring failed: {exc}")

    def _drift_events(self, results: list[DriftResult], batch: Prepared) -> list[Outgoing]:
        """An event for each drifted window, published with the batch."""
        if self.drift is None or not any(r.drifted for r in results):
            return []
        for result in results:
            if result.drifted:
                log.warning(
                    "harmful drift: KS p-value %.3g < %.3g over the last %d records",
                    result.p_value,
                    self.drift.p_value,
                    result.window,
                    extra={
                        "event": "drift",
                        "p_value": result.p_value,
                        "statistic": result.statistic,
                        "window": result.window,
                    },
                )
        return drift_events(
            results,
            batch.messages,
            batch.decoded,
            detector=self.handle.identity,
            topic=self.config.drift_topic,
            ce_source=self.ce_source,
            reference_size=int(self.drift.reference.size),
            p_value=self.drift.p_value,
        )

    def _account(self, batch: Processed) -> None:
        """Metrics and counters for a committed batch."""
        outcome: Outcome = batch.outcome
        decoded, scores, m, s = outcome.decoded, outcome.scores, self.metrics, self.summary
        n = outcome.records
        s.consumed += n
        s.batches += 1
        m.records_consumed(n)
        for _index, kind in decoded.ignored:
            m.records_ignored(kind)
        s.ignored += len(decoded.ignored)
        for reason, count in Counter(outcome.dead_reasons).items():
            m.records_dead_lettered(reason, count)
        s.dead_lettered += len(outcome.dead_reasons)
        delivered = self.publisher.take_delivered()
        if delivered.get("alert"):
            m.alerts_published(delivered["alert"])
        if scores is not None:
            m.records_scored(scores.scores, scores.flagged, _row_labels(decoded))
            s.scored += len(scores.scores)
            s.flagged += int(scores.flagged.sum())
        for result in outcome.drift:
            m.set_drift(result.p_value, result.drifted)
            if result.drifted:
                m.drift_event()
        m.batch_processed(n, time.perf_counter() - batch.started)
        stamps = outcome.times[outcome.times > 0]
        if stamps.size:
            m.end_to_end_latency(np.maximum(time.time() - stamps, 0.0))
            m.last_record_timestamp(float(stamps.max()))

    def _rewound(self, batches: int) -> None:
        self.summary.rewound_batches += batches

    # -- start-up ----------------------------------------------------------------------
    def _start(self, stack: ExitStack) -> None:
        """Detector, metrics and health endpoints, topics, producer, intake, checkpoint;
        each closed by ``stack`` in reverse order."""
        cfg = self.config
        limit_tensorflow_threads(cfg.tf_threads)
        self.handle = DetectorHandle(cfg.detector, cfg.max_batch_size)
        self.decoder_format = RecordFormat(cfg.record_format)
        self.metrics = self._make_metrics()
        self.drift = self._make_drift()
        server = HealthServer(
            self.registry, cfg.metrics_host, cfg.metrics_port, self._readiness, live=self._liveness
        )
        self.metrics_port = server.start()
        stack.callback(server.stop)
        log.info(
            "metrics on http://%s:%d/metrics",
            cfg.metrics_host,
            self.metrics_port,
            extra={"event": "metrics", "host": cfg.metrics_host, "port": self.metrics_port},
        )

        outputs = cfg.output_topics
        ensure_topics(cfg.admin_conf(), cfg.input_topic, outputs)
        limits, self._producer_sizes = OutputLimits.aligned(
            message_limits(cfg.admin_conf(), outputs), outputs, cfg.kafka
        )
        self.publisher = Publisher(
            self._new_producer(), limits, on_shortened=self.metrics.output_shortened
        )
        stack.callback(self._flush_producer)
        self.intake = self._make_intake(stack)
        stack.callback(self._close_consumer)
        self.checkpoint = self._make_checkpoint()
        self.settler = Settler(
            self.checkpoint, self.publisher, self.intake, self._account, self._stopping,
            rewound=self._rewound,
        )  # fmt: skip
        self.intake.start(cfg.input_topic)
        stack.callback(self.intake.stop)  # before the consumer closes
        # Start-up made millions of long-lived objects (TensorFlow, Keras, the model):
        # keep the collector from scanning them again on every full collection...
        gc.collect()
        gc.freeze()
        # ...and let them go when it stops: a process that runs workers one after another
        # (tests, notebooks) would otherwise keep every finished one, cycles, producers,
        # their threads and connections included, frozen for good.
        stack.callback(gc.unfreeze)
        self._raise_gc_threshold(stack)
        if self.handle_signals:
            self._install_signals(stack)
        self.metrics.set_up(True)
        mode = "exactly-once" if cfg.exactly_once else "at-least-once"
        log.info(
            "worker started: %s -> alerts %s, dead letters %s%s, group %s, %s mode, detector %s v%s",
            cfg.input_topic,
            cfg.alert_topic,
            cfg.dead_letter_topic,
            f", drift events {cfg.drift_topic}" if self.drift is not None else "",
            cfg.group_id,
            mode,
            self.handle.identity.name,
            self.handle.identity.version,
            extra={
                "event": "started",
                "topic": cfg.input_topic,
                "output_topics": outputs,
                "group": cfg.group_id,
                "mode": mode,
                "detector": self.handle.identity.name,
                "detector_version": self.handle.identity.version,
                "metrics_port": self.metrics_port,
            },
        )

    @staticmethod
    def _raise_gc_threshold(stack: ExitStack) -> None:
        """Run the young-generation collection after ``GC_YOUNG_THRESHOLD`` net allocations,
        not the default 700, until the worker stops.

        Every batch keeps thousands of consumed messages alive until it commits: at 700
        the collector ran several times a batch, scanned them while young and again in
        the older generations, and cost 0.6 us a record on the digits backlog (4% of the
        process, holding the GIL); at 10,000 it runs a few times in 400,000 records.
        Garbage with cycles still goes within those allocations.
        """
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        stack.callback(gc.set_threshold, *thresholds)

    def _make_metrics(self) -> WorkerMetrics:
        cfg = self.config
        ident = self.handle.identity
        metrics = WorkerMetrics(
            self.registry,
            input_topic=cfg.input_topic,
            detector_name=ident.name,
            threshold=ident.threshold,
            score_buckets=cfg.score_bucket_bounds,
            rate_window=cfg.rate_window,
            max_label_values=cfg.max_label_values,
            dead_letter_reasons=[str(r) for r in Reason] + [SCORING_ERROR],
            include_process=True,
        )
        metrics.set_detector(**ident.as_dict())
        return metrics

    def _make_drift(self) -> DriftWindow | None:
        cfg = self.config
        if cfg.drift_window <= 0:
            return None
        manifest = self.handle.detector.manifest
        reference = np.asarray(manifest.reference_scores if manifest else [], dtype=np.float64)
        return DriftWindow(reference, cfg.drift_window, cfg.drift_p_value)

    def _make_intake(self, stack: ExitStack) -> Intake:
        cfg = self.config
        spec = InputSpec(
            shape=tuple(self.handle.detector.input_shape),
            n_classes=int(self.handle.detector.n_classes),
            max_message_bytes=cfg.max_message_bytes,
            max_rows=cfg.max_rows_per_message,
            max_context_bytes=cfg.max_context_bytes,
        )
        children = cfg.decode_processes
        submit = decoding(
            spec, self.decoder_format, children, stack, self.metrics.decoder_process_failed
        )
        batcher: Batcher[Message] = Batcher(
            cfg.max_batch_size,
            cfg.max_batch_wait_ms / 1000.0,
            max_bytes=cfg.max_batch_bytes,
            bytes_of=_message_bytes,
        )
        consumer_conf = {
            **cfg.consumer_conf(),
            "error_cb": self._on_kafka_error,
            "stats_cb": self.metrics.update_from_stats,
        }
        return Intake(
            consumer_conf,
            batcher,
            submit,
            self.metrics,
            track_group=cfg.exactly_once,
            in_flight=max(1, children),
        )

    def _make_checkpoint(self) -> AtLeastOnceCheckpoint | TransactionalCheckpoint:
        cfg = self.config
        if not cfg.exactly_once:
            return AtLeastOnceCheckpoint(
                self.intake,
                self.publisher,
                self.metrics,
                make_producer=self._new_producer,
                stopping=self._stopping,
            )
        checkpoint = TransactionalCheckpoint(
            self.intake,
            self.publisher,
            self.metrics,
            make_producer=self._new_producer,
            stopping=self._stopping,
            transaction_s=cfg.transaction_ms / 1000.0,
        )
        checkpoint.init()
        log.info("transactions initialised (transactional.id %s)", cfg.effective_transactional_id)
        return checkpoint

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **self.config.producer_conf(),
                **self._producer_sizes,
                "error_cb": self._on_producer_error,
            }
        )

    def _install_signals(self, stack: ExitStack) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info(
                "%s received: finishing the current batch and stopping", signal.Signals(signum).name
            )
            self.request_stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("SIGHUP received: reloading the detector between batches")
            self.request_reload()

        for sig, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup),
        ):
            previous = signal.signal(sig, handler)
            stack.callback(signal.signal, sig, previous)

    # -- while running -----------------------------------------------------------------
    def _maybe_reload(self) -> None:
        wanted = self._reload.is_set() or (
            self.config.reload_on_change and self.handle.manifest_changed()
        )
        if not wanted:
            return
        self._reload.clear()
        if self.handle.reload():
            ident = self.handle.identity
            self.metrics.detector_reloaded()
            self.metrics.set_detector(**ident.as_dict())
        else:
            self.metrics.detector_reload_failed()

    def _stopping(self) -> bool:
        """Stopping, and shutdown's bound for flushing and committing ran out."""
        return (
            self._stop_at is not None
            and time.monotonic() - self._stop_at > self.config.shutdown_timeout_s
        )

    def _readiness(self) -> tuple[bool, str]:
        intake = getattr(self, "intake", None)
        if intake is None:
            return False, "starting"
        ok, why = intake.readiness()
        if not ok:
            return ok, why
        stalled = time.monotonic() - self._last_active()
        if stalled > READINESS_STALL_S:
            return False, f"consume loop stalled for {stalled:.0f}s"
        return True, "ok"

    def _liveness(self) -> tuple[bool, str]:
        """Alive while the loop turns (or its checkpoint waits on the broker) and the
        intake thread runs; a worker stuck for minutes needs a restart."""
        intake = getattr(self, "intake", None)
        if intake is not None and not intake.alive and not self._stop.is_set():
            return False, "the intake thread stopped"
        stalled = time.monotonic() - self._last_active()
        if stalled > LIVENESS_STALL_S:
            return False, f"consume loop stuck for {stalled:.0f}s"
        return True, "ok"

    def _last_active(self) -> float:
        intake = getattr(self, "intake", None)
        served = intake.last_served if intake is not None else 0.0
        return max(self._last_loop, served)

    def _on_producer_error(self, err: KafkaError) -> None:
        """A producer that failed without being fenced is replaced (the checkpoint does
        it at its next call, and the batches not committed are processed again)."""
        if not err.fatal() or (self.config.exactly_once and err.code() in FENCING_ERRORS):
            self._on_kafka_error(err)
            return
        self.metrics.broker_error(err.name())
        log.error(
            "fatal producer error (the producer will be replaced): %s",
            describe(err),
            extra={"event": "kafka_error", "error": err.name(), "fatal": True},
        )
        checkpoint = getattr(self, "checkpoint", None)  # None while starting up
        if isinstance(checkpoint, AtLeastOnceCheckpoint):
            checkpoint.producer_failed(err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        self.metrics.broker_error(err.name())
        fields = {"event": "kafka_error", "error": err.name(), "fatal": err.fatal()}
        if err.fatal():
            log.error("fatal Kafka error: %s", describe(err), extra=fields)
            self.request_stop()
        else:
            log.warning("Kafka: %s", describe(err), extra=fields)

    def _maybe_log_ready(self) -> None:
        """Once: how long from the process's start to the first partitions assigned."""
        if not self.intake.readiness()[0]:
            return
        self._ready_logged = True
        seconds = time.monotonic() - self._began
        log.info(
            "ready in %.1fs: partitions assigned, scoring",
            seconds,
            extra={"event": "ready", "startup_s": round(seconds, 3)},
        )

    def _maybe_log_summary(self) -> None:
        interval = self.config.summary_interval_s
        if interval > 0 and time.monotonic() - self._last_summary >= interval:
            self._log_summary(final=False)

    def _log_summary(self, final: bool) -> None:
        now = time.monotonic()
        s, base = self.summary, self._summary_base
        elapsed = max(now - (self._started if final else self._last_summary), 1e-9)
        consumed = s.consumed - (0 if final else base.consumed)
        lag = self.metrics.consumer_lag_total() if hasattr(self, "metrics") else 0
        event = "finished" if final else "progress"
        log.info(
            "%s: %.0f records/s, consumed %d, scored %d, flagged %d, dead letters %d, lag %d",
            event,
            consumed / elapsed,
            s.consumed,
            s.scored,
            s.flagged,
            s.dead_lettered,
            lag,
            extra={
                "event": event,
                "records_per_s": round(consumed / elapsed, 1),
                "consumed": s.consumed,
                "scored": s.scored,
                "flagged": s.flagged,
                "dead_lettered": s.dead_lettered,
                "ignored": s.ignored,
                "batches": s.batches,
                "lag": lag,
                "elapsed_s": round(elapsed, 3),
            },
        )
        self._last_summary = now
        self._summary_base = RunSummary(**vars(s))

    # -- shutdown ----------------------------------------------------------------------
    @property
    def producer(self) -> Producer:
        """The current producer (a broken or stuck one is replaced)."""
        return self.publisher.producer

    def _flush_producer(self) -> None:
        try:
            left = self.publisher.producer.flush(self.config.shutdown_timeout_s)
        except Exception as exc:  # a producer failed fatally: nothing more to deliver
            log.warning("producer flush at exit: %s", describe(exc.args[0] if exc.args else exc))
            return
        if left:
            log.warning(
                "%d message(s) not delivered before exit; their batch was not committed", left
            )

    def _close_consumer(self) -> None:
        checkpoint = getattr(self, "checkpoint", None)  # None when start-up failed
        if isinstance(checkpoint, TransactionalCheckpoint):
            checkpoint.abort(None)
        try:
            self.intake.consumer.close()
        except Exception as exc:
            log.warning("consumer close: %s", exc)
        self.metrics.set_up(False)


def _row_labels(decoded: DecodedBatch) -> Sequence[tuple[str, str, str]] | None:
    """Each row's (model name, version, namespace), or None when no message named one."""
    labels = decoded.model_labels
    if labels.count(None) == len(labels):  # in C: a generator cost 0.02 us a message
        return None
    per_message = [
        (lab.model_name or "", lab.model_version or "", lab.namespace or "")
        if lab is not None
        else ("", "", "")
        for lab in labels
    ]
    return [per_message[i] for i in decoded.row_message.tolist()]


def _message_bytes(items: Iterable[Message]) -> int:
    """Bytes in the messages' values, keys and headers: a micro-batch's size, which
    bounds the worker's memory whatever a record carries. Values and keys are summed in
    C; only messages with headers cost Python work (the intake made every message's
    headers readable before they reach the batch)."""
    messages = items if isinstance(items, list | tuple) else list(items)
    size = sum(map(len, filter(None, map(Message.value, messages))))
    size += sum(map(len, filter(None, map(Message.key, messages))))
    for headers in filter(None, map(Message.headers, messages)):
        size += header_bytes(cast(Headers, headers))
    return size
