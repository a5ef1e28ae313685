"""Converting alibi-detect's legacy layout without executing pickled code.

The fixtures are written here with plain ``pickle`` (tests may; the package may not), in
the layout alibi-detect's legacy ``save_detector`` uses.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_models import write_legacy_alibi_dir

from monitor.detector.alibi_import import (
    DISTILLED_H5,
    STATE_FILE,
    import_alibi_detector,
    read_alibi_state,
    read_restricted_pickle,
)
from monitor.errors import DetectorFormatError, UnsafePickleError


class _RunsCommand:
    """Unpickling this runs a shell command: the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def legacy_models(tiny_classifier: Any, tiny_distilled: Any) -> tuple[Any, Any]:
    return tiny_classifier, tiny_distilled


def test_import_converts_a_legacy_detector(
    legacy_models: tuple[Any, Any], tmp_path: Path, tiny_data: Any
) -> None:
    from monitor import ModelDistillation, load_detector

    classifier, distilled = legacy_models
    src = write_legacy_alibi_dir(tmp_path / "alibi", classifier, distilled)
    x = tiny_data[0][:100]
    manifest = import_alibi_detector(src, tmp_path / "ours", name="legacy", reference_data=x)
    assert manifest.threshold == pytest.approx(0.375)
    assert (manifest.loss_type, manifest.temperature, manifest.data_type) == (
        "xent",
        0.5,
        "tabular",
    )
    assert len(manifest.reference_scores) == 100
    loaded = load_detector(tmp_path / "ours")
    expected = ModelDistillation(
        threshold=0.375,
        distilled_model=distilled,
        model=classifier,
        loss_type="xent",
        temperature=0.5,
    ).score(x)
    np.testing.assert_allclose(loaded.score(x), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_reader_reads_plain_state_in_any_protocol(tmp_path: Path, protocol: int) -> None:
    value = {
        "threshold": np.float32(1.25),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "dtype": np.dtype("float32"),
        "tags": {"a", "b"},
        "frozen": frozenset([1]),
        "nested": [1, 2.5, ("x", None, b"raw")],
    }
    path = tmp_path / "state.dill"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    assert read_restricted_pickle(path) == value


@pytest.mark.parametrize(
    "payload",
    [
        _RunsCommand("touch {marker}"),
        {"threshold": 1.0, "hidden": [_RunsCommand("touch {marker}")]},
    ],
    ids=["top-level", "nested"],
)
def test_malicious_pickle_is_refused_without_running(
    tmp_path: Path, payload: Any, legacy_models: tuple[Any, Any]
) -> None:
    marker = tmp_path / "pwned"

    def arm(obj: Any) -> Any:
        if isinstance(obj, _RunsCommand):
            return _RunsCommand(obj.command.format(marker=marker))
        if isinstance(obj, dict):
            return {k: arm(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [arm(v) for v in obj]
        return obj

    src = write_legacy_alibi_dir(tmp_path / "alibi", *legacy_models)
    (src / STATE_FILE).write_bytes(pickle.dumps(arm(payload)))
    with pytest.raises(UnsafePickleError, match=r"refusing to load posix\.system"):
        import_alibi_detector(src, tmp_path / "ours")
    assert not marker.exists(), "the pickled command ran"
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # GLOBAL builtins.eval, protocol 0
        b"c__builtin__\ngetattr\n(c__builtin__\nobject\nS'x'\ntR.",
        b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
        b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.",  # codec calls beyond latin1 bytes
        b"(i__main__\nEvil\n(dp0\nb.",  # INST opcode
    ],
    ids=["eval", "getattr", "numpy-load", "codec", "inst"],
)
def test_globals_outside_the_allow_list_are_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "evil.dill"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError):
        read_restricted_pickle(path)


def test_truncated_pickle_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.dill"
    path.write_bytes(pickle.dumps({"threshold": 1.0})[:-5])
    with pytest.raises(DetectorFormatError, match="not a readable pickle"):
        read_restricted_pickle(path)


def test_other_detector_kinds_are_refused(tmp_path: Path, legacy_models: tuple[Any, Any]) -> None:
    src = write_legacy_alibi_dir(tmp_path / "alibi", *legacy_models, meta={"name": "OutlierVAE"})
    with pytest.raises(DetectorFormatError, match="OutlierVAE detector, not ModelDistillation"):
        read_alibi_state(src)


def test_missing_pieces_are_named(tmp_path: Path, legacy_models: tuple[Any, Any]) -> None:
    src = write_legacy_alibi_dir(tmp_path / "alibi", *legacy_models)
    (src / DISTILLED_H5).unlink()
    with pytest.raises(DetectorFormatError, match=r"distilled_model\.h5: missing"):
        import_alibi_detector(src, tmp_path / "ours")
    (src / STATE_FILE).unlink()
    with pytest.raises(DetectorFormatError, match=r"ModelDistillation\.dill: missing"):
        import_alibi_detector(src, tmp_path / "ours")


def test_bad_state_values_are_refused(tmp_path: Path, legacy_models: tuple[Any, Any]) -> None:
    src = write_legacy_alibi_dir(
        tmp_path / "alibi",
        *legacy_models,
        state={"threshold": "high", "temperature": 1.0, "loss_type": "kld"},
    )
    with pytest.raises(DetectorFormatError, match="threshold is not a number"):
        import_alibi_detector(src, tmp_path / "ours")
