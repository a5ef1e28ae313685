"""Checking delivery promises by id, and the fault scenarios that put them to the test.

Shared by ``tests/test_faults.py`` (small record counts) and ``bench/faults.py`` (larger):
each scenario applies its faults to real worker processes and the real broker while it
produces records, then reads the alert topic as a ``read_committed`` subscriber would and
returns a ``FaultReport`` with the numbers by id over exactly the records it sent.

Nothing here may depend on a machine's speed. Streamed traffic lasts until the scenario
stops it, so it cannot run out while slow workers start; waits are multiples of the
start-up measured on this machine (``Pace``); each worker's progress is read from its own
metrics, not from the group's total; and a scenario that could not have tested what it
claims (a kill that hit an idle worker, an outage no record went through) fails saying so.
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fixtures_kafka import Consumed, _detach, create_topic, delete_topics
from worker_harness import (
    CRASHES,
    ROOT,
    committed_offsets,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    state_of,
    worker_config,
)

from monitor.config import WorkerConfig
from monitor.stream.worker import Worker

ALO = "at-least-once"
EOS = "exactly-once"
MODES = (ALO, EOS)


# -- reading topics back -------------------------------------------------------------------
def read_to_end(
    bootstrap: str, topic: str, *, read_committed: bool = True, timeout: float = 60.0
) -> list[Consumed]:
    """Every record of ``topic`` up to its end as a fresh subscriber sees it.

    With ``read_committed`` the end is the last stable offset: records of aborted
    transactions are never returned, and those of still-open ones not yet.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    got: list[Consumed] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        partitions = [TopicPartition(topic, p, -2) for p in sorted(meta.partitions)]
        consumer.assign(partitions)
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: end not reached in {timeout}s ({len(got)} read)")
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                err = msg.error()
                if err is None:
                    got.append(_detach(msg))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                else:
                    raise KafkaException(err)
    finally:
        consumer.close()
    return got


@dataclass(frozen=True)
class Alert:
    """The parts of an alert the checks need."""

    id: str
    partition: int
    offset: int


def read_alerts(bootstrap: str, topic: str, read_committed: bool = True) -> list[Alert]:
    out = []
    for m in read_to_end(bootstrap, topic, read_committed=read_committed):
        body = orjson.loads(m.value or b"{}")
        out.append(Alert(body["id"], body["source"]["partition"], body["source"]["offset"]))
    return out


def alert_ids(bootstrap: str, topic: str, read_committed: bool = True) -> Counter[str]:
    """How many times each record id arrived on the alert topic."""
    return Counter(a.id for a in read_alerts(bootstrap, topic, read_committed))


# A crash window: per partition, [committed offset, end offset) when the worker died.
# Only records in it may have been processed without their offsets being committed.
CrashWindow = dict[int, tuple[int, int]]


def _outside_windows(alerts: Sequence[Alert], windows: Sequence[CrashWindow]) -> list[str]:
    """Ids of duplicated alerts whose record was in no crash window."""
    counts = Counter(a.id for a in alerts)
    return sorted(
        {
            a.id
            for a in alerts
            if counts[a.id] > 1
            and not any(w[a.partition][0] <= a.offset < w[a.partition][1] for w in windows)
        }
    )


# -- the records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Traffic:
    """Records with known ids, and the ids the detector flags offline."""

    ids: list[str]
    instances: np.ndarray
    flagged: frozenset[str]

    def records(self, start: int = 0, stop: int | None = None) -> list[tuple[bytes, bytes]]:
        return [
            (rid.encode(), json_record(rid, self.instances[i]))
            for i, rid in enumerate(self.ids[start:stop], start)
        ]

    def __len__(self) -> int:
        return len(self.ids)

    def tail(self, n: int) -> Traffic:
        """The records from the ``n``-th on."""
        return Traffic(self.ids[n:], self.instances[n:], self.flagged & frozenset(self.ids[n:]))


def make_traffic(detector_dir: Path, instances: np.ndarray, prefix: str = "r") -> Traffic:
    """Score ``instances`` offline; rows too close to the threshold to call are dropped."""
    from monitor import load_detector

    detector = load_detector(detector_dir)
    scores = np.asarray(detector.score(instances), dtype=np.float64)
    if detector.threshold is None:
        raise ValueError(f"{detector_dir}: the detector has no threshold")
    threshold = float(detector.threshold)
    clear = np.abs(scores - threshold) > 1e-3 * max(abs(threshold), 1e-3)
    kept = instances[clear]
    ids = [f"{prefix}-{i}" for i in range(len(kept))]
    flagged = frozenset(rid for rid, s in zip(ids, scores[clear], strict=True) if s > threshold)
    return Traffic(ids, kept, flagged)


