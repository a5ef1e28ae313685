"""The digits demo: a small classifier and its detector, offline, seeded, in seconds.

Data is scikit-learn's bundled 8x8 digits (no download). The detector directory also holds
``classifier.keras`` (the same classifier as ``model.keras``, named for the attack code)
and ``demo.json`` (the seed and split, so other commands can rebuild the same test set
with ``load_digits_split``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CLASSIFIER_FILE = "classifier.keras"
DEMO_INFO_FILE = "demo.json"
TEST_FRACTION = 0.3
THRESHOLD_PERC = 95.0


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): images (n, 8, 8) float32 in [0, 1], stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    return x_train, y_train, x_test, y_test


def train_digits_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 40):  # type: ignore[no-untyped-def]
    """Flatten -> Dense(64, relu) -> Dense(10, softmax), trained with Adam."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=x.shape[1:], name="image")
    hidden = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs, name="digits_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def build_demo_detector(
    out_dir: str | os.PathLike[str], seed: int = 0, verbose: bool = False
) -> Path:
    """Train the digits classifier and its detector with ``fit``'s defaults; save to ``out_dir``.

    Each distilled model (``ensemble.distil``'s default number) is trained on 80% of the
    training split until it agrees with the classifier on the default target, and their
    average is the detector's distilled model; the threshold is the 95th percentile of the
    scores on the other 20% (clean data neither model was fitted on for the detector).
    """
    import keras

    from monitor.detector.architectures import DEFAULT_LOSS_TYPE, DEFAULT_TEMPERATURE
    from monitor.detector.distillation import ModelDistillation
    from monitor.detector.ensemble import distil
    from monitor.detector.persistence import save_detector

    x_train, y_train, x_test, y_test = load_digits_split(seed)
    classifier = train_digits_classifier(x_train, y_train, seed=seed)
    keras.utils.set_random_seed(seed)
    detector = ModelDistillation(
        model=classifier,
        loss_type=DEFAULT_LOSS_TYPE,
        temperature=DEFAULT_TEMPERATURE,
        data_type="image",
        threshold=np.inf,  # set below; avoids the "no threshold" warning
    )
    distilled = distil(detector, x_train, seed=seed, verbose=verbose)
    x_holdout = distilled.x_holdout
    detector.infer_threshold(x_holdout, threshold_perc=THRESHOLD_PERC)
    out = Path(out_dir)
    save_detector(detector, out, name="digits-demo", version=str(seed))
    classifier.save(out / CLASSIFIER_FILE)
    accuracy = float(np.mean(detector.classifier_outputs(x_test).argmax(axis=1) == y_test))
    info = {
        "dataset": "sklearn digits (8x8, scaled to [0, 1])",
        "seed": seed,
        "test_fraction": TEST_FRACTION,
        "classifier_test_accuracy": accuracy,
        "agreement": distilled.agreement,
        "member_epochs": distilled.member_epochs,
        "threshold_perc": THRESHOLD_PERC,
    }
    (out / DEMO_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out
