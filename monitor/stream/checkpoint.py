"""Committing a batch: only what is safely delivered, in one of two modes.

``AtLeastOnceCheckpoint.commit`` runs these steps:

1. flush the producer and collect delivery failures;
2. while anything failed, back off (still serving the consumer group, so a long outage
   never gets the worker kicked out) and produce the failed messages again; if the
   batch's partitions were revoked meanwhile or shutdown's bound ran out, rewind instead
   and let the batch be processed again;
3. commit offset + 1 of every partition in the batch, asynchronously: delivery is already
   confirmed, offsets only move forward (a failed commit is covered by the next one), and
   ``close()`` waits for commits in flight; outcomes reach the consumer's ``on_commit``.

An idempotent producer that failed fatally (say, a sequence gap librdkafka cannot repair
after a broker restart), or that stopped acknowledging anything for ``STUCK_FLUSHES``
flushes in a row, takes no more messages: it is replaced by a new one and every batch
not committed yet is given back, to be processed again (at-least-once allows the
duplicate alerts this can make), instead of stopping the worker.

``TransactionalCheckpoint`` puts the batch's alerts, dead letters and input offsets in
one Kafka transaction: commit, or abort and rewind so the batch is processed again.
A fenced producer (another instance took our transactional id) raises ``FencedError``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from monitor.errors import DeliveryError, FencedError
from monitor.stream.offsets import TP, BatchOffsets
from monitor.stream.publisher import Outgoing, Publisher, describe

log = logging.getLogger(__name__)


class CheckpointMetrics(Protocol):
    def alert_publish_failed(self, n: int = 1) -> None: ...
    def commit_succeeded(self) -> None: ...
    def commit_failed(self) -> None: ...
    def transaction(self, outcome: str) -> None: ...


class IntakeLink(Protocol):
    """What a checkpoint needs from the consumer's owner (``intake.Intake``)."""

    def serve_group(self, seconds: float) -> None:
        """Wait ``seconds`` while the group membership is kept alive."""

    def is_assigned(self, tp: TP) -> bool: ...

    def rewind(self) -> None:
        """Process again every batch not committed yet."""

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit consumer offsets asynchronously."""

    def group_metadata(self) -> Any:
        """The consumer's group metadata, for ``send_offsets_to_transaction``."""


def _never() -> bool:
    return False


@dataclass
class Backoff:
    """Exponential backoff between retries, capped."""

    initial: float = 0.2
    maximum: float = 5.0
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def next_delay(self) -> float:
        self._next = self.initial if self._next == 0.0 else min(self.maximum, self._next * 2)
        return self._next


#: At-least-once: batches scored and published while earlier batches' outputs await
#: acknowledgement (each commits once its outputs are acknowledged). It bounds the
#: outputs in flight, and the records a crash makes the next owner re-process.
MAX_UNACKED_BATCHES = 4