def tiny_instances(n: int, seed: int = 0) -> np.ndarray:
    """Rows for the tests' tiny 8-feature detector: 2/3 clean, 1/3 far off (mostly flagged)."""
    from fixtures_models import make_tiny_data

    x, _ = make_tiny_data(n=max(n, 10), seed=seed)
    rng = np.random.default_rng(seed + 1)
    far = (rng.normal(0, 1, (n, x.shape[1])) * 6).astype(np.float32)
    return np.where((np.arange(n) % 3 == 2)[:, None], far, x[:n]).astype(np.float32)


class Source:
    """Records without end, each with a fresh id.

    The ``i``-th record is ``{prefix}-{i}`` carrying the ``i % len(pool)``-th instance of
    a pool scored offline, so whether the detector flags it is known for any ``i``: a
    scenario can produce for as long as its faults take and still check every id.
    """

    def __init__(self, pool: Traffic, prefix: str = "s") -> None:
        if not len(pool):
            raise ValueError("an empty pool")
        self.pool = pool
        self.prefix = prefix
        self._flags = np.array([rid in pool.flagged for rid in pool.ids])

    def record(self, i: int) -> tuple[bytes, bytes]:
        rid = f"{self.prefix}-{i}"
        return rid.encode(), json_record(rid, self.pool.instances[i % len(self.pool)])

    def first(self, n: int) -> Traffic:
        """Records ``0 .. n-1``: what a stopped stream sent."""
        rows = np.arange(n) % len(self.pool)
        ids = [f"{self.prefix}-{i}" for i in range(n)]
        flags = self._flags[rows]
        flagged = frozenset(rid for rid, f in zip(ids, flags, strict=True) if f)
        return Traffic(ids, self.pool.instances[rows], flagged)


