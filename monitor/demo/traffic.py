"""Labelled demo records: clean test digits mixed with corrupted and malformed ones.

Every record is in the worker's ``json`` format, ``{"id", "instance", ...context}``, and
its context says what it really is, so the demo can check the alerts against the truth:
``label`` (the true class), ``corruption`` (``"clean"`` or a name from
``monitor.corruptions``), ``severity`` (natural corruptions) or ``epsilon`` (attacks),
and ``harmful``: true when the corruption flipped a correct prediction of the classifier,
false when the classifier is right on both, null for clean records and for digits it
already gets wrong (neither group, as the method document defines them).

Instances are rounded to ``DECIMALS`` before the classifier judges them, so the harm label
belongs to exactly the numbers the worker reads. The digits are the demo detector's own
test split (``demo.json`` names its seed), which neither model was trained on.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.corruptions import NATURAL, fgsm, harm_split, pgd
from monitor.errors import DemoError

ATTACKS = ("fgsm", "pgd")
CORRUPTIONS = (*NATURAL, *ATTACKS)
DEFAULT_SEVERITIES = (3, 4, 5)
DEFAULT_EPSILONS = (0.05, 0.1)
DECIMALS = 4
CLEAN = "clean"
MALFORMED = "malformed"
CHUNK = 256


@dataclass(frozen=True)
class TrafficSpec:
    """What to mix into the stream; validated on construction."""

    corrupt_fraction: float = 0.3
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = DEFAULT_SEVERITIES
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.corrupt_fraction <= 1.0:
            raise DemoError(f"--corrupt-fraction must be in [0, 1], got {self.corrupt_fraction}")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown or not self.corruptions:
            raise DemoError(
                f"unknown corruption(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(CORRUPTIONS)} or all"
            )
        if not self.severities or any(s not in (1, 2, 3, 4, 5) for s in self.severities):
            raise DemoError(f"--severities must be in 1..5, got {self.severities}")
        if not self.epsilons or any(not 0.0 < e <= 1.0 for e in self.epsilons):
            raise DemoError(f"--epsilons must be in (0, 1], got {self.epsilons}")


@dataclass(frozen=True, slots=True)
class DemoRecord:
    """One message to send, with the truth the summary compares the alerts to."""

    id: str
    value: bytes
    kind: str  # CLEAN, a corruption name, or MALFORMED
    harmful: bool | None


def new_run_id() -> str:
    """Time-sortable and unique: ``20250102-130405-1a2b``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def parse_corruptions(text: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list of names (checked by ``TrafficSpec``)."""
    if text.strip().lower() == "all":
        return CORRUPTIONS
    return tuple(name.strip() for name in text.split(",") if name.strip())


def malformed_positions(total: int, count: int) -> set[int]:
    """``count`` positions spread evenly over ``total`` records (one in the middle of each of
    ``count`` equal slices)."""
    count = min(count, total)
    return {int((k + 0.5) * total / count) for k in range(count)} if count else set()


def malformed_record(record_id: str, k: int) -> DemoRecord:
    """A record the worker must dead-letter; the kinds rotate so several reasons show."""
    image = [[0.5] * 8] * 8
    bodies = (
        orjson.dumps({"id": record_id, "instance": image})[:-20],  # truncated JSON
        orjson.dumps({"id": record_id, "instance": image[:7]}),  # wrong shape
        orjson.dumps({"id": record_id, "instance": "an image, honest"}),  # not numbers
        orjson.dumps({"id": record_id, "instance": image}).replace(b"0.5", b"1e999", 1),  # inf
    )
    return DemoRecord(record_id, bodies[k % len(bodies)], MALFORMED, None)


class DemoTraffic:
    """An endless supply of labelled records for one detector directory and run."""

    def __init__(self, detector_dir: str | Path, spec: TrafficSpec, run_id: str) -> None:
        from monitor.detector.demo import CLASSIFIER_FILE, DEMO_INFO_FILE, load_digits_split
        from monitor.detector.persistence import load_keras_model

        where = Path(detector_dir)
        info_file = where / DEMO_INFO_FILE
        if not info_file.is_file() or not (where / CLASSIFIER_FILE).is_file():
            raise DemoError(
                f"{where} is not a demo detector (no {DEMO_INFO_FILE} or {CLASSIFIER_FILE}); "
                "build one with `distillation-monitor demo-detector --out DIR`"
            )
        seed = int(json.loads(info_file.read_text()).get("seed", 0))
        _, _, x_test, y_test = load_digits_split(seed)
        self.spec = spec
        self.run_id = run_id
        self.classifier = load_keras_model(where / CLASSIFIER_FILE)
        self.x = np.round(x_test, DECIMALS).astype(np.float32)
        self.y = y_test
        self.pred_clean = self._predict(self.x)
        self.rng = np.random.default_rng(spec.seed)
        self.count = 0

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.classifier(x, training=False)).argmax(axis=1)

    def _corrupt(self, name: str, level: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if name in NATURAL:
            return NATURAL[name](x, int(level), self.rng)
        if name == "fgsm":
            return fgsm(self.classifier, x, y, level)
        return pgd(self.classifier, x, y, level, seed=int(self.rng.integers(2**31)))

    def _next_id(self) -> str:
        record_id = f"{self.run_id}-{self.count:07d}"
        self.count += 1
        return record_id

    def take(self, n: int) -> list[DemoRecord]:
        """``n`` new records: test digits, a ``corrupt_fraction`` of them corrupted."""
        spec, rng = self.spec, self.rng
        index = rng.integers(0, len(self.x), n)
        x, y = self.x[index].copy(), self.y[index]
        corrupt = rng.random(n) < spec.corrupt_fraction
        names = np.array([CLEAN] * n, dtype=object)
        levels = np.zeros(n)
        for i in np.flatnonzero(corrupt).tolist():
            names[i] = spec.corruptions[int(rng.integers(len(spec.corruptions)))]
            choices: Sequence[float] = spec.severities if names[i] in NATURAL else spec.epsilons
            levels[i] = choices[int(rng.integers(len(choices)))]
        for name, level in sorted({(names[i], levels[i]) for i in np.flatnonzero(corrupt)}):
            rows = np.flatnonzero((names == name) & (levels == level))
            x[rows] = self._corrupt(name, level, x[rows], y[rows])
        x = np.round(x, DECIMALS).astype(np.float32)
        pred = self.pred_clean[index].copy()
        pred[corrupt] = self._predict(x[corrupt])
        harmful, harmless = harm_split(y, self.pred_clean[index], pred)
        out = []
        for i in range(n):
            record_id = self._next_id()
            context: dict[str, Any] = {"label": int(y[i]), "corruption": str(names[i])}
            verdict: bool | None = None
            if corrupt[i]:
                key = "severity" if names[i] in NATURAL else "epsilon"
                context[key] = int(levels[i]) if key == "severity" else float(levels[i])
                verdict = True if harmful[i] else (False if harmless[i] else None)
            context["harmful"] = verdict
            body = orjson.dumps(
                {"id": record_id, "instance": x[i], **context},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            out.append(DemoRecord(record_id, body, str(names[i]), verdict))
        return out

    def records(self, total: int, malformed: int = 0) -> Iterator[DemoRecord]:
        """``total`` records, ``malformed`` of them (spread evenly) deliberately broken."""
        broken = malformed_positions(total, malformed)
        buffer: list[DemoRecord] = []
        made = 0
        for position in range(total):
            if position in broken:
                yield malformed_record(f"{self.run_id}-malformed-{made}", made)
                made += 1
                continue
            if not buffer:
                buffer = self.take(min(CHUNK, total - position))[::-1]
            yield buffer.pop()
