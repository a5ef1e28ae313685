"""Convert an alibi-detect ModelDistillation saved in its legacy layout, without running pickles.

alibi-detect's legacy ``save_detector`` writes::

    SRC/meta.dill                  detector metadata (a dict)
    SRC/ModelDistillation.dill     state: threshold, temperature, loss_type
    SRC/model/model.h5             the classifier
    SRC/model/distilled_model.h5   the distilled model

A pickle is a program, and not only its globals are dangerous: numpy trusts a dtype's
pickled state (a crafted one crashes the process), builds a void scalar of any size from a
few bytes, and a dict key made of tuples that share their halves takes forever to hash. So
the ``.dill`` files never reach ``pickle``: ``pickletools.genops`` only parses them, and a
small stack machine here runs the opcodes plain data needs, building nothing but

- None, bools, ints, floats, strings and bytes, and lists, tuples, dicts and sets of them;
- numpy dtypes and scalars of bool, int, float and short str kinds, with exactly the state
  numpy writes for such a dtype.

Everything else is refused with ``UnsafePickleError``. Dict keys and set members must be
plain values; a container may not appear twice (shared or cyclic); the file size, the
number of values, the nesting depth and scalar sizes are capped (a real save is a few
hundred bytes). Every refusal is a ``DetectorFormatError``, so the CLI prints one line.
The ``.h5`` models load with Keras' safe mode (no lambda bytecode).
"""

from __future__ import annotations

import math
import os
import pickletools
import re
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.errors import DetectorError, DetectorFormatError, UnsafePickleError

if TYPE_CHECKING:
    from monitor.detector.manifest import Manifest

MAX_PICKLE_BYTES = 64 << 10
MAX_VALUES = 10_000
MAX_DEPTH = 20
MAX_TEXT_CHARS = 256
META_FILE = "meta.dill"
STATE_FILE = "ModelDistillation.dill"
MODEL_H5 = Path("model") / "model.h5"
DISTILLED_H5 = Path("model") / "distilled_model.h5"

# dtype specs as numpy pickles them ("f8", "U4"); a str dtype holds up to MAX_TEXT_CHARS.
_DTYPE_SPEC = re.compile(r"b1|[iu][1248]|f[248]|U(\d{1,4})")
_KEY_TYPES = (str, bytes, int, float, type(None), np.generic)
_LEAF_TYPES = (*_KEY_TYPES, np.dtype)


