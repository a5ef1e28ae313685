"""The demo's live line, read from the worker's real ``/metrics`` endpoint.

Reading the endpoint (rather than the worker object) shows what Prometheus would see, and
keeps the demo honest about the metrics it advertises.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "distillation_monitor_"


@dataclass(frozen=True)
class WorkerSnapshot:
    """The worker's counters at one moment (summed over their labels)."""

    consumed: float = 0.0
    scored: float = 0.0
    flagged: float = 0.0
    dead_lettered: float = 0.0
    adversarial_ratio: float = 0.0


def parse_metrics(text: str) -> WorkerSnapshot:
    """The demo's numbers from a Prometheus text exposition."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return WorkerSnapshot(
        consumed=totals.get(f"{PREFIX}records_consumed_total", 0.0),
        scored=totals.get(f"{PREFIX}records_scored_total", 0.0),
        flagged=totals.get(f"{PREFIX}records_flagged_total", 0.0),
        dead_lettered=totals.get(f"{PREFIX}records_dead_lettered_total", 0.0),
        adversarial_ratio=totals.get(f"{PREFIX}adversarial_ratio", 0.0),
    )


def scrape(url: str, timeout: float = 2.0) -> WorkerSnapshot | None:
    """The worker's snapshot, or None while the endpoint does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def status_text(
    elapsed: float,
    sent: int,
    now: WorkerSnapshot | None,
    before: WorkerSnapshot | None,
    dt: float,
) -> str:
    """``[ 12s] sent 2400 | worker 2380 (200 rec/s) | flagged 310 | adversarial rate ...``."""
    head = f"[{elapsed:4.0f}s] sent {sent:6d}"
    if now is None:
        return f"{head} | worker metrics not answering"
    if before is not None and dt > 0:
        speed = (now.consumed - before.consumed) / dt
    else:
        speed = now.consumed / elapsed if elapsed > 0 else 0.0
    return (
        f"{head} | worker {now.consumed:6.0f} ({speed:4.0f} rec/s) | flagged {now.flagged:5.0f}"
        f" | adversarial rate {now.adversarial_ratio:5.1%} | dead letters {now.dead_lettered:.0f}"
    )


class LiveLine:
    """One status line: rewritten in place on a terminal, a new line every few seconds
    otherwise (logs and captured output stay readable)."""

    def __init__(self, stream: TextIO | None = None, plain_every_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.plain_every_s = plain_every_s
        self._last_plain = float("-inf")
        self._width = 0
        self._text = ""
        self._shown = ""

    def show(self, text: str, elapsed: float) -> None:
        self._text = text
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            self._shown = text
        elif elapsed - self._last_plain >= self.plain_every_s - 0.5:
            self.stream.write(text + "\n")
            self._last_plain = elapsed
            self._shown = text
        self.stream.flush()

    def finish(self) -> None:
        """End the line; a plain stream also gets the latest state if it was not shown."""
        if self.tty:
            self.stream.write("\n")
        elif self._text and self._text != self._shown:
            self.stream.write(self._text + "\n")
        self.stream.flush()
