"""The benchmark cases ``evaluate --case`` runs by name: data, classifier and data kind.

Every case ships offline (scikit-learn's bundled data sets, no download) and is seeded:
the same name and seed give the same split and, on the same machine, the same trained
classifier. Each seed draws its own stratified train/test split, so seeds vary the data
as well as the training.

- ``digits``: the demo. 8x8 images in [0, 1], shape (n, 8, 8); the demo's MLP classifier
  (``monitor.detector.demo``), unchanged so its numbers stay comparable.
- ``digits_cnn``: the same images as (n, 8, 8, 1) with a small CNN classifier, a second
  model family on the same data.
- ``wine``: 178 rows, 13 features, 3 classes; ``breast_cancer``: 569 rows, 30 features,
  2 classes. Tabular, standardised with the training split's mean and standard
  deviation (the test split is transformed with the same statistics); a small MLP.

Use from Python::

    from monitor.evaluation.cases import load_case
    case = load_case("wine", seed=0)  # CaseData: splits, trained classifier, kind
    stats = case.feature_stats()  # tabular: what harm.corrupt(..., stats=stats) needs

``load_split`` gives the data alone, without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.evaluation.defaults import CASES
from monitor.tabular_corruptions import FeatureStats, feature_stats

if TYPE_CHECKING:
    import keras

IMAGE = "image"
TABULAR = "tabular"


@dataclass(frozen=True)
class Split:
    """A seeded, stratified train/test split; labels are int64 class indices."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class CaseData:
    """What a case gives for one seed: its split, the trained classifier and the data kind."""

    name: str
    seed: int
    kind: str  # "image" (values in [0, 1]) or "tabular" (standardised features)
    split: Split
    classifier: keras.Model

    @property
    def x_train(self) -> np.ndarray:
        return self.split.x_train

    @property
    def y_train(self) -> np.ndarray:
        return self.split.y_train

    @property
    def x_test(self) -> np.ndarray:
        return self.split.x_test

    @property
    def y_test(self) -> np.ndarray:
        return self.split.y_test

    def feature_stats(self) -> FeatureStats | None:
        """The scale the tabular corruptions and attacks need (``harm.corrupt(...,
        stats=)``): statistics of the training split; None for images."""
        return feature_stats(self.x_train) if self.kind == TABULAR else None


@dataclass(frozen=True)
class BenchmarkCase:
    name: str
    kind: str
    description: str
    load: Callable[[int], Split]
    train: Callable[[np.ndarray, np.ndarray, int], keras.Model]


# -- data ----------------------------------------------------------------------------------

TABULAR_TEST_FRACTION = {"wine": 0.4, "breast_cancer": 0.3}


def _digits_split(seed: int) -> Split:
    from monitor.detector.demo import load_digits_split

    return Split(*load_digits_split(seed))


def _digits_channel_split(seed: int) -> Split:
    s = _digits_split(seed)
    return Split(s.x_train[..., None], s.y_train, s.x_test[..., None], s.y_test)


def _tabular_split(name: str, seed: int) -> Split:
    """Stratified split; features standardised with the training split's statistics."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch: Any = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TABULAR_TEST_FRACTION[name], stratify=y, random_state=seed
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return Split(
        ((x_train - mean) / std).astype(np.float32),
        y_train,
        ((x_test - mean) / std).astype(np.float32),
        y_test,
    )


# -- classifiers ---------------------------------------------------------------------------


def _compile_and_fit(
    model: Any, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float
) -> Any:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _train_digits_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> keras.Model:
    from monitor.detector.demo import train_digits_classifier

    model: keras.Model = train_digits_classifier(x, y, seed=seed)
    return model


def train_digits_cnn(x: np.ndarray, y: np.ndarray, seed: int) -> keras.Model:
    """Conv(16) -> pool -> Conv(32) -> Flatten -> Dense(10, softmax), Adam, 30 epochs."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=x.shape[1:], name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="digits_cnn_classifier")
    return _compile_and_fit(model, x, y, epochs=30, learning_rate=1e-3)


def train_tabular_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> keras.Model:
    """Dense(32, relu) -> Dense(classes, softmax) on standardised features, Adam, 50 epochs."""
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = int(np.max(y)) + 1
    inputs = keras.Input(shape=x.shape[1:], name="features")
    h = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="tabular_classifier")
    return _compile_and_fit(model, x, y, epochs=50, learning_rate=3e-3)


# -- the registry --------------------------------------------------------------------------

REGISTRY: dict[str, BenchmarkCase] = {
    "digits": BenchmarkCase("digits", IMAGE, CASES["digits"], _digits_split, _train_digits_mlp),
    "digits_cnn": BenchmarkCase(
        "digits_cnn", IMAGE, CASES["digits_cnn"], _digits_channel_split, train_digits_cnn
    ),
    "wine": BenchmarkCase(
        "wine", TABULAR, CASES["wine"], lambda s: _tabular_split("wine", s), train_tabular_mlp
    ),
    "breast_cancer": BenchmarkCase(
        "breast_cancer",
        TABULAR,
        CASES["breast_cancer"],
        lambda s: _tabular_split("breast_cancer", s),
        train_tabular_mlp,
    ),
}


def case_names() -> tuple[str, ...]:
    """Every case name, the default (the digits demo) first."""
    return tuple(REGISTRY)


def get_case(name: str) -> BenchmarkCase:
    """The case called ``name``; a ValueError lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown case {name!r}; choose from {', '.join(REGISTRY)}") from None


def load_split(name: str, seed: int) -> Split:
    """The seeded train/test split of case ``name`` (no TensorFlow needed)."""
    return get_case(name).load(seed)


def load_case(name: str, seed: int) -> CaseData:
    """Case ``name`` for ``seed``: its split, a classifier trained on the training split
    (seeded with ``seed``) and the data kind ("image" or "tabular")."""
    case = get_case(name)
    split = case.load(seed)
    classifier = case.train(split.x_train, split.y_train, seed)
    return CaseData(name=name, seed=seed, kind=case.kind, split=split, classifier=classifier)
