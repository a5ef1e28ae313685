"""Latency under a steady load: record timestamp to alert acknowledged, default settings.

A paced producer writes ``rate`` records/s for ``seconds`` to a fresh topic while one
worker (at-least-once, default batch settings) runs. The alert topic is created with
``message.timestamp.type=LogAppendTime``, so each alert carries the time the broker
appended it; the alert's ``source.timestamp`` is the input record's producer
timestamp (RFC 3339, milliseconds). Their difference, per alert, is the latency measured (the producer sees the
acknowledgement a network round trip later; on loopback that is well under a
millisecond). The worker's own end-to-end histogram (every record, to its batch commit)
is read from /metrics before it stops, as a second view.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from bench.kafkautil import BOOTSTRAP, CommitWatcher, admin, create_topic, read_all
from bench.prepare import record_maker
from bench.workers import WorkerProcess, worker_args

HISTOGRAM = "distillation_monitor_end_to_end_latency_seconds"


@dataclass
class LatencyRun:
    rate: float  # records/s offered
    achieved_rate: float
    seconds: float
    records: int
    alerts: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    histogram_p50_ms: float | None
    histogram_p99_ms: float | None
    peak_rss_mb: float
    topics: list[str] = field(default_factory=list)


def _epoch_ms(stamp: str) -> float:
    """Milliseconds since the epoch of an alert's RFC 3339 time."""
    return datetime.fromisoformat(stamp).timestamp() * 1000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """Prometheus' histogram_quantile over one scrape (linear within the bucket)."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    if not buckets:
        return None
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def steady_latency(
    detector: Path,
    pool: list[bytes],
    partitions: int,
    rate: float,
    seconds: float,
    logs: Path,
    bootstrap: str = BOOTSTRAP,
    extra: list[str] | None = None,
) -> LatencyRun:
    tag = uuid.uuid4().hex[:8]
    topic, alerts, group = (
        f"bench-steady-{tag}",
        f"bench-alerts-steady-{tag}",
        f"bench-steady-{tag}",
    )
    client = admin(bootstrap)
    create_topic(client, topic, partitions)
    create_topic(client, alerts, partitions, {"message.timestamp.type": "LogAppendTime"})
    create_topic(client, f"{alerts}-dlq", 1)
    port = _free_port()
    args = worker_args(detector, topic, alerts, group, False, bootstrap, extra)
    args[args.index("--metrics-port") + 1] = str(port)
    worker = WorkerProcess.start(args, logs / "steady-0.log")
    watcher = CommitWatcher(group, topic, list(range(partitions)), bootstrap)
    try:
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
            if worker.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"steady: worker not ready:\n{worker.tail()}")
            time.sleep(0.2)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        value_of = record_maker(pool)
        sent = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                producer.produce(topic, value_of(sent), partition=sent % partitions)
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
        offered_for = time.monotonic() - started
        producer.flush(30)
        deadline = time.monotonic() + 60
        while watcher.total() < sent:
            if worker.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"steady: worker fell behind or died:\n{worker.tail()}")
            time.sleep(0.05)
        metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        worker.stop()
        watcher.close()
    latencies = np.asarray(
        [
            ts - _epoch_ms(orjson.loads(v)["source"]["timestamp"])
            for v, ts in read_all(alerts, list(range(partitions)), bootstrap)
        ],
        dtype=np.float64,
    )
    if not latencies.size:
        raise RuntimeError("steady: no alerts to measure")
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    h50 = histogram_quantile(metrics, HISTOGRAM, 0.5)
    h99 = histogram_quantile(metrics, HISTOGRAM, 0.99)
    return LatencyRun(
        rate=rate,
        achieved_rate=sent / offered_for,
        seconds=offered_for,
        records=sent,
        alerts=int(latencies.size),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(latencies.max()),
        histogram_p50_ms=None if h50 is None else h50 * 1000,
        histogram_p99_ms=None if h99 is None else h99 * 1000,
        peak_rss_mb=worker.peak_rss_mb or 0.0,
        topics=[topic, alerts],
    )
