"""Checking delivery promises by id, and the fault scenarios that put them to the test.

Shared by ``tests/test_faults.py`` (small record counts) and ``bench/faults.py`` (larger):
each scenario produces a known set of records, applies its faults to real worker
processes and the real broker, then reads the alert topic as a ``read_committed``
subscriber would and returns a ``FaultReport`` with the numbers by id.
"""

from __future__ import annotations

import os
import random
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
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fixtures_kafka import Consumed, _detach, create_topic, delete_topics
from worker_harness import (
    ROOT,
    committed_offsets,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    state_of,
    wait_until,
    worker_config,
)

from monitor.config import WorkerConfig

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

    def head(self, n: int) -> Traffic:
        """The first ``n`` records (what a stopped trickle produced)."""
        return Traffic(self.ids[:n], self.instances[:n], self.flagged & frozenset(self.ids[:n]))

    def tail(self, n: int) -> Traffic:
        """The records from the ``n``-th on."""
        return Traffic(self.ids[n:], self.instances[n:], self.flagged & frozenset(self.ids[n:]))


def make_traffic(detector_dir: Path, instances: np.ndarray, prefix: str = "r") -> Traffic:
    """Score ``instances`` offline; rows too close to the threshold to call are dropped."""
    from monitor import load_detector

    detector = load_detector(detector_dir)
    scores = np.asarray(detector.score(instances), dtype=np.float64)
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


class Trickle:
    """Produces a traffic's records in order at a steady rate from a thread.

    Runs until every record is sent or ``stop()`` is called, so a scenario can keep
    records flowing for as long as its faults take; ``finish()`` waits for the broker's
    acknowledgements (across outages too) and returns how many records were produced.
    """

    def __init__(self, bootstrap: str, topic: str, traffic: Traffic, rate: float) -> None:
        self.records = traffic.records()
        self.rate = rate
        self.sent = 0
        self.errors: list[KafkaError] = []
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
        for i, (key, value) in enumerate(self.records):
            ahead = i / self.rate - (time.monotonic() - started)
            if ahead > 0 and self._stop.wait(ahead):
                return
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
            self.sent += 1

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

    def stop(self) -> None:
        self._stop.set()

    def finish(self, timeout: float = 120.0) -> int:
        """Wait until production ends and everything is acknowledged; records produced."""
        self._thread.join(timeout)
        left = self._producer.flush(timeout)
        if left or self.errors or self._thread.is_alive():
            raise AssertionError(f"trickle: {left} undelivered, errors {self.errors[:3]}")
        return self.sent


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

    def crash_window(self) -> CrashWindow:
        """Committed and end offsets per partition, right after a worker died."""
        offsets = committed_offsets(self.bootstrap, self.group, self.input_topic, self.partitions)
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            ends = [
                consumer.get_watermark_offsets(TopicPartition(self.input_topic, p), timeout=10)[1]
                for p in range(self.partitions)
            ]
        finally:
            consumer.close()
        return {p: (max(offsets[p], 0), ends[p]) for p in range(self.partitions)}

    def committed(self, unsettled: int = -1) -> int:
        """Records committed so far; ``unsettled`` while a dead worker's transaction
        still holds the offsets (a read_committed offset fetch waits for it to end)."""
        try:
            offsets = committed_offsets(
                self.bootstrap, self.group, self.input_topic, self.partitions
            )
        except KafkaException:
            return unsettled
        return sum(max(o, 0) for o in offsets)


