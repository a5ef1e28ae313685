"""A real Prometheus (Debian's binary) for tests: loopback port, temp storage, our rules.

``running_prometheus(workdir, targets)`` writes a scrape config for the given
``host:port`` targets (job ``distillation-monitor``, 1 s scrape and rule evaluation, the
project's ``deploy/prometheus/alerts.yml`` as rule file), starts the server and stops it
on exit. Queries go through the HTTP API; an invalid expression fails the test with
Prometheus' own error message.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
JOB = "distillation-monitor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    """A running Prometheus server and its HTTP API."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def api(self, path: str, **params: str) -> Any:
        """``data`` of an ``/api/v1/<path>`` answer; AssertionError with Prometheus' reason."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise AssertionError(f"prometheus refused {params or path}: {body}") from None
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Result of an instant query (a vector's samples; a scalar as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (e.g. a ``sum(...)``), None if it has no data."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def wait_for_samples(
        self, metric: str = "distillation_monitor_up", count: int = 12, timeout: float = 90
    ) -> None:
        """Until ``count`` scrapes of ``metric`` are stored (every rate then has a window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited:\n" + self.log_tail()
            try:
                result = self.query(f"count_over_time({metric}[1m])")
            except (OSError, AssertionError):
                result = []
            if result and float(result[0]["value"][1]) >= count:
                return
            time.sleep(0.25)
        raise AssertionError(
            f"prometheus stored fewer than {count} scrapes of {metric} in {timeout} s:\n"
            + self.log_tail()
        )


def scrape_config(
    targets: Sequence[str], rule_files: Sequence[Path], interval: str = "1s"
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
    }


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (ALERTS,),
    interval: str = "1s",
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` with ``rule_files``; storage and log under ``workdir``."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: `make tools` installs the Debian package prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, rule_files, interval)))
    log_path = workdir / "prometheus.log"
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Prometheus(port, proc, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
