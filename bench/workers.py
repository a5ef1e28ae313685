"""The worker as users run it: ``python -m monitor run`` subprocesses, watched from outside.

Throughput is read off the group's committed offsets (polled every few milliseconds):
records/s from the first commit seen to the moment everything is committed, so it
excludes start-up (TensorFlow import, detector load) but includes every consume, decode,
score, publish and commit. Peak RSS is the kernel's high-water mark of the process
(``VmHWM`` in ``/proc/<pid>/status``, read every 20 ms until it exits; ``wait4``'s
``ru_maxrss`` would not do: it starts from the parent's RSS at fork) plus that of each
child it started (the decoding process): a sum of peaks, so never less than the true peak.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.kafkautil import BOOTSTRAP, CommitWatcher, admin, create_topic

ROOT = Path(__file__).resolve().parent.parent
# The checkout whose ``monitor`` package the workers run (``python -m`` imports it from the
# working directory): another one compares two versions in one run (bench/run.py
# --worker-root).
WORKER_ROOT = [ROOT]
POLL_S = 0.005


def peak_rss_kb(pid: int) -> float:
    """The kernel's high-water mark of a process's RSS (NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return float("nan")


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (NaN once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    except (OSError, ValueError, IndexError):
        return float("nan")


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """Process ids of ``pid``'s children (every thread's) that run a program of their own.

    A child caught between fork and exec (``subprocess`` spawns some at start-up, and
    ``ctypes.util.find_library`` runs ``ldconfig``) still shares its parent's memory and
    reports the parent's RSS as its own: counting it once made a run's peak look 500 MB
    larger than it was. Such a child has its parent's command line, and is left out.
    """
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except (OSError, ValueError):
        pass
    own = _cmdline(pid)
    return [c for c in found if (line := _cmdline(c)) is not None and line != own]


@dataclass
class WorkerProcess:
    """One ``monitor run`` process, its log file and (once it exited) its peak RSS."""

    proc: subprocess.Popen[bytes]
    log: Path
    peak_rss_mb: float | None = None
    #: Peak RSS of each process (the worker, then its children), in MB.
    peaks_mb: dict[int, float] = field(default_factory=dict)
    _watcher: threading.Thread | None = None

    @classmethod
    def start(cls, args: list[str], log: Path, env: dict[str, str] | None = None) -> WorkerProcess:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", *args],
                cwd=WORKER_ROOT[0],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        worker = cls(proc, log)
        worker._watcher = threading.Thread(target=worker._watch_rss, daemon=True)
        worker._watcher.start()
        return worker

    def _watch_rss(self) -> None:
        peaks: dict[int, float] = {}
        while self.proc.returncode is None:
            for pid in [self.proc.pid, *children_of(self.proc.pid)]:
                peak = peak_rss_kb(pid)
                if peak == peak:  # not NaN: the process is still there
                    peaks[pid] = peak
            if self.proc.pid in peaks:
                self.peak_rss_mb = sum(peaks.values()) / 1024.0
                self.peaks_mb = {pid: kb / 1024.0 for pid, kb in peaks.items()}
            time.sleep(0.02)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of (this process, its decoding children together)."""
        own = cpu_seconds(self.proc.pid)
        children = [cpu_seconds(c) for c in children_of(self.proc.pid)]
        return own, sum(c for c in children if c == c)

    def exited(self) -> bool:
        """True once the process has exited (and was reaped)."""
        return self.proc.poll() is not None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > deadline:
                self.proc.kill()
                while not self.exited():
                    time.sleep(0.05)
                raise RuntimeError(f"worker did not exit in {timeout:.0f}s; log: {self.log}")
            time.sleep(0.02)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def stop(self, timeout: float = 60) -> int:
        if not self.exited():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_args(
    detector: Path,
    topic: str,
    alert_topic: str,
    group: str,
    exactly_once: bool,
    bootstrap: str = BOOTSTRAP,
    extra: list[str] | None = None,
) -> list[str]:
    return [
        "--bootstrap-servers",
        bootstrap,
        "--detector",
        str(detector),
        "--input-topic",
        topic,
        "--alert-topic",
        alert_topic,
        "--dead-letter-topic",
        f"{alert_topic}-dlq",
        "--group-id",
        group,
        "--metrics-port",
        "0",
        "--summary-interval-s",
        "0",
        "--exactly-once" if exactly_once else "--no-exactly-once",
        *(["--transactional-id", f"{group}-tx"] if exactly_once else []),
        *(extra or []),
    ]


@dataclass
class ThroughputRun:
    label: str
    workers: int
    exactly_once: bool
    records: int
    seconds: float
    startup_s: float
    peak_rss_mb: list[float] = field(default_factory=list)
    alert_topic: str = ""
    #: CPU µs per record between the first commit and the last, of the worker process
    #: itself and of its decoding children (one worker only; None otherwise).
    cpu_us_worker: float | None = None
    cpu_us_decoders: float | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def throughput(
    label: str,
    detector: Path,
    topic: str,
    partitions: list[int],
    total: int,
    exactly_once: bool,
    logs: Path,
    workers: int = 1,
    bootstrap: str = BOOTSTRAP,
    timeout: float = 600,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ThroughputRun:
    """Run ``workers`` workers in a fresh group over the whole backlog of ``topic``."""
    tag = uuid.uuid4().hex[:8]
    group = f"bench-{label}-{tag}"
    alert_topic = f"bench-alerts-{label}-{tag}"
    client = admin(bootstrap)
    create_topic(client, alert_topic, len(partitions))
    create_topic(client, f"{alert_topic}-dlq", 1)
    watcher = CommitWatcher(group, topic, partitions, bootstrap)
    procs: list[WorkerProcess] = []
    launched = time.monotonic()
    try:
        for i in range(workers):
            args = worker_args(detector, topic, alert_topic, group, exactly_once, bootstrap, extra)
            if exactly_once:
                args[args.index("--transactional-id") + 1] += f"-{i}"
            if workers == 1:
                args += ["--max-records", str(total)]
            procs.append(WorkerProcess.start(args, logs / f"{label}-{i}.log", env))
        first: tuple[float, int] | None = None
        cpu_first = cpu_last = (float("nan"), float("nan"))
        deadline = launched + timeout
        while True:
            done = watcher.total()
            now = time.monotonic()
            if first is None and done > 0:
                first = (now, done)
                cpu_first = procs[0].cpu()
            if done >= total:
                cpu_last = procs[0].cpu()
                break
            if now > deadline:
                raise RuntimeError(f"{label}: {done}/{total} committed after {timeout:.0f}s")
            for p in procs:
                if p.exited():
                    raise RuntimeError(
                        f"{label}: worker exited early ({p.proc.returncode}) at {done}/{total}:\n"
                        + p.tail()
                    )
            time.sleep(POLL_S)
        assert first is not None
        for p in procs:
            code = p.wait(60) if workers == 1 else p.stop()
            if code != 0:
                raise RuntimeError(f"{label}: worker exited with {code}:\n{p.tail()}")
    finally:
        for p in procs:
            if not p.exited():
                p.stop()
        watcher.close()
    return ThroughputRun(
        label=label,
        workers=workers,
        exactly_once=exactly_once,
        records=total - first[1],
        seconds=now - first[0],
        startup_s=first[0] - launched,
        peak_rss_mb=[p.peak_rss_mb or 0.0 for p in procs],
        alert_topic=alert_topic,
        **_cpu_per_record(cpu_first, cpu_last, total - first[1], workers),
    )


def _cpu_per_record(
    first: tuple[float, float], last: tuple[float, float], records: int, workers: int
) -> dict[str, float | None]:
    if workers != 1 or records <= 0:
        return {"cpu_us_worker": None, "cpu_us_decoders": None}
    worker, decoders = ((b - a) * 1e6 / records for a, b in zip(first, last, strict=True))
    return {
        "cpu_us_worker": worker if worker == worker else None,
        "cpu_us_decoders": decoders if decoders == decoders else None,
    }