class Trickle:
    """Produces a source's records in order at a steady rate from a thread, until stopped.

    ``finish()`` stops it, waits for the broker's acknowledgements (across outages too)
    and returns exactly the records sent. ``require_flowing`` lets a scenario fail when
    the records a fault should meet are not coming any more.
    """

    def __init__(self, bootstrap: str, topic: str, source: Source, rate: float) -> None:
        self.source = source
        self.rate = rate
        self.sent = 0
        self.errors: list[KafkaError] = []
        self._last_sent = time.monotonic()
        self._stop = threading.Event()
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "message.timeout.ms": 300_000,
            }
        )
        self._topic = topic
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.is_set():
            ahead = i / self.rate - (time.monotonic() - started)
            if ahead > 0 and self._stop.wait(ahead):
                return
            key, value = self.source.record(i)
            while True:
                try:
                    self._producer.produce(self._topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # librdkafka's queue is full (broker away): wait
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    self.errors.append(exc.args[0])
                    return
            self._producer.poll(0)
            i += 1
            self.sent = i
            self._last_sent = time.monotonic()

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.errors.append(err)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._producer.flush(10)

    def require_flowing(self, before: str) -> None:
        """Fail unless records are still being produced (what comes next needs them)."""
        quiet = time.monotonic() - self._last_sent
        if self.errors or not self._thread.is_alive() or quiet > max(2.0, 10 / self.rate):
            raise AssertionError(
                f"traffic stopped before {before}: {self.sent} records sent, the last "
                f"{quiet:.1f}s ago, errors {self.errors[:3]}"
            )

    def finish(self, timeout: float = 120.0) -> Traffic:
        """Stop, wait until everything is acknowledged; the records sent."""
        self._stop.set()
        self._thread.join(timeout)
        left = self._producer.flush(timeout)
        if left or self.errors or self._thread.is_alive():
            raise AssertionError(f"trickle: {left} undelivered, errors {self.errors[:3]}")
        return self.source.first(self.sent)


# -- the report ----------------------------------------------------------------------------
@dataclass
class FaultReport:
    """What one scenario did and what a read_committed alert subscriber saw, by id."""

    scenario: str
    mode: str
    faults: int
    produced: int
    expected_flagged: int
    scored: int = 0
    delivered: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: int = 0
    unexplained_duplicates: list[str] = field(default_factory=list)
    in_crash_windows: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_alerts(
        cls,
        scenario: str,
        mode: str,
        faults: int,
        traffic: Traffic,
        alerts: Sequence[Alert],
        scored: int,
        windows: Sequence[CrashWindow] = (),
    ) -> FaultReport:
        """Compare what arrived with what the detector flags offline.

        Duplicates are unexplained unless their record lay in a crash window (only
        meaningful when the scenario recorded its windows).
        """
        seen = Counter(a.id for a in alerts)
        return cls(
            scenario=scenario,
            mode=mode,
            faults=faults,
            produced=len(traffic),
            expected_flagged=len(traffic.flagged),
            scored=scored,
            delivered=sum(seen.values()),
            missing=sorted(traffic.flagged - set(seen)),
            unexpected=sorted(set(seen) - traffic.flagged),
            duplicated=sum(n - 1 for n in seen.values()),
            unexplained_duplicates=_outside_windows(alerts, windows),
            in_crash_windows=sum(hi - lo for w in windows for lo, hi in w.values()),
        )

    def row(self) -> list[str]:
        return [
            self.scenario,
            self.mode,
            str(self.faults),
            str(self.produced),
            str(self.scored),
            str(self.expected_flagged),
            str(self.delivered),
            str(len(self.missing)),
            str(self.duplicated),
        ]


HEADER = ["scenario", "mode", "faults", "produced", "scored", "flagged", "alerts", "missing", "dup"]


def table(reports: Sequence[FaultReport]) -> str:
    """A Markdown table of reports."""
    rows = [HEADER, *(r.row() for r in reports)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(" --- " for _ in HEADER) + "|")
    return "\n".join(lines)


# -- waiting at this machine's pace --------------------------------------------------------
P = "distillation_monitor_"
CONSUMED = P + "records_consumed_total"  # records of committed batches
ASSIGNED = P + "assigned_partitions"
READY = P + "ready"


class HasMetrics(Protocol):
    """A worker in a thread or a process: what its own metrics are read through."""

    @property
    def metrics_port(self) -> int | None: ...


def count(worker: HasMetrics, name: str, **labels: str) -> float | None:
    """One metric from the worker's own /metrics, or None while it serves none."""
    port = worker.metrics_port
    if port is None:
        return None
    try:
        return metric_sum(scrape(port), name, **labels)
    except requests.RequestException:
        return None


def read_count(worker: HasMetrics, name: str, what: str) -> float:
    """Like ``count``, for a reading a check cannot do without (a few tries)."""
    for _ in range(20):
        value = count(worker, name)
        if value is not None:
            return value
        time.sleep(0.25)
    raise AssertionError(f"could not read {name} from {what}'s /metrics")


class Alive(Protocol):
    """What a wait asks, each round, whether a worker is still there."""

    def check(self, what: str) -> None: ...


class InThread:
    """An in-process worker for a wait: its thread's death ends the wait at once."""

    def __init__(self, worker: Worker, name: str) -> None:
        self.worker = worker
        self.name = name

    def check(self, what: str) -> None:
        crash = CRASHES.get(id(self.worker))
        if crash is not None:
            raise AssertionError(
                f"the {self.name} worker's thread died {what}: {crash!r}\n{state_of(self.worker)}"
            )


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    members: Sequence[Alive] = (),
    why: Callable[[], str] | None = None,
) -> float:
    """Wait until ``predicate()``; a worker process that exits ends the wait at once.

    Returns the seconds waited; on a timeout the message ends with ``why()``.
    """
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        for m in members:
            m.check(f"while waiting for {what}")
        if time.monotonic() - start > timeout:
            detail = f"\n{why()}" if why is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.1)


