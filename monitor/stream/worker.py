"""The long-running worker: consume a micro-batch, score it, publish, commit. Repeat.

Read ``Worker.run`` top to bottom for the whole story; each step is a short method.
Delivery guarantees live in ``checkpoint``, decoding in ``records``, payloads in
``alerts``; this module only sequences them and owns the Kafka clients' lifecycle.
"""

from __future__ import annotations

import gc
import itertools
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from monitor.config import WorkerConfig
from monitor.http import HealthServer
from monitor.metrics import WorkerMetrics
from monitor.stream.alerts import alert_payload, dead_letter_headers, drift_payload
from monitor.stream.batcher import Batcher
from monitor.stream.checkpoint import (
    FENCING_ERRORS,
    TP,
    AtLeastOnceCheckpoint,
    BatchOffsets,
    TransactionalCheckpoint,
)
from monitor.stream.decode_process import DecodeProcess, PendingDecode, Ready
from monitor.stream.drift import DriftResult, DriftWindow
from monitor.stream.headers import guard_headers, header_bytes
from monitor.stream.prefetch import Prefetcher
from monitor.stream.publisher import Outgoing, OutputLimits, Publisher, describe
from monitor.stream.records import (
    DecodedBatch,
    InputSpec,
    MessageIdentity,
    Reason,
    RecordDecoder,
    RecordFormat,
    message_identity,
    record_times,
)
from monitor.stream.scoring import BatchScores, DetectorHandle, limit_tensorflow_threads
from monitor.stream.shorten import bounded_key
from monitor.stream.topics import ensure_topics, message_limits

log = logging.getLogger("monitor.worker")

IDLE_POLL_S = 0.5
#: At-least-once with prefetching: batches scored and published while earlier batches'
#: outputs await acknowledgement (each commits once its outputs are acknowledged). It
#: bounds the outputs in flight, and the records a crash makes the next owner re-process.
MAX_UNACKED_BATCHES = 4
#: ... and when no next batch comes within this, they are committed, waiting for acks.
SETTLE_POLL_S = 0.02
#: With all of them unacknowledged, wait this long for the oldest one's acknowledgements
#: before taking the full path (flush everything, retry failures, or give batches back).
MAKE_ROOM_S = 1.0
LIVENESS_STALL_S = 300.0
SCORING_ERROR = "scoring_error"


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


@dataclass
class _Processed:
    """A batch scored and published, waiting for its commit (or transaction)."""

    messages: list[Message]
    decoded: DecodedBatch
    scores: BatchScores | None
    drift: list[DriftResult]
    offsets: BatchOffsets
    started: float
    dead_reasons: list[str]
    output_batch: int  # the publisher's batch number of its alerts and dead letters
    times: np.ndarray  # of its records (``record_times``), for the end-to-end latency


def _merged(parts: list[BatchOffsets]) -> BatchOffsets:
    """The offsets of consecutive batches as one: earliest first, latest next."""
    if len(parts) == 1:
        return parts[0]
    first: dict[TP, int] = {}
    nxt: dict[TP, int] = {}
    for part in parts:
        for tp, offset in part.first.items():
            first.setdefault(tp, offset)
        nxt.update(part.next)
    return BatchOffsets(first, nxt)