class AtLeastOnceCheckpoint:
    """Commit a batch's offsets only after all it produced is acknowledged.

    Batches need not wait for each other: the next one is processed while earlier ones'
    outputs are on their way (up to ``MAX_UNACKED_BATCHES``), and each commits, in order,
    once its outputs are acknowledged (``commit_acknowledged``).
    """

    exactly_once = False
    commits_acknowledged = True

    def __init__(
        self,
        intake: IntakeLink,
        publisher: Publisher,
        metrics: CheckpointMetrics,
        flush_timeout: float = 30.0,
        make_producer: Callable[[], Producer] | None = None,
        stopping: Callable[[], bool] = _never,
    ) -> None:
        self.intake = intake
        self.stopping = stopping
        self.publisher = publisher
        self.metrics = metrics
        self.flush_timeout = flush_timeout
        self.make_producer = make_producer
        self.backoff = Backoff()
        #: Why the producer cannot be used any more (a fatal error), until it is replaced.
        self.broken: str | None = None
        self._stuck_flushes = 0  # flushes in a row that ended with messages pending

    def begin(self, offsets: BatchOffsets) -> None:
        """Nothing to open in this mode."""

    def may_extend(self, waiting: int, next_ready: bool, age_s: float) -> bool:
        """Go on to the next batch before committing the ``waiting`` ones? Yes while
        fewer than ``MAX_UNACKED_BATCHES`` wait (and the producer is not broken: it is
        replaced at the next commit, so it is fed no more batches)."""
        return waiting < MAX_UNACKED_BATCHES and self.broken is None

    def full(self, waiting: int) -> bool:
        """Every allowed batch waits: make room by committing the oldest."""
        return waiting >= MAX_UNACKED_BATCHES and self.broken is None

    def producer_failed(self, err: KafkaError) -> None:
        """The producer reported a fatal error (its ``error_cb``): the next commit
        replaces it."""
        self.producer_failed_for(describe(err))

    def producer_failed_for(self, why: str) -> None:
        if self.broken is None:
            self.broken = why
            self._stuck_flushes = 0

    def publish(self, out: Outgoing) -> None:
        """Produce; a broken producer's batch is given back at its commit instead."""
        if self.broken is not None:
            return
        try:
            self.publisher.produce(out)
        except KafkaException as exc:
            err = _error_of(exc)
            if err.fatal():
                self.producer_failed(err)
                return
            # Refused at once (too large messages are shortened, so e.g. an unknown
            # topic): undelivered, like a failed delivery, so the commit retries it.
            log.warning("producer refused %s for %s: %s", out.kind, out.topic, describe(err))
            self.publisher.refused(out, err)

    def _flush(self) -> list[Outgoing]:
        try:
            failed = self.publisher.flush(self.flush_timeout)
        except DeliveryError as exc:
            log.warning("delivery still pending: %s", exc)
            self._stuck_flushes += 1
            if self._stuck_flushes >= STUCK_FLUSHES:
                # Seen after a broker restart: an idempotent producer that neither
                # delivers nor fails its messages, for good. A new one does.
                self.producer_failed_for(
                    f"messages unacknowledged for {self._stuck_flushes * self.flush_timeout:g}s"
                )
            return []
        except KafkaException as exc:
            self.producer_failed(_error_of(exc))
            return []
        self._stuck_flushes = 0
        for out, err in failed[:3]:
            log.warning("could not deliver %s to %s: %s", out.kind, out.topic, describe(err))
        return [out for out, _err in failed]

    def commit(self, offsets: BatchOffsets) -> bool:
        # Step 1: flush and collect failures.
        failed = [] if self.broken else self._flush()
        pending_acks = self.publisher.in_flight > 0
        self.backoff.reset()
        # Step 2: retry the failed messages until delivered, or give the batch back.
        while failed or pending_acks:
            if self.broken is not None:
                break
            if failed:
                self.metrics.alert_publish_failed(len(failed))
            if self.stopping() or not all(self.intake.is_assigned(tp) for tp in offsets.next):
                log.warning(
                    "batch not delivered and %s: rewinding it for re-processing",
                    "shutting down" if self.stopping() else "partitions revoked",
                )
                self.intake.rewind()
                return False
            delay = self.backoff.next_delay()
            log.warning(
                "%d message(s) undelivered; holding the commit and retrying in %.1fs",
                len(failed),
                delay,
            )
            self.intake.serve_group(delay)
            for out in failed:
                self.publish(out)
            failed = [] if self.broken else self._flush()
            pending_acks = self.publisher.in_flight > 0
        if self.broken is not None:
            self._replace_producer(offsets)
            return False
        return self.commit_acknowledged(offsets)

    def _replace_producer(self, offsets: BatchOffsets) -> None:
        """Swap in a new producer and give the batches back: what the broken one did not
        get acknowledged is produced again when they are processed again."""
        why, self.broken = self.broken, None
        if self.make_producer is None:
            raise DeliveryError(f"the producer failed fatally and cannot be replaced ({why})")
        log.error(
            "the producer failed fatally (%s): replacing it; the batches not committed yet "
            "are processed again",
            why,
        )
        old = self.publisher.producer
        self.publisher.replace(self.make_producer())
        with contextlib.suppress(KafkaException):  # what it still holds is produced again
            old.purge()
        self.metrics.commit_failed()
        self.intake.rewind()

    def commit_acknowledged(self, offsets: BatchOffsets) -> bool:
        """Step 3 alone, for batches whose outputs are all acknowledged already."""
        # Commit offset + 1 for every partition still ours, without waiting for the
        # broker's answer (a round trip per batch); the consumer's on_commit counts it.
        to_commit = offsets.commit_list(self.intake.is_assigned)
        if to_commit:
            self.intake.commit(to_commit)
        return True