@dataclass
class Pace:
    """Waits scaled by how long a worker took to start on this machine.

    A worker's start-up (TensorFlow, the detector, decoding children, joining the group)
    is the slowest step of every scenario and several times slower on a small busy
    machine than on a fast one. Only the first start-up is waited for with a constant;
    every later wait is ``factor`` times the slowest start-up seen, and at least ``floor``
    seconds, so a slow machine gets longer waits by itself.
    """

    floor: float = 60.0
    factor: float = 5.0
    first_start: float = 300.0
    startup: float | None = None

    @property
    def wait(self) -> float:
        if self.startup is None:
            return self.first_start
        return max(self.floor, self.factor * self.startup)

    def note(self) -> str:
        if self.startup is None:
            return "(no worker had started yet)"
        return (
            f"(a worker took {self.startup:.1f}s to start here; waits are {self.factor:g}x "
            f"that, at least {self.floor:g}s)"
        )

    def started(
        self,
        worker: HasMetrics,
        since: float,
        what: str,
        members: Sequence[Alive] = (),
        metric: str = CONSUMED,
    ) -> float:
        """Wait until ``worker``'s own ``metric`` is above 0 (by default: it committed its
        first batch) and count the time since ``since`` as a start-up."""
        wait_for(
            lambda: (count(worker, metric) or 0) > 0,
            self.wait,
            f"{what} to start ({metric} > 0)",
            members,
            self.note,
        )
        took = time.monotonic() - since
        self.startup = max(self.startup or 0.0, took)
        return took

    def until(
        self,
        predicate: Callable[[], bool],
        what: str,
        members: Sequence[Alive] = (),
        why: Callable[[], str] | None = None,
    ) -> float:
        """``wait_for`` with this machine's wait."""

        def explain() -> str:
            return "\n".join(x for x in (why() if why else "", self.note()) if x)

        return wait_for(predicate, self.wait, what, members, explain)

    def progress(
        self,
        read: Callable[[], float],
        target: float,
        what: str,
        members: Sequence[Alive] = (),
        why: Callable[[], str] | None = None,
    ) -> float:
        """Wait until ``read()`` reaches ``target``, for as long as it keeps moving.

        Working off records takes as long as this machine needs; only a value that
        stays put for a whole wait is a failure. Returns the seconds waited.
        """
        start = moved = time.monotonic()
        best = float("-inf")
        while True:
            value = read()
            now = time.monotonic()
            if value >= target:
                return now - start
            if value > best:
                best, moved = value, now
            for m in members:
                m.check(f"while waiting for {what}")
            if now - moved > self.wait:
                detail = f"\n{why()}" if why is not None else ""
                raise AssertionError(
                    f"{what}: stuck at {best:g} of {target:g} for {self.wait:.0f}s "
                    f"{self.note()}{detail}"
                )
            time.sleep(0.2)


# -- worker processes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """Where a scenario's workers read and write."""

    bootstrap: str
    detector: Path
    input_topic: str
    alert_topic: str
    dead_letter_topic: str
    group: str
    partitions: int
    mode: str
    batch_size: int = 16
    kafka_options: tuple[str, ...] = (
        "session.timeout.ms=6000",
        "heartbeat.interval.ms=500",
        "transaction.timeout.ms=10000",
    )

    def config(self, transactional_id: str = "w0", **changes: Any) -> WorkerConfig:
        """The same settings as ``args``, for a worker in a thread of this process."""
        eos = self.mode == EOS
        settings: dict[str, Any] = {
            "max_batch_size": self.batch_size,
            "max_batch_wait_ms": 20,
            "exactly_once": eos,
            "transactional_id": f"{self.group}-{transactional_id}" if eos else "",
            "kafka": dict(o.split("=", 1) for o in self.kafka_options),
        }
        settings.update(changes)
        return worker_config(
            self.bootstrap,
            self.detector,
            self.input_topic,
            self.alert_topic,
            self.dead_letter_topic,
            self.group,
            **settings,
        )

    def args(self, transactional_id: str = "w0") -> list[str]:
        args = [
            "--bootstrap-servers", self.bootstrap, "--input-topic", self.input_topic,
            "--alert-topic", self.alert_topic, "--dead-letter-topic", self.dead_letter_topic,
            "--group-id", self.group, "--detector", str(self.detector), "--metrics-port", "0",
            "--max-batch-size", str(self.batch_size), "--max-batch-wait-ms", "20",
            "--summary-interval-s", "0", "--shutdown-timeout-s", "5",
        ]  # fmt: skip
        for option in self.kafka_options:
            args += ["--kafka-option", option]
        if self.mode == EOS:
            args += ["--exactly-once", "--transactional-id", f"{self.group}-{transactional_id}"]
        return args

    def ends(self) -> list[int]:
        """The input topic's end offset per partition."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            return [
                consumer.get_watermark_offsets(TopicPartition(self.input_topic, p), timeout=10)[1]
                for p in range(self.partitions)
            ]
        finally:
            consumer.close()

    def offsets(self) -> list[int] | None:
        """The group's committed offset per partition (0 for none), or None while a dead
        worker's transaction still holds them (a read_committed offset fetch waits)."""
        try:
            found = committed_offsets(self.bootstrap, self.group, self.input_topic, self.partitions)
        except KafkaException:
            return None
        return [max(o, 0) for o in found]

    def crash_window(self) -> CrashWindow:
        """Committed and end offsets per partition, right after a worker died."""
        offsets = committed_offsets(self.bootstrap, self.group, self.input_topic, self.partitions)
        ends = self.ends()
        return {p: (max(offsets[p], 0), ends[p]) for p in range(self.partitions)}

    def committed(self, unsettled: int = -1) -> int:
        """Records committed so far; ``unsettled`` while a dead worker's transaction
        still holds the offsets (a read_committed offset fetch waits for it to end)."""
        offsets = self.offsets()
        return unsettled if offsets is None else sum(offsets)


