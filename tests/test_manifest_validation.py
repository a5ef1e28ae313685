"""Non-finite numbers are refused in detector manifests and when a detector is built.

A NaN threshold never flags, an infinite temperature or reference score poisons every
score or drift test: each must be a clear one-line error, not a silently blind detector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from monitor.detector.manifest import FORMAT_VERSION, MANIFEST, read_manifest
from monitor.errors import DetectorFormatError


def valid_manifest() -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": "tiny",
        "version": "1",
        "threshold": 0.25,
        "loss_type": "kld",
        "temperature": 0.5,
        "data_type": "tabular",
        "input_shape": [8],
        "input_dtype": "float32",
        "n_classes": 3,
        "reference_scores": [0.01, 0.02, 0.3],
        "package_version": "0",
        "tensorflow_version": "2",
        "keras_version": "3",
        "created_at": "2024-01-01T00:00:00+00:00",
        "files": {"model.keras": "0" * 64, "distilled_model.keras": "1" * 64},
    }


def write_manifest(directory: Path, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / MANIFEST).write_text(text)
    return directory


def refusal(directory: Path) -> str:
    with pytest.raises(DetectorFormatError) as info:
        read_manifest(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("threshold", math.nan, "threshold is nan"),
        ("threshold", math.inf, "threshold is inf"),
        ("threshold", -math.inf, "threshold is -inf"),
        ("temperature", math.inf, "temperature is inf"),
        ("reference_scores", [0.1, math.nan, 0.3], "reference_scores[1] is nan"),
        ("reference_scores", [math.inf], "reference_scores[0] is inf"),
        ("extra", {"calibration": [1.0, -math.inf]}, "extra.calibration[1] is -inf"),
    ],
)
def test_a_non_finite_number_anywhere_in_the_manifest_is_refused(
    tmp_path: Path, field: str, value: Any, where: str
) -> None:
    data = {**valid_manifest(), field: value}
    message = refusal(write_manifest(tmp_path, json.dumps(data)))
    assert f"invalid manifest: {where}; every number must be finite" in message


def test_a_number_too_large_for_a_float_is_refused_as_non_finite(tmp_path: Path) -> None:
    text = json.dumps(valid_manifest()).replace('"threshold": 0.25', '"threshold": 1e999')
    assert "threshold is inf" in refusal(write_manifest(tmp_path, text))


def test_an_integer_beyond_the_float_range_is_refused_not_a_crash(tmp_path: Path) -> None:
    text = json.dumps({**valid_manifest(), "reference_scores": [10**400]})
    message = refusal(write_manifest(tmp_path, text))
    assert "reference_scores[0] is an integer beyond the float range" in message


def test_a_manifest_nested_too_deeply_to_parse_is_a_format_error(tmp_path: Path) -> None:
    text = json.dumps(valid_manifest())[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "unreadable manifest" in refusal(write_manifest(tmp_path, text))


# -- the detector itself -----------------------------------------------------------------
@pytest.fixture
def build(tiny_classifier: Any, tiny_distilled: Any) -> Any:
    from monitor import ModelDistillation

    def make(**kw: Any) -> ModelDistillation:
        return ModelDistillation(model=tiny_classifier, distilled_model=tiny_distilled, **kw)

    return make


@pytest.mark.parametrize("threshold", [math.nan, -math.inf])
def test_a_nan_or_minus_infinite_threshold_is_refused_when_building(
    build: Any, threshold: float
) -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        build(threshold=threshold)


@pytest.mark.parametrize("margin", [math.nan, math.inf, -math.inf])
def test_infer_threshold_refuses_a_non_finite_margin(
    build: Any, tiny_data: Any, margin: float
) -> None:
    detector = build(threshold=1.0)
    with pytest.raises(ValueError, match="margin must be a finite number"):
        detector.infer_threshold(tiny_data[0][:50], margin=margin)
    assert detector.threshold == 1.0