class TransactionalCheckpoint:
    """One Kafka transaction per batch: outputs and input offsets commit together.

    ``commit`` runs these steps:

    1. if the producer refused a message of this batch, or a partition of the batch was
       revoked meanwhile (its new owner re-processes it), abort instead;
    2. send the input offsets to the transaction with the group's current metadata, so
       a zombie from an older generation cannot commit them;
    3. commit the transaction; this flushes and fails if any message was not delivered.

    A retriable failure repeats only the step that failed (with backoff, serving the
    group); one that requires an abort aborts and rewinds the batch for re-processing; a
    fatal one raises ``FencedError`` when an instance with our transactional id took over,
    and otherwise (say ``INVALID_TXN_STATE`` after a broker restart) replaces the producer
    like a stuck one, below.

    Step 2 runs on a helper thread: after the group coordinator went away (a broker
    restart), librdkafka's ``send_offsets_to_transaction`` can block for ever, past its
    own timeout (librdkafka issues #5456 and #5511). When it does, the producer is
    replaced by a new one with the same transactional id, whose ``init_transactions``
    fences the stuck one and aborts its transaction; the batch is processed again.
    """

    exactly_once = True
    commits_acknowledged = False

    def __init__(
        self,
        intake: IntakeLink,
        publisher: Publisher,
        metrics: CheckpointMetrics,
        timeout: float = 30.0,
        make_producer: Callable[[], Producer] | None = None,
        stopping: Callable[[], bool] = _never,
        transaction_s: float = 0.1,
    ) -> None:
        self.intake = intake
        self.stopping = stopping
        self.transaction_s = transaction_s
        self.publisher = publisher
        self.metrics = metrics
        self.timeout = timeout
        self.make_producer = make_producer
        self.backoff = Backoff()
        self._open = False
        self._refused: KafkaError | None = None
        self._broken: str | None = None  # why the producer failed fatally while producing
        self._stuck: list[Producer] = []  # kept alive: a thread is still inside each

    def init(self) -> None:
        """Register the transactional id, fencing any older instance with the same id."""
        self._call(lambda: self.publisher.producer.init_transactions(self.timeout), "init")

    def may_extend(self, waiting: int, next_ready: bool, age_s: float) -> bool:
        """Let the next batch join the open transaction? When it is already waiting and
        the transaction is younger than ``transaction_s``: under a backlog, fewer and
        larger transactions (each costs several round trips to the broker); with nothing
        waiting it commits at once, so a trickle's alerts are not held back."""
        return next_ready and age_s < self.transaction_s

    def full(self, waiting: int) -> bool:
        return False

    def commit_acknowledged(self, offsets: BatchOffsets) -> bool:
        """A transaction commits outputs and offsets together: the same as ``commit``."""
        return self.commit(offsets)

    def begin(self, offsets: BatchOffsets) -> None:
        """Open a transaction, unless one is open: then the batch joins it."""
        if self._open:
            return
        self._refused = None
        try:
            self.publisher.producer.begin_transaction()
        except KafkaException as exc:
            try:
                self._raise_if_fatal(exc, "begin")
            except _BrokenProducer as broken:
                self._replace_producer(None, str(broken))
                self.publisher.producer.begin_transaction()
                self._open = True
                return
            # The previous abort did not finish (broker away): finish it, then begin.
            self._open = True
            self.abort(None)
            self.publisher.producer.begin_transaction()
        self._open = True

    def publish(self, out: Outgoing) -> None:
        """Produce into the open transaction; once refused, the batch can only abort."""
        if self._refused is not None:
            return
        try:
            self.publisher.produce(out)
        except KafkaException as exc:
            try:
                self._raise_if_fatal(exc, "produce")
            except _BrokenProducer as broken:
                self._broken = str(broken)  # the abort replaces the producer
            self._refused = _error_of(exc)
            log.warning(
                "producer refused a message (%s); the transaction will be aborted",
                describe(self._refused),
            )

    def commit(self, offsets: BatchOffsets) -> bool:
        producer = self.publisher.producer
        # Step 1: a batch that cannot commit whole is aborted and processed again.
        if self._refused is not None:
            return self._abort_batch(self._refused, offsets)
        if not all(self.intake.is_assigned(tp) for tp in offsets.next):
            return self._abort_batch("partitions revoked during the batch", offsets)
        # Step 2: the input offsets join the transaction.
        metadata = self.intake.group_metadata()
        try:
            err = self._retrying(
                lambda: self._send_offsets(producer, offsets.commit_list(), metadata),
                "send offsets",
                stuck_after_timeouts=SEND_OFFSETS_TIMEOUTS_STUCK,
            )
            # Step 3: commit outputs and offsets together.
            if err is None:
                err = self._retrying(lambda: producer.commit_transaction(self.timeout), "commit")
        except _StuckProducer:
            self._replace_producer(offsets, STUCK)
            return False
        except _BrokenProducer as broken:
            self._replace_producer(offsets, str(broken))
            return False
        if err is not None:
            return self._abort_batch(err, offsets)
        self._open = False
        self.publisher.take_failures_after_commit()
        self.metrics.transaction("committed")
        self.metrics.commit_succeeded()
        self.backoff.reset()
        return True

    def abort(self, offsets: BatchOffsets | None) -> None:
        """Abort the open transaction; with ``offsets``, rewind so the batch is re-processed."""
        if self._broken is not None:
            # A fatal error closed the transaction on our side: the new producer's
            # ``init_transactions`` aborts it on the broker's.
            why, self._broken = self._broken, None
            self._replace_producer(offsets, why)
            return
        if not self._open:
            if offsets is not None:  # nothing to abort, but the batch did not commit
                self.intake.rewind()
            return
        try:
            err = self._retrying(
                lambda: self.publisher.producer.abort_transaction(self.timeout), "abort"
            )
        except _BrokenProducer as broken:
            self._replace_producer(offsets, str(broken))  # its init aborts the transaction
            return
        if err is not None:
            log.warning("abort failed: %s", describe(err))
        else:
            self._open = False
        self.publisher.take_failures_after_commit()
        self.publisher.take_delivered()  # acknowledged, but aborted: not published
        self.metrics.transaction("aborted")
        if offsets is not None:
            self.intake.rewind()

    def _send_offsets(
        self, producer: Producer, positions: list[TopicPartition], metadata: object
    ) -> None:
        """``send_offsets_to_transaction``, given up on when it outlives its timeout."""
        timeout = min(self.timeout, SEND_OFFSETS_TIMEOUT_S)
        call = _Call(lambda: producer.send_offsets_to_transaction(positions, metadata, timeout))
        # (far shorter than max.poll.interval.ms: no need to serve the group meanwhile)
        if not call.done.wait(timeout + STUCK_GRACE_S):
            raise _StuckProducer
        call.result()

    def _replace_producer(self, offsets: BatchOffsets | None, why: str) -> None:
        """Swap in a new producer with our transactional id, whose ``init_transactions``
        fences the old one and aborts its transaction; the batch is processed again."""
        if self.make_producer is None:
            raise FencedError(f"the transactional producer cannot be replaced ({why})")
        log.error(
            "%s: replacing the transactional producer; the new one fences the old one and "
            "aborts its transaction",
            why,
        )
        self._stuck.append(self.publisher.producer)
        self.publisher.replace(self.make_producer())
        self._open = False
        try:
            self.init()
        except _BrokenProducer as again:
            raise FencedError(f"a new transactional producer failed at once: {again}") from None
        self.metrics.commit_failed()
        self.metrics.transaction("aborted")
        if offsets is not None:
            self.intake.rewind()

    def _abort_batch(self, why: KafkaError | str, offsets: BatchOffsets) -> bool:
        self.metrics.commit_failed()
        log.warning("transaction aborted (%s); the batch will be processed again", describe(why))
        self.abort(offsets)
        self.intake.serve_group(self.backoff.next_delay())
        return False

    def _retrying(
        self, step: Callable[[], None], what: str, stuck_after_timeouts: int | None = None
    ) -> KafkaError | None:
        """Run ``step``, repeating it while it fails retriably; the error that ends it, or None.

        Gives up on a retriable error only when shutdown's bound ran out. With
        ``stuck_after_timeouts``, that many timeouts in a row raise ``_StuckProducer``.
        """
        backoff = Backoff()
        timeouts = 0
        while True:
            try:
                step()
                return None
            except KafkaException as exc:
                self._raise_if_fatal(exc, what)
                err = _error_of(exc)
                if err.txn_requires_abort() or not err.retriable():
                    return err
                if self.stopping():
                    return err
                timeouts = timeouts + 1 if err.code() == KafkaError._TIMED_OUT else 0
                if stuck_after_timeouts is not None and timeouts >= stuck_after_timeouts:
                    raise _StuckProducer from None
                delay = backoff.next_delay()
                log.warning("transaction %s: %s; retrying in %.1fs", what, describe(err), delay)
                self.intake.serve_group(delay)

    def _call(self, fn: Callable[[], None], what: str) -> None:
        deadline = time.monotonic() + 5 * self.timeout
        while True:
            try:
                fn()
                return
            except KafkaException as exc:
                self._raise_if_fatal(exc, what)
                err = _error_of(exc)
                if time.monotonic() > deadline or not err.retriable():
                    raise
                time.sleep(self.backoff.next_delay())

    def _raise_if_fatal(self, exc: KafkaException, what: str) -> None:
        """A fatal producer error: ``FencedError`` when a newer instance with our
        transactional id took over (this worker must stop; the transaction is closed for
        good, so nothing is aborted at shutdown and the partitions move on at once),
        ``_BrokenProducer`` otherwise (the producer is replaced)."""
        err = _error_of(exc)
        if not err.fatal():
            return
        self._open = False
        if err.code() in FENCING_ERRORS:
            raise FencedError(
                f"transactional producer fenced during {what}: {describe(err)}"
            ) from None
        raise _BrokenProducer(
            f"the transactional producer failed fatally during {what} ({describe(err)})"
        ) from None


