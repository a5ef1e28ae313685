"""Record formats and the strict checks that turn one parsed message into float64 rows.

Parsing uses pysimdjson's lazy proxies, and numbers go from the parser straight into a
float64 buffer (``Array.as_buffer``), never through Python floats: creating floats costs
more than parsing. ``as_buffer`` also refuses strings, booleans, nulls and objects, so a
buffer only ever holds numbers. What it cannot see is the nesting (it flattens), so the
shape is proved separately, cheaply where the message allows it (``json_rows``) and by
comparing bracket skeletons otherwise (``numbers``).

Choices (tested in tests/test_records.py):
- Duplicate keys at the top level (or inside a v2 tensor or Seldon ``data`` object) are a
  ``schema`` dead letter: parsers disagree on which one wins (simdjson the first, orjson
  the last), so the scored instance could differ from what another reader sees.
- NaN, Infinity and numbers beyond the double range (``1e999``) anywhere in a message are
  ``non_finite``: they aren't JSON, and values beyond float32's range in an instance are
  ``non_finite`` too (checked once per batch, in ``records``).
- Integers beyond 64 bits are ``dtype`` (simdjson refuses them); ``\\ud800``-style lone
  surrogates are ``invalid_json`` (they aren't text); a UTF-8 byte order mark is
  accepted, as simdjson does and RFC 8259 allows.
- ``"output": null`` means no output; a v2/v1 output that doesn't have the classifier's
  shape (e.g. class ids) is ignored, one that does must be valid.
- A v2 body with ``outputs`` but no ``inputs``, or a v1 body with only ``predictions``,
  is a response logged on its own: ignored, like a response event in the headers.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, NoReturn, Protocol, TypeVar, cast

import simdjson

from monitor.errors import ConfigError, DecodeError
from monitor.stream.headers import ModelLabels, labels_of, text

Array = simdjson.Array
Object = simdjson.Object

# Characters a JSON number is made of: deleting them (and whitespace) from an array of
# numbers leaves its skeleton of brackets and commas, which pins down its exact nesting.
NUMBER_CHARS = b"0123456789.eE+-"
NUMBER_AND_SPACE = NUMBER_CHARS + b" \t\n\r"
MAX_DIMS = 32

#: The NUMERIC datatypes of the Open Inference Protocol; BYTES and BOOL are refused.
V2_NUMERIC = frozenset(
    {"FP16", "BF16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
    | {"UINT8", "UINT16", "UINT32", "UINT64"}
)


class RecordFormat(StrEnum):
    """How inference records are encoded; ``auto`` sniffs each message."""

    JSON = "json"
    V2 = "v2"
    V1 = "v1"
    SELDON = "seldon"
    V2_PROTOBUF = "v2-protobuf"
    AUTO = "auto"


class Reason(StrEnum):
    """Why a message was dead-lettered (a metrics label: keep this set small and fixed)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_PROTOBUF = "invalid_protobuf"
    NON_FINITE = "non_finite"
    SCHEMA = "schema"
    SHAPE = "shape"
    TOO_MANY_ROWS = "too_many_rows"
    DTYPE = "dtype"
    DECODER_ERROR = "decoder_error"


@dataclass(frozen=True)
class InputSpec:
    """What a valid instance looks like: the detector's input shape and class count."""

    shape: tuple[int, ...]
    n_classes: int
    max_message_bytes: int = 1_048_576
    #: Rows one message may hold: each flagged row becomes an alert, so one message must
    #: not turn into an unbounded number of them.
    max_rows: int = 1024
    #: Context fields copied into an alert, in bytes of JSON.
    max_context_bytes: int = 2048

    def __post_init__(self) -> None:
        shape = tuple(_integer(d, "input shape") for d in self.shape)
        if not shape or len(shape) > MAX_DIMS:
            raise ConfigError(f"input shape must have 1 to {MAX_DIMS} dimensions, got {shape}")
        if min(shape) < 1:
            raise ConfigError(f"input shape must be positive integers, got {shape}")
        n_classes = _integer(self.n_classes, "n_classes")
        if n_classes < 1:
            raise ConfigError(f"n_classes must be at least 1, got {n_classes}")
        max_bytes = _integer(self.max_message_bytes, "max_message_bytes")
        if max_bytes < 1:
            raise ConfigError(f"max_message_bytes must be positive, got {max_bytes}")
        max_rows = _integer(self.max_rows, "max_rows")
        if max_rows < 1:
            raise ConfigError(f"max_rows must be positive, got {max_rows}")
        # Plain ints, so a shape read from a model (numpy ints) compares and hashes alike.
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "n_classes", n_classes)
        object.__setattr__(self, "max_message_bytes", max_bytes)
        object.__setattr__(self, "max_rows", max_rows)
        context = _integer(self.max_context_bytes, "max_context_bytes")
        if context < 0:
            raise ConfigError(f"max_context_bytes must not be negative, got {context}")
        object.__setattr__(self, "max_context_bytes", context)

    @property
    def size(self) -> int:
        """Numbers in one instance."""
        return math.prod(self.shape)


