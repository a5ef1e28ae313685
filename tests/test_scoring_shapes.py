"""Batches are scored in a handful of shapes, with the scores of their own rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.stream.scoring import DetectorHandle, padded_rows


def test_any_number_of_rows_is_scored_in_one_of_a_few_shapes() -> None:
    shapes = {padded_rows(n, 2048) % 2048 or 2048 for n in range(1, 10_000)}
    assert len(shapes) <= 20
    for n in range(1, 5000):
        padded = padded_rows(n, 2048)
        assert 0 <= padded - n <= max(7, (n % 2048) // 2), "at most half again the rest"


@pytest.mark.parametrize("rows", [1, 5, 9, 300, 77])
def test_padding_changes_no_score_and_returns_one_per_row(
    saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray], rows: int
) -> None:
    handle = DetectorHandle(saved_detector_dir, 64)
    x = np.ascontiguousarray(tiny_data[0][:rows], dtype=np.float32)
    scored = handle.score(x, None)
    alone = handle.detector.score_classes(x, batch_size=64)
    assert len(scored.scores) == rows
    np.testing.assert_allclose(scored.scores, alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored.classifier_class, alone[1])
    np.testing.assert_array_equal(scored.distilled_class, alone[2])


def test_padding_keeps_logged_outputs_valid_and_their_scores(
    saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray]
) -> None:
    """The classifier's logged outputs are checked to be distributions: padding rows
    must be too, or a batch of 5 rows scored with its outputs failed whole."""
    handle = DetectorHandle(saved_detector_dir, 64)
    x = np.ascontiguousarray(tiny_data[0][:5], dtype=np.float32)
    y = np.asarray(handle.detector.model(x), dtype=np.float32)
    scored = handle.score(x, y)
    alone = handle.detector.score_classes(x, y, batch_size=64)
    np.testing.assert_allclose(scored.scores, alone[0], rtol=1e-5, atol=1e-6)
