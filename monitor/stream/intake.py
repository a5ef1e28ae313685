"""The Kafka consumer's only owner: it consumes, batches and decodes on its own thread.

Waiting on Kafka (the alert flush, the offset commit or transaction) and TensorFlow's
kernels release the GIL, so consuming and decoding the next batches meanwhile puts the
second core to work. confluent-kafka runs rebalance and commit callbacks inside
``consume()``, which runs on this thread, and lets one thread at a time into a consumer
(a call from another thread waits until ``consume()`` returns). So the intake is the
consumer's only user, and every piece of state those callbacks touch lives here, under
one lock (``_cond``):

- the assignment (``is_assigned``), changed by ``_on_assign`` / ``_on_revoke``;
- the offsets to commit: the checkpoint queues them (``commit``, latest per partition)
  and this thread sends them between ``consume()`` calls, at most every
  ``commit_interval_s`` and always before a revocation returns; a commit that failed is
  sent again (the latest offsets of the partitions still ours) when nothing newer is
  queued;
- the consumer group metadata for transactions (``group_metadata``): taken after every
  ``consume()`` and again when a revocation starts, so batches that commit while their
  partitions are being revoked send the current generation's;
- the batches: they go to the worker in consumption order through a small queue
  (``depth``), so memory stays bounded by ``depth`` + ``in_flight`` decoded batches, the
  open batch and librdkafka's fetch queue, whatever the backlog. The worker reports
  each batch it was handed as completed (``complete``); for each partition the intake
  knows the first offset not completed yet (``_pending``);
- rewinds (``rewind``): an epoch is bumped, queued batches are dropped, and once the
  worker has completed the batch it holds, this thread drops what it holds and seeks
  every partition back to its first offset not completed.

On revoke (this thread, inside ``consume()``) it waits, bounded by ``revoke_grace_s``,
until the worker has completed every batch handed out or queued, so they commit while
the partitions are still ours; then it forgets the revoked partitions' records. If the
worker is stuck (alerts undeliverable), it rewinds instead, and the worker's checkpoint,
seeing the partitions gone, gives its batch up. While the worker cannot take batches for
longer than ``stall_s``, the partitions are paused and ``consume()`` keeps being called,
so the group membership stays alive (``max.poll.interval.ms``); records still arriving
are kept for later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from monitor.stream.batcher import Batcher
from monitor.stream.decode_process import PendingDecode
from monitor.stream.headers import guard_headers
from monitor.stream.offsets import TP, BatchOffsets
from monitor.stream.publisher import describe
from monitor.stream.records import DecodedBatch, record_times

log = logging.getLogger(__name__)

#: Longest a queued commit waits for ``consume()`` to return (with nothing to fetch).
MAX_CONSUME_WAIT_S = 0.1
#: Longest ``consume()`` waits while a batch is being decoded elsewhere: its result is
#: collected as soon as it is ready, so a trickle's batch is not held back.
DECODING_CONSUME_WAIT_S = 0.001


class IntakeMetrics(Protocol):
    """What the intake reports."""

    def broker_error(self, code: str) -> None: ...
    def commit_succeeded(self) -> None: ...
    def commit_failed(self) -> None: ...
    def set_assigned_partitions(self, n: int) -> None: ...
    def set_ready(self, ready: bool) -> None: ...


@dataclass(frozen=True)
class Prepared:
    """A consumed, decoded batch waiting for the worker."""

    messages: list[Message]
    decoded: DecodedBatch
    offsets: BatchOffsets
    times: np.ndarray  # ``record_times(messages)``, taken here, off the worker's thread


def _tp(message: Message) -> TP:
    return (message.topic() or "", message.partition() or 0)


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"


class Intake:
    """The consuming half of the worker, on its own thread."""

    def __init__(
        self,
        consumer: Consumer | Mapping[str, Any],
        batcher: Batcher[Message],
        decode: Callable[[list[Message]], PendingDecode],
        metrics: IntakeMetrics,
        *,
        depth: int = 2,
        stall_s: float = 1.0,
        revoke_grace_s: float = 10.0,
        commit_interval_s: float = 0.05,
        track_group: bool = True,
        in_flight: int = 1,
    ) -> None:
        # Given a configuration, the intake makes the consumer, with its own on_commit.
        self.consumer: Consumer = (
            Consumer({**consumer, "on_commit": self.on_commit})
            if isinstance(consumer, Mapping)
            else consumer
        )
        self.batcher = batcher
        self.decode = decode
        self.metrics = metrics
        self.depth = depth
        self.stall_s = stall_s
        self.revoke_grace_s = revoke_grace_s
        self.commit_interval_s = commit_interval_s
        self.track_group = track_group
        self.in_flight = max(1, in_flight)
        self._cond = threading.Condition()
        # Shared with the worker's thread (and written by the callbacks), under ``_cond``:
        self._assigned: set[TP] = set()
        self._ever_assigned = False
        self._queue: deque[Prepared] = deque()
        self._handed = 0  # batches given to the worker and not completed yet
        self._epoch = 0  # bumped by a rewind; this thread catches up in ``_catch_up``
        self._pending: dict[TP, int] = {}  # first offset not completed, per partition
        self._taken_next: dict[TP, int] = {}  # offset after the last one queued
        self._error: BaseException | None = None
        self._commits: dict[TP, int] = {}  # offsets to commit, latest per partition
        self._targets: dict[TP, int] = {}  # the latest offsets asked to be committed
        self._recommit = False  # a commit failed: send the targets again when idle
        self._group_metadata: Any = None
        self._last_served = time.monotonic()
        # This thread's own:
        self._last_commit = 0.0
        self._seen_epoch = 0
        self._carry: list[Message] = []  # consumed while paused, or before a reset
        # Batches handed to the decoder and not answered yet, oldest first.
        self._decoding: deque[tuple[list[Message], BatchOffsets, PendingDecode]] = deque()
        self._paused = False
        self._reassigned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, topic: str | None = None) -> None:
        """Subscribe to ``topic`` (None: the consumer is set up already) and start."""
        if topic is not None:
            self.consumer.subscribe(
                [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        self._snapshot_group()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop consuming (batches still queued are dropped: they were never committed)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("intake thread still busy after %.0fs", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the worker's side -----------------------------------------------------------
    def next(self, timeout: float) -> Prepared | None:
        """The next batch (None after ``timeout``); re-raises what broke the thread."""
        with self._cond:
            self._cond.wait_for(
                lambda: bool(self._queue) or self._error is not None or self._stop.is_set(),
                timeout,
            )
            if self._error is not None:
                raise self._error
            if not self._queue:
                return None
            self._handed += 1
            item = self._queue.popleft()
            self._cond.notify_all()
            return item

    def ready(self) -> bool:
        """True when a batch is waiting (``next`` would return it at once)."""
        with self._cond:
            return bool(self._queue)

    def complete(self, offsets: BatchOffsets, committed: bool) -> None:
        """The worker is done with a batch: committed, or given back by ``rewind``."""
        with self._cond:
            self._handed -= 1
            if committed:
                for tp, nxt in offsets.next.items():
                    if self._taken_next.get(tp, nxt) > nxt:
                        self._pending[tp] = nxt
                    else:
                        self._pending.pop(tp, None)
                        self._taken_next.pop(tp, None)
            self._cond.notify_all()

    @property
    def joined(self) -> bool:
        """True once the group gave this consumer an assignment (possibly empty)."""
        with self._cond:
            return self._ever_assigned

    def assignment(self) -> set[TP]:
        with self._cond:
            return set(self._assigned)

    def readiness(self) -> tuple[bool, str]:
        with self._cond:
            if not self._ever_assigned:
                return False, "no partitions assigned yet"
            if not self._assigned:
                return False, "no partitions assigned"
        return True, "ok"

    @property
    def last_served(self) -> float:
        """When ``serve_group`` last woke up (a checkpoint waiting is a live worker)."""
        return self._last_served

    # -- the checkpoints' side ---------------------------------------------------------
    def is_assigned(self, tp: TP) -> bool:
        with self._cond:
            return tp in self._assigned

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit these offsets (asynchronously) from this thread, within
        ``commit_interval_s``; offsets of one partition only move forward."""
        with self._cond:
            for tp in offsets:
                key = (tp.topic, tp.partition)
                self._commits[key] = max(tp.offset, self._commits.get(key, tp.offset))
                self._targets[key] = max(tp.offset, self._targets.get(key, tp.offset))

    def group_metadata(self) -> Any:
        """The consumer group metadata for ``send_offsets_to_transaction``: as of the
        last ``consume()`` or the start of the revocation in progress."""
        if not self.track_group:
            return self.consumer.consumer_group_metadata()
        with self._cond:
            return self._group_metadata

    def rewind(self) -> None:
        """Process again everything not completed: drop the queue, seek back (soon)."""
        with self._cond:
            self._bump()

    def serve_group(self, seconds: float) -> None:
        """Wait; this thread keeps the group membership alive meanwhile (paused)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._last_served = time.monotonic()
            time.sleep(min(left, 0.5))
        self._last_served = time.monotonic()

    # -- callbacks (run inside consume(), on this thread) ------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._cond:
            self._assigned.update((p.topic, p.partition) for p in partitions)
            self._ever_assigned = True
            count = len(self._assigned)
        self._reassigned = True  # un-paused (or paused while stuck) after consume()
        self.metrics.set_assigned_partitions(count)
        self.metrics.set_ready(True)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(
        self, _consumer: Consumer, partitions: list[TopicPartition], lost: bool = False
    ) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        # Batches already handed out finish (and commit) first, unless the partitions are
        # lost: their commits would be refused anyway.
        dropped = self.release(gone, wait=not lost)
        with self._cond:
            self._assigned -= gone
            count = len(self._assigned)
        self.metrics.set_assigned_partitions(count)
        log.info(
            "revoked %s%s",
            _names(partitions),
            f" (dropped {dropped} unscored records for the new owner)" if dropped else "",
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out): %s", _names(partitions))
        self._on_revoke(consumer, partitions, lost=True)

    def on_commit(self, err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        """Outcome of an asynchronous offset commit (the consumer's ``on_commit``)."""
        if err is None:
            self.metrics.commit_succeeded()
            return
        # The next commit covers these offsets, or the targets are sent again once idle;
        # at worst a partition's new owner re-processes from the previous commit.
        with self._cond:
            self._recommit = True
        self.metrics.commit_failed()
        log.warning("offset commit failed: %s", describe(err))

    def release(self, tps: set[TP], wait: bool = True) -> int:
        """Partitions are being revoked: let handed-out batches finish, forget the rest.

        ``wait=False`` when they are already lost (session timed out): nothing of theirs
        can commit any more, so their queued offsets are dropped too (a commit for a lost
        assignment is refused, and only holds up rejoining the group).
        Returns how many not-yet-processed records of those partitions were dropped.
        """
        on_this_thread = threading.current_thread() is self._thread
        if on_this_thread:
            # A cooperative rebalance has already moved the group to a new generation:
            # transactions committing meanwhile must send its metadata, not the old one.
            self._snapshot_group()
        while on_this_thread and self._decoding:
            self._queue_decoded()  # they finish with the others (or are rewound with them)
        with self._cond:
            finished = self._cond.wait_for(
                lambda: (not self._queue and not self._handed) or self._stop.is_set(),
                self.revoke_grace_s if wait and on_this_thread else 0.0,
            )
            if not finished:
                if wait:
                    log.warning(
                        "revoke: the batch in progress did not finish within %.0fs; "
                        "it will be given back and processed again",
                        self.revoke_grace_s,
                    )
                self._bump()
            for tp in tps:
                self._pending.pop(tp, None)
                self._taken_next.pop(tp, None)
                self._targets.pop(tp, None)  # never committed again by a retry
                if not wait:
                    self._commits.pop(tp, None)
        if on_this_thread:
            self._send_commits(force=True)
            self._snapshot_group()
        return self._forget(tps)

    # -- this thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except BaseException as exc:  # handed to the worker's thread by next()
            log.exception("intake thread failed")
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            self._send_commits(force=True)
            if self._paused:
                self._resume()

    def _step(self) -> None:
        self._send_commits()
        with self._cond:
            blocked = self._cond.wait_for(
                lambda: self._can_proceed() or self._stop.is_set(), self.stall_s
            )
            resetting = self._seen_epoch != self._epoch
        if self._stop.is_set():
            return
        if not blocked:
            self._serve_paused()  # the worker is stuck: keep the group membership alive
            return
        if resetting:
            self._catch_up()
        if self._paused:
            self._resume()
        if self._decoding and self._decoding[0][2].ready():
            self._queue_decoded()
            return
        batcher = self.batcher
        if self._carry:
            room = batcher.room
            batcher.add(self._carry[:room])
            self._carry = self._carry[room:]
        if batcher.is_due():
            self._hand_over(batcher.take())
            return
        timeout = (
            min(batcher.time_left(), MAX_CONSUME_WAIT_S) if len(batcher) else MAX_CONSUME_WAIT_S
        )
        if self._decoding:
            timeout = min(timeout, DECODING_CONSUME_WAIT_S)
        messages = self.consumer.consume(num_messages=max(batcher.room, 1), timeout=timeout)
        self._apply_pause_state()
        self._snapshot_group()
        if messages:
            good = self._usable(messages)
            with self._cond:
                stale = self._seen_epoch != self._epoch
            if stale:
                self._carry.extend(good)  # dropped or re-sought by the reset
            else:
                batcher.add(good)

    def _usable(self, messages: list[Message]) -> list[Message]:
        """Drop error events (logged and counted): they are not records. Headers the
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

    def _can_proceed(self) -> bool:
        if self._seen_epoch != self._epoch:
            return not self._handed  # reset once the worker's batch is completed
        return len(self._queue) < self.depth

    def _hand_over(self, messages: list[Message]) -> None:
        """Start decoding a full batch, so the next one is consumed while it decodes; the
        oldest decoding batches go to the queue first (consumption order) while
        ``in_flight`` are decoding already."""
        while len(self._decoding) >= self.in_flight:
            self._queue_decoded()
        self._decoding.append((messages, BatchOffsets.of(messages), self.decode(messages)))

    def _take_decoding(self) -> list[Message]:
        """Drop the batches being decoded (their results too); returns their messages."""
        messages: list[Message] = []
        while self._decoding:
            batch, _offsets, pending = self._decoding.popleft()
            pending.result()  # the decoder answers in order: no answer may be left over
            messages.extend(batch)
        return messages

    def _queue_decoded(self) -> None:
        messages, offsets, pending = self._decoding.popleft()
        decoded = pending.result()
        times = record_times(messages)
        with self._cond:
            if self._seen_epoch != self._epoch:
                self._carry = messages + self._carry  # the reset will seek before these
                return
            self._queue.append(Prepared(messages, decoded, offsets, times))
            for tp, first in offsets.first.items():
                self._pending.setdefault(tp, first)
            self._taken_next.update(offsets.next)
            self._cond.notify_all()

    def _bump(self) -> None:
        """(Under the lock.) Invalidate everything queued; ``_catch_up`` does the rest."""
        self._epoch += 1
        self._queue.clear()
        self._cond.notify_all()

    def _catch_up(self) -> None:
        """Seek every partition back to its first record not completed; drop what is held."""
        held = self._take_decoding() + self.batcher.take() + self._carry
        self._carry = []
        with self._cond:
            targets = dict(self._pending)
            self._pending.clear()
            self._taken_next.clear()
            self._seen_epoch = self._epoch
            assigned = set(self._assigned)
        for m in held:
            tp = _tp(m)
            offset = m.offset() or 0
            if offset < targets.get(tp, offset + 1):
                targets[tp] = offset
        for (topic, partition), offset in targets.items():
            if (topic, partition) not in assigned:
                continue
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # partition gone meanwhile: its new owner has it
                log.warning("could not rewind %s[%d]: %s", topic, partition, exc)
        if targets:
            log.info("rewound %d partition(s) for re-processing", len(targets))

    def _serve_paused(self) -> None:
        if not self._paused:
            assignment = self.consumer.assignment()
            log.debug("the worker is busy: pausing %d partition(s)", len(assignment))
            if assignment:
                self.consumer.pause(assignment)
            self._paused = True
        messages = self.consumer.consume(num_messages=100, timeout=MAX_CONSUME_WAIT_S)
        self._apply_pause_state()
        self._snapshot_group()
        self._carry.extend(self._usable(messages))

    def _send_commits(self, force: bool = False) -> None:
        """Send the queued offsets as one asynchronous commit, at most every
        ``commit_interval_s`` unless forced (before a revocation, at stop): one commit
        per batch cost the broker and librdkafka a request each. After a failed commit,
        with nothing newer queued, the latest targets go again (a commit refused while
        the group coordinator was still loading, say, before a pause in traffic)."""
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        with self._cond:
            if not self._commits and self._recommit:
                self._commits = {tp: o for tp, o in self._targets.items() if tp in self._assigned}
                if self._commits:
                    log.info("committing the offsets of %d partition(s) again", len(self._commits))
            self._recommit = False
            if not self._commits:
                return
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._commits.items()]
            self._commits.clear()
        self._last_commit = now
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            with self._cond:
                self._recommit = True
            self.metrics.commit_failed()
            log.warning("offset commit failed: %s", describe(exc.args[0] if exc.args else exc))

    def _snapshot_group(self) -> None:
        """Keep the metadata that goes with the records just consumed. Only transactions
        need it, and taking it after every ``consume()`` cost this thread a tenth of its
        time: without ``track_group`` it is skipped."""
        if not self.track_group:
            return
        metadata = self.consumer.consumer_group_metadata()
        with self._cond:
            self._group_metadata = metadata

    def _apply_pause_state(self) -> None:
        """After an assignment, put every partition in this thread's pause state.

        librdkafka keeps a partition's pause flag across revocation and re-assignment: one
        lost while paused (a broker outage, a rebalance while the worker was stuck) would
        stay paused for good once it came back; a new one would not be paused while the
        worker is stuck.
        """
        if not self._reassigned:
            return
        self._reassigned = False
        assignment = self.consumer.assignment()
        if assignment:
            (self.consumer.pause if self._paused else self.consumer.resume)(assignment)

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        log.debug("resuming %d partition(s)", len(assignment))
        if assignment:
            self.consumer.resume(assignment)
        self._paused = False

    def _forget(self, tps: Iterable[TP]) -> int:
        gone = set(tps)
        before = len(self._carry)
        self._carry = [m for m in self._carry if _tp(m) not in gone]
        return self.batcher.drop_where(lambda m: _tp(m) in gone) + before - len(self._carry)

    @property
    def held(self) -> int:
        """Records consumed and not handed to the worker yet (for tests and metrics)."""
        with self._cond:
            queued = sum(len(p.messages) for p in self._queue)
        decoding = sum(len(batch) for batch, _offsets, _pending in self._decoding)
        return queued + decoding + len(self.batcher) + len(self._carry)