def _integer(value: object, what: str) -> int:
    """An int from anything integer-like (numpy ints too), never from bool, None or float."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be integers, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{what} must be integers, got {value!r}") from None


#: One message's rows: (row count, float64 instance buffer, float64 output buffer or None,
#: model labels from the body).
Rows = tuple[int, Any, Any, ModelLabels | None]


def reject(reason: Reason, detail: str) -> NoReturn:
    """Stop decoding this message; the decoder turns it into a dead letter."""
    raise DecodeError(reason, detail)


def kind_of(value: object) -> str:
    """The JSON type name of a parsed value, for messages."""
    if type(value) is Object or isinstance(value, dict):
        return "object"
    if type(value) is Array or isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


@lru_cache(maxsize=64)
def skeleton(shape: tuple[int, ...]) -> bytes:
    """Brackets and commas of a regular array of ``shape``: (2, 2) -> ``[[,],[,]]``."""
    inner = skeleton(shape[1:]) if len(shape) > 1 else b""
    return b"[" + b",".join([inner] * shape[0]) + b"]"


def rows_skeleton(shape: tuple[int, ...]) -> bytes:
    """``skeleton`` without caching the outer dimension (it varies per message)."""
    inner = skeleton(shape[1:]) if len(shape) > 1 else b""
    return b"[" + b",".join([inner] * shape[0]) + b"]"


def declared_skeleton(shape: tuple[int, ...]) -> bytes:
    """``skeleton`` of a shape a message declares: never cached (a cache would keep
    attacker-sized bytes), and only built once the data's count matches the shape."""
    inner = declared_skeleton(shape[1:]) if len(shape) > 1 else b""
    return b"[" + b",".join([inner] * shape[0]) + b"]"


def check_rows(n: int, spec: InputSpec, what: str) -> int:
    """``n`` rows, unless that is more than one message may hold."""
    if n > spec.max_rows:
        reject(
            Reason.TOO_MANY_ROWS,
            f"{what} holds {n} rows, at most {spec.max_rows} per message (--max-rows-per-message)",
        )
    return n


