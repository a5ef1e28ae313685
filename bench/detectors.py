"""The two detectors the benchmark runs, built once and cached under ``.local/bench``.

- digits: the demo detector (``build_demo_detector``: 8x8 digits, MLP classifier).
- cnn: an image-like one built here: a small CNN classifier on synthetic 32x32x3 images
  and ``fit``'s default distilled model (five small convolution stacks averaged), so the
  cost of a bigger model shows. Its accuracy does not matter for speed, only its shapes and ops.

Each comes with a pool of record bodies (``instance`` JSON) sampled by the topic writer,
and which of them the detector flags, to check the alert counts of a run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

CACHE_VERSION = "2"  # bump when the detectors built here change
NOISY_FRACTION = 0.05  # share of records that are corrupted (most of them get flagged)


@dataclass(frozen=True)
class BenchDetector:
    name: str
    path: Path
    input_shape: tuple[int, ...]
    pool: list[bytes]  # JSON of one instance each
    pool_flagged: np.ndarray  # bool per pool entry: flagged by the detector offline
    pool_x: np.ndarray  # the instances themselves (float32)

    def exactly_flagged(self, alert_ids: list[str], n: int) -> bool:
        """Whether the alerts of a run over records 0..n-1 (ids ``r-<i>``) name exactly
        the records whose pool entries the detector flags offline, each once."""
        try:
            indexes = sorted(int(i.removeprefix("r-")) for i in alert_ids)
        except ValueError:
            return False
        expected = [i for i in range(n) if self.pool_flagged[i % len(self.pool)]]
        return indexes == expected

    def flagged_among(self, n: int) -> int:
        """Alerts expected when records 0..n-1 take pool entries i % len(pool)."""
        reps, rest = divmod(n, len(self.pool))
        return int(self.pool_flagged.sum()) * reps + int(self.pool_flagged[:rest].sum())


def _cached(path: Path) -> bool:
    stamp = path / "bench-cache.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("version") == CACHE_VERSION


def _stamp(path: Path) -> None:
    (path / "bench-cache.json").write_text(json.dumps({"version": CACHE_VERSION}) + "\n")


def _pool(x_clean: np.ndarray, size: int, decimals: int, seed: int) -> np.ndarray:
    """``size`` instances: clean rows, ``NOISY_FRACTION`` of them with heavy noise."""
    rng = np.random.default_rng(seed)
    rows = x_clean[rng.integers(0, len(x_clean), size)].astype(np.float32)
    noisy = rng.random(size) < NOISY_FRACTION
    rows[noisy] = np.clip(rows[noisy] + rng.normal(0, 0.35, rows[noisy].shape), 0, 1)
    return rows.round(decimals).astype(np.float32)


def _bodies(x: np.ndarray, decimals: int) -> list[bytes]:
    return [orjson.dumps(np.round(row.astype(np.float64), decimals).tolist()) for row in x]


def _with_flags(name: str, path: Path, x: np.ndarray, decimals: int) -> BenchDetector:
    from monitor import load_detector

    detector = load_detector(path)
    scores = np.asarray(detector.score(x, batch_size=512))
    return BenchDetector(
        name=name,
        path=path,
        input_shape=tuple(detector.input_shape),
        pool=_bodies(x, decimals),
        pool_flagged=scores > float(detector.threshold or np.inf),
        pool_x=x,
    )


def digits(cache: Path, rebuild: bool = False, pool_size: int = 4096) -> BenchDetector:
    """The demo digits detector, and a pool of digits test images (some corrupted)."""
    from monitor.detector.demo import build_demo_detector, load_digits_split

    path = cache / "digits-detector"
    if rebuild or not _cached(path):
        shutil.rmtree(path, ignore_errors=True)
        build_demo_detector(path, seed=0)
        _stamp(path)
    _x_train, _y_train, x_test, _y_test = load_digits_split(0)
    return _with_flags("digits", path, _pool(x_test, pool_size, 4, seed=1), 4)


def _synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32x32x3 images of 10 classes: a class colour and stripe frequency, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    grid = np.linspace(0, 1, 32, dtype=np.float32)
    colours = np.random.default_rng(99).random((10, 3), dtype=np.float32)
    stripes = np.sin(np.outer(y + 1, grid * np.pi))[:, :, None, None]  # (n, 32, 1, 1)
    x = 0.5 * colours[y][:, None, None, :] + 0.3 * stripes + 0.2
    x = x + rng.normal(0, 0.1, (n, 32, 32, 3))
    return np.clip(x, 0, 1).astype(np.float32), y


def cnn(cache: Path, rebuild: bool = False, pool_size: int = 1024) -> BenchDetector:
    """A small CNN on 32x32x3 and its distilled model, saved with ``save_detector``."""
    path = cache / "cnn-detector"
    x, _y = _synthetic_images(4000, seed=0)
    if rebuild or not _cached(path):
        shutil.rmtree(path, ignore_errors=True)
        _build_cnn(path, x[:3000], _y[:3000], x[3000:])
        _stamp(path)
    return _with_flags("cnn", path, _pool(x[3000:], pool_size, 3, seed=2), 3)


def _build_cnn(path: Path, x: np.ndarray, y: np.ndarray, x_holdout: np.ndarray) -> None:
    import keras

    from monitor import ModelDistillation, save_detector
    from monitor.detector.ensemble import distil

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    classifier = keras.Model(inputs, outputs, name="cnn_classifier")
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    classifier.fit(x, y, epochs=2, batch_size=64, verbose=0)
    detector = ModelDistillation(
        model=classifier, loss_type="xent", temperature=0.5, threshold=np.inf, data_type="image"
    )
    distil(detector, x, target=0, max_epochs=2, batch_size=64)  # fit's default members
    detector.infer_threshold(x_holdout, threshold_perc=95.0)
    save_detector(detector, path, name="bench-cnn", version="1")
