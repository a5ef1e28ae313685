"""Several distilled models averaged into one: ``fit --members``.

Why: trained on little data and stopped early (on purpose, see ``architectures``), one
distilled model's disagreement with the classifier depends a lot on its random
initialisation; on the small tabular benchmarks that noise put the score below the
classifier's own entropy. Several members trained the same way from different
initialisations, their probabilities averaged, keep the disagreement that comes from
the inputs and average away the part that comes from the initialisation (measured in
docs/detector-selection.md: with three hidden layers each, five members lifted the mean
ROC-AUC over the four benchmark cases from 0.817 to 0.854; scoring costs grow with the
members).

The average is an ordinary Keras model (the members side by side, an ``Average`` of their
softmax outputs), so the detector stays a ``ModelDistillation`` with one distilled model:
the method's score (the distillation loss between the classifier's output and the
distilled model's), saving, loading and the worker are all unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras
import numpy as np

from monitor.detector.architectures import (
    DEFAULT_AGREEMENT,
    AgreementStopping,
    fit_until_agreement,
)

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

DEFAULT_MEMBERS = 5  # fit's default for its own architecture (docs/detector-selection.md)
# Member k > 0 starts from keras.utils.set_random_seed(seed + MEMBER_SEED_STEP * k).
MEMBER_SEED_STEP = 1000

MemberCallbacks = Callable[[int], Sequence[keras.callbacks.Callback]]


def averaged_model(members: Sequence[keras.Model], name: str = "distilled_model") -> keras.Model:
    """One model whose output is the mean of the members' probabilities.

    Each member is wrapped under a name of its own (``member_0``, ...): a functional
    model refuses two parts with the same name, and copies of one architecture share
    their layer names.
    """
    if not members:
        raise ValueError("an average needs at least one member")
    first = members[0]
    inputs = keras.Input(shape=first.inputs[0].shape[1:], dtype=first.inputs[0].dtype)
    outputs = [
        keras.Model(m.inputs[0], m.outputs[0], name=f"member_{k}")(inputs)
        for k, m in enumerate(members)
    ]
    merged = keras.layers.Average(name="average")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, merged, name=name)


@dataclass
class Distilled:
    """What ``distil`` did: the held-out rows, each member's stopping record, and the
    averaged model's top-class agreement with the classifier on the held-out rows."""

    x_holdout: np.ndarray
    stoppers: list[AgreementStopping] = field(default_factory=list)
    agreement: float | None = None

    @property
    def member_epochs(self) -> list[int]:
        return [len(s.history) for s in self.stoppers]

    @property
    def reached(self) -> bool:
        """Every member reached the agreement target (vacuously true without a target)."""
        return all(s.stopped_epoch is not None for s in self.stoppers)


def _agreement(detector: ModelDistillation, x: np.ndarray) -> float:
    _, y, y_d = detector.score(x, return_predictions=True)
    return float(np.mean(np.argmax(y, axis=1) == np.argmax(y_d, axis=1)))


def distil(
    detector: ModelDistillation,
    X: np.ndarray,
    members: int = DEFAULT_MEMBERS,
    target: float = DEFAULT_AGREEMENT,
    holdout_fraction: float = 0.2,
    max_epochs: int = 200,
    batch_size: int = 128,
    seed: int = 0,
    verbose: bool = False,
    member_callbacks: MemberCallbacks | None = None,
) -> Distilled:
    """Train ``members`` distilled models and make their average the detector's.

    Member 0 is the detector's own distilled model; the others are fresh copies of its
    architecture (``keras.models.clone_model``), initialised after
    ``keras.utils.set_random_seed(seed + 1000 * k)``. Each is trained as
    ``fit_until_agreement`` trains one: on the same 80% of ``X``, until its top class
    agrees with the classifier's on ``target`` of the same held-out 20%, which none of
    them sees and which is returned for the threshold. ``member_callbacks(k)`` gives
    extra callbacks for member ``k`` (a progress bar, say).
    """
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    template = detector.distilled_model
    trained: list[keras.Model] = []
    result: Distilled | None = None
    for k in range(members):
        if k > 0:
            keras.utils.set_random_seed(seed + MEMBER_SEED_STEP * k)
            detector.replace_distilled_model(keras.models.clone_model(template))
        x_holdout, stopper = fit_until_agreement(
            detector,
            X,
            target=target,
            holdout_fraction=holdout_fraction,
            max_epochs=max_epochs,
            batch_size=batch_size,
            seed=seed,
            verbose=verbose,
            callbacks=list(member_callbacks(k)) if member_callbacks else None,
        )
        result = result or Distilled(x_holdout)
        if stopper is not None:
            result.stoppers.append(stopper)
        trained.append(detector.distilled_model)
    assert result is not None
    if members > 1:
        detector.replace_distilled_model(averaged_model(trained, name=template.name))
    result.agreement = _agreement(detector, result.x_holdout)
    return result
