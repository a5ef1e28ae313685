"""Loading numeric arrays for the CLI: formats, keys, reshaping and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.datafiles import fit_to_shape, load_array, load_npz
from monitor.errors import DataFileError

X = np.arange(24, dtype=np.float32).reshape(6, 4) / 7


def test_npy_round_trip(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    np.testing.assert_array_equal(load_array(tmp_path / "x.npy"), X)


def test_npz_picks_the_only_array_or_x_or_the_given_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", features=X)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), X)
    np.savez(tmp_path / "xy.npz", X=X, y=np.arange(6))
    np.testing.assert_array_equal(load_array(tmp_path / "xy.npz"), X)
    np.testing.assert_array_equal(load_array(tmp_path / "xy.npz", key="y"), np.arange(6))
    assert set(load_npz(tmp_path / "xy.npz")) == {"X", "y"}
    np.savez(tmp_path / "ab.npz", a=X, b=X)
    with pytest.raises(DataFileError, match="holds a, b; say which"):
        load_array(tmp_path / "ab.npz")
    with pytest.raises(DataFileError, match="no array 'c'"):
        load_array(tmp_path / "ab.npz", key="c")


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",")
    np.testing.assert_allclose(load_array(tmp_path / "plain.csv"), X, rtol=1e-6)
    np.savetxt(tmp_path / "header.csv", X, delimiter=",", header="a,b,c,d", comments="")
    np.testing.assert_allclose(load_array(tmp_path / "header.csv"), X, rtol=1e-6)


def test_non_numeric_csv_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    with pytest.raises(DataFileError, match="not a numeric CSV"):
        load_array(tmp_path / "bad.csv")


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match="Python objects"):
        load_array(tmp_path / "obj.npy")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npy", None, "no such file"),
        ("x.txt", b"1,2", "unsupported file type"),
        ("broken.npy", b"\x93NUMPY garbage", "unreadable .npy"),
        ("broken.npz", b"PK not a zip", "unreadable .npz"),
    ],
)
def test_unreadable_files_are_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataFileError, match=message) as info:
        load_array(tmp_path / name)
    assert "\n" not in str(info.value)


def test_strings_are_not_numbers(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DataFileError, match="not numbers"):
        load_array(tmp_path / "s.npy")


def test_flat_rows_are_reshaped_to_the_detector_input() -> None:
    flat = np.zeros((3, 64), np.float32)
    assert fit_to_shape(flat, (8, 8)).shape == (3, 8, 8)
    assert fit_to_shape(np.zeros((3, 8, 8)), (8, 8)).shape == (3, 8, 8)
    with pytest.raises(DataFileError, match=r"expects \(8, 8\)"):
        fit_to_shape(np.zeros((3, 63)), (8, 8))
