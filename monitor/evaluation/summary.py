"""Numbers across seeds, and the quality bar set for the digits demo.

Per seed: the mean harmful-vs-harmless ROC-AUC over measurable natural cases at
severity 3+ (and with the attacks added), for the detector and the entropy baseline, and
the window test's detection rates. Across seeds: mean, standard deviation, min and max
of each, and the bar checked on the means (and on the worst seed, reported next to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.evaluation.suite import POOLED, SeedResult

BAR_MIN_SEVERITY = 3
BAR_FRACTION = 0.3


def _mean_auc(
    rows: Sequence[dict[str, Any]], source: str, attacks: bool, user: bool = False
) -> float | None:
    values = [
        r[source]["auc_harmful_vs_harmless"]
        for r in rows
        if r["measurable"]
        and (
            (user and r["kind"] == "user")
            or (not user and r["kind"] == "natural" and r["level"] >= BAR_MIN_SEVERITY)
            or (not user and attacks and r["kind"] == "attack")
        )
    ]
    return float(np.mean(values)) if values else None


def _pooled_tpr(rows: Sequence[dict[str, Any]], attacks: bool) -> float | None:
    """Share of all harmful inputs flagged at the threshold, pooled over the natural cases
    at severity 3+ (and the attacks): each case's rate weighted by its harmful count."""
    picked = [
        r
        for r in rows
        if r["detector"]["tpr_harmful"] is not None
        and (
            (r["kind"] == "natural" and r["level"] >= BAR_MIN_SEVERITY)
            or (attacks and r["kind"] == "attack")
        )
    ]
    harmful = sum(r["n_harmful"] for r in picked)
    if not harmful:
        return None
    return float(sum(r["detector"]["tpr_harmful"] * r["n_harmful"] for r in picked) / harmful)


def _window_group(result: SeedResult) -> str:
    """The curves the summary quotes: natural corruptions pooled, else the user's set."""
    if POOLED in result.curves:
        return POOLED
    users = [c.spec.name for c in result.cases if c.spec.kind == "user"]
    return next((u for u in users if u in result.curves), POOLED)


def seed_summary(result: SeedResult) -> dict[str, float | None]:
    """The scalar numbers the bar talks about, for one seed."""
    rows = result.case_rows
    out: dict[str, float | None] = {
        "auc_natural_s3": _mean_auc(rows, "detector", attacks=False),
        "auc_with_attacks": _mean_auc(rows, "detector", attacks=True),
        "baseline_auc_natural_s3": _mean_auc(rows, "baseline", attacks=False),
        "baseline_auc_with_attacks": _mean_auc(rows, "baseline", attacks=True),
        "clean_accuracy": result.clean["accuracy"],
        "tpr_harmful_natural_s3": _pooled_tpr(rows, attacks=False),
        "tpr_harmful_with_attacks": _pooled_tpr(rows, attacks=True),
        "fpr_clean": result.clean.get("fpr"),
    }
    if any(r["kind"] == "user" for r in rows):
        out["auc_user"] = _mean_auc(rows, "detector", attacks=False, user=True)
        out["baseline_auc_user"] = _mean_auc(rows, "baseline", attacks=False, user=True)
    curves = result.curves.get(_window_group(result), {})
    for kind in ("harmful", "harmless"):
        curve = curves.get(kind)
        for pct in (10, 20, 30):
            out[f"window_{kind}_{pct}"] = curve.rate_at(pct / 100) if curve else None
        if kind == "harmful":
            out["window_all_clean"] = curve.rate_at(0.0) if curve else None
    if result.manifest_reference:
        out["manifest_all_clean"] = result.manifest_reference["all_clean"]
        out["manifest_harmful_30"] = result.manifest_reference["harmful"]
    return out


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, std, min, max over seeds (seeds with no value are left out) and the values."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "per_seed": list(values)}
    a = np.asarray(present, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "per_seed": list(values),
    }


def across_seeds(results: Sequence[SeedResult]) -> dict[str, dict[str, Any]]:
    per_seed = [seed_summary(r) for r in results]
    keys = list(dict.fromkeys(k for s in per_seed for k in s))
    return {k: spread([s.get(k) for s in per_seed]) for k in keys}


@dataclass(frozen=True)
class BarCheck:
    name: str
    value: float | None
    worst: float | None
    target: float
    at_least: bool

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.at_least else self.value <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "worst_seed": self.worst,
            "target": self.target,
            "comparison": ">=" if self.at_least else "<=",
            "passed": self.passed,
        }


def _diff(summary: dict[str, dict[str, Any]], a: str, b: str) -> tuple[float | None, float | None]:
    xs, ys = summary[a]["per_seed"], summary[b]["per_seed"]
    diffs = [x - y for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    return (float(np.mean(diffs)), float(min(diffs))) if diffs else (None, None)


def quality_bar(summary: dict[str, dict[str, Any]], absolute: bool = True) -> list[BarCheck]:
    """The bar set for the digits demo, on the means over seeds (``worst``: the worst seed).

    ``absolute`` False leaves out the two AUC levels, which were set for the digits
    images; the lead over the entropy baseline and the window checks hold for any data.
    """

    def get(key: str, worst: str) -> tuple[float | None, float | None]:
        entry = summary.get(key, {})
        return entry.get("mean"), entry.get(worst)

    checks = []
    if absolute:
        checks += [
            BarCheck(
                "mean AUC harmful vs harmless, natural severity 3+",
                *get("auc_natural_s3", "min"),
                0.86,
                True,
            ),
            BarCheck(
                "mean AUC harmful vs harmless, natural 3+ and FGSM/PGD",
                *get("auc_with_attacks", "min"),
                0.84,
                True,
            ),
        ]
    for key, label in (("natural_s3", "natural 3+"), ("with_attacks", "with attacks")):
        if f"auc_{key}" in summary and f"baseline_auc_{key}" in summary:
            value, worst = _diff(summary, f"auc_{key}", f"baseline_auc_{key}")
            checks.append(
                BarCheck(f"AUC above entropy baseline, {label}", value, worst, 0.05, True)
            )
    checks += [
        BarCheck("windows 30% harmful detected", *get("window_harmful_30", "min"), 0.99, True),
        BarCheck("all-clean windows flagged", *get("window_all_clean", "max"), 0.05, False),
    ]
    return checks
