"""The intake: order, bounded memory, rewinds, revokes, the assignment and queued commits.

A fake consumer stands in for confluent-kafka (partition logs, positions, pause/resume,
seek, commits); rebalance callbacks are simulated by calling the intake's own callbacks
from inside ``consume``, on the intake's thread, as confluent-kafka does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from checkpoint_standins import NullMetrics
from confluent_kafka import KafkaError, Message, TopicPartition

from monitor.stream.batcher import Batcher
from monitor.stream.decode_process import Ready
from monitor.stream.intake import Intake, Prepared

TOPIC = "in"


class FakeConsumer:
    """Partition logs read from a position, like a subscribed consumer."""

    def __init__(self, sizes: dict[int, int]) -> None:
        self.logs = {p: n for p, n in sizes.items()}
        self.position = {p: 0 for p in sizes}
        self.paused: set[int] = set()
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[list[tuple[int, int]]] = []
        self.consume_calls = 0
        self.threads: set[str] = set()
        self.during_consume: Callable[[], None] | None = None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.threads.add(threading.current_thread().name)
        self.consume_calls += 1
        hook, self.during_consume = self.during_consume, None
        if hook is not None:
            hook()  # a rebalance callback runs inside consume()
        out: list[Message] = []
        for p in sorted(self.logs):
            while p not in self.paused and self.position[p] < self.logs[p]:
                if len(out) >= num_messages:
                    return out
                off = self.position[p]
                out.append(Message(topic=TOPIC, partition=p, offset=off, value=b"%d" % off))
                self.position[p] += 1
        if not out:
            time.sleep(min(max(timeout, 0.0), 0.01))
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.logs)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)

    def seek(self, tp: TopicPartition) -> None:
        self.threads.add(threading.current_thread().name)
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.threads.add(threading.current_thread().name)
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def consumer_group_metadata(self) -> object:
        return ("group", self.consume_calls)


def offsets_of(messages: list[Message]) -> list[tuple[int, int]]:
    return [(m.partition() or 0, m.offset() or 0) for m in messages]


class HeldDecode:
    """A batch decoded elsewhere (the child process) that finishes when ``go`` is set."""

    def __init__(self, messages: list[Message], go: threading.Event) -> None:
        self.messages = messages
        self.go = go

    def ready(self) -> bool:
        return self.go.is_set()

    def result(self) -> Any:
        assert self.go.wait(10), "a decode result was waited for that never came"
        return offsets_of(self.messages)


class HeldDecoder:
    """Submits batches that decode only when the test lets them (but the first ``free``)."""

    def __init__(self, free: int = 0) -> None:
        self.go = threading.Event()
        self.free = free
        self.submitted: list[list[tuple[int, int]]] = []

    def __call__(self, messages: list[Message]) -> HeldDecode | Ready:
        self.submitted.append(offsets_of(messages))
        if len(self.submitted) <= self.free:
            return Ready(offsets_of(messages))  # type: ignore[arg-type]
        return HeldDecode(messages, self.go)


def make(
    consumer: FakeConsumer,
    batch: int = 4,
    depth: int = 2,
    decode: Callable[[list[Message]], Any] | None = None,
    **kw: Any,
) -> Intake:
    """An intake over ``consumer``, every partition assigned, started."""
    intake = Intake(
        consumer,  # type: ignore[arg-type]
        Batcher(batch, 0.01),
        decode or (lambda messages: Ready(offsets_of(messages))),  # type: ignore[arg-type]
        NullMetrics(),
        depth=depth,
        **kw,
    )
    intake._on_assign(consumer, consumer.assignment())  # type: ignore[arg-type]
    intake.start()
    return intake


def take(intake: Intake, timeout: float = 5.0) -> Prepared:
    item = intake.next(timeout)
    assert item is not None, "no batch within the timeout"
    return item


@pytest.fixture
def stop_after() -> Any:
    started: list[Intake] = []
    yield started.append
    for p in started:
        p.stop()


def test_batches_arrive_decoded_in_consumption_order_with_their_offsets(stop_after: Any) -> None:
    consumer = FakeConsumer({0: 10})
    intake = make(consumer, batch=4)
    stop_after(intake)
    seen = []
    for _ in range(3):
        item = take(intake)
        assert item.decoded == offsets_of(item.messages)  # type: ignore[comparison-overlap]
        assert item.offsets.first == {(TOPIC, 0): item.messages[0].offset()}
        assert item.offsets.next == {(TOPIC, 0): (item.messages[-1].offset() or 0) + 1}
        seen += offsets_of(item.messages)
        intake.complete(item.offsets, committed=True)
    assert seen == [(0, i) for i in range(10)]


def test_no_more_than_depth_batches_wait_and_the_group_is_still_served(
    stop_after: Any,
) -> None:
    consumer = FakeConsumer({0: 100_000})
    intake = make(consumer, batch=8, depth=2, stall_s=0.05)
    stop_after(intake)
    time.sleep(0.5)  # the worker takes nothing meanwhile
    assert intake.held <= 2 * 8 + 8 + 100  # queue + open batch + one paused poll
    assert consumer.paused == {0}, "a stuck worker must pause fetching"
    calls = consumer.consume_calls
    time.sleep(0.2)
    assert consumer.consume_calls > calls, "consume() must keep being called while paused"
    take(intake)
    for _ in range(200):
        if not consumer.paused:
            break
        time.sleep(0.01)
    assert consumer.paused == set(), "fetching resumes once the worker takes batches again"


def test_rewind_goes_back_to_the_first_record_not_completed_and_drops_the_queue(
    stop_after: Any,
) -> None:
    consumer = FakeConsumer({0: 40, 1: 40})
    intake = make(consumer, batch=4, depth=2)
    stop_after(intake)
    done = take(intake)
    intake.complete(done.offsets, committed=True)
    failed = take(intake)
    time.sleep(0.1)  # let more batches queue up behind it
    intake.rewind()
    intake.complete(failed.offsets, committed=False)
    again = take(intake)
    assert offsets_of(again.messages)[0] == offsets_of(failed.messages)[0]
    for tp, first in failed.offsets.first.items():
        assert (tp[1], first) in consumer.seeks
    assert consumer.threads == {"intake"}, "only the intake thread touches the consumer"


def test_a_revoke_waits_for_the_batches_handed_out_then_forgets_the_partition(
    stop_after: Any,
) -> None:
    consumer = FakeConsumer({0: 1000})
    intake = make(consumer, batch=4, depth=1, stall_s=0.05, revoke_grace_s=10.0)
    stop_after(intake)
    in_progress = take(intake)
    for _ in range(300):
        if intake.ready():
            break
        time.sleep(0.01)
    released: list[int] = []

    def revoke() -> None:  # runs on the intake thread, inside consume()
        released.append(intake.release({(TOPIC, 0)}))
        del consumer.logs[0]  # the consumer no longer returns the partition

    consumer.during_consume = revoke  # the next consume(): while paused, the queue full
    time.sleep(0.3)
    assert not released, "the revoke must wait for the batch the worker holds"
    intake.complete(in_progress.offsets, committed=True)
    queued = take(intake)  # queued before the revoke: still ours to finish
    time.sleep(0.2)
    assert not released, "the revoke must wait for the queued batch too"
    intake.complete(queued.offsets, committed=True)
    for _ in range(300):
        if released:
            break
        time.sleep(0.01)
    assert released, "the revoke completes once the worker has finished its batches"
    assert intake.next(0.3) is None, "nothing of the revoked partition is handed out"


def test_a_revoke_gives_up_waiting_after_its_grace_and_rewinds(stop_after: Any) -> None:
    consumer = FakeConsumer({0: 1000, 1: 1000})
    intake = make(consumer, batch=4, depth=1, revoke_grace_s=0.2)
    stop_after(intake)
    stuck = take(intake)  # never completed in time: alerts undeliverable, say
    done: list[bool] = []

    def revoke() -> None:
        intake._on_revoke(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]
        del consumer.logs[1]
        done.append(True)

    consumer.during_consume = revoke
    for _ in range(300):
        if done:
            break
        time.sleep(0.01)
    assert done, "the revoke must not wait for ever"
    intake.complete(stuck.offsets, committed=False)  # the checkpoint gave it back
    again = take(intake)
    assert offsets_of(again.messages)[0] == offsets_of(stuck.messages)[0]
    assert all(p == 0 for p, _ in offsets_of(again.messages)), "partition 1 is gone"


def test_commits_are_sent_by_the_intake_thread_and_only_move_forward(stop_after: Any) -> None:
    """Queued offsets are coalesced (one commit per interval, not per batch); a late,
    older offset of a partition never moves its commit back."""
    consumer = FakeConsumer({0: 8})
    intake = make(consumer, batch=4)
    stop_after(intake)
    for _ in range(2):
        item = take(intake)
        intake.commit(item.offsets.commit_list())
        intake.complete(item.offsets, committed=True)
    intake.commit([TopicPartition(TOPIC, 0, 6)])
    for _ in range(300):
        if consumer.commits and consumer.commits[-1] == [(0, 8)]:
            break
        time.sleep(0.01)
    sent = [offset for commit in consumer.commits for _, offset in commit]
    assert sent[-1] == 8 and sent == sorted(sent)
    assert consumer.threads == {"intake"}


def test_an_error_on_the_thread_is_raised_by_next(stop_after: Any) -> None:
    consumer = FakeConsumer({0: 8})

    def broken() -> None:
        raise RuntimeError("callback failed")

    consumer.during_consume = broken
    intake = make(consumer)
    stop_after(intake)
    with pytest.raises(RuntimeError, match="callback failed"):
        for _ in range(50):
            intake.next(0.1)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_next_batch_is_consumed_while_one_is_decoded_elsewhere(stop_after: Any) -> None:
    consumer = FakeConsumer({0: 12})
    decoder = HeldDecoder()
    intake = make(consumer, batch=4, decode=decoder)
    stop_after(intake)
    wait_for(lambda: consumer.position[0] >= 8, "the next batch to be consumed")
    assert decoder.submitted == [[(0, i) for i in range(4)]], "one batch decodes at a time"
    assert intake.next(0.1) is None, "a batch is handed out only once decoded"
    decoder.go.set()
    seen = []
    for _ in range(3):
        item = take(intake)
        assert item.decoded == offsets_of(item.messages)  # type: ignore[comparison-overlap]
        seen += offsets_of(item.messages)
        intake.complete(item.offsets, committed=True)
    assert seen == [(0, i) for i in range(12)], "decoded elsewhere, still in order"


def test_a_revoke_while_a_batch_decodes_lets_it_finish_and_commit_first(
    stop_after: Any,
) -> None:
    consumer = FakeConsumer({0: 4})  # one batch: the thread keeps consuming while it decodes
    decoder = HeldDecoder()
    intake = make(consumer, batch=4, depth=1, decode=decoder, revoke_grace_s=10.0)
    stop_after(intake)
    wait_for(lambda: len(decoder.submitted) == 1, "a batch to be decoding")
    released: list[int] = []

    def revoke() -> None:  # inside consume(), while the batch decodes
        released.append(intake.release({(TOPIC, 0)}))
        del consumer.logs[0]

    consumer.during_consume = revoke
    wait_for(lambda: consumer.during_consume is None, "the revocation to start")
    decoder.go.set()
    item = take(intake)
    assert offsets_of(item.messages) == decoder.submitted[0]
    assert not released, "the revoke waits for the decoded batch to be processed"
    intake.complete(item.offsets, committed=True)
    wait_for(lambda: bool(released), "the revocation to return")
    assert intake.next(0.3) is None, "nothing of the revoked partition is handed out"


def test_with_two_decoders_two_batches_decode_at_once_and_arrive_in_order(
    stop_after: Any,
) -> None:
    consumer = FakeConsumer({0: 16})
    decoder = HeldDecoder()
    intake = make(consumer, batch=4, decode=decoder, in_flight=2)
    stop_after(intake)
    wait_for(lambda: consumer.position[0] >= 12, "a third batch to be consumed")
    assert decoder.submitted == [[(0, i) for i in range(j, j + 4)] for j in (0, 4)], (
        "two batches decode at once, and no more"
    )
    assert intake.next(0.1) is None, "a batch is handed out only once decoded"
    decoder.go.set()
    seen = []
    for _ in range(4):
        item = take(intake)
        seen += offsets_of(item.messages)
        intake.complete(item.offsets, committed=True)
    assert seen == [(0, i) for i in range(16)], "in consumption order"


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_rewind_drops_every_batch_being_decoded_and_seeks_before_the_first(
    stop_after: Any, in_flight: int
) -> None:
    batches = in_flight + 1  # the failed one, then as many as may decode at once
    consumer = FakeConsumer({0: 4 * batches})
    decoder = HeldDecoder(free=1)
    intake = make(consumer, batch=4, depth=2, decode=decoder, in_flight=in_flight)
    stop_after(intake)
    failed = take(intake)
    wait_for(lambda: len(decoder.submitted) == batches, "the next batches to be decoding")
    intake.rewind()
    intake.complete(failed.offsets, committed=False)
    decoder.go.set()
    seen = []
    for _ in range(batches):
        item = take(intake)
        seen += offsets_of(item.messages)
        intake.complete(item.offsets, committed=True)
    assert seen == [(0, i) for i in range(4 * batches)], (
        "everything again, from the rewound batch on"
    )
    assert consumer.seeks == [(0, 0)]


def test_a_failed_commit_is_sent_again_only_for_partitions_still_assigned(
    stop_after: Any,
) -> None:
    """The last batches before a pause have no later commit to cover a failed one: the
    intake sends the latest offsets again, once per failure, for the partitions it still
    owns; a revoke meanwhile drops the revoked partition's."""
    consumer = FakeConsumer({0: 0, 1: 0})
    intake = make(consumer, commit_interval_s=0.0)
    stop_after(intake)
    intake.commit([TopicPartition(TOPIC, 0, 10), TopicPartition(TOPIC, 1, 7)])
    intake.commit([TopicPartition(TOPIC, 0, 25)])
    wait_for(lambda: bool(consumer.commits) and consumer.commits[-1] == [(0, 25), (1, 7)], "sent")
    sent = len(consumer.commits)
    time.sleep(0.1)
    assert len(consumer.commits) == sent, "nothing failed: nothing is sent again"

    revoked = threading.Event()

    def revoke() -> None:
        intake._on_revoke(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]
        revoked.set()

    consumer.during_consume = revoke
    assert revoked.wait(5)
    intake.on_commit(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS), [])
    wait_for(lambda: consumer.commits[-1] == [(0, 25)], "the retry")
    time.sleep(0.1)
    assert consumer.commits.count([(0, 25)]) == 1, "sent again once per failure"


