"""save_detector / load_detector / read_manifest: round trips and refused directories."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.detector.persistence import (
    DISTILLED_FILE,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FILE,
    read_manifest,
)
from monitor.errors import DetectorError, DetectorFormatError


@pytest.fixture
def detector_copy(saved_detector_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the saved tiny detector that a test may damage."""
    return Path(shutil.copytree(saved_detector_dir, tmp_path / "det"))


def _edit_manifest(path: Path, **changes: Any) -> None:
    data = json.loads((path / MANIFEST).read_text())
    data.update(changes)
    (path / MANIFEST).write_text(json.dumps(data))


def test_round_trip_gives_identical_scores(
    fitted_detector: Any, saved_detector_dir: Path, tiny_data: Any
) -> None:
    from monitor import load_detector

    loaded = load_detector(saved_detector_dir)
    x = tiny_data[0]
    np.testing.assert_array_equal(loaded.score(x), fitted_detector.score(x))
    y = fitted_detector.classifier_outputs(x)
    np.testing.assert_array_equal(loaded.score_outputs(y, x), fitted_detector.score_outputs(y, x))
    assert loaded.threshold == fitted_detector.threshold
    assert loaded.loss_type == fitted_detector.loss_type
    assert loaded.temperature == fitted_detector.temperature
    assert loaded.data_type == "tabular"
    assert loaded.reference_scores == fitted_detector.reference_scores
    assert loaded.manifest is not None and loaded.manifest.name == "tiny"


def test_manifest_describes_the_detector(fitted_detector: Any, saved_detector_dir: Path) -> None:
    m = read_manifest(saved_detector_dir)
    assert m.format_version == FORMAT_VERSION
    assert (m.name, m.version) == ("tiny", "7")
    assert m.threshold == fitted_detector.threshold
    assert (m.loss_type, m.temperature, m.data_type) == ("kld", 0.5, "tabular")
    assert (m.input_shape, m.input_dtype, m.n_classes) == ((8,), "float32", 3)
    assert m.reference_scores == fitted_detector.reference_scores
    assert len(m.reference_scores) == 200
    assert m.package_version and m.tensorflow_version and m.keras_version and m.created_at
    raw = (saved_detector_dir / MANIFEST).read_bytes()
    assert m.sha256 == hashlib.sha256(raw).hexdigest()
    assert read_manifest(saved_detector_dir / MANIFEST) == m
    d = m.to_dict()
    assert d["input_shape"] == [8] and d["sha256"] == m.sha256
    json.dumps(d)  # plain JSON types only


def test_read_manifest_does_not_import_tensorflow(saved_detector_dir: Path) -> None:
    code = (
        "import sys\n"
        "from monitor.detector.persistence import read_manifest\n"
        f"m = read_manifest({str(saved_detector_dir)!r})\n"
        "assert m.n_classes == 3\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_save_replaces_an_existing_detector_atomically(
    fitted_detector: Any, tmp_path: Path
) -> None:
    from monitor import save_detector

    target = tmp_path / "det"
    first = save_detector(fitted_detector, target, version="1")
    second = save_detector(fitted_detector, target, version="2")
    assert read_manifest(target).version == "2"
    assert second.sha256 != first.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"], "no temporary leftovers"


def test_save_refuses_to_overwrite_a_foreign_directory(
    fitted_detector: Any, tmp_path: Path
) -> None:
    from monitor import save_detector

    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete")
    with pytest.raises(DetectorError, match="refusing to overwrite"):
        save_detector(fitted_detector, target)
    assert (target / "thesis.txt").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


