"""Tabular corruptions and scale-relative attacks: every change in the features' own scale,
taken from training statistics, seeded, growing with severity, shape-keeping and finite."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from monitor.corruptions import fgsm, pgd
from monitor.evaluation.harm import CorruptionSpec, corrupt, specs_for_kind
from monitor.tabular_corruptions import TABULAR, attack_scale, feature_stats

NAMES = sorted(TABULAR)


def features(n: int = 300, d: int = 13, seed: int = 0) -> np.ndarray:
    """Correlated features on wildly different scales, like raw tabular data."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    scales = np.logspace(-2, 3, d)
    return (z * scales + 10 * scales).astype(np.float32)


@pytest.fixture(scope="module")
def train_test() -> tuple[np.ndarray, np.ndarray]:
    x = features()
    return x[:200], x[200:]


@pytest.mark.parametrize("name", NAMES)
def test_a_corruption_keeps_shape_and_dtype_and_stays_finite(
    name: str, train_test: tuple[np.ndarray, np.ndarray]
) -> None:
    train, test = train_test
    stats = feature_stats(train)
    for severity in (1, 3, 5):
        out = TABULAR[name](test, severity, np.random.default_rng(0), stats)
        assert out.shape == test.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out))
        assert not np.array_equal(out, test)
    images = np.random.default_rng(1).random((20, 4, 4)).astype(np.float32)
    out = TABULAR[name](images, 3, np.random.default_rng(0), feature_stats(images))
    assert out.shape == (20, 4, 4)


@pytest.mark.parametrize("name", NAMES)
def test_a_corruption_is_in_each_features_own_scale(
    name: str, train_test: tuple[np.ndarray, np.ndarray]
) -> None:
    """Rescaling and shifting every feature (k * x + b, k > 0) before corrupting gives the
    same result as corrupting first: nothing depends on a feature's units."""
    train, test = (a.astype(np.float64) for a in train_test)
    k = np.linspace(0.5, 200.0, train.shape[1])
    b = np.linspace(-50.0, 50.0, train.shape[1])
    plain = TABULAR[name](test, 4, np.random.default_rng(3), feature_stats(train))
    scaled = TABULAR[name](k * test + b, 4, np.random.default_rng(3), feature_stats(k * train + b))
    np.testing.assert_allclose((scaled - b) / k, plain, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_a_corruption_grows_with_severity(
    name: str, train_test: tuple[np.ndarray, np.ndarray]
) -> None:
    train, test = train_test
    stats = feature_stats(train)
    distances = [
        float(
            np.mean(
                np.abs(TABULAR[name](test, s, np.random.default_rng(2), stats) - test) / stats.std
            )
        )
        for s in (1, 2, 3, 4, 5)
    ]
    assert all(a < b for a, b in itertools.pairwise(distances)), distances


@pytest.mark.parametrize("name", NAMES)
def test_a_corruption_is_seeded(name: str, train_test: tuple[np.ndarray, np.ndarray]) -> None:
    train, test = train_test
    stats = feature_stats(train)
    a, b, c = (TABULAR[name](test, 3, np.random.default_rng(s), stats) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_is_measured_in_training_standard_deviations(
    train_test: tuple[np.ndarray, np.ndarray],
) -> None:
    train, test = train_test
    stats = feature_stats(train)
    out = TABULAR["gaussian_noise"](
        np.repeat(test[:1], 5000, axis=0), 5, np.random.default_rng(0), stats
    )
    np.testing.assert_allclose(out.std(axis=0) / stats.std, 1.0, rtol=0.06)  # severity 5: 1 sd


def test_out_of_range_values_leave_the_training_range(
    train_test: tuple[np.ndarray, np.ndarray],
) -> None:
    train, test = train_test
    stats = feature_stats(train)
    out = TABULAR["out_of_range"](test, 1, np.random.default_rng(0), stats).astype(np.float64)
    changed = out != test
    assert np.all(changed.sum(axis=1) >= 1)  # at least one feature per row
    z_high = (out - stats.high) / stats.std
    z_low = (stats.low - out) / stats.std
    beyond = np.maximum(z_high, z_low)[changed]
    np.testing.assert_allclose(beyond, 0.25, atol=1e-4)  # severity 1: 0.25 sd past the edge


def test_dropout_sets_features_to_the_training_mean(
    train_test: tuple[np.ndarray, np.ndarray],
) -> None:
    train, test = train_test
    stats = feature_stats(train)
    out = TABULAR["feature_dropout"](test, 5, np.random.default_rng(0), stats)
    rows, cols = np.nonzero(out != test)
    np.testing.assert_allclose(out[rows, cols], stats.mean[cols].astype(np.float32), rtol=1e-6)
    assert np.all((out != test).sum(axis=1) == 8)  # 60% of 13 features, rounded up


def test_feature_stats_refuse_too_few_rows_and_treat_constant_features_as_unit_scale() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        feature_stats(np.zeros((1, 3)))
    stats = feature_stats(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert stats.std.tolist() == [1.0, 1.0] and stats.low.tolist() == [1.0, 5.0]


def test_a_tabular_spec_without_training_statistics_is_refused() -> None:
    spec = CorruptionSpec("feature_swap", "natural", 3, "tabular")
    with pytest.raises(ValueError, match="feature statistics of clean training data"):
        corrupt(spec, np.zeros((4, 3)), np.zeros(4, dtype=np.int64), None, 0)


def test_specs_for_kind_list_each_family_with_its_own_epsilons() -> None:
    tabular = specs_for_kind("tabular", [3, 5], quick=True)
    assert [s.label for s in tabular if s.kind == "attack"] == ["fgsm eps=0.25", "pgd eps=0.25"]
    assert {s.name for s in tabular if s.kind == "natural"} == set(TABULAR)
    assert all(s.family == "tabular" for s in tabular)
    image = specs_for_kind("image", [3])
    assert [s.level for s in image if s.name == "fgsm"] == [0.03, 0.06, 0.1]


# -- attacks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attack_setup(tiny_classifier: Any, tiny_data: tuple[np.ndarray, np.ndarray]) -> Any:
    x, y = tiny_data
    return tiny_classifier, x[400:460], y[400:460], attack_scale(feature_stats(x[:400]))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_move_each_feature_by_at_most_epsilon_of_its_spread(
    attack: str, attack_setup: Any
) -> None:
    model, x, y, scale = attack_setup
    if attack == "fgsm":
        adv = fgsm(model, x, y, 0.5, scale=scale, bounds=None)
    else:
        adv = pgd(model, x, y, 0.5, steps=5, seed=0, scale=scale, bounds=None)
    moved = np.abs(adv - x) / scale
    assert moved.max() <= 0.5 + 1e-4
    assert moved.max() > 0.45  # the ball is used, in units of each feature's spread
    assert adv.min() < 0.0 or adv.max() > 1.0  # no [0, 1] clipping of tabular inputs


def test_attacks_lower_the_classifiers_accuracy_more_at_larger_epsilon(attack_setup: Any) -> None:
    model, x, y, scale = attack_setup
    accuracy = [
        float(
            np.mean(
                np.asarray(model(fgsm(model, x, y, eps, scale=scale, bounds=None))).argmax(1) == y
            )
        )
        for eps in (0.1, 1.0, 3.0)
    ]
    assert accuracy[0] >= accuracy[1] >= accuracy[2] and accuracy[0] > accuracy[2]
