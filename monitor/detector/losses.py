"""The harmfulness score: the distillation loss between the classifier and its distilled copy.

One definition serves both training (``DistillationLoss``) and scoring (``instance_scores``),
so the detector flags exactly what the distilled model was trained to minimise. Everything is
float32, as the models produce their outputs; the clipping constants are part of the
definition (tests compare against an independent float64 computation).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

LOSS_TYPES = ("kld", "xent")
KLD_CLIP = 1e-7
XENT_EPS = 1e-7


def check_loss_type(loss_type: str) -> str:
    """Refuse an unsupported loss type up front instead of when scoring."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    return loss_type


def check_temperature(temperature: float) -> float:
    """A temperature must be a positive finite number (it divides the log-probabilities)."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return value


def scale_temperature(y: tf.Tensor, temperature: float) -> tf.Tensor:
    """``y ** (1/T)`` renormalised per row; the identity for T == 1.

    Rows are divided by their maximum before the power (which cancels in the
    renormalisation) so that small temperatures cannot underflow a whole row to zero.
    """
    if temperature == 1.0:
        return y
    peak = tf.reduce_max(y, axis=-1, keepdims=True)
    powered = tf.pow(y / peak, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def kld_scores(y: tf.Tensor, y_d: tf.Tensor) -> tf.Tensor:
    """``sum_c y_c * log(y_c / y_d,c)`` with both clipped to [1e-7, 1]."""
    y = tf.clip_by_value(y, KLD_CLIP, 1.0)
    y_d = tf.clip_by_value(y_d, KLD_CLIP, 1.0)
    return tf.reduce_sum(y * tf.math.log(y / y_d), axis=-1)


def xent_scores(y: tf.Tensor, y_d: tf.Tensor) -> tf.Tensor:
    """``-sum_c y_c * log(p_c)`` with p = y_d / sum(y_d) clipped to [1e-7, 1 - 1e-7]."""
    p = y_d / tf.reduce_sum(y_d, axis=-1, keepdims=True)
    p = tf.clip_by_value(p, XENT_EPS, 1.0 - XENT_EPS)
    return -tf.reduce_sum(y * tf.math.log(p), axis=-1)


def instance_scores(y: tf.Tensor, y_d: tf.Tensor, loss_type: str, temperature: float) -> tf.Tensor:
    """Per-row score between classifier outputs ``y`` and distilled outputs ``y_d``.

    Only the classifier's output is temperature-scaled, as in the method document.
    """
    y = tf.cast(y, tf.float32)
    y_d = tf.cast(y_d, tf.float32)
    y = scale_temperature(y, temperature)
    if loss_type == "kld":
        return kld_scores(y, y_d)
    if loss_type == "xent":
        return xent_scores(y, y_d)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


@keras.saving.register_keras_serializable(package="distillation_monitor")
class DistillationLoss(keras.losses.Loss):
    """Keras training loss: the mean score of a batch (targets are the classifier's outputs)."""

    def __init__(
        self,
        loss_type: str = "kld",
        temperature: float = 1.0,
        name: str = "distillation_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.loss_type = check_loss_type(loss_type)
        self.temperature = check_temperature(temperature)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return instance_scores(y_true, y_pred, self.loss_type, self.temperature)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(loss_type=self.loss_type, temperature=self.temperature)
        return config
