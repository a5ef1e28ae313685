"""Running real workers against the local broker from tests: in a thread or a subprocess."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import WorkerConfig
from monitor.stream.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
#: What killed in-process workers' threads, by id(worker) (for ``state_of``).
CRASHES: dict[int, BaseException] = {}


def worker_config(
    bootstrap: str,
    detector: Path,
    input_topic: str,
    alert_topic: str,
    dlq_topic: str,
    group: str,
    **kw: Any,
) -> WorkerConfig:
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "input_topic": input_topic,
        "alert_topic": alert_topic,
        "dead_letter_topic": dlq_topic,
        "group_id": group,
        "detector": str(detector),
        "metrics_port": 0,
        "max_batch_wait_ms": 50,
        "summary_interval_s": 0,
        "stats_interval_ms": 1000,
        "shutdown_timeout_s": 5.0,
    }
    base.update(kw)
    return WorkerConfig(**base)


@contextmanager
def running_worker(config: WorkerConfig, start_timeout: float = 60.0) -> Iterator[Worker]:
    """A worker in a background thread; stopped and joined on exit (failures re-raised).

    ``start_timeout`` bounds the wait for its metrics endpoint (the detector loads first).
    """
    worker = Worker(config, handle_signals=False)
    CRASHES.pop(id(worker), None)  # a finished worker's entry, its id now reused
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)
            CRASHES[id(worker)] = exc
            logging.getLogger("worker_harness").exception("the worker's thread died")

    thread = threading.Thread(target=target, name="worker", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: worker.metrics_port is not None or bool(errors), start_timeout, "worker start"
        )
        if errors:
            raise errors[0]
        yield worker
    finally:
        worker.request_stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
    if errors:
        raise errors[0]


def state_of(worker: Worker) -> str:
    """What an in-process worker is doing, for the message of a test that timed out:
    its group membership, the intake's bookkeeping and every thread's stack."""
    crash = CRASHES.get(id(worker))
    lines = [f"crashed: {crash!r}" if crash is not None else "the worker's thread is running"]
    intake = getattr(worker, "intake", None)
    if intake is not None:
        lines.append(f"assigned (callbacks): {sorted(intake.assignment())}")
        # (not the consumer's own: a call from this thread waits for the intake's consume)
        lines.append(
            f"intake: alive={intake.alive} paused={intake._paused} "
            f"epoch={intake._epoch}/{intake._seen_epoch} handed={intake._handed} "
            f"queued={len(intake._queue)} carry={len(intake._carry)} open={len(intake.batcher)} "
            f"pending={intake._pending} commits={intake._commits}"
        )
    settler = getattr(worker, "settler", None)
    waiting = settler.waiting if settler is not None else 0
    lines.append(f"batches waiting for their commit: {waiting}, summary: {worker.summary}")
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if names.get(ident) in ("worker", "intake"):
            stack = "".join(traceback.format_stack(frame)[-6:])
            lines.append(f"thread {names[ident]}:\n{stack}")
    return "\n".join(lines)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {'name{label="v",...}': value} (labels sorted)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, patience_s: float = 120.0
) -> list[int]:
    """The group's committed offsets. While the broker cannot tell yet (its group
    coordinator moving or loading: retriable errors), asks again, up to ``patience_s``."""
    deadline = time.monotonic() + patience_s
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        while True:
            try:
                tps = consumer.committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=10
                )
                return [tp.offset for tp in tps]
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = isinstance(err, KafkaError) and (
                    err.retriable() or err.code() in COORDINATOR_ERRORS
                )
                if not retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def json_record(record_id: str, instance: np.ndarray, **extra: Any) -> bytes:
    return orjson.dumps({"id": record_id, "instance": np.asarray(instance).tolist(), **extra})


def start_worker_process(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``distillation-monitor run ...`` as a real process (for signals and SIGKILL)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60
) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(
            f"worker ignored signal {sig} for {timeout}s:\n{out.decode()[-3000:]}"
        ) from None
    return proc.returncode, out.decode(errors="replace")


def assigned_partitions(worker: Worker) -> set[tuple[str, int]]:
    """The partitions an in-process worker owns (none while it is still starting)."""
    intake = getattr(worker, "intake", None)
    return intake.assignment() if intake is not None else set()


def joined(worker: Worker) -> bool:
    """Whether an in-process worker has joined its group (its assignment may be empty)."""
    intake = getattr(worker, "intake", None)
    return intake is not None and intake.joined
