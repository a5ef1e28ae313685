"""Saving and loading detectors: a JSON manifest plus the two models in native ``.keras``.

Layout of a detector directory::

    manifest.json          what the detector is (see ``Manifest``), with the models' sha256
    model.keras            the frozen classifier
    distilled_model.keras  the distilled model

Nothing is pickled. Models load with Keras' safe mode (no lambda bytecode), files are
checked against the hashes in the manifest, and the loaded models must fit the manifest's
shapes. Every number in a manifest must be finite: a NaN threshold would never flag, an
infinite temperature or reference score would poison every score or drift test. Every
failure is a ``DetectorFormatError`` with one clear line. ``read_manifest`` needs no
TensorFlow, so ``info`` and the worker's reload checks stay cheap.

Saving writes into a temporary sibling directory and swaps it into place, so a reader
never sees a half-written detector and a failed save leaves the old one intact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor._version import __version__
from monitor.errors import DetectorError, DetectorFormatError

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
DISTILLED_FILE = "distilled_model.keras"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _detector_dir(path: str | os.PathLike[str]) -> Path:
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


def _manifest_from_dict(data: Any, where: Path, digest: str) -> Manifest:
    def bad(why: str) -> DetectorFormatError:
        return DetectorFormatError(f"{where}: invalid manifest: {why}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("format_version missing or not an integer")
    if version != FORMAT_VERSION:
        raise DetectorFormatError(
            f"{where}: detector format version {version} is not supported by "
            f"distillation-monitor {__version__} (it reads version {FORMAT_VERSION})"
        )
    values: dict[str, Any] = {}
    for key, (types, nullable) in _FIELDS.items():
        if key not in data:
            raise bad(f"field {key!r} is missing")
        value = data[key]
        if value is None and nullable:
            values[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise bad(f"field {key!r} has the wrong type ({type(value).__name__})")
        values[key] = value
    nonfinite = _nonfinite_number(data)
    if nonfinite is not None:
        path, number = nonfinite
        shown = repr(number) if isinstance(number, float) else "an integer beyond the float range"
        raise bad(f"{path} is {shown}; every number must be finite")
    shape = values["input_shape"]
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise bad(f"input_shape must be a list of positive integers, got {shape}")
    if values["n_classes"] < 2:
        raise bad(f"n_classes must be at least 2, got {values['n_classes']}")
    if values["loss_type"] not in ("kld", "xent"):
        raise bad(f"unknown loss_type {values['loss_type']!r}")
    if not values["temperature"] > 0:
        raise bad(f"temperature must be positive, got {values['temperature']}")
    scores = values["reference_scores"]
    if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        raise bad("reference_scores must be numbers")
    files = values["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise bad("files must map file names to sha256 digests")
    return Manifest(
        format_version=version,
        name=values["name"],
        version=values["version"],
        threshold=None if values["threshold"] is None else float(values["threshold"]),
        loss_type=values["loss_type"],
        temperature=float(values["temperature"]),
        data_type=values["data_type"],
        input_shape=tuple(shape),
        input_dtype=values["input_dtype"],
        n_classes=values["n_classes"],
        reference_scores=[float(s) for s in scores],
        package_version=values["package_version"],
        tensorflow_version=values["tensorflow_version"],
        keras_version=values["keras_version"],
        created_at=values["created_at"],
        files=dict(files),
        sha256=digest,
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of the detector directory ``path`` (or of ``path/manifest.json``)."""
    where = _detector_dir(path)
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
    return _manifest_from_dict(data, where, hashlib.sha256(raw).hexdigest())


