"""One seed's evaluation: score the clean set, every corrupted set, then the window trials."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.evaluation.harm import (
    Case,
    CorruptionSpec,
    Scored,
    build_case,
    case_metrics,
    corrupt,
    scored,
)
from monitor.evaluation.metrics import flagged_rate, group_stats
from monitor.evaluation.windows import (
    DEFAULT_FRACTIONS,
    TrialCurve,
    contamination_trials,
    fixed_reference_rate,
)

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation
    from monitor.tabular_corruptions import FeatureStats

Progress = Callable[[str], None]
POOLED = "natural s3+"


@dataclass(frozen=True)
class SuiteOptions:
    specs: tuple[CorruptionSpec, ...]
    p_value: float
    window: int | None = 200  # None: too few clean rows, no window test
    trials: int = 500
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    reference_size: int = 500
    window_min_severity: int = 3
    pgd_steps: int = 10
    # The contamination at which the deployment check against the manifest's reference runs.
    check_fraction: float = 0.3


@dataclass
class SeedResult:
    seed: int
    detector: dict[str, Any]
    clean: dict[str, Any]
    cases: list[Case]
    case_rows: list[dict[str, Any]]
    curves: dict[str, dict[str, TrialCurve]] = field(default_factory=dict)
    manifest_reference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "detector": self.detector,
            "clean": self.clean,
            "cases": self.case_rows,
            "windows": {
                group: {kind: curve.to_dict() for kind, curve in curves.items()}
                for group, curves in self.curves.items()
            },
            "manifest_reference": self.manifest_reference,
        }


def window_groups(cases: Sequence[Case], min_severity: int) -> dict[str, list[Case]]:
    """Cases pooled per window group: each natural corruption at ``min_severity``+, all
    natural ones together, each attack over its epsilons, and a user-supplied set."""
    groups: dict[str, list[Case]] = {}
    for case in cases:
        spec = case.spec
        if spec.kind == "natural":
            if spec.level >= min_severity:
                groups.setdefault(spec.name, []).append(case)
                groups.setdefault(POOLED, []).append(case)
        else:
            groups.setdefault(spec.name, []).append(case)
    return groups


def planned_steps(options: SuiteOptions) -> int:
    """Progress steps of one seed: the clean set, each case and each window curve."""
    names = {s.name for s in options.specs if s.kind != "natural"}
    names |= {
        s.name
        for s in options.specs
        if s.kind == "natural" and s.level >= options.window_min_severity
    }
    pooled = any(
        s.kind == "natural" and s.level >= options.window_min_severity for s in options.specs
    )
    windows = 2 * (len(names) + pooled) if options.window else 0
    return 1 + len(options.specs) + windows


def _score(detector: ModelDistillation, x: np.ndarray) -> Scored:
    scores, probs, _ = detector.score(x, return_predictions=True)
    return scored(scores, probs)


def run_seed(
    detector: ModelDistillation,
    x: np.ndarray,
    y: np.ndarray,
    options: SuiteOptions,
    seed: int,
    detector_info: dict[str, Any],
    user_sets: Sequence[tuple[CorruptionSpec, np.ndarray]] = (),
    progress: Progress | None = None,
    stats: FeatureStats | None = None,
) -> SeedResult:
    """Evaluate ``detector`` on ``(x, y)`` and its corruptions, seeded by ``seed``.

    ``stats``: the per-feature scale of clean training data, needed by tabular specs."""
    step: Progress = progress or (lambda _label: None)
    threshold = detector.threshold
    clean = _score(detector, x)
    accuracy = float(np.mean(clean.pred == y))
    clean_row = {
        "n": len(y),
        "accuracy": accuracy,
        "scores": group_stats(clean.scores).to_dict(),
        "fpr": flagged_rate(clean.scores, threshold),
    }
    step("clean")

    cases: list[Case] = []
    sets: list[tuple[CorruptionSpec, np.ndarray | None]] = [(s, None) for s in options.specs]
    sets += list(user_sets)
    for spec, given in sets:
        x_bad = (
            given
            if given is not None
            else corrupt(spec, x, y, detector.model, seed, options.pgd_steps, stats)
        )
        cases.append(build_case(spec, y, clean, _score(detector, x_bad)))
        step(spec.label)
    result = SeedResult(
        seed=seed,
        detector=detector_info,
        clean=clean_row,
        cases=cases,
        case_rows=[case_metrics(c, threshold) for c in cases],
    )
    _run_windows(result, clean, options, step)
    _check_manifest_reference(result, detector, clean, options)
    return result


def _pool(cases: Sequence[Case], group: str) -> np.ndarray:
    return np.concatenate([c.group(group) for c in cases]) if cases else np.empty(0)


def _run_windows(result: SeedResult, clean: Scored, options: SuiteOptions, step: Progress) -> None:
    if options.window is None:
        return
    for name, members in window_groups(result.cases, options.window_min_severity).items():
        curves: dict[str, TrialCurve] = {}
        for kind in ("harmful", "harmless"):
            pool = _pool(members, kind)
            if pool.size:
                curves[kind] = contamination_trials(
                    clean.scores,
                    pool,
                    name=f"{name}/{kind}",
                    seed=result.seed,
                    p_value=options.p_value,
                    window=options.window,
                    trials=options.trials,
                    fractions=options.fractions,
                    reference_size=options.reference_size,
                )
            step(f"windows {name} {kind}")
        if curves:
            result.curves[name] = curves


def _check_manifest_reference(
    result: SeedResult, detector: ModelDistillation, clean: Scored, options: SuiteOptions
) -> None:
    """What the worker would see: windows of this data against the manifest's reference."""
    reference = np.asarray(detector.reference_scores, dtype=np.float64)
    window = options.window
    if window is None or reference.size < 2 or clean.scores.size < window:
        return
    members = window_groups(result.cases, options.window_min_severity).get(POOLED, [])

    def rate(contaminant: np.ndarray, fraction: float) -> float:
        return fixed_reference_rate(
            reference,
            clean.scores,
            contaminant,
            fraction,
            seed=result.seed,
            p_value=options.p_value,
            window=window,
            trials=options.trials,
        )

    check: dict[str, Any] = {
        "reference_size": int(reference.size),
        "fraction": options.check_fraction,
        "all_clean": rate(np.empty(0), 0.0),
    }
    for kind in ("harmful", "harmless"):
        pool = _pool(members, kind)
        check[kind] = rate(pool, options.check_fraction) if pool.size else None
    result.manifest_reference = check