#: The worker's log line naming its metrics address (``--metrics-port 0`` picks a free port).
METRICS_LINE = re.compile(r"metrics on http://[^\s/]+:(\d+)/metrics")
#: Its log lines about group membership: which partitions came and went.
MEMBERSHIP_LINE = re.compile(r"\b(assigned|revoked|partitions lost[^:]*:) (.*)$", re.M)


class Member:
    """A worker process with its log, and its own metrics on the port its log names."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, name: str) -> None:
        self.proc = proc
        self.log = log
        self.name = name
        self.spawned = time.monotonic()
        self._port: int | None = None

    @property
    def metrics_port(self) -> int | None:
        if self._port is None:
            found = METRICS_LINE.search(self.output())
            self._port = int(found.group(1)) if found else None
        return self._port

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def check(self, what: str) -> None:
        """Fail with its log when the process is gone."""
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the {self.name} worker exited ({self.proc.returncode}) {what}; "
                f"{self.log}:\n{self.tail()}"
            )

    def partitions(self, topic: str) -> set[int]:
        """The partitions of ``topic`` it owns, by its log (assignments are incremental)."""
        owned: set[int] = set()
        pattern = re.compile(re.escape(topic) + r"\[(\d+)\]")
        for event, names in MEMBERSHIP_LINE.findall(self.output()):
            found = {int(p) for p in pattern.findall(names)}
            owned = owned | found if event == "assigned" else owned - found
        return owned


class Workers:
    """Worker processes with their output in log files; whatever still runs is killed on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.members: list[Member] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, args: list[str], name: str) -> Member:
        path = self.log_dir / f"{len(self.members):02d}-{name}.log"
        with path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", *args],
                cwd=ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        member = Member(proc, path, name)
        self.members.append(member)
        return member

    def sigkill(self, member: Member) -> None:
        member.check("before its SIGKILL")
        member.proc.send_signal(signal.SIGKILL)
        member.proc.wait(30)

    def stop(self, member: Member, timeout: float = 60.0) -> str:
        """SIGTERM; the worker must exit 0 in time. Returns its output."""
        proc = member.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker ignored SIGTERM:\n{member.tail(60)}") from None
        if code != 0:
            raise AssertionError(f"worker exited {code}:\n{member.tail(60)}")
        return member.output()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc: object) -> None:
        for member in self.members:
            if member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait(30)


def report(
    setup: Setup,
    scenario: str,
    faults: int,
    traffic: Traffic,
    windows: Sequence[CrashWindow] = (),
    settle_s: float = 60.0,
) -> FaultReport:
    """Read the outputs back; records committed and not dead-lettered count as scored."""
    alerts = read_alerts(setup.bootstrap, setup.alert_topic)
    dead = len(read_to_end(setup.bootstrap, setup.dead_letter_topic))
    # A killed member's transaction holds its offsets until it times out or is fenced.
    wait_for(lambda: setup.committed() >= 0, settle_s, "the committed offsets to settle")
    return FaultReport.from_alerts(
        scenario, setup.mode, faults, traffic, alerts, setup.committed() - dead, windows
    )


# -- scenarios -----------------------------------------------------------------------------
def kill_and_restart(
    setup: Setup,
    pool: Traffic,
    kills: int,
    rng: random.Random,
    log_dir: Path,
    rate: float = 200.0,
    max_delay: float = 1.5,
) -> FaultReport:
    """SIGKILL the worker ``kills`` times at random moments while records stream in.

    Each incarnation is killed a random time after its own first committed batch (so
    mid-batch, between produce and commit, or while it joins the group), with records
    still arriving, then restarted with the same transactional id; the last one drains
    the topic and stops with SIGTERM. Records (from ``pool``) flow until then.
    """
    pace = Pace()
    windows: list[CrashWindow] = []
    with (
        Trickle(setup.bootstrap, setup.input_topic, Source(pool), rate) as trickle,
        Workers(log_dir) as workers,
    ):
        for i in range(kills):
            worker = workers.start(setup.args(), f"incarnation{i}")
            pace.started(worker, worker.spawned, f"incarnation {i}", [worker])
            time.sleep(rng.uniform(0.0, max_delay))
            trickle.require_flowing(f"SIGKILL {i + 1}: it would have hit an idle worker")
            workers.sigkill(worker)
            if setup.mode == ALO:  # (in exactly-once mode no duplicate is allowed at all)
                windows.append(setup.crash_window())
        last = workers.start(setup.args(), "last")
        pace.started(last, last.spawned, "the last incarnation", [last])
        trickle.require_flowing("the last incarnation processed records")
        traffic = trickle.finish()
        pace.progress(
            setup.committed, len(traffic), "the last incarnation to drain the topic", [last]
        )
        workers.stop(last)
    return report(setup, "SIGKILL + restart", kills, traffic, windows, pace.wait)


