"""``distillation-monitor demo`` from start to summary.

Broker, detector, topics, worker, traffic, verdict: each step prints one line, so a
first-time user sees what the product needs and where everything is. The worker is the
real one (``monitor.stream.worker``) in a thread; the live line and the final numbers come
from its real outputs (``/metrics`` and the alert and dead-letter topics), not from its
internals. What the demo starts, it stops; the topics stay, so the alerts can be read.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.config import WorkerConfig, validate
from monitor.demo import topics
from monitor.demo.broker import LOCAL_BOOTSTRAP, ensure_local_broker
from monitor.demo.pacing import SentLog, send_steadily
from monitor.demo.status import LiveLine, WorkerSnapshot, scrape, status_text
from monitor.demo.summary import DemoSummary
from monitor.demo.traffic import DemoTraffic, TrafficSpec, new_run_id
from monitor.demo.worker_thread import WorkerThread, port_or_any
from monitor.errors import DemoError

DRAIN_TIMEOUT_S = 60.0
SPEED_WINDOW_S = 5.0
METRICS_HOST = "127.0.0.1"

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    detector: Path
    spec: TrafficSpec
    bootstrap_servers: str = LOCAL_BOOTSTRAP
    duration: float = 60.0
    rate: float = 200.0
    malformed: int = 5
    metrics_port: int = 9108
    topic_prefix: str = "dmon-demo"
    worker_log: Path = Path(".local/demo-worker.log")
    summary_json: Path | None = None


@dataclass(frozen=True)
class DemoTopics:
    input: str
    alerts: str
    dead_letters: str

    @classmethod
    def for_run(cls, prefix: str, run_id: str) -> DemoTopics:
        return cls(
            f"{prefix}-{run_id}-records",
            f"{prefix}-{run_id}-alerts",
            f"{prefix}-{run_id}-dead-letters",
        )

    def names(self) -> list[str]:
        return [self.input, self.alerts, self.dead_letters]


def earlier_run_topics(names: set[str], prefix: str) -> list[str]:
    """Topics an earlier demo run with this prefix left behind (only those: exact pattern)."""
    pattern = re.compile(
        rf"{re.escape(prefix)}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}-(records|alerts|dead-letters)"
    )
    return sorted(n for n in names if pattern.fullmatch(n))


@contextmanager
def worker_logs_to(path: Path) -> Iterator[None]:
    """The worker's log lines go to a file while the demo owns the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("monitor")
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate, _ = saved
        logger.setLevel(saved[2])
        handler.close()


def _broker(opts: DemoOptions, say: Say) -> dict[str, Any]:
    if opts.bootstrap_servers == LOCAL_BOOTSTRAP:
        ensure_local_broker()
        say(f"[1/5] Kafka: the local broker at {LOCAL_BOOTSTRAP} is up")
    else:
        say(f"[1/5] Kafka: {opts.bootstrap_servers}")
    return {"bootstrap.servers": opts.bootstrap_servers}


def _detector(opts: DemoOptions, say: Say) -> None:
    from monitor.detector.demo import build_demo_detector
    from monitor.detector.manifest import read_manifest

    lead = "[2/5] detector:"
    if not (opts.detector / "manifest.json").is_file():
        say(f"{lead} building the digits demo detector in {opts.detector} (first run only) ...")
        started = time.monotonic()
        build_demo_detector(opts.detector, seed=0)
        lead = f"      built in {time.monotonic() - started:.0f}s:"
    manifest = read_manifest(opts.detector)
    say(
        f"{lead} {opts.detector} ({manifest.name} v{manifest.version}, "
        f"{manifest.loss_type}, threshold {manifest.threshold:.4g})"
    )


def _topics(conf: dict[str, Any], opts: DemoOptions, run_id: str, say: Say) -> DemoTopics:
    earlier = earlier_run_topics(topics.topic_names(conf), opts.topic_prefix)
    topics.delete_topics(conf, earlier)
    made = DemoTopics.for_run(opts.topic_prefix, run_id)
    topics.create_topics(conf, made.names())
    say(f"[3/5] topics: {made.input} -> {made.alerts}, {made.dead_letters}")
    if earlier:
        say(f"      (removed the {len(earlier)} topics of earlier demo runs)")
    return made


def _worker(opts: DemoOptions, made: DemoTopics, run_id: str, say: Say) -> WorkerThread:
    port = port_or_any(METRICS_HOST, opts.metrics_port)
    config = WorkerConfig(
        bootstrap_servers=opts.bootstrap_servers,
        input_topic=made.input,
        alert_topic=made.alerts,
        dead_letter_topic=made.dead_letters,
        group_id=f"{opts.topic_prefix}-{run_id}",
        detector=str(opts.detector),
        metrics_host=METRICS_HOST,
        metrics_port=port,
        summary_interval_s=10.0,
        stats_interval_ms=1000,
    )
    validate(config)
    if port != opts.metrics_port:
        say(f"      port {opts.metrics_port} is taken; the worker takes a free one")
    return WorkerThread(config, hint=f"its log: {opts.worker_log}")