def squeeze(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def keys_of(obj: Any, what: str) -> list[str]:
    """An object's keys, refusing duplicates (parsers disagree on which one wins)."""
    keys = list(obj.keys())
    if len(keys) != len(set(keys)):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                reject(Reason.SCHEMA, f"duplicate key {key[:64]!r} in {what}")
            seen.add(key)
    return keys


def as_float64(value: Any, what: str) -> Any:
    """Copy every number of a (nested) array into a float64 buffer; numbers only."""
    try:
        return value.as_buffer(of_type="d")
    except TypeError:
        reject(
            Reason.DTYPE, f"{what} must hold only numbers (no strings, booleans, nulls or objects)"
        )


def count_of(buffer: Any) -> int:
    """Numbers in a float64 buffer (pysimdjson's ArrayBuffer knows its byte size)."""
    size = getattr(buffer, "size", None)
    return (size if isinstance(size, int) else memoryview(buffer).nbytes) // 8


def array_start(raw: bytes, key: bytes) -> int:
    """Offset in ``raw`` of the ``[`` opening the array value of ``key`` (``b'"data"'``),
    or -1 when the text alone can't tell for sure.

    Sure means: the key occurs once (so a nested object or a string can't hold another
    one) and the text holds no escape at all, so no ``\\u`` spells the key differently and
    no string can hold a literal ``"key"``. (Looking for any backslash is memchr-fast;
    looking for ``\\u`` took 15 times longer.)
    """
    pos = raw.find(key)
    if pos < 0 or raw.find(key, pos + 1) >= 0 or raw.find(b"\\") >= 0:
        return -1
    end = pos + len(key)
    start = raw.find(b"[", end)
    if start < 0 or raw[end:start].strip(b" \t\n\r") != b":":
        return -1
    return start


def flat_at(raw: bytes, start: int) -> bool:
    """Whether the array of numbers opening at ``start`` holds no nested array: it closes
    at its first ``]`` (numbers hold no brackets) with no ``[`` before."""
    end = raw.find(b"]", start)
    return end > start and raw.find(b"[", start + 1, end) < 0


def flat_value(raw: bytes, key: bytes) -> bool:
    """Whether the raw text shows ``key``'s array value to be flat (False: can't tell)."""
    start = array_start(raw, key)
    return start >= 0 and flat_at(raw, start)


def skeleton_at(raw: bytes, start: int, expected: bytes) -> bool:
    """Whether the array of numbers opening at ``start`` has exactly the skeleton
    ``expected`` (which closes the array, being balanced)."""
    return raw[start:].translate(None, NUMBER_AND_SPACE).startswith(expected)


def numbers(
    value: Any,
    shape: tuple[int, ...],
    what: str,
    raw: bytes | None = None,
    key: bytes = b"",
    cached: bool = True,
) -> Any:
    """Float64 buffer of a JSON array that has exactly ``shape`` (no ragged rows).

    The nesting is read from the raw text at the key's position when that is unambiguous
    (``array_start``), else from the parsed array's minified text (slower).
    """
    if type(value) is not Array:
        reject(Reason.SCHEMA, f"{what} must be an array, got {kind_of(value)}")
    if len(value) != shape[0]:
        reject(
            Reason.SHAPE, f"{what} has {len(value)} elements, expected {shape[0]} (shape {shape})"
        )
    buffer = as_float64(value, what)
    size = math.prod(shape)
    expected = skeleton(shape) if cached else rows_skeleton(shape)
    start = -1 if raw is None else array_start(raw, key)
    if raw is not None and start >= 0:
        regular = flat_at(raw, start) if len(shape) == 1 else skeleton_at(raw, start, expected)
        # A regular skeleton fixes the count, except that [] looks like [5].
        if regular and (shape[-1] > 1 or count_of(buffer) == size):
            return buffer
    n = count_of(buffer)
    if n != size:
        reject(Reason.SHAPE, f"{what} holds {n} numbers, expected {size} (shape {shape})")
    # The stub says mini is str; pysimdjson 7 returns bytes.
    if start < 0 and cast(bytes, value.mini).translate(None, NUMBER_CHARS) == expected:
        return buffer
    reject(Reason.SHAPE, f"{what} is ragged or nested differently from shape {shape}")


def tensor_numbers(
    value: Any, declared: tuple[int, ...], what: str, raw: bytes | None = None, key: bytes = b""
) -> Any:
    """Float64 buffer of a v2/Seldon tensor's data: flat, or nested exactly as declared."""
    if type(value) is not Array:
        reject(Reason.SCHEMA, f"{what} must be an array, got {kind_of(value)}")
    total = math.prod(declared)
    buffer = as_float64(value, what)
    # The declared shape is the sender's word: it must match the numbers actually
    # present before anything is built from it (a skeleton of [10000000, 8] is 100 MB).
    n = count_of(buffer)
    if n != total:
        reject(Reason.SHAPE, f"{what} holds {n} numbers, its shape {list(declared)} needs {total}")
    start = -1 if raw is None else array_start(raw, key)
    if raw is not None and start >= 0:
        if flat_at(raw, start):
            if len(value) == total:
                return buffer
        elif declared and skeleton_at(raw, start, declared_skeleton(declared)):
            return buffer
    if start < 0:
        sk = cast(bytes, value.mini).translate(None, NUMBER_CHARS)
        if (len(sk) == n + 1 and sk.count(b",") == n - 1 and len(value) == n) or (
            declared and sk == declared_skeleton(declared)
        ):
            return buffer
    reject(Reason.SHAPE, f"{what} is neither flat nor nested as its shape {list(declared)}")


def body_labels(doc: Any, keys: list[str]) -> ModelLabels | None:
    """``model_name`` / ``model_version`` / ``namespace`` fields of the body, if strings."""
    name = text(doc["model_name"]) if "model_name" in keys else None
    version = text(doc["model_version"]) if "model_version" in keys else None
    namespace = text(doc["namespace"]) if "namespace" in keys else None
    return labels_of(name, version, namespace)


class JsonPlan:
    """Precomputed facts for the ``json`` fast path of one input spec."""

    def __init__(self, spec: InputSpec) -> None:
        self.shape = spec.shape
        self.shape0 = spec.shape[0]
        self.n_classes = spec.n_classes
        self.flat = len(spec.shape) == 1
        self.size = spec.size


_LABEL_KEYS = frozenset({"model_name", "model_version", "namespace"})


def json_rows(doc: Any, keys: list[str], raw: bytes, plan: JsonPlan) -> Rows:
    """``{"instance": [...], "output": [...]?, ...}``: one row (the general path).

    The nesting is proved from the raw text, without looking at the numbers. The
    decoder's inlined fast path uses two whole-message proofs:
    - flat instance (and output): the message holds no other ``[``;
    - nested instance: with numbers and spaces deleted, the message holds exactly as many
      ``[`` as the instance's skeleton (plus one for a flat output), the skeleton is
      there, and the instance's first element is an array. The skeleton can then only be
      the instance's own: inside a string it would need as many brackets again, and
      anywhere else (inside the instance too) the instance's brackets would come on top.
    Here, ``numbers`` reads the nesting at the key's position (``array_start``), and
    failing that compares the minified array's skeleton.
    """
    if "instance" not in keys:
        reject(Reason.SCHEMA, 'no "instance" field')
    out = doc["output"] if "output" in keys else None
    labels = None if _LABEL_KEYS.isdisjoint(keys) else body_labels(doc, keys)
    x = numbers(doc["instance"], plan.shape, "instance", raw, b'"instance"')
    y = None if out is None else numbers(out, (plan.n_classes,), "output", raw, b'"output"')
    return 1, x, y, labels


@dataclass(frozen=True, slots=True)
class Tensor:
    """A v2 (or Seldon) tensor's header fields and its still-unread data proxy."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: Any


def _shape_of(value: Any, what: str) -> tuple[int, ...]:
    if type(value) is not Array:
        reject(Reason.SCHEMA, f"{what} must be an array of integers, got {kind_of(value)}")
    if len(value) > MAX_DIMS:
        reject(Reason.SHAPE, f"{what} has {len(value)} dimensions (at most {MAX_DIMS})")
    dims: list[int] = [d for d in value.as_list() if type(d) is int]
    if len(dims) != len(value):
        reject(Reason.SCHEMA, f"{what} must be an array of integers")
    if any(d < 0 for d in dims):
        reject(Reason.SHAPE, f"{what} has a negative dimension: {dims}")
    return tuple(dims)


def read_tensor(obj: Any, what: str, strict: bool = True) -> Tensor:
    """Name, shape, datatype and data of ``{"name","shape","datatype","data"}``."""
    if type(obj) is not Object:
        reject(Reason.SCHEMA, f"{what} must be an object, got {kind_of(obj)}")
    keys = keys_of(obj, what)
    for field in ("shape", "datatype", "data"):
        if field not in keys:
            reject(Reason.SCHEMA, f'{what} has no "{field}"')
    datatype = obj["datatype"]
    if not isinstance(datatype, str):
        reject(Reason.SCHEMA, f"{what}.datatype must be a string, got {kind_of(datatype)}")
    if strict and datatype.upper() not in V2_NUMERIC:
        reject(Reason.DTYPE, f"{what}.datatype {datatype[:32]!r} is not numeric")
    name = obj["name"] if "name" in keys else ""
    return Tensor(
        name=name if isinstance(name, str) else "",
        shape=_shape_of(obj["shape"], f"{what}.shape"),
        datatype=datatype.upper(),
        data=obj["data"],
    )


def rows_in(declared: tuple[int, ...], feature: tuple[int, ...], what: str) -> int:
    """How many rows of ``feature`` shape a tensor of ``declared`` shape holds.

    ``[n, *feature]`` is n rows; a tensor shaped like one row (no batch dimension) is one
    row; size-1 dimensions are ignored on both sides, as they don't change the layout.
    """
    n = _rows_in(declared, feature)
    if n < 0:
        reject(Reason.SHAPE, f"{what} has shape {list(declared)}, rows must be {list(feature)}")
    if n == 0:
        reject(Reason.SHAPE, f"{what} has no rows")
    return n


@lru_cache(maxsize=256)
def _rows_in(declared: tuple[int, ...], feature: tuple[int, ...]) -> int:
    if declared and squeeze(declared[1:]) == squeeze(feature):
        return declared[0]
    if squeeze(declared) == squeeze(feature):
        return 1
    return -1


def _fits(declared: tuple[int, ...], feature: tuple[int, ...]) -> bool:
    try:
        rows_in(declared, feature, "")
    except DecodeError:
        return False
    return True


class Shaped(Protocol):
    @property
    def shape(self) -> tuple[int, ...]: ...


ShapedT = TypeVar("ShapedT", bound=Shaped)


def fitting_tensor(tensors: Sequence[ShapedT], spec: InputSpec) -> ShapedT:
    """The input tensor the model reads: the only one, or the only one of several whose
    shape fits the model's input (a request may carry other inputs too)."""
    if len(tensors) == 1:
        return tensors[0]
    fitting = [t for t in tensors if _fits(t.shape, spec.shape)]
    if len(fitting) != 1:
        reject(
            Reason.SCHEMA,
            f"{len(tensors)} input tensors and {len(fitting)} of them fit shape "
            f"{list(spec.shape)}; expected exactly one",
        )
    return fitting[0]


def v2_rows(doc: Any, keys: list[str], raw: bytes, spec: InputSpec) -> Rows | None:
    """Open Inference Protocol request (or request + response); None for a response."""
    if "inputs" not in keys:
        if "outputs" in keys:
            return None
        reject(Reason.SCHEMA, 'no "inputs" field')
    inputs = doc["inputs"]
    if type(inputs) is not Array:
        reject(Reason.SCHEMA, f"inputs must be an array, got {kind_of(inputs)}")
    if len(inputs) == 0:
        reject(Reason.SCHEMA, "inputs is empty")
    tensor = fitting_tensor([read_tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs)], spec)
    n = check_rows(rows_in(tensor.shape, spec.shape, "inputs[0]"), spec, "inputs[0]")
    x = tensor_numbers(tensor.data, tensor.shape, "inputs[0].data", raw, b'"data"')
    y = None
    if "outputs" in keys:
        y = _v2_output(doc["outputs"], n, spec)
    return n, x, y, body_labels(doc, keys)