def _finite_or_none(value: float | None, what: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise DetectorError(f"cannot save a detector whose {what} is {value}")
    return value


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` with ``tmp``; only an empty or detector directory is replaced."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file()):
        raise DetectorError(
            f"{target} exists and is not a detector directory; refusing to overwrite it"
        )
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, backup / target.name)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(backup / target.name, target)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def save_detector(
    detector: ModelDistillation,
    path: str | os.PathLike[str],
    name: str = "ModelDistillation",
    version: str = "1",
) -> Manifest:
    """Write ``detector`` to the directory ``path`` (created, or replaced if it holds a detector)."""
    import keras
    import tensorflow as tf

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        detector.model.save(tmp / MODEL_FILE)
        detector.distilled_model.save(tmp / DISTILLED_FILE)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            name=str(name),
            version=str(version),
            threshold=_finite_or_none(detector.threshold, "threshold"),
            loss_type=detector.loss_type,
            temperature=float(detector.temperature),
            data_type=detector.data_type,
            input_shape=tuple(detector.input_shape),
            input_dtype=str(detector.input_dtype),
            n_classes=int(detector.n_classes),
            reference_scores=[float(s) for s in detector.reference_scores],
            package_version=__version__,
            tensorflow_version=tf.__version__,
            keras_version=keras.__version__,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            files={f: _sha256(tmp / f) for f in (MODEL_FILE, DISTILLED_FILE)},
        )
        data = manifest.to_dict()
        del data["sha256"]
        if not all(math.isfinite(s) for s in manifest.reference_scores):
            raise DetectorError("cannot save non-finite reference scores")
        raw = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
        (tmp / MANIFEST).write_bytes(raw)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = Manifest(**{**asdict(manifest), "sha256": hashlib.sha256(raw).hexdigest()})
    detector.manifest = manifest
    return manifest


def load_keras_model(path: Path) -> Any:
    """A Keras model file (``.keras`` or legacy ``.h5``) loaded in safe mode, uncompiled."""
    import keras

    if not path.is_file():
        raise DetectorFormatError(f"{path}: missing")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises anything from zipfile, h5py, json, layers...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DetectorFormatError(
            f"{path}: cannot load the model: {type(exc).__name__}: {detail}"
        ) from exc


def _load_model(where: Path, manifest: Manifest, file: str) -> Any:
    path = where / file
    if not path.is_file():
        raise DetectorFormatError(f"{where}: {file} is missing")
    expected = manifest.files.get(file)
    if expected is None:
        raise DetectorFormatError(f"{where}: the manifest has no hash for {file}")
    if _sha256(path) != expected:
        raise DetectorFormatError(
            f"{path}: file is corrupt or was changed after saving (sha256 does not match the manifest)"
        )
    return load_keras_model(path)


def load_detector(path: str | os.PathLike[str]) -> ModelDistillation:
    """Load a detector saved by ``save_detector``; refuses anything that doesn't fit its manifest."""
    from monitor.detector.distillation import ModelDistillation, _model_shapes

    manifest = read_manifest(path)
    where = _detector_dir(path)
    models = {}
    for file in (MODEL_FILE, DISTILLED_FILE):
        model = _load_model(where, manifest, file)
        try:
            shape, n_classes = _model_shapes(model, file)
        except DetectorError as exc:
            raise DetectorFormatError(f"{where}: {exc}") from None
        if shape != manifest.input_shape or n_classes != manifest.n_classes:
            raise DetectorFormatError(
                f"{where}: {file} takes {shape} and outputs {n_classes} classes, the manifest "
                f"says {manifest.input_shape} and {manifest.n_classes}"
            )
        models[file] = model
    try:
        detector = ModelDistillation(
            threshold=manifest.threshold,
            distilled_model=models[DISTILLED_FILE],
            model=models[MODEL_FILE],
            loss_type=manifest.loss_type,
            temperature=manifest.temperature,
            data_type=manifest.data_type,
        )
    except (DetectorError, TypeError, ValueError) as exc:
        raise DetectorFormatError(f"{where}: {exc}") from None
    if str(detector.input_dtype) != manifest.input_dtype:
        raise DetectorFormatError(
            f"{where}: model input dtype {detector.input_dtype} differs from the manifest's "
            f"{manifest.input_dtype}"
        )
    detector.reference_scores = list(manifest.reference_scores)
    detector.manifest = manifest
    return detector
