"""Natural corruptions, attacks' contract, and the harmful/harmless split."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.corruptions import NATURAL, harm_split


def test_harm_split_follows_the_method_document() -> None:
    y = np.array([0, 1, 2, 3])
    clean = np.array([0, 1, 2, 0])  # last one already wrong on clean data
    corrupt = np.array([0, 2, 2, 3])
    harmful, harmless = harm_split(y, clean, corrupt)
    assert harmful.tolist() == [False, True, False, False]
    assert harmless.tolist() == [True, False, True, False]


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_natural_corruptions_stay_in_range_and_grow_with_severity(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8)).astype(np.float32)
    distances = []
    for severity in (1, 3, 5):
        out = NATURAL[name](x, severity, np.random.default_rng(1))
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        distances.append(float(np.abs(out - x).mean()))
    assert distances[0] < distances[1] < distances[2]


def test_corruptions_are_reproducible_with_a_seed() -> None:
    x = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    a = NATURAL["gaussian_noise"](x, 3, np.random.default_rng(5))
    b = NATURAL["gaussian_noise"](x, 3, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_severity_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="severity"):
        NATURAL["blur"](np.zeros((1, 8, 8), np.float32), 6, np.random.default_rng(0))
