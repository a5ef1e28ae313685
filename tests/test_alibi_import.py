"""Converting alibi-detect's legacy layout without executing pickled code.

The fixtures are written here with plain ``pickle`` (tests may; the package may not), in
the layout alibi-detect's legacy ``save_detector`` uses. Hostile files that would crash or
stall a reader are read in a child process, so the test run survives the reader failing.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_models import write_legacy_alibi_dir

from monitor.detector.alibi_import import (
    DISTILLED_H5,
    META_FILE,
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


# -- hostile files: crafted numpy state, huge scalars, shared parts, odd files ----------------

REPO = Path(__file__).resolve().parents[1]
NUMPY_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar constructor, as pickles name it
SLOWER_THAN_TRIVIAL = 20  # a hostile file may take this many times a trivial run's wall time


class _Reduces:
    """Pickles as the given reduce tuple: writes what a hostile file would hold."""

    def __init__(self, *reduce: Any) -> None:
        self.reduce = reduce

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reduce


def _dtype(spec: str, state: tuple[Any, ...] | None = None) -> _Reduces:
    """``numpy.dtype(spec, False, True)`` as numpy pickles it, with any state we like."""
    if state is None:
        return _Reduces(np.dtype, (spec, False, True))
    return _Reduces(np.dtype, (spec, False, True), state)


def _scalar_state(dtype: _Reduces, *data: bytes) -> bytes:
    return pickle.dumps({"threshold": _Reduces(NUMPY_SCALAR, (dtype, *data))})


def _object_flagged_void() -> bytes:
    """A void dtype whose flags claim it holds objects: numpy follows its bytes as pointers."""
    return _scalar_state(_dtype("V8", (3, "|", None, None, None, 8, 1, 33)), b"A" * 8)


def _float_with_names_but_no_fields() -> bytes:
    state = (3, "<", None, ("a", "b"), {"a": (np.dtype("f8"), 0)}, -1, -1, 0)
    return _scalar_state(_dtype("f8", state), bytes(8))


def _void_scalar_of_100_mb() -> bytes:
    """numpy's scalar() without data zero-fills the dtype's size: 100 MB from ~100 bytes."""
    return _scalar_state(_dtype("V100000000"))


def _shared_nested_lists() -> bytes:
    """18 levels of four references to one list: 4**18 paths for a walk that follows them."""
    nested: list[Any] = []
    for _ in range(18):
        nested = [nested] * 4
    return pickle.dumps({"threshold": 1.0, "x": nested})


def _key_of_shared_tuples() -> bytes:
    """A dict key of tuples sharing their halves: hashing it walks 2**60 paths.

    Assembled by hand, since building the dict here would hash the key.
    """
    ops = [b"\x80\x04}", b")\x940"]  # PROTO 4, EMPTY_DICT; EMPTY_TUPLE, MEMOIZE, POP
    ops += [b"h%ch%c\x86\x940" % (i, i) for i in range(60)]  # memo i+1 = (memo i, memo i)
    ops.append(b"h<K\x01s.")  # BINGET 60, BININT1 1, SETITEM, STOP
    return b"".join(ops)


def _larger_than_a_real_save() -> bytes:
    """100 kB: a real save is a few hundred bytes, and all a reader does grows with the size."""
    return pickle.dumps({"threshold": 1.0, "padding": "x" * 100_000})


def _write(make: Callable[[], bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(make())

    return write


HOSTILE_STATES: dict[str, tuple[Callable[[Path], None], str]] = {
    "object-flagged-void-dtype": (_write(_object_flagged_void), "numpy dtype V8"),
    "crafted-float-dtype-state": (_write(_float_with_names_but_no_fields), "crafted state"),
    "void-scalar-of-100-mb": (_write(_void_scalar_of_100_mb), "numpy dtype V100000000"),
    "shared-nested-lists": (_write(_shared_nested_lists), "appears twice"),
    "key-of-shared-tuples": (_write(_key_of_shared_tuples), "as a dict key"),
    "larger-than-a-real-save": (_write(_larger_than_a_real_save), "too large"),
    "fifo-that-never-ends": (os.mkfifo, "not a regular file"),
}

_READ_IN_CHILD = """
import resource, sys
from monitor.detector.alibi_import import read_restricted_pickle
from monitor.errors import MonitorError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_restricted_pickle(sys.argv[1])
    print("read")
