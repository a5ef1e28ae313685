"""Separation and flagged-rate metrics on score arrays.

Positives are the harmful instances (higher score = more suspicious). Every function
returns ``None`` instead of a number when a group is empty, so a report can say "not
measurable" rather than print a misleading 0 or NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


@dataclass(frozen=True)
class GroupStats:
    n: int
    mean: float | None
    std: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "std": self.std}


def group_stats(scores: np.ndarray) -> GroupStats:
    """Size, mean and (population) standard deviation of a group's scores."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        return GroupStats(0, None, None)
    return GroupStats(int(s.size), float(s.mean()), float(s.std()))


def _labelled(negatives: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    pos = np.asarray(positives, dtype=np.float64).ravel()
    labels = np.concatenate([np.zeros(neg.size, dtype=np.int8), np.ones(pos.size, dtype=np.int8)])
    return labels, np.concatenate([neg, pos])


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half)."""
    if np.size(negatives) == 0 or np.size(positives) == 0:
        return None
    labels, scores = _labelled(negatives, positives)
    return float(roc_auc_score(labels, scores))


def average_precision(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the precision-recall curve with the positives as the target class."""
    if np.size(negatives) == 0 or np.size(positives) == 0:
        return None
    labels, scores = _labelled(negatives, positives)
    return float(average_precision_score(labels, scores))


def roc_points(
    negatives: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rates, true positive rates) for plotting a ROC curve."""
    if np.size(negatives) == 0 or np.size(positives) == 0:
        return None
    labels, scores = _labelled(negatives, positives)
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def flagged_rate(scores: np.ndarray, threshold: float | None) -> float | None:
    """Fraction of scores strictly above the threshold (the detector's ``is_adversarial``)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or threshold is None:
        return None
    return float(np.mean(s > threshold))


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """The classifier's own uncertainty, -sum p log p per row: the trivial baseline score."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)