class Workers:
    """Worker processes with their output in log files; whatever still runs is killed on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"{len(self.procs):02d}-{name}.log"
        with path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", *args],
                cwd=ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, path))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        path = next(p for q, p in self.procs if q is proc)
        return path.read_text(errors="replace")

    def sigkill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            raise AssertionError(f"worker died on its own:\n{self.output(proc)[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
        """SIGTERM; the worker must exit 0 in time. Returns its output."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker ignored SIGTERM:\n{self.output(proc)[-3000:]}") from None
        if code != 0:
            raise AssertionError(f"worker exited {code}:\n{self.output(proc)[-3000:]}")
        return self.output(proc)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc: object) -> None:
        for proc, _path in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def report(
    setup: Setup,
    scenario: str,
    faults: int,
    traffic: Traffic,
    windows: Sequence[CrashWindow] = (),
) -> FaultReport:
    """Read the outputs back; records committed and not dead-lettered count as scored."""
    alerts = read_alerts(setup.bootstrap, setup.alert_topic)
    dead = len(read_to_end(setup.bootstrap, setup.dead_letter_topic))
    # A killed member's transaction holds its offsets until it times out or is fenced.
    wait_until(lambda: setup.committed() >= 0, 60, "the committed offsets to settle")
    return FaultReport.from_alerts(
        scenario, setup.mode, faults, traffic, alerts, setup.committed() - dead, windows
    )


# -- scenarios -----------------------------------------------------------------------------
def kill_and_restart(
    setup: Setup,
    traffic: Traffic,
    kills: int,
    rng: random.Random,
    log_dir: Path,
    rate: float = 200.0,
    max_delay: float = 1.5,
) -> FaultReport:
    """SIGKILL the worker ``kills`` times at random moments while records stream in.

    Each incarnation is killed a random time after its first commit (so mid-batch,
    between produce and commit, or while it joins the group), then restarted with the
    same transactional id; the last one drains the topic and stops with SIGTERM.
    ``traffic`` must be long enough to last ``rate`` records/s through all the kills.
    """
    windows: list[CrashWindow] = []
    with (
        Trickle(setup.bootstrap, setup.input_topic, traffic, rate) as trickle,
        Workers(log_dir) as workers,
    ):
        for i in range(kills):
            before = setup.committed()
            proc = workers.start(setup.args(), f"incarnation{i}")
            wait_until(
                lambda: setup.committed() > before or proc.poll() is not None,  # noqa: B023
                120,
                "a commit by the new incarnation",
            )
            time.sleep(rng.uniform(0.0, max_delay))
            workers.sigkill(proc)
            if setup.mode == ALO:  # (in exactly-once mode no duplicate is allowed at all)
                windows.append(setup.crash_window())
        trickle.stop()
        produced = trickle.finish()
        proc = workers.start(setup.args(), "last")
        wait_until(
            lambda: setup.committed() >= produced or proc.poll() is not None,
            180,
            "the last incarnation to drain the topic",
        )
        workers.stop(proc)
    return report(setup, "SIGKILL + restart", kills, traffic.head(produced), windows)


def survivor_takes_over(
    setup: Setup, traffic: Traffic, rng: random.Random, log_dir: Path, rate: float = 200.0
) -> FaultReport:
    """Two workers share the group; one is SIGKILLed mid-stream; the other must finish."""
    with (
        Trickle(setup.bootstrap, setup.input_topic, traffic, rate) as trickle,
        Workers(log_dir) as workers,
    ):
        victim = workers.start(setup.args("victim"), "victim")
        survivor = workers.start(setup.args("survivor"), "survivor")
        owns = f"assigned {setup.input_topic}["
        wait_until(
            lambda: (
                all(owns in workers.output(p) for p in (victim, survivor))
                or victim.poll() is not None
                or survivor.poll() is not None
            ),
            120,
            "both workers owning partitions",
        )
        before = setup.committed()
        wait_until(lambda: setup.committed() > before, 60, "both workers processing")
        time.sleep(rng.uniform(0.0, 1.0))
        workers.sigkill(victim)
        windows = [setup.crash_window()] if setup.mode == ALO else []
        time.sleep(2.0)  # records keep arriving on the victim's partitions too
        trickle.stop()
        produced = trickle.finish()
        wait_until(
            lambda: setup.committed() >= produced or survivor.poll() is not None,
            180,
            "the survivor to finish the topic",
        )
        workers.stop(survivor)
    return report(setup, "2 workers, 1 SIGKILLed", 1, traffic.head(produced), windows)


