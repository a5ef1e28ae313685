"""A saved detector's manifest: what the detector is, read and validated without TensorFlow.

Its own module so the detector class can name ``Manifest`` and ``info``, ``score`` and the
worker's reload checks can read one, without depending on the code that saves and loads
the models. Every number in a manifest must be finite: a NaN threshold would never flag,
an infinite temperature or reference score would poison every score or drift test. Every
failure is a ``DetectorFormatError`` with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monitor._version import __version__
from monitor.errors import DetectorFormatError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """What a saved detector is; ``sha256`` is the manifest file's digest, computed on read."""

    format_version: int
    name: str
    version: str
    threshold: float | None
    loss_type: str
    temperature: float
    data_type: str | None
    input_shape: tuple[int, ...]
    input_dtype: str
    n_classes: int
    reference_scores: list[float]
    package_version: str
    tensorflow_version: str
    keras_version: str
    created_at: str
    files: dict[str, str] = field(default_factory=dict)
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data


# name -> (accepted types, may be null)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format_version": ((int,), False),
    "name": ((str,), False),
    "version": ((str,), False),
    "threshold": ((int, float), True),
    "loss_type": ((str,), False),
    "temperature": ((int, float), False),
    "data_type": ((str,), True),
    "input_shape": ((list,), False),
    "input_dtype": ((str,), False),
    "n_classes": ((int,), False),
    "reference_scores": ((list,), False),
    "package_version": ((str,), False),
    "tensorflow_version": ((str,), False),
    "keras_version": ((str,), False),
    "created_at": ((str,), False),
    "files": ((dict,), False),
}


def detector_dir(path: str | os.PathLike[str]) -> Path:
    """The detector directory of ``path``, which may also name its manifest file."""
    p = Path(path)
    return p.parent if p.name == MANIFEST else p


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer beyond the float range
        return False


def _nonfinite_number(data: Any) -> tuple[str, int | float] | None:
    """Where in ``data`` the first non-finite number sits, and the number, or None.

    Walks every value, not just the known fields, so no number escapes the rule; with a
    stack rather than recursion, so nesting as deep as the JSON parser allows is fine.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(reversed([(f"{path}.{k}" if path else k, v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))
        elif _is_number(value) and not _is_finite(value):
            return path, value
    return None


def _invalid(where: Path, why: str) -> DetectorFormatError:
    return DetectorFormatError(f"{where}: invalid manifest: {why}")


def _format_version(data: dict[str, Any], where: Path) -> int:
    """The manifest's format version, refused unless this package reads it."""
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _invalid(where, "format_version missing or not an integer")
    if version != FORMAT_VERSION:
        raise DetectorFormatError(
            f"{where}: detector format version {version} is not supported by "
            f"distillation-monitor {__version__} (it reads version {FORMAT_VERSION})"
        )
    return version


def _typed_fields(data: dict[str, Any], where: Path) -> dict[str, Any]:
    """Every known field, present and of its JSON type (a bool is not a number here)."""
    values: dict[str, Any] = {}
    for key, (types, nullable) in _FIELDS.items():
        if key not in data:
            raise _invalid(where, f"field {key!r} is missing")
        value = data[key]
        if value is None and nullable:
            values[key] = None
        elif isinstance(value, bool) or not isinstance(value, types):
            raise _invalid(where, f"field {key!r} has the wrong type ({type(value).__name__})")
        else:
            values[key] = value
    return values


def _check_all_finite(data: dict[str, Any], where: Path) -> None:
    nonfinite = _nonfinite_number(data)
    if nonfinite is not None:
        path, number = nonfinite
        shown = repr(number) if isinstance(number, float) else "an integer beyond the float range"
        raise _invalid(where, f"{path} is {shown}; every number must be finite")


def _check_model_fields(values: dict[str, Any], where: Path) -> None:
    """The fields a detector is rebuilt from hold values it can be built with."""
    shape = values["input_shape"]
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise _invalid(where, f"input_shape must be a list of positive integers, got {shape}")
    if values["n_classes"] < 2:
        raise _invalid(where, f"n_classes must be at least 2, got {values['n_classes']}")
    if values["loss_type"] not in ("kld", "xent"):  # losses.LOSS_TYPES, without TensorFlow
        raise _invalid(where, f"unknown loss_type {values['loss_type']!r}")
    if not values["temperature"] > 0:
        raise _invalid(where, f"temperature must be positive, got {values['temperature']}")
    if not all(_is_number(s) for s in values["reference_scores"]):
        raise _invalid(where, "reference_scores must be numbers")
    files = values["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise _invalid(where, "files must map file names to sha256 digests")


def manifest_from_dict(data: Any, where: Path, digest: str) -> Manifest:
    """A parsed manifest file's content as a ``Manifest``, or a one-line refusal."""
    if not isinstance(data, dict):
        raise _invalid(where, "not a JSON object")
    version = _format_version(data, where)
    values = _typed_fields(data, where)
    _check_all_finite(data, where)
    _check_model_fields(values, where)
    threshold = values["threshold"]
    return Manifest(
        format_version=version,
        name=values["name"],
        version=values["version"],
        threshold=None if threshold is None else float(threshold),
        loss_type=values["loss_type"],
        temperature=float(values["temperature"]),
        data_type=values["data_type"],
        input_shape=tuple(values["input_shape"]),
        input_dtype=values["input_dtype"],
        n_classes=values["n_classes"],
        reference_scores=[float(s) for s in values["reference_scores"]],
        package_version=values["package_version"],
        tensorflow_version=values["tensorflow_version"],
        keras_version=values["keras_version"],
        created_at=values["created_at"],
        files=dict(values["files"]),
        sha256=digest,
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of the detector directory ``path`` (or of ``path/manifest.json``)."""
    where = detector_dir(path)
    if not where.is_dir():
        raise DetectorFormatError(f"{where}: no such detector directory")
    file = where / MANIFEST
    if not file.is_file():
        hint = ""
        if (where / "meta.dill").exists():
            hint = (
                " (an alibi-detect detector? convert it with `distillation-monitor import-alibi`)"
            )
        raise DetectorFormatError(f"{where}: not a detector directory, {MANIFEST} is missing{hint}")
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise DetectorFormatError(f"{file}: manifest is implausibly large")
        raw = file.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DetectorFormatError(f"{file}: unreadable manifest: {exc}") from None
    return manifest_from_dict(data, where, hashlib.sha256(raw).hexdigest())