def _v2_output(outputs: Any, n: int, spec: InputSpec) -> Any:
    """Float64 buffer of the first output with the classifier's shape, else None."""
    if type(outputs) is not Array:
        return None
    for i, obj in enumerate(outputs):
        try:
            tensor = read_tensor(obj, f"outputs[{i}]", strict=False)
            if tensor.datatype not in V2_NUMERIC:
                continue
            if rows_in(tensor.shape, (spec.n_classes,), "output") != n:
                continue
        except DecodeError:
            continue  # not the classifier's probabilities (e.g. class ids or text)
        return tensor_numbers(tensor.data, tensor.shape, f"outputs[{i}].data")
    return None


def v1_rows(doc: Any, keys: list[str], raw: bytes, spec: InputSpec) -> Rows | None:
    """``{"instances": [row, ...], "predictions": [...]?}``; None for a response."""
    if "instances" not in keys:
        if "predictions" in keys:
            return None
        reject(Reason.SCHEMA, 'no "instances" field')
    rows = doc["instances"]
    if type(rows) is not Array:
        reject(Reason.SCHEMA, f"instances must be an array, got {kind_of(rows)}")
    n = check_rows(len(rows), spec, "instances")
    if n == 0:
        reject(Reason.SHAPE, "instances is empty")
    x = numbers(rows, (n, *spec.shape), "instances", raw, b'"instances"', cached=False)
    y = None
    if "predictions" in keys:
        try:
            preds = doc["predictions"]
            y = numbers(preds, (n, spec.n_classes), "predictions", raw, b'"predictions"', False)
        except DecodeError:
            y = None  # predictions that aren't class probabilities are just context
    return n, x, y, body_labels(doc, keys)