class _Live:
    """The once-a-second line: what was sent, and what the worker's /metrics says.

    Records/s is measured over the last ``SPEED_WINDOW_S`` seconds: the worker consumes
    in fetches and batches, so one-second deltas jump around the true rate.
    """

    def __init__(self, worker: WorkerThread, metrics_url: str) -> None:
        self.worker = worker
        self.url = metrics_url
        self.line = LiveLine()
        self.history: deque[tuple[float, WorkerSnapshot]] = deque()
        self.last: WorkerSnapshot | None = None

    def tick(self, sent: int, elapsed: float) -> None:
        if not self.worker.alive:
            self.line.finish()
            raise DemoError(
                f"the worker stopped while the traffic ran: {self.worker.describe_error()}"
                f"{self.worker.hint}"
            )
        now = scrape(self.url)
        while self.history and elapsed - self.history[0][0] > SPEED_WINDOW_S:
            self.history.popleft()
        before_t, before = self.history[0] if self.history else (0.0, None)
        self.line.show(status_text(elapsed, sent, now, before, elapsed - before_t), elapsed)
        if now is not None:
            self.history.append((elapsed, now))
            self.last = now

    def drain(self, total: int, started: float, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Keep the line going until the worker has consumed all ``total`` records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tick(total, time.monotonic() - started)
            if self.last is not None and self.last.consumed >= total:
                return True
            time.sleep(1.0)
        return False


def run_demo(opts: DemoOptions, say: Say = print) -> int:
    run_id = new_run_id()
    say(f"distillation-monitor demo (run {run_id})")
    conf = _broker(opts, say)
    _detector(opts, say)
    traffic = DemoTraffic(opts.detector, opts.spec, run_id)
    made = _topics(conf, opts, run_id, say)
    total = max(1, round(opts.rate * opts.duration))
    with worker_logs_to(opts.worker_log):
        worker = _worker(opts, made, run_id, say)
        try:
            base = worker.start()
            say(f"[4/5] worker: metrics on {base}/metrics, log in {opts.worker_log}")
            say(
                f"[5/5] traffic: {opts.rate:g} records/s for {opts.duration:g}s, "
                f"{opts.spec.corrupt_fraction:.0%} corrupted ({', '.join(opts.spec.corruptions)}), "
                f"{opts.malformed} malformed"
            )
            live = _Live(worker, base + "/metrics")
            started = time.monotonic()
            sent = send_steadily(
                traffic_producer(conf),
                made.input,
                traffic.records(total, opts.malformed),
                opts.rate,
                lambda log, elapsed: live.tick(log.total, elapsed),
            )
            caught_up = live.drain(sent.total, started)
            live.line.finish()
        finally:
            worker.stop()
    if worker.error is not None:
        raise DemoError(f"the worker failed: {worker.describe_error()}{worker.hint}")
    summary = DemoSummary.tally(
        sent, topics.read_all(conf, made.alerts), len(topics.read_all(conf, made.dead_letters))
    )
    report(summary, sent, worker, caught_up, say)
    where(opts, made, base, say)
    if opts.summary_json is not None:
        write_json(opts, summary, sent, made, base, run_id, worker)
    if summary.flagged == 0:
        raise DemoError("the worker flagged nothing: see the worker log")
    return 0


def traffic_producer(conf: dict[str, Any]) -> Any:
    from confluent_kafka import Producer

    from monitor.kafka_properties import for_client
    from monitor.logs import kafka_logger

    return Producer(
        {
            **for_client("producer", conf),
            "logger": kafka_logger("producer"),
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
        }
    )


def report(
    summary: DemoSummary, sent: SentLog, worker: WorkerThread, caught_up: bool, say: Say
) -> None:
    w = worker.summary
    say("")
    say(
        f"summary: sent {sent.total} records in {sent.seconds:.0f}s ({sent.clean} clean, "
        f"{sent.corrupted} corrupted, {sent.malformed} malformed); the worker consumed "
        f"{w.consumed}, scored {w.scored}, flagged {w.flagged}"
    )
    if not caught_up:
        say(f"  (the worker had not consumed everything after {DRAIN_TIMEOUT_S:.0f}s)")
    for line in summary.lines():
        say(line)


def where(opts: DemoOptions, made: DemoTopics, base: str, say: Say) -> None:
    b = opts.bootstrap_servers
    say("")
    say("where to look:")
    say(f"  alert topic    {made.alerts} on {b} (kept until the next demo run)")
    say(f"  read alerts    kcat -b {b} -C -t {made.alerts} -e -q -c 3")
    say(f"  dead letters   kcat -b {b} -C -t {made.dead_letters} -e -q -f '%h  %s\\n'")
    say(f"  metrics        {base}/metrics (served while the demo ran)")
    say(f"  worker log     {opts.worker_log}")
    if b == LOCAL_BOOTSTRAP:
        say("  the local broker keeps running (make kafka-down stops it)")


def write_json(
    opts: DemoOptions,
    summary: DemoSummary,
    sent: SentLog,
    made: DemoTopics,
    base: str,
    run_id: str,
    worker: WorkerThread,
) -> None:
    assert opts.summary_json is not None
    body = {
        "run_id": run_id,
        "bootstrap_servers": opts.bootstrap_servers,
        "topics": {"input": made.input, "alerts": made.alerts, "dead_letters": made.dead_letters},
        "metrics_url": base + "/metrics",
        "sent": {
            "total": sent.total,
            "clean": sent.clean,
            "corrupted": sent.corrupted,
            "harmful": sent.harmful,
            "harmless": sent.harmless,
            "malformed": sent.malformed,
            "seconds": sent.seconds,
        },
        "worker": vars(worker.summary),
        **summary.as_dict(),
    }
    opts.summary_json.parent.mkdir(parents=True, exist_ok=True)
    opts.summary_json.write_text(json.dumps(body, indent=2) + "\n")