def _shown(value: Any) -> str:
    """A value from a pickle as short one-line text: it may be huge or hold newlines."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large int"
    if isinstance(value, str) and value.isprintable():
        text = value
    elif isinstance(value, str | bytes | int | float | np.generic):
        text = repr(value)
    else:
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


# -- what the pickled globals may build -----------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles spell bytes as ``_codecs.encode(str, 'latin1')``; allow only that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("pickle asked for a codec call other than latin1 bytes")
    return text.encode("latin1")


def _check_key(value: Any) -> Any:
    """Hashing a plain value is cheap; hashing a nested tuple can take exponential time."""
    if not isinstance(value, _KEY_TYPES):
        raise UnsafePickleError(f"refusing {_shown(value)} as a dict key or set member")
    return value


def _keys(items: Any) -> list[Any]:
    if not isinstance(items, list | tuple | set | frozenset):
        raise UnsafePickleError(f"refusing a set built from {_shown(items)}")
    return [_check_key(item) for item in items]


def _make_set(items: Any = ()) -> set[Any]:
    return set(_keys(items))


def _make_frozenset(items: Any = ()) -> frozenset[Any]:
    return frozenset(_keys(items))


def _allowed_dtype(spec: Any) -> np.dtype[Any]:
    """A dtype for a spec of the small allowed set; void, object and long str are refused."""
    match = _DTYPE_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None or int(match.group(1) or 0) > MAX_TEXT_CHARS:
        raise UnsafePickleError(
            f"refusing numpy dtype {_shown(spec)}: only bool, int, float and str of at most "
            f"{MAX_TEXT_CHARS} characters are allowed"
        )
    return np.dtype(spec)


def _is_flag(value: Any, expected: int) -> bool:
    return isinstance(value, bool | int) and value == expected


def _make_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    """``numpy.dtype(spec, False, True)`` as numpy pickles a dtype, for allowed specs only."""
    dtype = _allowed_dtype(spec)
    if not (_is_flag(align, 0) and _is_flag(copy, 1)):
        raise UnsafePickleError("refusing a numpy dtype built with unusual arguments")
    return np.dtype(dtype, copy=True)  # a copy of its own: its state may set the byte order


def _same(state: Any, canonical: tuple[Any, ...]) -> bool:
    """Equal item by item and of the same types (``1 == True``, but numpy parses them apart)."""
    return (
        type(state) is tuple
        and len(state) == len(canonical)
        and all(type(a) is type(b) and a == b for a, b in zip(state, canonical, strict=True))
    )


def _build_dtype(dtype: np.dtype[Any], state: Any) -> None:
    """Apply a pickled dtype state only when it is what numpy writes for that dtype.

    numpy trusts the state (flags, fields, sizes): a crafted one crashes the process later.
    The only freedom a real save has is the byte order of the machine that wrote it.
    """
    spec = dtype.str[1:]
    for canonical in (np.dtype(spec).newbyteorder("<"), np.dtype(spec).newbyteorder(">")):
        reduced = canonical.__reduce__()
        if isinstance(reduced, tuple) and _same(state, reduced[2]):
            if canonical != dtype:
                dtype.__setstate__(state)  # type: ignore[attr-defined]
            return
    raise UnsafePickleError(f"refusing a crafted state for numpy dtype {spec}")


def _numpy_scalar() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


def _make_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar from an allowed dtype and exactly its number of bytes."""
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"refusing a numpy scalar of {_shown(dtype)}")
    _allowed_dtype(dtype.str[1:])
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafePickleError(
            f"refusing a numpy {dtype.name} scalar whose data is not {dtype.itemsize} bytes"
        )
    return _numpy_scalar()(dtype, data)


# (module, name) as written in the pickle -> the callable it stands for.
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("builtins", "set"): _make_set,
    ("builtins", "frozenset"): _make_frozenset,
    ("__builtin__", "set"): _make_set,
    ("__builtin__", "frozenset"): _make_frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "dtype"): _make_dtype,
    ("numpy.core.multiarray", "scalar"): _make_scalar,
    ("numpy._core.multiarray", "scalar"): _make_scalar,
}
_CALLABLES = tuple(_ALLOWED.values())


def _find_global(module: Any, name: Any) -> Callable[..., Any]:
    try:
        return _ALLOWED[(module, name)]
    except (KeyError, TypeError):
        raise UnsafePickleError(
            f"refusing to load {_shown(module)}.{_shown(name)}: only plain containers, numbers, "
            "strings and numpy scalars are allowed in a legacy detector file"
        ) from None


# -- the stack machine ----------------------------------------------------------------------


