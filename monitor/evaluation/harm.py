"""Corrupted sets and the harmful/harmless groups of the method document.

Harmful: the classifier is right on the clean input and wrong on its corrupted version.
Harmless: right on both. Inputs the classifier already gets wrong when clean are in
neither group (they are part of the clean group, which is the whole clean set: the
traffic a deployed detector sees when nothing is wrong).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.corruptions import NATURAL, fgsm, harm_split, pgd
from monitor.evaluation.defaults import DEFAULT_EPSILONS, DEFAULT_TABULAR_EPSILONS
from monitor.evaluation.metrics import (
    average_precision,
    flagged_rate,
    group_stats,
    predictive_entropy,
    roc_auc,
)
from monitor.tabular_corruptions import TABULAR, FeatureStats, attack_scale

if TYPE_CHECKING:
    import keras

ATTACKS = ("fgsm", "pgd")
# The two corruption families: images in [0, 1] (``monitor.corruptions``, epsilons in
# pixel units) and tabular features (``monitor.tabular_corruptions``, everything in units
# of each feature's standard deviation on clean training data).
IMAGE = "image"
TABULAR_FAMILY = "tabular"
FAMILIES: dict[str, tuple[str, ...]] = {IMAGE: tuple(NATURAL), TABULAR_FAMILY: tuple(TABULAR)}
FAMILY_EPSILONS = {IMAGE: DEFAULT_EPSILONS, TABULAR_FAMILY: DEFAULT_TABULAR_EPSILONS}
# Cases with fewer harmful or harmless instances than this are reported but left out of
# the summary means: an AUC over a handful of instances is noise.
MIN_GROUP = 5


@dataclass(frozen=True)
class Scored:
    """What the detector and the classifier say about one set of inputs."""

    scores: np.ndarray
    baseline: np.ndarray
    pred: np.ndarray


def scored(scores: np.ndarray, probs: np.ndarray) -> Scored:
    """Bundle detector scores with the classifier's predictions and its entropy baseline."""
    probs = np.asarray(probs)
    return Scored(
        scores=np.asarray(scores, dtype=np.float64).ravel(),
        baseline=predictive_entropy(probs),
        pred=probs.argmax(axis=1),
    )


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption at one strength: a severity (natural) or an epsilon (attack)."""

    name: str
    kind: str  # "natural", "attack" or "user"
    level: float
    family: str = IMAGE  # "image" or "tabular": which corruptions, which attack units

    @property
    def level_name(self) -> str:
        return {"natural": "severity", "attack": "epsilon"}.get(self.kind, "level")

    @property
    def label(self) -> str:
        if self.kind == "natural":
            return f"{self.name} s{int(self.level)}"
        if self.kind == "attack":
            return f"{self.name} eps={self.level:g}"
        return self.name

    def seed_for(self, seed: int) -> list[int]:
        """A seed sequence of its own, so a case does not depend on which others run."""
        return [seed, zlib.crc32(self.name.encode()), round(self.level * 1000)]


def plan(
    corruptions: Sequence[str],
    severities: Sequence[int],
    attacks: Sequence[str],
    epsilons: Sequence[float],
    family: str = IMAGE,
) -> list[CorruptionSpec]:
    """The built-in cases to run, natural corruptions first."""
    names = FAMILIES[family]
    unknown = [c for c in corruptions if c not in names] + [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(
            f"unknown corruption(s) {', '.join(unknown)}; "
            f"choose from {', '.join([*names, *ATTACKS])}"
        )
    specs = [CorruptionSpec(c, "natural", int(s), family) for c in corruptions for s in severities]
    specs += [CorruptionSpec(a, "attack", float(e), family) for a in attacks for e in epsilons]
    return specs


def specs_for_kind(
    kind: str, severities: Sequence[int], quick: bool = False
) -> list[CorruptionSpec]:
    """Every corruption and attack of a data kind ("image" or "tabular") at these
    severities and the default epsilons (``quick``: only the middle one), as ``evaluate``
    runs them."""
    epsilons = [float(e) for e in FAMILY_EPSILONS[kind].split(",")]
    if quick:
        epsilons = epsilons[len(epsilons) // 2 :][:1]
    return plan(FAMILIES[kind], severities, ATTACKS, epsilons, kind)


def corrupt(
    spec: CorruptionSpec,
    x: np.ndarray,
    y: np.ndarray,
    model: keras.Model | None,
    seed: int,
    pgd_steps: int = 10,
    stats: FeatureStats | None = None,
) -> np.ndarray:
    """The corrupted version of ``x`` for ``spec``; attacks need the classifier ``model``.

    Tabular specs need ``stats``: ``monitor.tabular_corruptions.feature_stats`` of clean
    training inputs (not of ``x``), which set every corruption's and attack's scale.
    """
    rng = np.random.default_rng(spec.seed_for(seed))
    if spec.family == TABULAR_FAMILY and stats is None:
        raise ValueError(
            f"{spec.label}: tabular corruptions need the feature statistics of clean "
            "training data: pass stats=feature_stats(x_train)"
        )
    if spec.kind == "natural":
        if stats is not None and spec.family == TABULAR_FAMILY:
            return TABULAR[spec.name](x, int(spec.level), rng, stats)
        return NATURAL[spec.name](x, int(spec.level), rng)
    if spec.kind != "attack" or model is None:
        raise ValueError(f"cannot build {spec.label} here")
    # Tabular: epsilon in units of each feature's standard deviation, no [0, 1] clipping
    # (the L-infinity ball of eps standard deviations bounds every feature's change).
    scale = attack_scale(stats) if stats is not None and spec.family == TABULAR_FAMILY else None
    bounds = None if scale is not None else (0.0, 1.0)
    if spec.name == "fgsm":
        return fgsm(model, x, y, spec.level, scale=scale, bounds=bounds)
    pgd_seed = int(rng.integers(2**31))
    return pgd(model, x, y, spec.level, steps=pgd_steps, seed=pgd_seed, scale=scale, bounds=bounds)


@dataclass(frozen=True)
class Case:
    """One corrupted set next to its clean original, split into the method's groups."""

    spec: CorruptionSpec
    clean: Scored
    corrupted: Scored
    harmful: np.ndarray
    harmless: np.ndarray
    accuracy: float

    @property
    def measurable(self) -> bool:
        return int(self.harmful.sum()) >= MIN_GROUP and int(self.harmless.sum()) >= MIN_GROUP

    def group(self, name: str, baseline: bool = False) -> np.ndarray:
        """Scores of "clean" (the whole clean set), "harmless" or "harmful" (corrupted)."""
        source = self.clean if name == "clean" else self.corrupted
        values = source.baseline if baseline else source.scores
        if name == "clean":
            return values
        return values[self.harmful if name == "harmful" else self.harmless]