class Worker:
    """Consumes inference records, scores them in micro-batches, publishes alerts."""

    def __init__(
        self,
        config: WorkerConfig,
        registry: CollectorRegistry | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.handle_signals = handle_signals
        self.summary = RunSummary()
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._reload = threading.Event()
        self._assigned: set[TP] = set()
        self._commit_targets: dict[TP, int] = {}  # the latest offsets asked to be committed
        self._recommit = False  # an asynchronous commit failed: see _retry_failed_commit
        self._carry: list[Message] = []
        self.prefetcher: Prefetcher | None = None
        self._unsettled: list[_Processed] = []
        self._unsettled_since = 0.0
        self._dead_reasons: list[str] = []  # of the current batch; counted once it commits
        self._reassigned = False
        self._last_loop = time.monotonic()
        self._ready = False
        self._producer_sizes: dict[str, Any] = {}
        self._lag_total = 0
        self._started = time.monotonic()
        self._last_summary = time.monotonic()
        self._summary_base = RunSummary()
        self.batcher: Batcher[Message] = Batcher(
            config.max_batch_size,
            config.max_batch_wait_ms / 1000.0,
            max_bytes=config.max_batch_bytes,
            bytes_of=_message_bytes,
        )

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
        cfg = self.config
        with ExitStack() as stack:
            limit_tensorflow_threads(cfg.tf_threads)
            self.handle = DetectorHandle(cfg.detector, cfg.max_batch_size)
            self.decoder_format = RecordFormat(cfg.record_format)
            self.decoder = RecordDecoder(
                InputSpec(
                    shape=tuple(self.handle.detector.input_shape),
                    n_classes=int(self.handle.detector.n_classes),
                    max_message_bytes=cfg.max_message_bytes,
                    max_rows=cfg.max_rows_per_message,
                ),
                self.decoder_format,
            )
            self.metrics = self._make_metrics()
            self.drift = self._make_drift()
            server = HealthServer(
                self.registry,
                cfg.metrics_host,
                cfg.metrics_port,
                self._readiness,
                live=self._liveness,
            )
            self.metrics_port = server.start()
            stack.callback(server.stop)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.metrics_port)

            outputs = [cfg.alert_topic, cfg.dead_letter_topic, cfg.effective_drift_topic]
            ensure_topics(cfg.admin_conf(), cfg.input_topic, outputs)
            limits, self._producer_sizes = OutputLimits.aligned(
                message_limits(cfg.admin_conf(), outputs), outputs, cfg.kafka
            )
            self.publisher = Publisher(
                self._new_producer(), limits, on_shortened=self.metrics.output_shortened
            )
            stack.callback(self._flush_producer)
            self.consumer = Consumer(
                {
                    **cfg.consumer_conf(),
                    "error_cb": self._on_kafka_error,
                    "stats_cb": self._on_stats,
                    "on_commit": self._on_commit,
                }
            )
            stack.callback(self._close_consumer)
            self.checkpoint = self._make_checkpoint()
            self.consumer.subscribe(
                [cfg.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            if cfg.prefetch:
                self.prefetcher = self._make_prefetcher(stack)
                stack.callback(self.prefetcher.stop)  # before the consumer closes
                self.prefetcher.start()
            # Start-up made millions of long-lived objects (TensorFlow, Keras, the model):
            # keep the collector from scanning them again on every full collection.
            gc.collect()
            gc.freeze()
            # ...and let them go when it stops: a process that runs workers one after another
            # (tests, notebooks) would otherwise keep every finished one, cycles, producers,
            # their threads and connections included, frozen for good.
            stack.callback(gc.unfreeze)
            if self.handle_signals:
                self._install_signals(stack)
            self.metrics.set_up(True)
            log.info(
                "worker started: %s -> alerts %s, dead letters %s, group %s, %s mode, detector %s v%s",
                cfg.input_topic,
                cfg.alert_topic,
                cfg.dead_letter_topic,
                cfg.group_id,
                "exactly-once" if cfg.exactly_once else "at-least-once",
                self.handle.identity.name,
                self.handle.identity.version,
            )
            while not self._stop.is_set():
                self._last_loop = time.monotonic()
                self._maybe_reload()
                if self.prefetcher is not None:
                    ready = self.prefetcher.next(SETTLE_POLL_S if self._unsettled else IDLE_POLL_S)
                    if ready is not None:
                        self._process(ready.messages, ready.decoded, ready.offsets, ready.times)
                    else:
                        self._settle()
                        self._retry_failed_commit()
                else:
                    batch = self._next_batch()
                    if batch:
                        self._process(batch)
                    else:
                        self._retry_failed_commit()
                self._maybe_log_summary()
                if max_records is not None and self.summary.consumed >= max_records:
                    break
            self._settle()  # batches of a transaction still open
            self._ready = False
            self.metrics.set_ready(False)
        self._log_summary(final=True)
        return self.summary

    def _next_batch(self) -> list[Message]:
        """Consume until the batch is full or old enough (or a stop is requested)."""
        batcher = self.batcher
        if self._carry:
            batcher.add(self._carry)
            self._carry = []
        while not batcher.is_due() and not self._stop.is_set():
            timeout = batcher.time_left() if len(batcher) else IDLE_POLL_S
            messages = self.consumer.consume(num_messages=batcher.room, timeout=timeout)
            if self._reassigned:
                # librdkafka keeps a partition's pause flag across revocation and
                # re-assignment: one lost during serve_group would stay paused for good.
                self._reassigned = False
                if assignment := self.consumer.assignment():
                    self.consumer.resume(assignment)
            if messages:
                batcher.add(self._usable(messages))
            elif not len(batcher):
                return []
        return batcher.take()

    def _usable(self, messages: list[Message]) -> list[Message]:
        """Drop error events (logged and counted); they are not records. Headers the
        client cannot read are replaced before anything reads them (``guard_headers``)."""
        guard_headers(messages)
        good = [m for m in messages if m.error() is None]
        if len(good) != len(messages):
            for m in messages:
                err = m.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", describe(err))
                    self.metrics.broker_error(err.name())
        return good

    def _process(
        self,
        messages: list[Message],
        decoded: DecodedBatch | None = None,
        offsets: BatchOffsets | None = None,
        times: np.ndarray | None = None,
    ) -> bool | None:
        """Decode (unless prefetched), score, publish and commit one batch.

        False when the batch was given back (rewound) instead of committed; None when it
        waits for a later commit (see ``_may_extend``).
        """
        started = time.perf_counter()
        if offsets is None:
            offsets = BatchOffsets.of(messages)
        self._dead_reasons = []
        self.checkpoint.begin(offsets)
        if decoded is None:
            decoded = self.decoder.decode(messages)
        scored = self._score(decoded)
        for dead in decoded.dead:
            self._publish_dead_letter(messages[dead.index], str(dead.reason), dead.detail)
        scores = scored if isinstance(scored, BatchScores) else None
        if isinstance(scored, ScoringFailed):
            for index in sorted(set(decoded.row_message.tolist())):
                self._publish_dead_letter(messages[index], SCORING_ERROR, scored.detail)
        elif scores is not None:
            identities: dict[int, MessageIdentity] = {}  # a message is read once
            for row in np.flatnonzero(scores.flagged).tolist():
                self._publish_alert(messages, decoded, scores, row, identities)
        drift = self._check_drift(scores.scores) if scores is not None else []
        if not self._unsettled:
            self._unsettled_since = time.monotonic()
        self._unsettled.append(
            _Processed(
                messages,
                decoded,
                scores,
                drift,
                offsets,
                started,
                self._dead_reasons,
                self.publisher.next_batch(),
                record_times(messages) if times is None else times,
            )
        )
        if self._may_extend():
            if not self.checkpoint.exactly_once:
                self._settle_acknowledged()
            return None
        if self._pipeline_full() and self._make_room():
            return None
        return self._settle()

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

    def _may_extend(self) -> bool:
        """With prefetching: go on to the next batch before this one's commit?

        At-least-once: yes, up to ``MAX_UNACKED_BATCHES``: the next batch is processed
        while this one's outputs are on their way, and ``_settle_acknowledged`` commits
        each batch once they are acknowledged (or ``_settle``, when no batch follows
        within ``SETTLE_POLL_S``). Exactly-once: when another batch is already waiting
        and the transaction is younger than ``transaction_ms``, it joins the open
        transaction: under a backlog, fewer and larger transactions (each costs several
        round trips to the broker); with nothing waiting, it commits at once, so a
        steady trickle's alerts are not held back.
        """
        if self.prefetcher is None or self._stop.is_set():
            return False
        if isinstance(self.checkpoint, AtLeastOnceCheckpoint):
            # a broken producer is replaced at the next commit: don't feed it more batches
            return len(self._unsettled) < MAX_UNACKED_BATCHES and self.checkpoint.broken is None
        return (
            self.prefetcher.ready()
            and time.monotonic() - self._unsettled_since < self.config.transaction_ms / 1000.0
        )

    def _pipeline_full(self) -> bool:
        """At-least-once with prefetching, at ``MAX_UNACKED_BATCHES`` and nothing wrong."""
        return (
            self.prefetcher is not None
            and isinstance(self.checkpoint, AtLeastOnceCheckpoint)
            and self.checkpoint.broken is None
            and not self._stop.is_set()
            and len(self._unsettled) >= MAX_UNACKED_BATCHES
        )

    def _make_room(self) -> bool:
        """Wait for the oldest batch's acknowledgements and commit what they allow.

        Flushing them all instead kept the worker waiting for the newest batch's too
        (``linger.ms`` included) while the next batch was ready. False when that did not
        make room within ``MAKE_ROOM_S`` or a delivery failed: ``_settle`` takes over.
        """
        deadline = time.monotonic() + MAKE_ROOM_S
        while True:
            self._settle_acknowledged()
            if len(self._unsettled) < MAX_UNACKED_BATCHES:
                return True
            if (
                self.publisher.has_failures
                or not self._pipeline_full()  # stopping, or the producer broke
                or time.monotonic() > deadline
            ):
                return False
            self.publisher.poll(0.001)

    def _settle_acknowledged(self) -> None:
        """At-least-once: commit the oldest batches whose outputs are all acknowledged,
        without waiting. A delivery failure is left to the waiting ``_settle``."""
        self.publisher.poll()
        if self.publisher.has_failures:
            return
        done = 0
        for batch in self._unsettled:
            if not self.publisher.acknowledged(batch.output_batch):
                break
            done += 1
        if done:
            self._settle(done)

    def _settle(self, count: int | None = None) -> bool:
        """Commit every batch processed since the last commit (one transaction), or give
        them all back; then count them. False when given back. With ``count`` (at-least-once,
        outputs known to be acknowledged), commit only the oldest ``count`` batches."""
        if count is None:
            batches, self._unsettled = self._unsettled, []
        else:
            batches, self._unsettled = self._unsettled[:count], self._unsettled[count:]
        if not batches:
            return True
        offsets = _merged([b.offsets for b in batches])
        if count is None:
            committed = self.checkpoint.commit(offsets)
        else:
            assert isinstance(self.checkpoint, AtLeastOnceCheckpoint)
            committed = self.checkpoint.commit_acknowledged(offsets)
        if committed:
            for b in batches:
                self._dead_reasons = b.dead_reasons
                self._account(b, time.perf_counter() - b.started)
                for result in b.drift:
                    self.metrics.set_drift(result.p_value, result.drifted)
                    if result.drifted:
                        self.metrics.drift_event()
        else:
            self.summary.rewound_batches += len(batches)
        if self.prefetcher is not None:
            for b in batches:
                self.prefetcher.complete(b.offsets, committed)
        return committed

    # -- publishing ----------------------------------------------------------------------
    def _publish_alert(
        self,
        messages: list[Message],
        decoded: DecodedBatch,
        scores: BatchScores,
        row: int,
        identities: dict[int, MessageIdentity],
    ) -> None:
        index = int(decoded.row_message[row])
        message = messages[index]
        row_in_message = int(decoded.row_in_message[row])
        known = identities.get(index)
        if known is None:
            known = identities[index] = message_identity(
                message, self.decoder_format, self.config.max_context_bytes
            )
        ident = known.row(row_in_message)

        ts_type, ts = message.timestamp()
        model = ident.model.as_dict() if ident.model is not None else None
        payload = alert_payload(
            record_id=ident.id,
            score=float(scores.scores[row]),
            detector=scores.detector,
            classifier_class=int(scores.classifier_class[row]),
            distilled_class=int(scores.distilled_class[row]),
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            source_timestamp_ms=ts if ts_type else None,
            row=row_in_message,
            context=ident.context,
            model=model,
        )
        key = bounded_key(ident.key) if ident.key is not None else ident.id.encode()
        self.checkpoint.publish(Outgoing(self.config.alert_topic, payload, key, None, "alert"))

    def _publish_dead_letter(self, message: Message, reason: str, detail: str) -> None:
        ts_type, ts = message.timestamp()
        try:
            original = message.headers()
        except Exception:  # unreadable, and not replaced by guard_headers (never expected)
            original = None
        headers = dead_letter_headers(
            reason=reason,
            detail=detail,
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=ts if ts_type else None,
            original=original,
        )
        value = message.value() or b""
        self.checkpoint.publish(
            Outgoing(self.config.dead_letter_topic, value, message.key(), headers, "dead_letter")
        )
        self._dead_reasons.append(reason)

    def _account(self, batch: _Processed, seconds: float) -> None:
        """Metrics and counters for a committed batch."""
        messages, decoded, scores = batch.messages, batch.decoded, batch.scores
        m = self.metrics
        s = self.summary
        n = len(messages)
        s.consumed += n
        s.batches += 1
        m.records_consumed(n)
        for _index, kind in decoded.ignored:
            m.records_ignored(kind)
        s.ignored += len(decoded.ignored)
        for reason, count in Counter(self._dead_reasons).items():
            m.records_dead_lettered(reason, count)
        s.dead_lettered += len(self._dead_reasons)
        delivered = self.publisher.take_delivered()
        if delivered.get("alert"):
            m.alerts_published(delivered["alert"])
        if scores is not None:
            m.records_scored(scores.scores, scores.flagged, self._row_labels(decoded))
            s.scored += len(scores.scores)
            s.flagged += int(scores.flagged.sum())
        m.batch_processed(n, seconds)
        stamps = batch.times[batch.times > 0]
        if stamps.size:
            now = time.time()
            m.end_to_end_latency(np.maximum(now - stamps, 0.0))
            m.last_record_timestamp(float(stamps.max()))

    def _row_labels(self, decoded: Any) -> Sequence[tuple[str, str, str]] | None:
        labels = decoded.model_labels
        if not any(label is not None for label in labels):
            return None
        per_message = [
            (lab.model_name or "", lab.model_version or "", lab.namespace or "")
            if lab is not None
            else ("", "", "")
            for lab in labels
        ]
        return [per_message[i] for i in decoded.row_message.tolist()]

    def _check_drift(self, scores: np.ndarray) -> list[DriftResult]:
        """Feed the drift window; a drifted window's event joins the batch's outputs."""
        if self.drift is None:
            return []
        results = self.drift.add(scores)
        for result in results:
            if not result.drifted:
                continue
            log.warning(
                "harmful drift: KS p-value %.3g < %.3g over the last %d records",
                result.p_value,
                self.drift.p_value,
                result.window,
            )
            payload = drift_payload(
                detector=self.handle.identity,
                p_value=result.p_value,
                statistic=result.statistic,
                window=result.window,
                reference_size=int(self.drift.reference.size),
                source_topic=self.config.input_topic,
                threshold_p_value=self.drift.p_value,
            )
            self.checkpoint.publish(
                Outgoing(self.config.effective_drift_topic, payload, b"drift", None, "drift")
            )
        return results

    # -- group membership ----------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)
        if self.prefetcher is not None:
            self.prefetcher.assigned()  # it un-pauses them (or pauses them while stuck)
        else:
            self._reassigned = True  # resumed after consume() returns: see _next_batch
        self.metrics.set_assigned_partitions(len(self._assigned))
        self._ready = True
        self.metrics.set_ready(True)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(
        self, _consumer: Consumer, partitions: list[TopicPartition], lost: bool = False
    ) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        if self.prefetcher is not None:
            # Batches already handed out finish (and commit) first, unless the partitions
            # are lost: their commits would be refused anyway.
            dropped = self.prefetcher.release(gone, wait=not lost)
        else:
            dropped = self._forget(gone)
        self._assigned -= gone
        for tp in gone:
            self._commit_targets.pop(tp, None)
        self.metrics.set_assigned_partitions(len(self._assigned))
        log.info(
            "revoked %s%s",
            _names(partitions),
            f" (dropped {dropped} unscored records for the new owner)" if dropped else "",
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out): %s", _names(partitions))
        self._on_revoke(consumer, partitions, lost=True)

    def _forget(self, tps: set[TP]) -> int:
        """Drop not-yet-processed records of these partitions."""

        def of(m: Message) -> bool:
            return (m.topic(), m.partition()) in tps

        before = len(self._carry)
        self._carry = [m for m in self._carry if not of(m)]
        return self.batcher.drop_where(of) + before - len(self._carry)

    # -- services the checkpoint needs (ConsumerHost) -------------------------------------
    def is_assigned(self, tp: TP) -> bool:
        return tp in self._assigned

    def stopping_past_deadline(self) -> bool:
        return (
            self._stop_at is not None
            and time.monotonic() - self._stop_at > self.config.shutdown_timeout_s
        )

    def commit_offsets(self, offsets: list[TopicPartition]) -> None:
        """Commit asynchronously (outcome: ``_on_commit``); raises ``KafkaException`` if
        refused at once. With the prefetch thread, that thread sends it (soon, in order)."""
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self._commit_targets[key] = max(tp.offset, self._commit_targets.get(key, tp.offset))
        if self.prefetcher is not None:
            self.prefetcher.commit(offsets)
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException:
            self._recommit = True
            raise

    def group_metadata(self) -> Any:
        """The consumer group metadata that fences zombies in transactions."""
        if self.prefetcher is not None:
            return self.prefetcher.group_metadata()
        return self.consumer.consumer_group_metadata()

    def serve_group(self, seconds: float) -> None:
        """Wait while staying in the group: records arriving meanwhile are kept for later."""
        if self.prefetcher is not None:  # its thread keeps consuming (paused) meanwhile
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                self._last_loop = time.monotonic()
                time.sleep(min(left, 0.5))
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._last_loop = time.monotonic()
                self._carry.extend(
                    self._usable(self.consumer.consume(num_messages=100, timeout=min(left, 0.5)))
                )
        finally:
            still = [tp for tp in self.consumer.assignment()]
            if still:
                self.consumer.resume(still)

    def rewind(self, offsets: BatchOffsets) -> None:
        """Seek back to the batch's first offsets so it is consumed and processed again."""
        if self.prefetcher is not None:  # it also drops and re-reads what it prefetched
            self.prefetcher.rewind()
            return
        targets = offsets.rewind_list(self.is_assigned)
        self._forget({(tp.topic, tp.partition) for tp in targets})
        for tp in targets:
            try:
                self.consumer.seek(tp)
            except Exception as exc:  # partition gone meanwhile: the new owner has it
                log.warning("could not rewind %s[%d]: %s", tp.topic, tp.partition, exc)

    # -- construction helpers -------------------------------------------------------------
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

    def _make_prefetcher(self, stack: ExitStack) -> Prefetcher:
        decoder = self.decoder  # not thread-safe: the prefetch thread is its only user

        def decode_here(messages: list[Message]) -> PendingDecode:
            return Ready(decoder.decode(messages))

        submit: Callable[[list[Message]], PendingDecode] = decode_here
        children = self.config.decode_processes
        if children:
            processes = []
            for _ in range(children):
                process = DecodeProcess(
                    decoder.spec,
                    self.decoder_format,
                    on_failure=self.metrics.decoder_process_failed,
                )
                process.start()
                stack.callback(process.close)  # after the prefetch thread stopped
                processes.append(process)
            # Batches take turns; with ``in_flight=children`` and answers taken oldest
            # first, each child has at most one batch at a time.
            turns = itertools.cycle(processes)

            def submit(messages: list[Message]) -> PendingDecode:
                return next(turns).submit(messages)

        return Prefetcher(
            self.consumer,
            self.batcher,
            submit,
            self._usable,
            self.is_assigned,
            self._commit_refused,
            track_group=self.config.exactly_once,
            in_flight=max(1, children),
        )

    def _make_checkpoint(self) -> AtLeastOnceCheckpoint | TransactionalCheckpoint:
        if not self.config.exactly_once:
            return AtLeastOnceCheckpoint(
                self, self.publisher, self.metrics, make_producer=self._new_producer
            )
        checkpoint = TransactionalCheckpoint(
            self, self.publisher, self.metrics, make_producer=self._new_producer
        )
        checkpoint.init()
        log.info(
            "transactions initialised (transactional.id %s)", self.config.effective_transactional_id
        )
        return checkpoint

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

    # -- callbacks, health, shutdown -------------------------------------------------------
    def _readiness(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "no partitions assigned yet"
        if not self._assigned:
            return False, "no partitions assigned"
        stalled = time.monotonic() - self._last_loop
        if stalled > 60:
            return False, f"consume loop stalled for {stalled:.0f}s"
        return True, "ok"

    def _liveness(self) -> tuple[bool, str]:
        """Alive while the loop turns; a loop stuck for minutes needs a restart."""
        stalled = time.monotonic() - self._last_loop
        if stalled > LIVENESS_STALL_S:
            return False, f"consume loop stuck for {stalled:.0f}s"
        return True, "ok"

    def _on_producer_error(self, err: KafkaError) -> None:
        """A producer that failed without being fenced is replaced (the checkpoint does
        it at its next call, and the batches not committed are processed again)."""
        if not err.fatal() or (self.config.exactly_once and err.code() in FENCING_ERRORS):
            self._on_kafka_error(err)
            return
        self.metrics.broker_error(err.name())
        log.error("fatal producer error (the producer will be replaced): %s", describe(err))
        checkpoint = getattr(self, "checkpoint", None)  # None while starting up
        if isinstance(checkpoint, AtLeastOnceCheckpoint):
            checkpoint.producer_failed(err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        self.metrics.broker_error(err.name())
        if err.fatal():
            log.error("fatal Kafka error: %s", describe(err))
            self.request_stop()
        else:
            log.warning("Kafka: %s", describe(err))

    def _retry_failed_commit(self) -> None:
        """Idle, after a failed asynchronous commit: commit the latest offsets again.

        A failed commit is normally covered by the next batch's; this covers the last
        batches before a pause in traffic (say, a commit refused while the group
        coordinator was still loading after a broker restart).
        """
        if not self._recommit or self.checkpoint.exactly_once:
            return
        self._recommit = False
        again = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self._commit_targets.items()
            if (topic, partition) in self._assigned
        ]
        if not again:
            return
        log.info("committing the offsets of %d partition(s) again", len(again))
        try:
            self.commit_offsets(again)
        except KafkaException as exc:
            self._commit_refused(exc)

    def _commit_refused(self, exc: KafkaException) -> None:
        self._recommit = True
        self.metrics.commit_failed()
        log.warning("offset commit failed: %s", describe(exc.args[0] if exc.args else exc))

    def _on_commit(self, err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        """Outcome of an asynchronous offset commit (at-least-once mode)."""
        if err is None:
            self.metrics.commit_succeeded()
        else:
            # The next commit covers these offsets, or _retry_failed_commit once idle; at
            # worst a partition's new owner re-processes from the previous commit.
            self._recommit = True
            self.metrics.commit_failed()
            log.warning("offset commit failed: %s", describe(err))

    def _on_stats(self, stats_json: str) -> None:
        self.metrics.update_from_stats(stats_json)
        try:
            stats = orjson.loads(stats_json)
            lag = 0
            for topic in stats.get("topics", {}).values():
                for part in topic.get("partitions", {}).values():
                    value = part.get("consumer_lag", -1)
                    if part.get("partition", -1) >= 0 and value > 0:
                        lag += value
            self._lag_total = lag
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            pass

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

    @property
    def producer(self) -> Producer:
        """The current producer (exactly-once mode may replace a stuck one)."""
        return self.publisher.producer

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **self.config.producer_conf(),
                **self._producer_sizes,
                "error_cb": self._on_producer_error,
            }
        )

    def _flush_producer(self) -> None:
        try:
            left = self.publisher.producer.flush(self.config.shutdown_timeout_s)
        except KafkaException as exc:  # a producer failed fatally: nothing more to deliver
            log.warning("producer flush at exit: %s", describe(exc.args[0] if exc.args else exc))
            return
        if left:
            log.warning(
                "%d message(s) not delivered before exit; their batch was not committed", left
            )

    def _close_consumer(self) -> None:
        if isinstance(self.checkpoint, TransactionalCheckpoint):
            self.checkpoint.abort(None)
        try:
            self.consumer.close()
        except Exception as exc:
            log.warning("consumer close: %s", exc)
        self.metrics.set_up(False)

    def _maybe_log_summary(self) -> None:
        interval = self.config.summary_interval_s
        if interval > 0 and time.monotonic() - self._last_summary >= interval:
            self._log_summary(final=False)

    def _log_summary(self, final: bool) -> None:
        now = time.monotonic()
        s, base = self.summary, self._summary_base
        elapsed = max(now - (self._started if final else self._last_summary), 1e-9)
        consumed = s.consumed - (0 if final else base.consumed)
        log.info(
            "%s: %.0f records/s, consumed %d, scored %d, flagged %d, dead letters %d, lag %d",
            "finished" if final else "progress",
            consumed / elapsed,
            s.consumed,
            s.scored,
            s.flagged,
            s.dead_lettered,
            self._lag_total,
        )
        self._last_summary = now
        self._summary_base = RunSummary(**vars(s))


def _message_bytes(items: Iterable[Message]) -> int:
    """Bytes in the messages' values, keys and headers: a micro-batch's size, which
    bounds the worker's memory whatever a record carries. Values and keys are summed in
    C; only messages with headers cost Python work."""
    messages = items if isinstance(items, list | tuple) else list(items)
    size = sum(map(len, filter(None, map(Message.value, messages))))
    size += sum(map(len, filter(None, map(Message.key, messages))))
    for message in messages:
        try:
            headers = message.headers()
        except Exception:  # unreadable headers: dead-lettered without them
            continue
        if headers:
            size += header_bytes(headers)
    return size


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