class _Machine:
    """Runs the opcodes plain data needs; an opcode without a ``_op_`` method is refused.

    It works like ``pickle``'s own unpickler (a stack, the stacks saved by MARK, a memo), but
    every value comes from a literal, an empty container or an allow-listed callable above.
    """

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.saved: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.made = 0

    def run(self, raw: bytes) -> Any:
        for opcode, arg, _ in pickletools.genops(raw):
            if opcode.name == "STOP":
                return self.stack.pop()
            handler = getattr(self, f"_op_{opcode.name.lower()}", None)
            if handler is None:
                raise UnsafePickleError(
                    f"refusing the pickle opcode {opcode.name}: a legacy detector file "
                    "holds only plain data"
                )
            handler(arg)
        raise DetectorFormatError("no STOP opcode")  # pragma: no cover - genops raises first

    # stack helpers

    def _push(self, value: Any) -> None:
        self.made += 1
        if self.made > MAX_VALUES:
            raise UnsafePickleError(f"more than {MAX_VALUES} values in a legacy detector file")
        self.stack.append(value)

    def _pop_mark(self) -> list[Any]:
        items, self.stack = self.stack, self.saved.pop()
        return items

    def _top(self, kind: type) -> Any:
        target = self.stack[-1]
        if type(target) is not kind:
            raise UnsafePickleError(f"refusing to add items to {_shown(target)}")
        return target

    def _set_items(self, target: dict[Any, Any], items: list[Any]) -> None:
        if len(items) % 2:
            raise DetectorFormatError("a dict with a key but no value")
        for key, value in zip(items[::2], items[1::2], strict=True):
            target[_check_key(key)] = value

    # literals: genops has already decoded the argument

    def _push_arg(self, arg: Any) -> None:
        self._push(arg)

    _op_int = _op_binint = _op_binint1 = _op_binint2 = _push_arg
    _op_long = _op_long1 = _op_long4 = _op_float = _op_binfloat = _push_arg
    _op_string = _op_binstring = _op_short_binstring = _push_arg
    _op_unicode = _op_short_binunicode = _op_binunicode = _op_binunicode8 = _push_arg
    _op_binbytes = _op_short_binbytes = _op_binbytes8 = _push_arg

    def _op_none(self, _: None) -> None:
        self._push(None)

    def _op_newtrue(self, _: None) -> None:
        self._push(True)

    def _op_newfalse(self, _: None) -> None:
        self._push(False)

    # containers

    def _op_empty_list(self, _: None) -> None:
        self._push([])

    def _op_empty_tuple(self, _: None) -> None:
        self._push(())

    def _op_empty_dict(self, _: None) -> None:
        self._push({})

    def _op_empty_set(self, _: None) -> None:
        self._push(set())

    def _op_list(self, _: None) -> None:
        self._push(self._pop_mark())

    def _op_tuple(self, _: None) -> None:
        self._push(tuple(self._pop_mark()))

    def _pop_tuple(self, size: int) -> None:
        items = tuple(self.stack[len(self.stack) - size :])
        if len(items) != size:
            raise DetectorFormatError("a tuple of items the stack does not hold")
        del self.stack[len(self.stack) - size :]
        self._push(items)

    def _op_tuple1(self, _: None) -> None:
        self._pop_tuple(1)

    def _op_tuple2(self, _: None) -> None:
        self._pop_tuple(2)

    def _op_tuple3(self, _: None) -> None:
        self._pop_tuple(3)

    def _op_dict(self, _: None) -> None:
        target: dict[Any, Any] = {}
        self._set_items(target, self._pop_mark())
        self._push(target)

    def _op_frozenset(self, _: None) -> None:
        self._push(_make_frozenset(self._pop_mark()))

    def _op_append(self, _: None) -> None:
        value = self.stack.pop()
        self._top(list).append(value)

    def _op_appends(self, _: None) -> None:
        items = self._pop_mark()
        self._top(list).extend(items)

    def _op_setitem(self, _: None) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self._top(dict), [key, value])

    def _op_setitems(self, _: None) -> None:
        items = self._pop_mark()
        self._set_items(self._top(dict), items)

    def _op_additems(self, _: None) -> None:
        items = self._pop_mark()
        self._top(set).update(_keys(items))

    # stack and memo

    def _op_mark(self, _: None) -> None:
        self.saved.append(self.stack)
        self.stack = []

    def _op_pop(self, _: None) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _op_pop_mark(self, _: None) -> None:
        self._pop_mark()

    def _op_dup(self, _: None) -> None:
        self.stack.append(self.stack[-1])

    def _op_put(self, index: int) -> None:
        self.memo[index] = self.stack[-1]

    _op_binput = _op_long_binput = _op_put

    def _op_memoize(self, _: None) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def _op_get(self, index: int) -> None:
        if index not in self.memo:
            raise DetectorFormatError(f"memo entry {_shown(index)} is missing")
        self.stack.append(self.memo[index])

    _op_binget = _op_long_binget = _op_get

    # framing

    def _op_proto(self, _: int) -> None:
        pass

    def _op_frame(self, _: int) -> None:
        pass

    # globals and calls

    def _op_global(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self._push(_find_global(module, name))

    def _op_stack_global(self, _: None) -> None:
        name = self.stack.pop()
        module = self.stack.pop()
        self._push(_find_global(module, name))

    def _op_reduce(self, _: None) -> None:
        args = self.stack.pop()
        func = self.stack.pop()
        if not any(func is allowed for allowed in _CALLABLES) or type(args) is not tuple:
            raise UnsafePickleError(f"refusing to call {_shown(func)}")
        self._push(func(*args))

    def _op_build(self, _: None) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, np.dtype):
            raise UnsafePickleError(f"refusing to set the state of {_shown(target)}")
        _build_dtype(target, state)


