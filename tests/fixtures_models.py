"""Tiny seeded Keras models and detectors, built once per test session in seconds.

- ``tiny_data``: (X, labels), 600 rows of 8 float32 features in 3 Gaussian blobs.
- ``tiny_classifier`` / ``tiny_distilled``: a trained softmax classifier and a small
  distilled model for it (shared, so tests must not train or freeze them further:
  clone with ``fresh_distilled``).
- ``fitted_detector``: a ``ModelDistillation`` trained on the pair with a threshold
  (95th percentile); treat it as read-only.
- ``saved_detector_dir``: ``fitted_detector`` saved with ``save_detector``.
- ``write_legacy_alibi_dir``: a detector in alibi-detect's legacy layout (for import tests).
- ``demo_detector_dir``: the digits demo detector (``build_demo_detector``); slower (tens
  of seconds), built only when a test asks for it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TINY_FEATURES = 8
TINY_CLASSES = 3


def make_tiny_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(TINY_CLASSES, TINY_FEATURES))
    labels = rng.integers(0, TINY_CLASSES, size=n)
    x = centres[labels] + rng.normal(size=(n, TINY_FEATURES))
    return x.astype(np.float32), labels


def make_tiny_classifier(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(TINY_FEATURES,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(TINY_CLASSES, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs, name="tiny_classifier")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=10, batch_size=64, verbose=0)
    return model


def make_tiny_distilled(seed: int = 1) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(TINY_FEATURES,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    outputs = keras.layers.Dense(TINY_CLASSES, activation="softmax")(hidden)
    return keras.Model(inputs, outputs, name="tiny_distilled")


def write_legacy_alibi_dir(
    root: Path,
    classifier: Any,
    distilled: Any,
    state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    protocol: int = pickle.DEFAULT_PROTOCOL,
) -> Path:
    """A detector in alibi-detect's legacy layout, written with plain pickle and Keras' h5."""
    root.mkdir(parents=True)
    (root / "model").mkdir()
    meta = meta or {
        "name": "ModelDistillation",
        "detector_type": "adversarial",
        "data_type": "tabular",
        "online": False,
        "version": "0.11.4",
    }
    state = state or {
        "threshold": np.float32(0.375),
        "temperature": np.float64(0.5),
        "loss_type": "xent",
    }
    (root / "meta.dill").write_bytes(pickle.dumps(meta, protocol=protocol))
    (root / "ModelDistillation.dill").write_bytes(pickle.dumps(state, protocol=protocol))
    classifier.save(root / "model" / "model.h5")
    distilled.save(root / "model" / "distilled_model.h5")
    return root


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    return make_tiny_data()


@pytest.fixture(scope="session")
def tiny_classifier(tiny_data: tuple[np.ndarray, np.ndarray]) -> Any:
    x, labels = tiny_data
    return make_tiny_classifier(x, labels)


@pytest.fixture(scope="session")
def tiny_distilled() -> Any:
    return make_tiny_distilled()


@pytest.fixture
def fresh_distilled() -> Any:
    """A new, untrained distilled model (tests that train use this, not the shared one)."""
    return make_tiny_distilled(seed=2)


@pytest.fixture(scope="session")
def fitted_detector(
    tiny_data: tuple[np.ndarray, np.ndarray], tiny_classifier: Any, tiny_distilled: Any
) -> Any:
    from monitor import ModelDistillation

    x, _ = tiny_data
    detector = ModelDistillation(
        threshold=None,
        distilled_model=tiny_distilled,
        model=tiny_classifier,
        loss_type="kld",
        temperature=0.5,
        data_type="tabular",
    )
    detector.fit(x[:400], epochs=5, batch_size=64, verbose=False)
    detector.infer_threshold(x[400:], threshold_perc=95.0)
    return detector


@pytest.fixture(scope="session")
def saved_detector_dir(fitted_detector: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from monitor import save_detector

    path = tmp_path_factory.mktemp("detectors") / "tiny"
    save_detector(fitted_detector, path, name="tiny", version="7")
    return path


@pytest.fixture(scope="session")
def demo_detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from monitor.detector.demo import build_demo_detector

    return Path(build_demo_detector(tmp_path_factory.mktemp("demo") / "digits", seed=0))
