"""Committing a batch: only what is safely delivered, in one of two modes.

``AtLeastOnceCheckpoint.commit`` runs these steps:

1. flush the producer and collect delivery failures;
2. while anything failed, back off (still serving the consumer group, so a long outage
   never gets the worker kicked out) and produce the failed messages again; if the
   batch's partitions were revoked meanwhile or shutdown's bound ran out, rewind instead
   and let the batch be processed again;
3. commit offset + 1 of every partition in the batch, synchronously.

``TransactionalCheckpoint`` puts the batch's alerts, dead letters and input offsets in
one Kafka transaction: commit, or abort and rewind so the batch is processed again.
A fenced producer (another instance took our transactional id) raises ``FencedError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from monitor.errors import DeliveryError, FencedError
from monitor.stream.publisher import Outgoing, Publisher, describe

log = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass
class BatchOffsets:
    """First offset and next offset (last + 1) of every partition in one batch."""

    first: dict[TP, int] = field(default_factory=dict)
    next: dict[TP, int] = field(default_factory=dict)

    @classmethod
    def of(cls, messages: Sequence[Message]) -> BatchOffsets:
        first: dict[TP, int] = {}
        nxt: dict[TP, int] = {}
        for m in messages:
            tp = (m.topic() or "", m.partition() or 0)
            off = m.offset() or 0
            if tp not in first:
                first[tp] = off
            nxt[tp] = off + 1
        return cls(first, nxt)

    def commit_list(self, keep: Callable[[TP], bool] = lambda _tp: True) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.next.items() if keep((t, p))]

    def rewind_list(self, keep: Callable[[TP], bool] = lambda _tp: True) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.first.items() if keep((t, p))]


class CheckpointMetrics(Protocol):
    def alert_publish_failed(self, n: int = 1) -> None: ...
    def commit_succeeded(self) -> None: ...
    def commit_failed(self) -> None: ...
    def transaction(self, outcome: str) -> None: ...


class ConsumerHost(Protocol):
    """What a checkpoint needs from the worker while it waits."""

    consumer: Consumer

    def serve_group(self, seconds: float) -> None:
        """Keep the group membership alive for ``seconds`` without taking new records."""

    def is_assigned(self, tp: TP) -> bool: ...

    def stopping_past_deadline(self) -> bool: ...

    def rewind(self, offsets: BatchOffsets) -> None: ...


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


class AtLeastOnceCheckpoint:
    """Commit a batch's offsets only after all it produced is acknowledged."""

    exactly_once = False

    def __init__(
        self,
        host: ConsumerHost,
        publisher: Publisher,
        metrics: CheckpointMetrics,
        flush_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.publisher = publisher
        self.metrics = metrics
        self.flush_timeout = flush_timeout
        self.backoff = Backoff()

    def begin(self, offsets: BatchOffsets) -> None:
        """Nothing to open in this mode."""

    def publish(self, out: Outgoing) -> None:
        self.publisher.produce(out)

    def _flush(self) -> list[Outgoing]:
        try:
            failed = self.publisher.flush(self.flush_timeout)
        except DeliveryError as exc:
            log.warning("delivery still pending: %s", exc)
            return []
        for out, err in failed[:3]:
            log.warning("could not deliver %s to %s: %s", out.kind, out.topic, describe(err))
        return [out for out, _err in failed]

    def commit(self, offsets: BatchOffsets) -> bool:
        # Step 1: flush and collect failures.
        failed = self._flush()
        pending_acks = self.publisher.in_flight > 0
        self.backoff.reset()
        # Step 2: retry the failed messages until delivered, or give the batch back.
        while failed or pending_acks:
            if failed:
                self.metrics.alert_publish_failed(len(failed))
            if self.host.stopping_past_deadline() or not all(
                self.host.is_assigned(tp) for tp in offsets.next
            ):
                log.warning(
                    "batch not delivered and %s: rewinding it for re-processing",
                    "shutting down" if self.host.stopping_past_deadline() else "partitions revoked",
                )
                self.host.rewind(offsets)
                return False
            delay = self.backoff.next_delay()
            log.warning(
                "%d message(s) undelivered; holding the commit and retrying in %.1fs",
                len(failed),
                delay,
            )
            self.host.serve_group(delay)
            for out in failed:
                self.publisher.produce(out)
            failed = self._flush()
            pending_acks = self.publisher.in_flight > 0
        # Step 3: commit offset + 1 for every partition still ours.
        to_commit = offsets.commit_list(self.host.is_assigned)
        if not to_commit:
            return True
        try:
            self.host.consumer.commit(offsets=to_commit, asynchronous=False)
        except KafkaException as exc:
            # The group moved on (rebalance, fenced member): the new owner re-processes
            # from the last committed offset, so nothing is lost.
            self.metrics.commit_failed()
            log.warning("offset commit failed: %s", describe(exc.args[0] if exc.args else exc))
            return True
        self.metrics.commit_succeeded()
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
    fatal one (fenced by an instance with our transactional id) raises ``FencedError``.
    """

    exactly_once = True

    def __init__(
        self,
        host: ConsumerHost,
        publisher: Publisher,
        metrics: CheckpointMetrics,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.publisher = publisher
        self.metrics = metrics
        self.timeout = timeout
        self.backoff = Backoff()
        self._open = False
        self._refused: KafkaError | None = None

    def init(self) -> None:
        """Register the transactional id, fencing any older instance with the same id."""
        self._call(lambda: self.publisher.producer.init_transactions(self.timeout), "init")

    def begin(self, offsets: BatchOffsets) -> None:
        self._refused = None
        try:
            self.publisher.producer.begin_transaction()
        except KafkaException as exc:
            self._raise_if_fatal(exc, "begin")
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
            self._raise_if_fatal(exc, "produce")
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
        if not all(self.host.is_assigned(tp) for tp in offsets.next):
            return self._abort_batch("partitions revoked during the batch", offsets)
        # Step 2: the input offsets join the transaction.
        err = self._retrying(
            lambda: producer.send_offsets_to_transaction(
                offsets.commit_list(), self.host.consumer.consumer_group_metadata(), self.timeout
            ),
            "send offsets",
        )
        # Step 3: commit outputs and offsets together.
        if err is None:
            err = self._retrying(lambda: producer.commit_transaction(self.timeout), "commit")
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
        if not self._open:
            return
        err = self._retrying(
            lambda: self.publisher.producer.abort_transaction(self.timeout), "abort"
        )
        if err is not None:
            log.warning("abort failed: %s", describe(err))
        else:
            self._open = False
        self.publisher.take_failures_after_commit()
        self.publisher.take_delivered()  # acknowledged, but aborted: not published
        self.metrics.transaction("aborted")
        if offsets is not None:
            self.host.rewind(offsets)

    def _abort_batch(self, why: KafkaError | str, offsets: BatchOffsets) -> bool:
        self.metrics.commit_failed()
        log.warning("transaction aborted (%s); the batch will be processed again", describe(why))
        self.abort(offsets)
        self.host.serve_group(self.backoff.next_delay())
        return False

    def _retrying(self, step: Callable[[], None], what: str) -> KafkaError | None:
        """Run ``step``, repeating it while it fails retriably; the error that ends it, or None.

        Gives up on a retriable error only when shutdown's bound ran out.
        """
        backoff = Backoff()
        while True:
            try:
                step()
                return None
            except KafkaException as exc:
                self._raise_if_fatal(exc, what)
                err = _error_of(exc)
                if err.txn_requires_abort() or not err.retriable():
                    return err
                if self.host.stopping_past_deadline():
                    return err
                delay = backoff.next_delay()
                log.warning("transaction %s: %s; retrying in %.1fs", what, describe(err), delay)
                self.host.serve_group(delay)

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
        """A fatal producer error (fenced by a newer instance, or broken) ends this worker.

        The transaction is then closed for good: nothing may be aborted at shutdown, so
        the consumer still leaves the group at once and its partitions move on.
        """
        err = _error_of(exc)
        if err.fatal():
            self._open = False
            raise FencedError(
                f"transactional producer fenced or failed fatally during {what}: {describe(err)}"
            ) from None


def _error_of(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))