def test_revokes_and_failed_commits_on_the_intake_thread_never_race_queued_commits(
    stop_after: Any,
) -> None:
    """The checkpoint queues commits on the worker's thread while librdkafka's callbacks
    (revoke, assign, commit outcome) change the same offsets on the intake's thread."""
    partitions = list(range(64))
    consumer = FakeConsumer({p: 0 for p in partitions})
    intake = make(consumer, commit_interval_s=0.0)
    stop_after(intake)
    rounds = 0

    def churn() -> None:
        nonlocal rounds
        rounds += 1
        half = [TopicPartition(TOPIC, p) for p in partitions[rounds % 2 :: 2]]
        intake._on_revoke(consumer, half)  # type: ignore[arg-type]
        intake.on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [])
        intake._on_assign(consumer, half)  # type: ignore[arg-type]
        consumer.during_consume = churn

    consumer.during_consume = churn
    # Commits go on until the callbacks have run many times meanwhile, however slow the
    # machine; the deadline only bounds a broken intake thread.
    deadline = time.monotonic() + 120.0
    offset = 0
    while rounds < 20 and time.monotonic() < deadline:
        offset += 1
        intake.commit([TopicPartition(TOPIC, p, offset) for p in partitions])
    assert rounds >= 20, "the callbacks must have run meanwhile"
    assert intake.next(0.05) is None  # raises what broke the intake's thread, if anything
    assert intake.alive