def survivor_takes_over(
    setup: Setup, pool: Traffic, rng: random.Random, log_dir: Path, rate: float = 200.0
) -> FaultReport:
    """Two workers share the group; one is SIGKILLed mid-stream; the other must finish.

    Checked on each worker's own metrics: both process records after both joined, the
    victim up to its SIGKILL; then the survivor owns every partition, commits records
    produced after the SIGKILL on each of them, and reads at least every record produced
    after it. ``extra["taken_over"]``: records produced on the victim's partitions after
    its death, which only the survivor can have read.
    """
    pace = Pace()
    topic, n = setup.input_topic, setup.partitions
    with (
        Trickle(setup.bootstrap, topic, Source(pool), rate) as trickle,
        Workers(log_dir) as workers,
    ):
        victim = workers.start(setup.args("victim"), "victim")
        survivor = workers.start(setup.args("survivor"), "survivor")
        both = [victim, survivor]
        for w in both:
            pace.started(w, w.spawned, f"the {w.name}", both)

        def owned() -> list[float]:
            return [count(w, ASSIGNED) or 0.0 for w in both]

        pace.until(
            lambda: min(owned()) > 0 and sum(owned()) == n,
            f"both workers to own partitions, {n} between them",
            both,
            lambda: f"assigned partitions (victim, survivor): {owned()}",
        )
        joined = [read_count(w, CONSUMED, w.name) for w in both]

        def since_joined() -> list[float]:
            return [(count(w, CONSUMED) or 0.0) - j for w, j in zip(both, joined, strict=True)]

        pace.until(
            lambda: min(since_joined()) > 0,
            "both workers to process records after both joined",
            both,
            lambda: f"records since both joined (victim, survivor): {since_joined()}",
        )
        time.sleep(rng.uniform(0.0, 1.0))
        trickle.require_flowing("the SIGKILL: no takeover would be tested")
        victim_parts = victim.partitions(topic)
        victim_done = read_count(victim, CONSUMED, "the victim") - joined[0]
        if victim_done <= 0 or not victim_parts:
            raise AssertionError(
                "the SIGKILL hit a worker that had processed nothing since both joined "
                f"(partitions {sorted(victim_parts)}): no takeover was tested"
            )
        survivor_at_kill = read_count(survivor, CONSUMED, "the survivor")
        workers.sigkill(victim)
        ends_at_kill = setup.ends()  # records past these the victim never saw
        windows = [setup.crash_window()] if setup.mode == ALO else []

        pace.until(
            lambda: count(survivor, ASSIGNED) == n,
            f"the survivor to own all {n} partitions",
            [survivor],
            lambda: f"the survivor owns {count(survivor, ASSIGNED)}",
        )

        def behind() -> list[int]:
            """Partitions with no record produced after the SIGKILL committed yet."""
            offsets = setup.offsets()
            if offsets is None:
                return list(range(n))
            return [p for p in range(n) if offsets[p] <= ends_at_kill[p]]

        pace.until(
            lambda: not behind(),
            "the survivor to commit records produced after the SIGKILL on every partition",
            [survivor],
            lambda: f"still behind: {behind()} (the victim's: {sorted(victim_parts)})",
        )
        trickle.require_flowing("the takeover was complete")
        traffic = trickle.finish()
        pace.progress(setup.committed, len(traffic), "the survivor to finish the topic", [survivor])
        ends = setup.ends()
        after = sum(ends[p] - ends_at_kill[p] for p in range(n))
        taken_over = sum(ends[p] - ends_at_kill[p] for p in victim_parts)
        if taken_over <= 0:
            raise AssertionError(
                "nothing was produced on the victim's partitions after the SIGKILL: "
                "no takeover was tested"
            )

        def survivor_read() -> float:
            return (count(survivor, CONSUMED) or 0.0) - survivor_at_kill

        pace.until(
            lambda: survivor_read() >= after,
            "the survivor's own count to cover every record produced after the SIGKILL",
            [survivor],
            lambda: (
                f"the survivor read {survivor_read():g} records after the SIGKILL, fewer "
                f"than the {after} produced since ({taken_over} on the victim's partitions "
                f"{sorted(victim_parts)})"
            ),
        )
        workers.stop(survivor)
    r = report(setup, "2 workers, 1 SIGKILLed", 1, traffic, windows, pace.wait)
    r.extra = {"taken_over": float(taken_over)}
    return r