def seldon_rows(doc: Any, keys: list[str], raw: bytes, spec: InputSpec) -> Rows:
    """Seldon ``{"data": {"ndarray": [...]}}`` or ``{"data": {"tensor": {...}}}``."""
    if "data" not in keys:
        reject(Reason.SCHEMA, 'no "data" field')
    data = doc["data"]
    if type(data) is not Object:
        reject(Reason.SCHEMA, f"data must be an object, got {kind_of(data)}")
    data_keys = keys_of(data, "data")
    if "ndarray" in data_keys:
        rows = data["ndarray"]
        if type(rows) is not Array:
            reject(Reason.SCHEMA, f"data.ndarray must be an array, got {kind_of(rows)}")
        n = check_rows(len(rows), spec, "data.ndarray")
        if n == 0:
            reject(Reason.SHAPE, "data.ndarray is empty")
        x = numbers(rows, (n, *spec.shape), "data.ndarray", raw, b'"ndarray"', cached=False)
    elif "tensor" in data_keys:
        tensor = data["tensor"]
        if type(tensor) is not Object:
            reject(Reason.SCHEMA, f"data.tensor must be an object, got {kind_of(tensor)}")
        tensor_keys = keys_of(tensor, "data.tensor")
        if "shape" not in tensor_keys or "values" not in tensor_keys:
            reject(Reason.SCHEMA, 'data.tensor needs "shape" and "values"')
        declared = _shape_of(tensor["shape"], "data.tensor.shape")
        n = check_rows(rows_in(declared, spec.shape, "data.tensor"), spec, "data.tensor")
        x = tensor_numbers(tensor["values"], declared, "data.tensor.values", raw, b'"values"')
    else:
        reject(Reason.SCHEMA, 'data has neither "ndarray" nor "tensor" (strData etc. unsupported)')
    return n, x, None, body_labels(doc, keys)


