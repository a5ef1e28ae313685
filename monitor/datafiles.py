"""Numeric arrays from ``.npy``, ``.npz`` and ``.csv`` files, with one-line errors.

Never unpickles: ``.npy``/``.npz`` files holding Python objects are refused.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from monitor.errors import DataFileError

SUFFIXES = (".npy", ".npz", ".csv")
# Keys tried, in order, when a .npz file holds several arrays and none is named.
NPZ_DATA_KEYS = ("X", "x", "data", "instances")


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: no such file")
    if p.suffix.lower() not in SUFFIXES:
        raise DataFileError(f"{p}: unsupported file type (use {', '.join(SUFFIXES)})")
    return p


def _numeric(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise DataFileError(f"{where}: holds {arr.dtype} values, not numbers")
    return arr


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array in a ``.npz`` file, by name."""
    p = _existing(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: _numeric(data[k], f"{p}[{k}]") for k in data.files}
    except DataFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFileError(f"{p}: unreadable .npz file: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_csv(p: Path) -> np.ndarray:
    try:
        with p.open("r", encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{p}: unreadable: {_first_line(exc)}") from None
    skip = 0
    try:
        [float(cell) for cell in first.strip().split(",")]
    except ValueError:
        skip = 1  # a header line
    try:
        with warnings.catch_warnings():
            # An empty file warns, then is refused below as "holds no rows".
            warnings.simplefilter("ignore", UserWarning)
            arr = np.loadtxt(p, delimiter=",", dtype=np.float32, skiprows=skip, ndmin=2)
    except (ValueError, OSError) as exc:
        raise DataFileError(f"{p}: not a numeric CSV: {_first_line(exc)}") from None
    return arr


def load_array(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """The array in ``path``; for ``.npz``, the array ``key`` (or the only/``X`` array)."""
    p = _existing(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        if key is not None:
            raise DataFileError(f"{p}: a key only applies to .npz files")
        arr = _load_csv(p)
    elif suffix == ".npy":
        if key is not None:
            raise DataFileError(f"{p}: a key only applies to .npz files")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataFileError(
                    f"{p}: holds Python objects (pickled); save a numeric array instead"
                ) from None
            raise DataFileError(f"{p}: unreadable .npy file: {_first_line(exc)}") from None
        except (OSError, EOFError) as exc:
            raise DataFileError(f"{p}: unreadable .npy file: {_first_line(exc)}") from None
    else:
        arrays = load_npz(p)
        if key is not None:
            if key not in arrays:
                raise DataFileError(f"{p}: no array {key!r} (has {', '.join(arrays) or 'none'})")
            arr = arrays[key]
        elif len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            found = [k for k in NPZ_DATA_KEYS if k in arrays]
            if not found:
                raise DataFileError(
                    f"{p}: holds {', '.join(arrays) or 'no arrays'}; say which with a key"
                )
            arr = arrays[found[0]]
    arr = _numeric(np.asarray(arr), str(p))
    if arr.ndim < 1 or len(arr) == 0:
        raise DataFileError(f"{p}: holds no rows")
    return arr


def fit_to_shape(x: np.ndarray, input_shape: tuple[int, ...], where: str = "data") -> np.ndarray:
    """``x`` shaped (n, *input_shape); flat rows (e.g. from CSV) are reshaped when sizes match."""
    if x.shape[1:] == tuple(input_shape):
        return x
    if x.ndim == 2 and x.shape[1] == math.prod(input_shape):
        return x.reshape((len(x), *input_shape))
    raise DataFileError(
        f"{where}: rows have shape {x.shape[1:]}, the detector expects {tuple(input_shape)}"
        f" (or flat rows of {math.prod(input_shape)} values)"
    )