def build_case(spec: CorruptionSpec, y: np.ndarray, clean: Scored, corrupted: Scored) -> Case:
    y = np.asarray(y).ravel()
    if not len(y) == len(clean.pred) == len(corrupted.pred):
        raise ValueError("labels, clean and corrupted sets must have the same number of rows")
    harmful, harmless = harm_split(y, clean.pred, corrupted.pred)
    return Case(
        spec=spec,
        clean=clean,
        corrupted=corrupted,
        harmful=harmful,
        harmless=harmless,
        accuracy=float(np.mean(corrupted.pred == y)) if len(y) else 0.0,
    )


def _separation(case: Case, baseline: bool) -> dict[str, float | None]:
    clean, harmless, harmful = (case.group(g, baseline) for g in ("clean", "harmless", "harmful"))
    return {
        "auc_harmful_vs_harmless": roc_auc(harmless, harmful),
        "ap_harmful_vs_harmless": average_precision(harmless, harmful),
        "auc_harmful_vs_clean": roc_auc(clean, harmful),
        "ap_harmful_vs_clean": average_precision(clean, harmful),
    }


def case_metrics(case: Case, threshold: float | None) -> dict[str, Any]:
    """Everything the report says about one case, JSON-ready."""
    detector: dict[str, float | None] = _separation(case, baseline=False)
    detector |= {
        "tpr_harmful": flagged_rate(case.group("harmful"), threshold),
        "fpr_clean": flagged_rate(case.group("clean"), threshold),
        "fpr_harmless": flagged_rate(case.group("harmless"), threshold),
    }
    return {
        "corruption": case.spec.name,
        "kind": case.spec.kind,
        "level": case.spec.level,
        "level_name": case.spec.level_name,
        "accuracy": case.accuracy,
        "n_harmful": int(case.harmful.sum()),
        "n_harmless": int(case.harmless.sum()),
        "measurable": case.measurable,
        "scores": {
            g: group_stats(case.group(g)).to_dict() for g in ("clean", "harmless", "harmful")
        },
        "detector": detector,
        "baseline": _separation(case, baseline=True),
    }
