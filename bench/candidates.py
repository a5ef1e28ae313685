"""Detector candidates measured side by side by ``bench/detector_candidates.py``.

A candidate is a recipe: how to train one or more distilled models for a classifier
(architecture, temperature, agreement target, noise added to the training inputs), how
to combine them (one model; the mean or max of the members' scores; or ``prob``, one
distilled model averaging the members' probabilities, which is what ``fit`` builds), and
optionally how to fuse the result with the classifier's entropy. Every member is a plain
``ModelDistillation`` trained on the same 80% of the clean training data, so all members
share one held-out 20% that none of them saw: the threshold (95th percentile) and the
fusion's reference statistics come from it, as ``fit`` does. ``prob`` candidates without
noise are trained by ``monitor.detector.ensemble.distil`` itself, so ``fit-default`` is
exactly the detector ``fit`` builds.

``CandidateScorer`` has the attributes ``monitor.evaluation.suite.run_seed`` uses
(``score(x, return_predictions=True)``, ``threshold``, ``model``, ``reference_scores``),
so the evaluation's own code measures every candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# fit's defaults, as its --help states them (that module needs no TensorFlow).
from monitor.commands.fit import DEFAULT_AGREEMENT, DEFAULT_LOSS_TYPE, DEFAULT_TEMPERATURE
from monitor.evaluation.metrics import predictive_entropy

THRESHOLD_PERC = 95.0
MAX_EPOCHS = 200
BATCH_SIZE = 128
HOLDOUT_FRACTION = 0.2
FUSIONS = ("z", "logz")
# mean / max: of the members' scores; prob: the score of one distilled model that averages
# the members' probabilities (saved and served like any distilled model).
COMBINES = ("mean", "max", "prob")


@dataclass(frozen=True)
class Candidate:
    """One way to build a detector. The field defaults are one distilled model with one
    hidden layer (``single``, ``fit``'s default before the measurements); None for
    ``members`` or ``depth`` means ``fit``'s current default."""

    name: str
    members: int | None = 1
    combine: str = "mean"
    noise: float = 0.0  # sd of Gaussian noise on training inputs, in units of the data's sd
    noise_scale: str = "feature"  # "feature": each feature's own sd; "global": one sd
    noise_share: float = 1.0  # share of the rows of a batch that get noise
    hidden: int | None = None  # width of the hidden layer(s); None: the default width
    depth: int | None = 1  # hidden layers (flat inputs)
    temperature: float = DEFAULT_TEMPERATURE
    agreement: float = DEFAULT_AGREEMENT
    fusion: str | None = None  # with the classifier's entropy: "z" or "logz"
    group: str = "method"  # "method" (a distillation score) or "fusion" (method + entropy)

    def __post_init__(self) -> None:
        if (self.members is not None and self.members < 1) or self.combine not in COMBINES:
            raise ValueError(f"{self.name}: members >= 1 and combine in {COMBINES}")
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise ValueError(f"{self.name}: fusion must be one of {FUSIONS}")
        if self.noise_scale not in ("feature", "global") or not 0 < self.noise_share <= 1:
            raise ValueError(f"{self.name}: bad noise settings")

    @property
    def n_members(self) -> int:
        from monitor.detector.ensemble import DEFAULT_MEMBERS

        return DEFAULT_MEMBERS if self.members is None else self.members

    @property
    def n_layers(self) -> int:
        from monitor.detector.architectures import DEFAULT_DEPTH

        return DEFAULT_DEPTH if self.depth is None else self.depth


def _c(name: str, **kw: Any) -> Candidate:
    return Candidate(name, **kw)


# The full list; ``--candidates`` picks by name. Fusion candidates are kept apart in the
# table: they add the classifier's entropy, they are not the method's score.
CANDIDATES: tuple[Candidate, ...] = (
    _c("fit-default", members=None, depth=None, combine="prob"),
    _c("single"),
    _c("ens3-mean", members=3),
    _c("ens5-mean", members=5),
    _c("ens3-max", members=3, combine="max"),
    _c("ens3-prob", members=3, combine="prob"),
    _c("ens5-prob", members=5, combine="prob"),
    _c("ens5-max", members=5, combine="max"),
    _c("noise0.1", noise=0.1),
    _c("noise0.25", noise=0.25),
    _c("noise0.5", noise=0.5),
    _c("noise1", noise=1.0),
    _c("noise0.25-half", noise=0.25, noise_share=0.5),
    _c("noise0.25-global", noise=0.25, noise_scale="global"),
    _c("noise0.5-global", noise=0.5, noise_scale="global"),
    _c("width64", hidden=64),
    _c("width1024", hidden=1024),
    _c("depth2", depth=2),
    _c("depth3", depth=3),
    _c("temp0.1", temperature=0.1),
    _c("temp0.25", temperature=0.25),
    _c("temp1", temperature=1.0),
    _c("agree0.9", agreement=0.9),
    _c("agree0.98", agreement=0.98),
    _c("fused-z", fusion="z", group="fusion"),
    _c("fused-logz", fusion="logz", group="fusion"),
)
BY_NAME = {c.name: c for c in CANDIDATES}
_SETTING_TYPES: dict[str, Callable[[str], Any]] = {
    "members": int,
    "combine": str,
    "noise": float,
    "noise_scale": str,
    "noise_share": float,
    "hidden": int,
    "depth": int,
    "temperature": float,
    "agreement": float,
    "fusion": str,
}


def parse_candidate(text: str) -> Candidate:
    """A listed name, or ``base+key=value+...`` to combine settings (e.g. ``noise0.25+members=3``)."""
    base, *extras = text.split("+")
    if base not in BY_NAME:
        raise ValueError(f"unknown candidate {base!r}; choose from {', '.join(BY_NAME)}")
    candidate = BY_NAME[base]
    fields: dict[str, Any] = {}
    for extra in extras:
        key, _, value = extra.partition("=")
        if key not in _SETTING_TYPES:
            raise ValueError(
                f"{text}: unknown setting {key!r}; choose from {', '.join(_SETTING_TYPES)}"
            )
        fields[key] = _SETTING_TYPES[key](value) if value not in ("", "none") else None
    group = "fusion" if fields.get("fusion", candidate.fusion) else "method"
    return replace(candidate, name=text, group=group, **fields)


# -- training ------------------------------------------------------------------------


def distilled_architecture(classifier: Any, candidate: Candidate) -> Any:
    """The candidate's distilled model for ``classifier`` (``fit``'s builder, its settings)."""
    from monitor.detector.architectures import default_distilled_model

    shape = tuple(int(d) for d in classifier.inputs[0].shape[1:])
    n_classes = int(classifier.outputs[0].shape[-1])
    return default_distilled_model(
        shape, n_classes, hidden_units=candidate.hidden, depth=candidate.n_layers
    )


def noise_function(
    x_train: np.ndarray, candidate: Candidate, seed: int
) -> Callable[[np.ndarray], np.ndarray] | None:
    """Adds seeded Gaussian noise to a share of each batch's rows (None: no noise)."""
    if candidate.noise <= 0:
        return None
    if candidate.noise_scale == "feature":
        sd = x_train.std(axis=0, dtype=np.float64)
    else:
        sd = np.full(x_train.shape[1:], x_train.std(dtype=np.float64))
    sd = (candidate.noise * sd).astype(np.float32)
    rng = np.random.default_rng([seed, 77])
    share = candidate.noise_share

    def add_noise(batch: np.ndarray) -> np.ndarray:
        noisy = rng.random(len(batch)) < share
        out = batch.copy()
        out[noisy] += rng.normal(size=out[noisy].shape).astype(np.float32) * sd
        return out

    return add_noise


def new_detector(classifier: Any, candidate: Candidate, seed: int) -> Any:
    """An untrained detector with the candidate's architecture, seeded as the demo seeds it."""
    import keras

    from monitor.detector.distillation import ModelDistillation

    keras.utils.set_random_seed(seed)
    return ModelDistillation(
        model=classifier,
        distilled_model=distilled_architecture(classifier, candidate),
        loss_type=DEFAULT_LOSS_TYPE,
        temperature=candidate.temperature,
        threshold=math.inf,
    )


def train_member(
    classifier: Any, x_train: np.ndarray, candidate: Candidate, seed: int, member: int
) -> tuple[Any, np.ndarray, int]:
    """One distilled model: (detector, held-out rows, epochs trained); as ``distil``
    trains its members, plus the candidate's noise."""
    from monitor.detector.architectures import AgreementStopping, holdout_split

    detector = new_detector(classifier, candidate, seed + 1000 * member)
    x = detector.validate(x_train)
    train_rows, holdout_rows = holdout_split(len(x), HOLDOUT_FRACTION, seed)
    x_fit, x_holdout = x[train_rows], x[holdout_rows]
    stopper = AgreementStopping(
        x_holdout, detector.classifier_outputs(x_holdout), target=candidate.agreement
    )
    detector.fit(
        x_fit,
        epochs=MAX_EPOCHS,
        batch_size=BATCH_SIZE,
        verbose=False,
        callbacks=[stopper],
        preprocess_fn=noise_function(x_fit, candidate, seed + 1000 * member),
    )
    return detector, x_holdout, len(stopper.history)


# -- scoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionStats:
    """Clean reference statistics of the two scores being fused."""

    kind: str
    mean: tuple[float, float]
    sd: tuple[float, float]

    @classmethod
    def fit(cls, kind: str, score: np.ndarray, entropy: np.ndarray) -> FusionStats:
        a, b = _transform(kind, score), _transform(kind, entropy)
        return cls(
            kind,
            (float(a.mean()), float(b.mean())),
            (float(a.std()) or 1.0, float(b.std()) or 1.0),
        )

    def fuse(self, score: np.ndarray, entropy: np.ndarray) -> np.ndarray:
        a = (_transform(self.kind, score) - self.mean[0]) / self.sd[0]
        b = (_transform(self.kind, entropy) - self.mean[1]) / self.sd[1]
        return a + b


def _transform(kind: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.log(np.maximum(v, 1e-6)) if kind == "logz" else v


class CandidateScorer:
    """A candidate's trained members, scored together; duck-types a detector for run_seed."""

    def __init__(self, members: Sequence[Any], candidate: Candidate) -> None:
        self.members = list(members)
        self.candidate = candidate
        self.model = self.members[0].model
        self.reference_scores: list[float] = []  # no manifest check in this benchmark
        self.threshold: float | None = None
        self.fusion: FusionStats | None = None

    def _method_score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [m.score(x, return_predictions=True) for m in self.members]
        scores = np.stack([np.asarray(p[0], dtype=np.float64) for p in parts])
        combined = scores.mean(axis=0) if self.candidate.combine == "mean" else scores.max(axis=0)
        return combined, np.asarray(parts[0][1])

    def calibrate(self, x_holdout: np.ndarray) -> float:
        """Fusion statistics and the threshold from clean held-out rows."""
        score, probs = self._method_score(x_holdout)
        if self.candidate.fusion:
            self.fusion = FusionStats.fit(self.candidate.fusion, score, predictive_entropy(probs))
        final = self.score(x_holdout)
        assert isinstance(final, np.ndarray)
        self.threshold = float(np.percentile(final, THRESHOLD_PERC))
        return self.threshold

    def score(self, x: np.ndarray, return_predictions: bool = False) -> Any:
        score, probs = self._method_score(x)
        if self.fusion is not None:
            score = self.fusion.fuse(score, predictive_entropy(probs))
        return (score, probs, probs) if return_predictions else score


def averaged(members: Sequence[Any]) -> Any:
    """One detector whose distilled model averages the members' probabilities (``fit``'s)."""
    from monitor.detector.ensemble import averaged_model

    first = members[0]
    first.replace_distilled_model(averaged_model([m.distilled_model for m in members]))
    return first


def _library_ensemble(
    candidate: Candidate, classifier: Any, x_train: np.ndarray, seed: int
) -> tuple[list[Any], np.ndarray, list[int]]:
    """``fit``'s own training (``distil``) with the candidate's settings."""
    from monitor.detector.ensemble import distil

    detector = new_detector(classifier, candidate, seed)
    result = distil(
        detector,
        x_train,
        members=candidate.n_members,
        target=candidate.agreement,
        holdout_fraction=HOLDOUT_FRACTION,
        max_epochs=MAX_EPOCHS,
        batch_size=BATCH_SIZE,
        seed=seed,
    )
    return [detector], result.x_holdout, result.member_epochs


def build_scorer(
    candidate: Candidate, classifier: Any, x_train: np.ndarray, seed: int
) -> tuple[CandidateScorer, dict[str, Any]]:
    """Train every member of ``candidate`` and calibrate; returns the scorer and training facts."""
    if candidate.combine == "prob" and candidate.noise == 0:
        members, x_holdout, epochs = _library_ensemble(candidate, classifier, x_train, seed)
    else:
        members, epochs = [], []
        for k in range(candidate.n_members):
            detector, x_holdout, n_epochs = train_member(classifier, x_train, candidate, seed, k)
            members.append(detector)
            epochs.append(n_epochs)
        if candidate.combine == "prob" and len(members) > 1:
            members = [averaged(members)]
    scorer = CandidateScorer(members, candidate)
    scorer.calibrate(x_holdout)
    info = {
        "epochs": epochs,
        "threshold": scorer.threshold,
        "distilled_parameters": int(members[0].distilled_model.count_params()),
    }
    return scorer, info
