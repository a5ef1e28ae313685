"""The benchmark case registry: names, shapes, kinds, and seeded, reproducible splits."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.evaluation.cases import IMAGE, TABULAR, case_names, get_case, load_case, load_split
from monitor.evaluation.defaults import CASES, DEFAULT_CASE

SHAPES = {
    "digits": ((8, 8), 10, 1797),
    "digits_cnn": ((8, 8, 1), 10, 1797),
    "wine": ((13,), 3, 178),
    "breast_cancer": ((30,), 2, 569),
}


def test_the_registry_names_every_case_the_help_lists_with_the_demo_first() -> None:
    assert case_names() == tuple(CASES)
    assert case_names()[0] == DEFAULT_CASE == "digits"
    assert set(case_names()) == set(SHAPES)


def test_an_unknown_case_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown case 'iris'; choose from digits, digits_cnn"):
        get_case("iris")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_split_has_the_case_shapes_and_labels(name: str) -> None:
    shape, classes, rows = SHAPES[name]
    split = load_split(name, 0)
    assert split.x_train.shape[1:] == shape and split.x_test.shape[1:] == shape
    assert len(split.x_train) + len(split.x_test) == rows
    assert len(split.y_train) == len(split.x_train) and len(split.y_test) == len(split.x_test)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert set(np.unique(split.y_test)) == set(range(classes))  # stratified: every class
    assert np.all(np.isfinite(split.x_train)) and np.all(np.isfinite(split.x_test))
    if get_case(name).kind == IMAGE:
        assert split.x_train.min() >= 0.0 and split.x_train.max() <= 1.0


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_split_is_the_same_for_a_seed_and_differs_between_seeds(name: str) -> None:
    a, b, other = load_split(name, 1), load_split(name, 1), load_split(name, 2)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.x_test.shape == other.x_test.shape
    assert not np.array_equal(a.x_test, other.x_test)


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_tabular_features_are_standardised_with_the_training_statistics(name: str) -> None:
    assert get_case(name).kind == TABULAR
    split = load_split(name, 0)
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(split.x_train.std(axis=0), 1.0, atol=1e-4)
    # The test split went through the same transform, not one fitted on itself.
    assert np.abs(split.x_test.mean(axis=0)).max() > 0.01


def test_load_case_trains_a_classifier_that_fits_the_case() -> None:
    case = load_case("wine", 0)
    assert (case.name, case.seed, case.kind) == ("wine", 0, TABULAR)
    probs = np.asarray(case.classifier(case.x_test))
    assert probs.shape == (len(case.x_test), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(probs.argmax(axis=1) == case.y_test) > 0.85
    stats = case.feature_stats()
    assert stats is not None and stats.features == 13
    np.testing.assert_allclose(stats.mean, case.x_train.mean(axis=0), atol=1e-6)
