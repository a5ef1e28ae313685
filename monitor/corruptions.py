"""Corruptions for the demo traffic and the evaluation: natural ones and adversarial attacks.

Natural corruptions work on images in [0, 1] of shape (n, H, W) or (n, H, W, C), each at
severities 1 (mild) to 5 (strong), seeded. FGSM and PGD perturb inputs against the
classifier with TensorFlow gradients (imported only when an attack runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import gaussian_filter

if TYPE_CHECKING:
    import keras

SEVERITIES = (1, 2, 3, 4, 5)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _check(x: np.ndarray, severity: int) -> np.ndarray:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    return np.asarray(x, dtype=np.float32)


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _check(x, severity)
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0).astype(np.float32)


def blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _check(x, severity)
    sigma = (0.4, 0.6, 0.8, 1.0, 1.3)[severity - 1]
    spatial = (0, sigma, sigma) + (0,) * (x.ndim - 3)
    return np.clip(gaussian_filter(x, sigma=spatial), 0.0, 1.0).astype(np.float32)


def occlusion(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random square patch set to zero; its side grows with severity."""
    x = _check(x, severity).copy()
    h, w = x.shape[1], x.shape[2]
    frac = (0.2, 0.3, 0.4, 0.5, 0.6)[severity - 1]
    side = max(1, round(min(h, w) * frac))
    for i in range(len(x)):
        top = rng.integers(0, h - side + 1)
        left = rng.integers(0, w - side + 1)
        x[i, top : top + side, left : left + side] = 0.0
    return x


def brightness_contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _check(x, severity)
    contrast = (0.7, 0.55, 0.4, 0.3, 0.2)[severity - 1]
    shift = (0.1, 0.15, 0.2, 0.25, 0.3)[severity - 1]
    mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return np.clip((x - mean) * contrast + mean + shift, 0.0, 1.0).astype(np.float32)


def salt_and_pepper(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    x = _check(x, severity).copy()
    amount = (0.04, 0.08, 0.14, 0.2, 0.28)[severity - 1]
    u = rng.random(x.shape)
    x[u < amount / 2] = 0.0
    x[(u >= amount / 2) & (u < amount)] = 1.0
    return x


NATURAL: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "occlusion": occlusion,
    "brightness_contrast": brightness_contrast,
    "salt_and_pepper": salt_and_pepper,
}


def _gradient_sign(model: keras.Model, x: Any, y: np.ndarray) -> Any:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        probs = model(x, training=False)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, probs)
    return tf.sign(tape.gradient(loss, x))


def fgsm(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    batch_size: int = 256,
    scale: np.ndarray | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Fast gradient sign method: one step of size ``eps`` up the loss of the true label.

    ``scale`` (shaped like one input) makes the step ``eps * scale`` per feature, for
    inputs without a common range; ``bounds`` clips the result (None: no clipping).
    """
    import tensorflow as tf

    out = np.empty_like(np.asarray(x, dtype=np.float32))
    size: Any = eps if scale is None else (eps * np.asarray(scale, dtype=np.float32))
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start : start + batch_size], dtype=tf.float32)
        step = _gradient_sign(model, xb, y[start : start + batch_size])
        moved = xb + size * step
        if bounds is not None:
            moved = tf.clip_by_value(moved, *bounds)
        out[start : start + batch_size] = moved.numpy()
    return out


def pgd(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    scale: np.ndarray | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Projected gradient descent in the L-infinity ball of radius ``eps``, random start.

    ``scale`` and ``bounds`` as for ``fgsm``: with a scale, the ball's radius is
    ``eps * scale`` per feature (and ``step_size`` is in the same units as ``eps``).
    """
    import tensorflow as tf

    unit: Any = 1.0 if scale is None else np.asarray(scale, dtype=np.float32)
    radius: Any = eps if scale is None else eps * unit
    alpha: Any = step_size if step_size is not None else 2.5 * eps / steps
    alpha = alpha if scale is None else alpha * unit
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        x0 = x[start : start + batch_size]
        yb = y[start : start + batch_size]
        adv = _bounded(x0 + rng.uniform(-radius, radius, x0.shape).astype(np.float32), bounds)
        for _ in range(steps):
            xt = tf.convert_to_tensor(adv)
            adv = adv + alpha * _gradient_sign(model, xt, yb).numpy()
            adv = _bounded(np.clip(adv, x0 - radius, x0 + radius), bounds).astype(np.float32)
        out[start : start + batch_size] = adv
    return out


def _bounded(x: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    return x if bounds is None else np.clip(x, *bounds)


def harm_split(
    y_true: np.ndarray, pred_clean: np.ndarray, pred_corrupt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of harmful and harmless instances, as the method document defines them.

    Harmful: correct on the clean input, wrong on the corrupted one. Harmless: correct on
    both. Instances already wrong on the clean input are neither.
    """
    correct_clean = pred_clean == y_true
    correct_corrupt = pred_corrupt == y_true
    return correct_clean & ~correct_corrupt, correct_clean & correct_corrupt