def test_batches_committing_during_a_revoke_send_the_new_generations_metadata(
    stop_after: Any,
) -> None:
    """A cooperative rebalance moves the group to a new generation before the revoke
    callback; the batches the worker finishes meanwhile commit in a transaction, whose
    offsets the broker refuses with the old generation's metadata (ILLEGAL_GENERATION)."""
    consumer = FakeConsumer({0: 1000, 1: 1000})
    generation = [1]
    consumer.consumer_group_metadata = lambda: ("group", generation[0])  # type: ignore[method-assign]
    intake = make(consumer, batch=4, depth=1, stall_s=0.05, track_group=True)
    stop_after(intake)
    in_flight = take(intake)
    assert intake.group_metadata() == ("group", 1)
    revoking = threading.Event()

    def revoke() -> None:  # inside consume(), after the group moved on
        generation[0] = 2
        revoking.set()
        intake._on_revoke(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]

    consumer.during_consume = revoke
    assert revoking.wait(5)
    time.sleep(0.1)  # the revoke now waits for the batch the worker holds
    assert intake.is_assigned((TOPIC, 1)), "still ours until the worker's batches finish"
    assert intake.group_metadata() == ("group", 2)
    intake.complete(in_flight.offsets, committed=True)
    while (queued := intake.next(0.05)) is not None:  # queued before the revoke: ours too
        intake.complete(queued.offsets, committed=True)
    wait_for(lambda: not intake.is_assigned((TOPIC, 1)), "the revoke to finish")