# -- the checks on what was built -----------------------------------------------------------


def _children(value: Any) -> Collection[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return value
    if isinstance(value, _LEAF_TYPES):
        return ()
    raise UnsafePickleError(f"unexpected {type(value).__name__} in a legacy file")


def _check_tree(root: Any) -> None:
    """Refuse shared or cyclic containers, deep nesting and too many values.

    A container seen a second time is refused, so each one is walked once: the check is
    linear in the file, and what passes is a tree that any later walk also gets through in
    linear time (shared lists nested 20 deep would be a million paths for it).
    """
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(root, 0)]
    count = 0
    while todo:
        value, depth = todo.pop()
        count += 1
        if count > MAX_VALUES:
            raise UnsafePickleError(f"more than {MAX_VALUES} values in a legacy detector file")
        children = _children(value)
        if not children:
            continue  # also the empty tuple, which Python shares
        if depth >= MAX_DEPTH:
            raise UnsafePickleError(f"nested more than {MAX_DEPTH} deep")
        if id(value) in seen:
            raise UnsafePickleError(
                f"a {type(value).__name__} appears twice (shared or cyclic): "
                "a legacy detector file is a plain tree"
            )
        seen.add(id(value))
        todo.extend((child, depth + 1) for child in children)


def _read_small_file(file: Path) -> bytes:
    """The file's bytes, refusing non-regular files (a FIFO blocks, /dev/zero never ends)."""
    try:
        if not stat.S_ISREG(file.stat().st_mode):
            raise DetectorFormatError(f"{file}: not a regular file")
        with file.open("rb") as stream:
            raw = stream.read(MAX_PICKLE_BYTES + 1)
    except FileNotFoundError:
        raise DetectorFormatError(f"{file}: missing") from None
    except OSError as exc:
        raise DetectorFormatError(f"{file}: unreadable: {exc}") from None
    if len(raw) > MAX_PICKLE_BYTES:
        raise DetectorFormatError(f"{file}: too large for a detector state file")
    return raw


def read_restricted_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with the restricted machine; refuses anything but plain data."""
    file = Path(path)
    raw = _read_small_file(file)
    try:
        value = _Machine().run(raw)
        _check_tree(value)
    except DetectorFormatError as exc:  # UnsafePickleError too
        raise type(exc)(f"{file}: {exc}") from None
    except Exception as exc:  # truncated or garbled pickles raise many types
        raise DetectorFormatError(f"{file}: not a readable pickle: {type(exc).__name__}") from None
    return value


def _plain_number(value: Any, what: str, where: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DetectorFormatError(f"{where}: {what} is not a number ({_shown(value)})")
    number = float(value) if isinstance(value, float) or value.bit_length() <= 1000 else math.inf
    if not math.isfinite(number):
        raise DetectorFormatError(f"{where}: {what} is not a finite number ({_shown(value)})")
    return number


def _loss_name(value: Any, where: Path) -> str:
    """The loss type as a short string; ModelDistillation then checks it is a known one."""
    if not isinstance(value, str) or len(value) > 32:
        raise DetectorFormatError(f"{where}: loss_type is not a loss name ({_shown(value)})")
    return str(value)


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
        raise DetectorFormatError(f"{where}: a {_shown(name)} detector, not ModelDistillation")
    state = read_restricted_pickle(where / STATE_FILE)
    if not isinstance(state, dict):
        raise DetectorFormatError(f"{where / STATE_FILE}: expected a dict")
    temperature = _plain_number(state.get("temperature", 1.0), "temperature", where)
    data_type = meta.get("data_type")
    return {
        "threshold": _plain_number(state.get("threshold"), "threshold", where),
        "temperature": 1.0 if temperature is None else temperature,
        "loss_type": _loss_name(state.get("loss_type", "kld"), where),
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
