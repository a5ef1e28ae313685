"""Convert an alibi-detect ModelDistillation saved in its legacy layout, without running pickles.

alibi-detect's legacy ``save_detector`` writes::

    SRC/meta.dill                  detector metadata (a dict)
    SRC/ModelDistillation.dill     state: threshold, temperature, loss_type
    SRC/model/model.h5             the classifier
    SRC/model/distilled_model.h5   the distilled model

A pickle is a program: unpickling one from an untrusted place can run anything. This
module is the ONLY place in the package that imports ``pickle``, and only to subclass its
unpickler into a restricted reader that resolves a short allow-list of globals (plain
containers, numbers, strings, numpy scalars and dtypes) and refuses every other one with
``UnsafePickleError``. The result is checked once more for unexpected types. The ``.h5``
models load with Keras' safe mode (no lambda bytecode).
"""

from __future__ import annotations

import io
import os
import pickle  # restricted reader: see RestrictedUnpickler, the only unpickler in the package
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.errors import DetectorError, DetectorFormatError, UnsafePickleError

if TYPE_CHECKING:
    from monitor.detector.persistence import Manifest

MAX_PICKLE_BYTES = 1 << 20
META_FILE = "meta.dill"
STATE_FILE = "ModelDistillation.dill"
MODEL_H5 = Path("model") / "model.h5"
DISTILLED_H5 = Path("model") / "distilled_model.h5"


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(str, 'latin1')``; allow only that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("pickle asked for a codec call other than latin1 bytes")
    return text.encode("latin1")


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


# (module, name) as written in the pickle -> the object it may resolve to.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar(),
    ("numpy._core.multiarray", "scalar"): _numpy_scalar(),
}

_PLAIN = (str, bytes, int, float, bool, type(None), np.generic, np.dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: only plain containers, numbers, strings "
                "and numpy scalars are allowed in a legacy detector file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent references")


def _check_plain(value: Any, where: str, depth: int = 0) -> None:
    if depth > 20:
        raise UnsafePickleError(f"{where}: nesting too deep")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, where, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _check_plain(v, where, depth + 1)
    elif isinstance(value, np.generic) and value.dtype.kind in "OV":
        raise UnsafePickleError(f"{where}: numpy object or structured scalars are not allowed")
    elif not isinstance(value, _PLAIN):
        raise UnsafePickleError(f"{where}: unexpected {type(value).__name__} in a legacy file")


def read_restricted_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with the restricted reader; refuses anything but plain data."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_PICKLE_BYTES:
            raise DetectorFormatError(f"{file}: too large for a detector state file")
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DetectorFormatError(f"{file}: missing") from None
    except OSError as exc:
        raise DetectorFormatError(f"{file}: unreadable: {exc}") from None
    try:
        value = RestrictedUnpickler(io.BytesIO(raw)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{file}: {exc}") from None
    except Exception as exc:  # truncated or garbled pickles raise many types
        raise DetectorFormatError(f"{file}: not a readable pickle: {type(exc).__name__}") from None
    _check_plain(value, str(file))
    return value


def _plain_number(value: Any, what: str, where: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DetectorFormatError(f"{where}: {what} is not a number ({value!r})")
    return float(value)


def read_alibi_state(src: str | os.PathLike[str]) -> dict[str, Any]:
    """threshold, temperature, loss_type and data_type of a legacy alibi-detect detector."""
    where = Path(src)
    if not where.is_dir():
        raise DetectorFormatError(f"{where}: no such directory")
    meta = read_restricted_pickle(where / META_FILE)
    if not isinstance(meta, dict):
        raise DetectorFormatError(f"{where / META_FILE}: expected a dict")
    name = meta.get("name")
    if name is not None and name != "ModelDistillation":
        raise DetectorFormatError(f"{where}: a {name} detector, not ModelDistillation")
    state = read_restricted_pickle(where / STATE_FILE)
    if not isinstance(state, dict):
        raise DetectorFormatError(f"{where / STATE_FILE}: expected a dict")
    loss_type = state.get("loss_type", "kld")
    if isinstance(loss_type, np.str_):
        loss_type = str(loss_type)
    temperature = _plain_number(state.get("temperature", 1.0), "temperature", where)
    data_type = meta.get("data_type")
    return {
        "threshold": _plain_number(state.get("threshold"), "threshold", where),
        "temperature": 1.0 if temperature is None else temperature,
        "loss_type": loss_type,
        "data_type": data_type if isinstance(data_type, str) else None,
        "meta": meta,
    }


def import_alibi_detector(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    name: str = "ModelDistillation",
    version: str = "1",
    reference_data: np.ndarray | None = None,
) -> Manifest:
    """Convert the legacy detector at ``src`` into our format at ``dst``.

    ``reference_data`` (clean inputs) fills the manifest's reference scores for drift
    tests; the threshold is kept as alibi-detect saved it.
    """
    from monitor.detector.distillation import ModelDistillation, reference_sample
    from monitor.detector.persistence import load_keras_model, save_detector

    where = Path(src)
    state = read_alibi_state(where)
    model = load_keras_model(where / MODEL_H5)
    distilled = load_keras_model(where / DISTILLED_H5)
    try:
        detector = ModelDistillation(
            threshold=state["threshold"],
            distilled_model=distilled,
            model=model,
            loss_type=state["loss_type"],
            temperature=state["temperature"],
            data_type=state["data_type"],
        )
    except (DetectorError, TypeError, ValueError) as exc:
        raise DetectorFormatError(f"{where}: {exc}") from None
    if reference_data is not None:
        scores = detector.score(reference_data)
        assert isinstance(scores, np.ndarray)
        detector.reference_scores = reference_sample(scores)
    return save_detector(detector, dst, name=name, version=version)
