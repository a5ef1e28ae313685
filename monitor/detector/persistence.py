"""Saving and loading detectors: a JSON manifest plus the two models in native ``.keras``.

Layout of a detector directory::

    manifest.json          what the detector is (see ``Manifest``), with the models' sha256
    model.keras            the frozen classifier
    distilled_model.keras  the distilled model

Nothing is pickled. Models load with Keras' safe mode (no lambda bytecode), files are
checked against the hashes in the manifest, and the loaded models must fit the manifest's
shapes. Every failure is a ``DetectorFormatError`` with one clear line. Reading and
validating the manifest alone lives in :mod:`monitor.detector.manifest`, which needs no
TensorFlow.

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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor._version import __version__
from monitor.detector.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    Manifest,
    detector_dir,
    read_manifest,
)
from monitor.errors import DetectorError, DetectorFormatError

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

MODEL_FILE = "model.keras"
DISTILLED_FILE = "distilled_model.keras"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    where = detector_dir(path)
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