def broker_restart(
    setups: Sequence[Setup],
    pool: Traffic,
    restart: Callable[[], object],
    rate: float = 100.0,
    after_s: float = 3.0,
) -> list[FaultReport]:
    """Workers (threads, one per setup) ride out a broker restart while records stream in.

    Records are produced before, during and at least ``after_s`` after the restart, and
    until each worker has processed some after it. ``extra`` holds what each worker's
    metrics say about it: client errors reported by librdkafka and broker disconnects
    seen in its statistics.
    """
    pace = Pace()
    with ExitStack() as stack:
        since = time.monotonic()
        workers = [
            stack.enter_context(
                running_worker(s.config(stats_interval_ms=500), start_timeout=pace.first_start)
            )
            for s in setups
        ]
        trickles = [
            stack.enter_context(Trickle(s.bootstrap, s.input_topic, Source(pool), rate))
            for s in setups
        ]
        alive = [InThread(w, s.mode) for s, w in zip(setups, workers, strict=True)]
        for s, w in zip(setups, workers, strict=True):
            pace.started(w, since, f"the {s.mode} worker", alive)
        for t in trickles:
            t.require_flowing("the restart: the broker would have been down with no traffic")
        sent = [t.sent for t in trickles]
        restart()
        back = time.monotonic()
        for s, t, n in zip(setups, trickles, sent, strict=True):
            if t.sent <= n or t.errors:
                raise AssertionError(
                    f"traffic stopped before the restart ({s.mode}): nothing was produced "
                    f"while the broker was down ({t.sent} sent, errors {t.errors[:3]})"
                )
        at_back = [count(w, CONSUMED) or 0.0 for w in workers]
        time.sleep(after_s)  # records keep arriving after the broker is back
        for s, w, c in zip(setups, workers, at_back, strict=True):
            pace.until(
                lambda: (count(w, CONSUMED) or 0.0) > c,  # noqa: B023
                f"the {s.mode} worker to process records after the broker came back",
                alive,
                functools.partial(state_of, w),
            )
        for t in trickles:
            t.require_flowing("the workers processed records after the restart")
        produced = [t.finish() for t in trickles]
        caught_up = []
        for s, traffic, w in zip(setups, produced, workers, strict=True):
            pace.progress(
                s.committed,
                len(traffic),
                f"the {s.mode} worker to commit all {len(traffic)} records after the restart",
                alive,
                functools.partial(state_of, w),
            )
            caught_up.append(time.monotonic() - back)
        seen = [scrape(w.metrics_port or 0) for w in workers]
    reports = []
    for s, traffic, metrics, took in zip(setups, produced, seen, caught_up, strict=True):
        r = report(s, "broker restart", 1, traffic, settle_s=pace.wait)
        r.extra = {
            "caught_up_s": round(took, 1),
            "broker_errors": metric_sum(metrics, P + "broker_errors_total"),
            "broker_disconnects": metric_sum(metrics, P + "broker_disconnects_total"),
            "aborted_transactions": metric_sum(
                metrics, P + "transactions_total", outcome="aborted"
            ),
        }
        reports.append(r)
    return reports


def _failures(worker: HasMetrics, mode: str) -> float:
    """Failed alert deliveries (at-least-once) or aborted transactions (exactly-once)."""
    if mode == EOS:
        return count(worker, P + "transactions_total", outcome="aborted") or 0.0
    return count(worker, P + "alert_publish_failures_total") or 0.0