P = "distillation_monitor_"


def broker_restart(
    setups: Sequence[Setup],
    traffic: Traffic,
    restart: Callable[[], object],
    rate: float = 100.0,
    after_s: float = 3.0,
) -> list[FaultReport]:
    """Workers (threads, one per setup) ride out a broker restart while records stream in.

    ``extra`` holds what each worker's metrics say about it: client errors reported by
    librdkafka and broker disconnects seen in its statistics.
    """
    with ExitStack() as stack:
        workers = [
            stack.enter_context(running_worker(s.config(stats_interval_ms=500))) for s in setups
        ]
        trickles = [
            stack.enter_context(Trickle(s.bootstrap, s.input_topic, traffic, rate)) for s in setups
        ]
        for s in setups:
            wait_until(lambda: s.committed() > 0, 60, "processing before the restart")  # noqa: B023
        restart()
        back = time.monotonic()
        time.sleep(after_s)  # records keep arriving after the broker is back
        produced = []
        for t in trickles:
            t.stop()
            produced.append(t.finish())
        caught_up = []
        for s, n, w in zip(setups, produced, workers, strict=True):
            try:
                wait_until(
                    lambda: s.committed() >= n,  # noqa: B023
                    180,
                    f"the {s.mode} worker to commit all {n} records after the restart",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc} (committed: {s.committed()})\n{state_of(w)}") from None
            caught_up.append(time.monotonic() - back)
        seen = [scrape(w.metrics_port or 0) for w in workers]
    reports = []
    for s, n, metrics, took in zip(setups, produced, seen, caught_up, strict=True):
        r = report(s, "broker restart", 1, traffic.head(n))
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


def alert_topic_outage(
    setup: Setup, traffic: Traffic, admin: AdminClient, outage_s: float = 6.0
) -> FaultReport:
    """The alert topic is deleted under a running worker and recreated ``outage_s`` later.

    ``extra``: ``held`` is 1 when no offset moved during the outage (the records
    produced meanwhile all wait for their alerts), ``failures`` counts failed alert
    deliveries (at-least-once) or aborted transactions (exactly-once).
    """
    half = len(traffic) // 2
    config = setup.config(
        kafka={
            **dict(o.split("=", 1) for o in setup.kafka_options),
            "message.timeout.ms": "3000",
        }
    )
    with running_worker(config) as worker:
        produce(setup.bootstrap, setup.input_topic, traffic.records(0, half))
        wait_until(lambda: setup.committed() >= half, 60, "the first half")
        delete_topics(admin, [setup.alert_topic])
        wait_until(
            lambda: setup.alert_topic not in admin.list_topics(timeout=10).topics, 30, "deletion"
        )
        produce(setup.bootstrap, setup.input_topic, traffic.records(half))
        time.sleep(outage_s)
        during = setup.committed()
        metrics = scrape(worker.metrics_port or 0)
        create_topic(admin, setup.alert_topic, setup.partitions)
        wait_until(lambda: setup.committed() >= len(traffic), 120, "the second half")
    r = report(setup, "alert topic deleted + recreated", 1, traffic.tail(half))
    r.scored -= half  # the first half's alerts went down with the deleted topic
    failures = (
        metric_sum(metrics, P + "transactions_total", outcome="aborted")
        if setup.mode == EOS
        else metric_sum(metrics, P + "alert_publish_failures_total")
    )
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
    with running_worker(config) as worker:
        wait_until(lambda: setup.committed() >= len(records), 120, "the corpus processed")
        metrics = scrape(worker.metrics_port or 0)
    dead = {m.key: dict(m.headers) for m in read_to_end(setup.bootstrap, setup.dead_letter_topic)}
    expected = {f"poison-{i}-{c.name}".encode(): str(c.reason) for i, c in enumerate(bad)}
    r = report(setup, "poison corpus", len(bad), traffic)
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