def sniff(keys: list[str]) -> RecordFormat | None:
    """Which format a message is in, from its top-level keys; None for a response body."""
    if "instance" in keys:
        return RecordFormat.JSON
    if "inputs" in keys:
        return RecordFormat.V2
    if "instances" in keys:
        return RecordFormat.V1
    if "data" in keys:
        return RecordFormat.SELDON
    if "outputs" in keys or "predictions" in keys:
        return None
    reject(Reason.SCHEMA, 'none of "instance", "inputs", "instances" or "data" at the top level')


def parse_failure(raw: bytes, exc: Exception) -> DecodeError:
    """The dead-letter reason for a message the strict parser refused.

    simdjson reports NaN/Infinity literals and ``1e999`` like any syntax error; the
    lenient stdlib parser tells those apart so they get the precise ``non_finite`` reason
    (this runs only for refused messages, so its speed doesn't matter).
    """
    message = str(exc)
    code = message.split(":", 1)[0].strip()
    if isinstance(exc, UnicodeDecodeError) or "UTF8_ERROR" in message:
        return DecodeError(Reason.NOT_UTF8, "not valid UTF-8")
    if code == "EMPTY":
        return DecodeError(Reason.EMPTY, "no JSON value, only whitespace")
    if code == "DEPTH_ERROR":
        return DecodeError(Reason.INVALID_JSON, "nested more than 1024 levels deep")
    try:
        decoded = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return DecodeError(Reason.NOT_UTF8, "not valid UTF-8")
    try:
        value = json.loads(decoded.removeprefix("\ufeff"))
    except RecursionError:
        return DecodeError(Reason.INVALID_JSON, "nested too deeply")
    except ValueError as lenient:
        return DecodeError(Reason.INVALID_JSON, f"{code}: {lenient}")
    if _has_non_finite(value):
        return DecodeError(
            Reason.NON_FINITE, "NaN, Infinity or a number beyond the double range (not JSON)"
        )
    if code == "BIGINT_ERROR":
        return DecodeError(Reason.DTYPE, "an integer beyond the 64-bit range")
    return DecodeError(Reason.INVALID_JSON, f"refused by the strict parser: {message[:120]}")


def _has_non_finite(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False