except MonitorError as exc:
    print(f"refused: {exc}")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _run_timed(
    argv: list[str], limit: float | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``argv`` from the repository; fail the test if it outlives ``limit`` seconds."""
    start = time.perf_counter()
    done: subprocess.CompletedProcess[str] | None
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        done = None  # failed below, outside the handler, without the timeout's traceback
    if done is None:
        pytest.fail(f"still running after {limit:.1f} s, {SLOWER_THAN_TRIVIAL}x a trivial run")
    return time.perf_counter() - start, done


def _read_in_child(path: Path, limit: float | None = None) -> tuple[float, str, int]:
    """(wall seconds, first output line, growth of peak RSS in KiB) of a child's read."""
    seconds, done = _run_timed([sys.executable, "-c", _READ_IN_CHILD, str(path)], limit)
    assert done.returncode == 0, done.stderr
    first, growth = done.stdout.splitlines()
    return seconds, first, int(growth)


@pytest.fixture(scope="module")
def trivial_read_seconds(tmp_path_factory: pytest.TempPathFactory) -> float:
    path = tmp_path_factory.mktemp("trivial") / STATE_FILE
    path.write_bytes(pickle.dumps({"threshold": np.float64(0.5), "loss_type": "kld"}))
    return max(_read_in_child(path)[0] for _ in range(3))


def _state_dir(root: Path, write_state: Callable[[Path], None]) -> Path:
    root.mkdir()
    (root / META_FILE).write_bytes(pickle.dumps({"name": "ModelDistillation"}))
    write_state(root / STATE_FILE)
    return root


def _import_alibi(
    src: Path, limit: float | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    argv = [sys.executable, "-m", "monitor", "import-alibi", str(src), str(src.parent / "ours")]
    return _run_timed(argv, limit)


@pytest.fixture(scope="module")
def trivial_cli_seconds(tmp_path_factory: pytest.TempPathFactory) -> float:
    src = _state_dir(tmp_path_factory.mktemp("cli") / "alibi", _write(lambda: b"cposix\nsystem\n."))
    return max(_import_alibi(src)[0] for _ in range(3))


@pytest.mark.parametrize(
    "state",
    [
        (3, "<", None, ("a", "b"), {"a": (np.dtype("f8"), 0)}, -1, -1, 0),
        (3, "<", None, None, None, -1, -1, 33),
        (3, "<", None, None, None, 1 << 40, 1 << 40, 0),
        (3, "<", None, None, None, -1, -1, False),
    ],
    ids=["names-without-fields", "object-flags", "item-size", "flags-of-another-type"],
)
def test_crafted_dtype_states_are_refused(tmp_path: Path, state: tuple[Any, ...]) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(_scalar_state(_dtype("f8", state), bytes(8)))
    with pytest.raises(UnsafePickleError, match="refusing a crafted state for numpy dtype f8"):
        read_restricted_pickle(path)


@pytest.mark.parametrize(
    ("value", "spec"),
    [(np.str_("x" * 1000), "U1000"), (np.complex128(1j), "c16"), (np.datetime64(0, "s"), "M8")],
    ids=["long-str", "complex", "datetime"],
)
def test_numpy_scalars_beyond_numbers_and_short_strings_are_refused(
    tmp_path: Path, value: np.generic, spec: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps({"threshold": value}))
    with pytest.raises(UnsafePickleError, match=f"refusing numpy dtype {spec}"):
        read_restricted_pickle(path)


def test_numpy_scalars_from_a_big_endian_machine_are_read(tmp_path: Path) -> None:
    big_endian = _dtype("f8", (3, ">", None, None, None, -1, -1, 0))
    path = tmp_path / STATE_FILE
    path.write_bytes(_scalar_state(big_endian, struct.pack(">d", 0.375)))
    assert read_restricted_pickle(path) == {"threshold": 0.375}


def test_a_void_scalar_of_100_mb_is_refused_without_allocating_it(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(_void_scalar_of_100_mb())
    _, outcome, peak_growth_kib = _read_in_child(path)
    assert peak_growth_kib < 50_000, f"peak RSS grew {peak_growth_kib} KiB: {outcome}"
    assert outcome.startswith("refused:") and "numpy dtype V100000000" in outcome


@pytest.mark.parametrize(
    ("make", "reason"),
    [(_shared_nested_lists, "appears twice"), (_key_of_shared_tuples, "as a dict key")],
    ids=["shared-nested-lists", "key-of-shared-tuples"],
)
def test_shared_parts_are_refused_as_fast_as_a_trivial_read(
    tmp_path: Path, trivial_read_seconds: float, make: Callable[[], bytes], reason: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(make())
    _, outcome, _ = _read_in_child(path, limit=SLOWER_THAN_TRIVIAL * trivial_read_seconds)
    assert outcome.startswith("refused:") and reason in outcome


def _cyclic_state() -> dict[str, Any]:
    loop: list[Any] = []
    loop.append(loop)
    return {"threshold": 1.0, "loop": loop}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_cyclic_state, "appears twice"),
        (lambda: {"threshold": 1.0, "tags": frozenset({("a", "b")})}, "as a dict key or set"),
        (lambda: {("threshold",): 1.0}, "as a dict key or set"),
        (lambda: {"threshold": 1.0, "x": ["one string"] * 20_000}, "more than 10000 values"),
    ],
    ids=["cycle", "tuple-in-a-set", "tuple-as-a-key", "too-many-values"],
)
def test_only_plain_trees_are_read(
    tmp_path: Path, make: Callable[[], dict[Any, Any]], reason: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps(make()))
    with pytest.raises(UnsafePickleError, match=reason):
        read_restricted_pickle(path)


def test_files_larger_than_a_real_save_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(_larger_than_a_real_save())
    with pytest.raises(DetectorFormatError, match="too large for a detector state file"):
        read_restricted_pickle(path)


@pytest.mark.parametrize("case", list(HOSTILE_STATES))
def test_import_alibi_refuses_each_hostile_state_file_in_one_line(
    tmp_path: Path, trivial_cli_seconds: float, case: str
) -> None:
    write_state, reason = HOSTILE_STATES[case]
    src = _state_dir(tmp_path / "alibi", write_state)
    _, done = _import_alibi(src, limit=SLOWER_THAN_TRIVIAL * trivial_cli_seconds)
    assert done.returncode == 1, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("distillation-monitor: error: ") and STATE_FILE in line
    assert reason in line