class TestRefusedDirectories:
    def _load(self, path: Path) -> Any:
        from monitor import load_detector

        return load_detector(path)

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(DetectorFormatError, match="no such detector directory"):
            self._load(tmp_path / "nope")

    def test_missing_manifest(self, detector_copy: Path) -> None:
        (detector_copy / MANIFEST).unlink()
        with pytest.raises(DetectorFormatError, match=r"manifest\.json is missing"):
            self._load(detector_copy)

    def test_alibi_directory_gets_a_hint(self, tmp_path: Path) -> None:
        (tmp_path / "meta.dill").write_bytes(b"")
        with pytest.raises(DetectorFormatError, match="import-alibi"):
            read_manifest(tmp_path)

    def test_unknown_format_version(self, detector_copy: Path) -> None:
        _edit_manifest(detector_copy, format_version=99)
        with pytest.raises(DetectorFormatError, match="format version 99 is not supported"):
            self._load(detector_copy)

    def test_corrupt_manifest_json(self, detector_copy: Path) -> None:
        (detector_copy / MANIFEST).write_text('{"format_version": 1, ')
        with pytest.raises(DetectorFormatError, match="unreadable manifest"):
            self._load(detector_copy)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"threshold": "high"}, "'threshold' has the wrong type"),
            ({"input_shape": [0]}, "input_shape"),
            ({"loss_type": "mse"}, "unknown loss_type"),
            ({"n_classes": True}, "'n_classes' has the wrong type"),
            ({"reference_scores": ["x"]}, "reference_scores"),
        ],
    )
    def test_invalid_manifest_fields(
        self, detector_copy: Path, change: dict[str, Any], message: str
    ) -> None:
        _edit_manifest(detector_copy, **change)
        with pytest.raises(DetectorFormatError, match=message):
            read_manifest(detector_copy)

    def test_missing_field(self, detector_copy: Path) -> None:
        data = json.loads((detector_copy / MANIFEST).read_text())
        del data["loss_type"]
        (detector_copy / MANIFEST).write_text(json.dumps(data))
        with pytest.raises(DetectorFormatError, match="'loss_type' is missing"):
            read_manifest(detector_copy)

    @pytest.mark.parametrize("file", [MODEL_FILE, DISTILLED_FILE])
    def test_missing_model_file(self, detector_copy: Path, file: str) -> None:
        (detector_copy / file).unlink()
        with pytest.raises(DetectorFormatError, match=f"{file} is missing"):
            self._load(detector_copy)

    def test_changed_model_file_fails_the_hash_check(self, detector_copy: Path) -> None:
        with (detector_copy / DISTILLED_FILE).open("ab") as fh:
            fh.write(b"tampered")
        with pytest.raises(DetectorFormatError, match="sha256 does not match"):
            self._load(detector_copy)

    def test_corrupt_model_file_is_a_clear_error(self, detector_copy: Path) -> None:
        garbage = b"PK\x03\x04 this is not a keras archive"
        (detector_copy / MODEL_FILE).write_bytes(garbage)
        _edit_manifest(
            detector_copy,
            files={
                **json.loads((detector_copy / MANIFEST).read_text())["files"],
                MODEL_FILE: hashlib.sha256(garbage).hexdigest(),
            },
        )
        with pytest.raises(DetectorFormatError, match="cannot load the model"):
            self._load(detector_copy)

    def test_model_shapes_must_fit_the_manifest(self, detector_copy: Path) -> None:
        _edit_manifest(detector_copy, input_shape=[4, 2])
        with pytest.raises(DetectorFormatError, match=r"takes \(8,\).*manifest says \(4, 2\)"):
            self._load(detector_copy)
        _edit_manifest(detector_copy, input_shape=[8], n_classes=4)
        with pytest.raises(DetectorFormatError, match="outputs 3 classes"):
            self._load(detector_copy)

    def test_lambda_layers_are_refused_by_safe_mode(
        self, detector_copy: Path, tmp_path: Path
    ) -> None:
        import keras

        inputs = keras.Input(shape=(8,))
        hidden = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
        outputs = keras.layers.Dense(3, activation="softmax")(hidden)
        evil = keras.Model(inputs, outputs)
        evil.save(tmp_path / "evil.keras")
        raw = (tmp_path / "evil.keras").read_bytes()
        (detector_copy / DISTILLED_FILE).write_bytes(raw)
        files = json.loads((detector_copy / MANIFEST).read_text())["files"]
        _edit_manifest(
            detector_copy, files={**files, DISTILLED_FILE: hashlib.sha256(raw).hexdigest()}
        )
        with pytest.raises(DetectorFormatError, match="cannot load the model"):
            self._load(detector_copy)