def alert_topic_outage(
    setup: Setup, traffic: Traffic, admin: AdminClient, outage_s: float = 6.0
) -> FaultReport:
    """The alert topic is deleted under a running worker and recreated later.

    The second half of ``traffic`` is produced while the topic is gone; the outage lasts
    at least ``outage_s`` and until the worker has failed to deliver an alert (else no
    outage was tested). ``extra``: ``held`` is 1 when no offset moved during the outage
    (the records produced meanwhile all wait for their alerts), ``failures`` counts
    failed alert deliveries (at-least-once) or aborted transactions (exactly-once).
    """
    pace = Pace()
    half = len(traffic) // 2
    config = setup.config(
        kafka={
            **dict(o.split("=", 1) for o in setup.kafka_options),
            "message.timeout.ms": "3000",
        }
    )
    produce(setup.bootstrap, setup.input_topic, traffic.records(0, half))
    since = time.monotonic()
    with running_worker(config, start_timeout=pace.first_start) as worker:
        alive = [InThread(worker, setup.mode)]
        pace.started(worker, since, "the worker", alive)
        pace.progress(setup.committed, half, "the first half", alive)
        delete_topics(admin, [setup.alert_topic])
        pace.until(
            lambda: setup.alert_topic not in admin.list_topics(timeout=10).topics, "deletion"
        )
        gone = time.monotonic()
        before = _failures(worker, setup.mode)
        produce(setup.bootstrap, setup.input_topic, traffic.records(half))
        pace.until(
            lambda: _failures(worker, setup.mode) > before,
            "a failed alert delivery while the alert topic is gone",
            alive,
            lambda: (
                "the worker never failed to deliver an alert while the alert topic was gone: "
                "no outage was tested"
            ),
        )
        time.sleep(max(0.0, outage_s - (time.monotonic() - gone)))
        during = setup.committed()
        failures = _failures(worker, setup.mode)
        create_topic(admin, setup.alert_topic, setup.partitions)
        pace.progress(setup.committed, len(traffic), "the second half", alive)
    r = report(setup, "alert topic deleted + recreated", 1, traffic.tail(half), (), pace.wait)
    r.scored -= half  # the first half's alerts went down with the deleted topic
    r.extra = {"held": float(during == half), "failures": failures}
    return r


POISON_LIMIT = 65_536  # the worker's --max-message-bytes in the poison scenario


def poison_flood(setup: Setup, copies: int = 1, seed: int = 6) -> FaultReport:
    """The poison corpus, ``copies`` times, each bad message between two good records.

    ``faults`` counts the bad messages; ``extra`` says how many dead letters arrived, how
    many carry a reason other than the corpus expects or no error text, and what the
    worker's metrics counted.
    """
    from poison_corpus import poison_corpus

    from monitor.stream.records import InputSpec

    pace = Pace()
    corpus = poison_corpus(InputSpec(shape=(8,), n_classes=3, max_message_bytes=POISON_LIMIT))
    bad = [c for _ in range(copies) for c in corpus]
    traffic = make_traffic(setup.detector, tiny_instances(2 * len(bad) + 2, seed=seed))
    good = traffic.records()
    records: list[Any] = []
    for i, case in enumerate(bad):
        poison = (f"poison-{i}-{case.name}".encode(), case.value, case.headers)
        records += [good[2 * i], poison, good[2 * i + 1]]
    records += good[2 * len(bad) :]
    produce(setup.bootstrap, setup.input_topic, records)
    config = setup.config(record_format="auto", max_message_bytes=POISON_LIMIT)
    since = time.monotonic()
    with running_worker(config, start_timeout=pace.first_start) as worker:
        alive = [InThread(worker, setup.mode)]
        pace.started(worker, since, "the worker", alive)
        pace.progress(setup.committed, len(records), "the corpus processed", alive)
        metrics = scrape(worker.metrics_port or 0)
    dead = {m.key: dict(m.headers) for m in read_to_end(setup.bootstrap, setup.dead_letter_topic)}
    expected = {f"poison-{i}-{c.name}".encode(): str(c.reason) for i, c in enumerate(bad)}
    r = report(setup, "poison corpus", len(bad), traffic, (), pace.wait)
    r.extra = {
        "dead_letters": float(len(dead)),
        "wrong_reasons": float(
            sum(
                1
                for k, want in expected.items()
                if dead.get(k, {}).get("dmon.reason") != want.encode()
            )
            + sum(1 for k in dead if k not in expected)
        ),
        "without_error": float(sum(1 for h in dead.values() if not h.get("dmon.error"))),
        "metric_scored": metric_sum(metrics, P + "records_scored_total"),
        "metric_dead_lettered": metric_sum(metrics, P + "records_dead_lettered_total"),
    }
    return r


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    from fixtures_kafka import produce_messages

    produce_messages(bootstrap, topic, records)


def run_many(jobs: Sequence[Callable[[], FaultReport]]) -> list[FaultReport]:
    """Run independent scenarios side by side (they use separate topics and groups)."""
    results: list[FaultReport | BaseException | None] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return [r for r in results if isinstance(r, FaultReport)]
