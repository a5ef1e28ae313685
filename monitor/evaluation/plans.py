"""Which detector and which clean data each seed of ``evaluate`` uses.

Three sources: a benchmark case by name (a detector per seed, built into the cache on
first use, the clean data the test split of that seed); a cached demo or case detector
given with ``--detector`` alone (its own split); or a detector with the user's ``--data``
(the seeds then vary only the corruptions and window draws). Tabular corruptions also
need the clean *training* inputs whose per-feature scale they use: a case's training
split, or the user's ``--train-data`` (default: ``--data``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monitor.errors import EvaluationError
from monitor.evaluation.case_detectors import build_case_detector, case_of, is_cached
from monitor.evaluation.cases import case_names, load_split
from monitor.evaluation.defaults import DEFAULT_CASE

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

DIGITS = "digits"


@dataclass(frozen=True)
class SeedPlan:
    seed: int
    detector_dir: Path
    build: bool  # build the case's detector here first
    case: str | None  # the case whose test split is the clean data (None: the user's --data)
    data_seed: int | None  # the case split's seed

    @property
    def digits_seed(self) -> int | None:
        """The digits split of the demo detector, None for anything else."""
        return self.data_seed if self.case == DIGITS else None


def demo_seed_of(detector_dir: Path) -> int | None:
    """The digits split a demo detector was trained on (its demo.json), if it is one."""
    from monitor.detector.demo import DEMO_INFO_FILE

    info = detector_dir / DEMO_INFO_FILE
    if not info.is_file():
        return None
    try:
        return int(json.loads(info.read_text())["seed"])
    except (ValueError, KeyError, TypeError, OSError):
        raise EvaluationError(f"{info}: unreadable demo description") from None


def _given_detector_case(where: Path) -> tuple[str, int]:
    """(case, split seed) of a cached demo or case detector given without --data."""
    demo_seed = demo_seed_of(where)
    if demo_seed is not None:
        return DIGITS, demo_seed
    found = case_of(where)
    if found is None:
        raise EvaluationError(
            f"{where} is not a digits demo or benchmark case detector: "
            "give its clean test data with --data"
        )
    return found


def case_name(args: argparse.Namespace) -> str | None:
    """The benchmark case to run, None when the user gives ``--data`` (checked here)."""
    if args.case is not None:
        if args.case not in case_names():
            raise EvaluationError(
                f"--case: unknown {args.case!r}; choose from {', '.join(case_names())}"
            )
        if args.detector or args.data:
            raise EvaluationError(
                "--case builds its own detector and data; leave out --detector and --data "
                "(or leave out --case to evaluate your own)"
            )
        return str(args.case)
    if args.data:
        return None
    if args.detector:
        where = Path(args.detector)
        return _given_detector_case(where)[0] if where.is_dir() else None
    return DEFAULT_CASE


def cache_dir(cache: Path, case: str, seed: int) -> Path:
    """Where a case's detector for ``seed`` lives; the demo's keeps its own path."""
    return cache / f"seed-{seed}" if case == DIGITS else cache / case / f"seed-{seed}"


def seed_plans(args: argparse.Namespace, seeds: list[int], case: str | None) -> list[SeedPlan]:
    if args.detector:
        where = Path(args.detector)
        if not where.is_dir():
            raise EvaluationError(f"{where}: no such detector directory")
        if args.data:
            return [SeedPlan(s, where, False, None, None) for s in seeds]
        given, split = _given_detector_case(where)
        return [SeedPlan(s, where, False, given, split) for s in seeds]
    assert case is not None  # no --detector and no --data: a case
    cache = Path(args.cache)
    plans = []
    for s in seeds:
        where = cache_dir(cache, case, s)
        cached = (
            (where / "manifest.json").is_file() if case == DIGITS else is_cached(where, case, s)
        )
        plans.append(SeedPlan(s, where, bool(args.rebuild) or not cached, case, s))
    return plans


def load_for(plan_: SeedPlan, verbose: bool = False) -> ModelDistillation:
    """The seed's detector, built first when the plan says so."""
    from monitor.detector.persistence import load_detector

    if plan_.build:
        assert plan_.case is not None
        if plan_.case == DIGITS:
            from monitor.detector.demo import build_demo_detector

            build_demo_detector(plan_.detector_dir, seed=plan_.seed, verbose=verbose)
        else:
            build_case_detector(plan_.case, plan_.seed, plan_.detector_dir, verbose=verbose)
    return load_detector(plan_.detector_dir)


def case_clean_data(plan_: SeedPlan, max_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The test split of the plan's case and seed (at most ``max_rows`` rows)."""
    assert plan_.case is not None and plan_.data_seed is not None
    split = load_split(plan_.case, plan_.data_seed)
    x, y = split.x_test, split.y_test
    return (x[:max_rows], y[:max_rows]) if max_rows else (x, y)


def case_train_inputs(plan_: SeedPlan) -> np.ndarray:
    """The training inputs of the plan's case and seed: the tabular corruptions' scale."""
    assert plan_.case is not None and plan_.data_seed is not None
    return load_split(plan_.case, plan_.data_seed).x_train