#: At-least-once: flushes in a row (``flush_timeout`` each) that end with messages still
#: unacknowledged before the producer counts as stuck and is replaced.
STUCK_FLUSHES = 3
SEND_OFFSETS_TIMEOUT_S = 10.0
# After a broker restart librdkafka can also keep timing out on a coordinator that is
# back (seen for minutes); a new producer finds it at once.
SEND_OFFSETS_TIMEOUTS_STUCK = 3
STUCK_GRACE_S = 5.0  # beyond its own timeout, a librdkafka call is considered stuck


STUCK = (
    "send_offsets_to_transaction is stuck (it did not return, or timed out again and "
    "again: a librdkafka bug after a coordinator change)"
)
#: Fatal errors that mean another instance took our transactional id over.
FENCING_ERRORS = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


class _StuckProducer(Exception):
    """A transactional API call outlived its timeout."""


class _BrokenProducer(Exception):
    """The transactional producer failed fatally, but nobody fenced it: replace it."""


class _Call:
    """A blocking call on a daemon thread, so that the caller can stop waiting for it."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.done = threading.Event()
        self._error: BaseException | None = None
        self._fn = fn
        threading.Thread(target=self._run, name="txn-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self._error = exc
        finally:
            self.done.set()

    def result(self) -> None:
        if self._error is not None:
            raise self._error


def _error_of(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))
