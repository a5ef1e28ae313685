"""The real streaming worker in a background thread, for the demo.

The demo owns the terminal and the signals (Ctrl-C must stop the demo, which then stops
the worker), so the worker runs with ``handle_signals=False`` and its failure is kept here
instead of dying with the thread.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

from monitor.config import WorkerConfig
from monitor.errors import DemoError
from monitor.stream.worker import RunSummary, Worker


def port_or_any(host: str, port: int) -> int:
    """``port`` if nothing listens on it, else 0 (the worker then binds any free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return 0
    return port


class WorkerThread:
    """Runs ``Worker(config).run()`` in a daemon thread."""

    def __init__(self, config: WorkerConfig, hint: str = "") -> None:
        self.config = config
        self.hint = f" ({hint})" if hint else ""
        self.worker = Worker(config, handle_signals=False)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # kept for the demo to report; the thread must not raise
            self.error = exc

    def describe_error(self) -> str:
        return f"{type(self.error).__name__}: {self.error}" if self.error else "no error"

    @property
    def summary(self) -> RunSummary:
        return self.worker.summary

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _check(self) -> None:
        if self.error is not None:
            raise DemoError(f"the worker failed: {self.describe_error()}{self.hint}")
        if not self.alive:
            raise DemoError(f"the worker stopped unexpectedly{self.hint}")

    def start(self, timeout: float = 120.0) -> str:
        """Start the worker and wait until it is ready (partitions assigned); return the
        base URL of its metrics server."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self.worker.metrics_port is None:
            self._check()
            if time.monotonic() > deadline:
                raise DemoError(f"the worker did not start within {timeout:g}s")
            time.sleep(0.1)
        base = f"http://{self.config.metrics_host}:{self.worker.metrics_port}"
        while not _answers_ok(base + "/readyz"):
            self._check()
            if time.monotonic() > deadline:
                raise DemoError(f"the worker was not ready within {timeout:g}s ({base}/readyz)")
            time.sleep(0.2)
        return base

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the worker to finish its batch, flush, commit and leave the group; wait."""
        self.worker.request_stop()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise DemoError(f"the worker did not stop within {timeout:g}s{self.hint}")


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
