"""Train a classifier to monitor: a small Keras MLP on scikit-learn's breast-cancer data.

Stands in for your own model (any Keras classifier with a softmax output will do). It
writes into the directory given:

- classifier.keras   the trained classifier
- train.npy          the clean rows it was trained on (what ``fit`` learns from)
- test.npy           held-out clean rows, the traffic to send
- shifted.npy        the same rows pushed off the training data by noise, to be flagged

Features are standardised with the training rows' mean and deviation, as a real
pipeline would do before the model; the records sent carry the standardised values.
Seeded: the same files every run.

    python docs/examples/train_classifier.py my-model
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

SEED = 0
NOISE = 2.0  # standard deviations of the noise in shifted.npy, per standardised feature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write the model and data to")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)

    rng = np.random.default_rng(SEED)
    shifted = (x_test + rng.normal(0.0, NOISE, x_test.shape)).astype(np.float32)
    model.save(out / "classifier.keras")
    np.save(out / "train.npy", x_train)
    np.save(out / "test.npy", x_test)
    np.save(out / "shifted.npy", shifted)
    print(
        f"classifier saved to {out / 'classifier.keras'} (test accuracy {accuracy:.3f}); "
        f"{len(x_train)} training rows, {len(x_test)} test rows, {len(shifted)} shifted rows"
    )


if __name__ == "__main__":
    main()
