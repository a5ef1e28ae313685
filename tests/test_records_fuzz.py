"""Property-based fuzzing of the record decoder (hypothesis).

Two promises: whatever bytes and headers arrive, ``decode`` never raises and gives every
message exactly one outcome (rows, a dead letter or an ignore); and valid records come
back exactly, as float32.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from confluent_kafka import Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from poison_corpus import good_record

from monitor.stream.headers import read_headers
from monitor.stream.records import DecodedBatch, InputSpec, Reason, RecordDecoder, RecordFormat

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SPECS = [InputSpec((4,), 3), InputSpec((2, 3), 3), InputSpec((1, 2, 2), 2)]
KEYS = ["instance", "output", "inputs", "outputs", "instances", "predictions", "data"]
KEYS += ["ndarray", "tensor", "shape", "datatype", "values", "name", "id", "model_name"]


def msg(value: bytes | None, headers: Any = None, offset: int = 0) -> Message:
    return Message(topic="t", partition=0, offset=offset, value=value, headers=headers)


def check_outcomes(batch: DecodedBatch, n: int, spec: InputSpec) -> None:
    """Every message has exactly one outcome and the arrays are consistent."""
    rows = set(batch.row_message.tolist())
    dead = [d.index for d in batch.dead]
    ignored = [i for i, _ in batch.ignored]
    assert len(dead) == len(set(dead)) and len(ignored) == len(set(ignored))
    for i in range(n):
        assert (i in rows) + (i in dead) + (i in ignored) == 1, i
    assert all(
        isinstance(d.reason, Reason) and d.detail and len(d.detail) <= 300 for d in batch.dead
    )
    assert dead == sorted(dead)
    n_rows = len(batch.row_message)
    assert batch.X.shape == (n_rows, *spec.shape) and batch.X.dtype == np.float32
    assert batch.X.flags.c_contiguous and np.isfinite(batch.X).all()
    assert batch.has_output.shape == (n_rows,) and batch.row_in_message.shape == (n_rows,)
    assert (np.diff(batch.row_message) >= 0).all()
    if batch.outputs is not None:
        assert batch.outputs.shape == (n_rows, spec.n_classes) and np.isfinite(batch.outputs).all()
        assert batch.has_output.all()
    assert len(batch.model_labels) == n


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    values=st.lists(st.binary(max_size=200) | st.none(), max_size=8),
    spec=st.sampled_from(SPECS),
    fmt=st.sampled_from(list(RecordFormat)),
)
def test_arbitrary_bytes_never_raise(
    values: list[bytes | None], spec: InputSpec, fmt: RecordFormat
) -> None:
    batch = RecordDecoder(spec, fmt).decode([msg(v) for v in values])
    check_outcomes(batch, len(values), spec)


@FUZZ
@given(
    docs=st.lists(json_values, min_size=1, max_size=6),
    spec=st.sampled_from(SPECS),
    fmt=st.sampled_from(list(RecordFormat)),
)
def test_arbitrary_json_never_raises(docs: list[Any], spec: InputSpec, fmt: RecordFormat) -> None:
    values = [json.dumps(d, allow_nan=True).encode() for d in docs]
    batch = RecordDecoder(spec, fmt).decode([msg(v) for v in values])
    check_outcomes(batch, len(values), spec)


@st.composite
def mutated(draw: st.DrawFn, spec: InputSpec) -> bytes:
    """A valid record with a few bytes deleted, inserted or replaced."""
    raw = bytearray(good_record(spec, draw(st.integers(0, 5)), output=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        byte = draw(st.sampled_from(list(b'[]{},:"0123456789.-eE \\ntfu\xff\x00')))
        if op == "delete" and pos < len(raw):
            del raw[pos]
        elif op == "insert":
            raw.insert(pos, byte)
        elif pos < len(raw):
            raw[pos] = byte
    return bytes(raw)


@FUZZ
@given(
    data=st.data(),
    spec=st.sampled_from(SPECS),
    fmt=st.sampled_from([RecordFormat.JSON, RecordFormat.AUTO]),
)
def test_mutated_records_never_raise_and_good_neighbours_survive(
    data: st.DataObject, spec: InputSpec, fmt: RecordFormat
) -> None:
    bad = data.draw(st.lists(mutated(spec), min_size=1, max_size=5))
    values = []
    for i, raw in enumerate(bad):
        values += [good_record(spec, 100 + i), raw]
    batch = RecordDecoder(spec, fmt).decode([msg(v) for v in values])
    check_outcomes(batch, len(values), spec)
    good_rows = np.isin(batch.row_message, np.arange(0, len(values), 2))
    expected = np.asarray(
        [json.loads(values[i])["instance"] for i in range(0, len(values), 2)], dtype=np.float32
    )
    np.testing.assert_array_equal(batch.X[good_rows], expected)


headers_strategy = st.none() | st.lists(
    st.tuples(
        st.sampled_from(
            ["ce_type", "Ce-Type", "type", "ce_id", "requestid", "modelid", "namespace"]
        )
        | st.text(max_size=10),
        st.none() | st.binary(max_size=40) | st.text(max_size=40),
    ),
    max_size=6,
)


@FUZZ
@given(headers=st.lists(headers_strategy, min_size=1, max_size=5))
def test_arbitrary_headers_never_raise(headers: list[Any]) -> None:
    spec = SPECS[0]
    messages = [msg(good_record(spec, i), h) for i, h in enumerate(headers)]
    batch = RecordDecoder(spec, RecordFormat.AUTO).decode(messages)
    check_outcomes(batch, len(messages), spec)
    assert batch.dead == []
    for i, h in enumerate(headers):  # the decoder's cached reading agrees with the full one
        info = read_headers(h)
        assert ((i, "response") in batch.ignored) == (info is not None and info.is_response)
        assert batch.model_labels[i] == (info.labels if info is not None else None)


# -- valid records round-trip exactly ---------------------------------------------------

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)
finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
context = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in ("instance", "output")), finite_json, max_size=4
)


def _shortest(x: np.ndarray) -> str:
    """The array as JSON using numpy's shortest float32 repr (e.g. 0.1 rather than
    0.10000000149011612)."""
    if x.ndim == 1:
        return "[" + ",".join(str(v) for v in x) + "]"
    return "[" + ",".join(_shortest(row) for row in x) + "]"


@FUZZ
@given(
    data=st.data(),
    shape=shapes,
    n_classes=st.integers(1, 6),
    n=st.integers(1, 5),
    with_output=st.booleans(),
    extra=context,
    encoding=st.sampled_from(["repr", "shortest", "pretty"]),
)
def test_valid_json_records_round_trip_exactly(
    data: st.DataObject,
    shape: tuple[int, ...],
    n_classes: int,
    n: int,
    with_output: bool,
    extra: dict[str, Any],
    encoding: str,
) -> None:
    spec = InputSpec(shape, n_classes)
    xs = data.draw(hnp.arrays(np.float32, (n, *shape), elements=finite32))
    ys = data.draw(hnp.arrays(np.float32, (n, n_classes), elements=finite32))
    values = []
    for x, y in zip(xs, ys, strict=True):
        if encoding == "shortest":
            out = f', "output": {_shortest(y)}' if with_output else ""
            ctx = json.dumps(extra)[1:-1]
            values.append(f'{{"instance": {_shortest(x)}{out}{", " if ctx else ""}{ctx}}}'.encode())
        else:
            body = {"instance": x.tolist(), **extra}
            if with_output:
                body["output"] = y.tolist()
            values.append(json.dumps(body, indent=2 if encoding == "pretty" else None).encode())
    for fmt in (RecordFormat.JSON, RecordFormat.AUTO):
        batch = RecordDecoder(spec, fmt).decode([msg(v) for v in values])
        assert batch.dead == [], batch.dead
        source = np.asarray([json.loads(v)["instance"] for v in values], dtype=np.float32)
        np.testing.assert_array_equal(batch.X, source)
        if encoding != "shortest":  # the exact double of each float32: bit-exact
            assert batch.X.tobytes() == xs.tobytes()
        if with_output:
            assert batch.outputs is not None
            np.testing.assert_array_equal(
                batch.outputs, np.asarray([json.loads(v)["output"] for v in values], np.float32)
            )
        else:
            assert batch.outputs is None


@FUZZ
@given(
    data=st.data(),
    shape=shapes,
    rows=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    nested=st.booleans(),
    datatype=st.sampled_from(["FP32", "FP64", "FP16"]),
)
def test_valid_v2_requests_round_trip_with_row_indices(
    data: st.DataObject, shape: tuple[int, ...], rows: list[int], nested: bool, datatype: str
) -> None:
    spec = InputSpec(shape, 2)
    arrays = [data.draw(hnp.arrays(np.float32, (n, *shape), elements=finite32)) for n in rows]
    values = []
    for x in arrays:
        tensor = {
            "name": "x",
            "shape": list(x.shape),
            "datatype": datatype,
            "data": x.tolist() if nested else x.ravel().tolist(),
        }
        values.append(json.dumps({"inputs": [tensor]}).encode())
    for fmt in (RecordFormat.V2, RecordFormat.AUTO):
        batch = RecordDecoder(spec, fmt).decode([msg(v) for v in values])
        assert batch.dead == [], batch.dead
        assert batch.X.tobytes() == np.concatenate(arrays).tobytes()
        assert batch.row_message.tolist() == [i for i, n in enumerate(rows) for _ in range(n)]
        assert batch.row_in_message.tolist() == [r for n in rows for r in range(n)]


@FUZZ
@given(
    data=st.data(),
    shape=shapes,
    bad_row=st.integers(0, 3),
    value=st.sampled_from([1e39, -1e39, 3.5e38]),
)
def test_a_value_beyond_float32_dead_letters_exactly_its_message(
    data: st.DataObject, shape: tuple[int, ...], bad_row: int, value: float
) -> None:
    spec = InputSpec(shape, 2)
    x = data.draw(hnp.arrays(np.float32, (4, *shape), elements=finite32))
    flat = x.ravel().tolist()
    flat[bad_row * spec.size + data.draw(st.integers(0, spec.size - 1))] = value
    tensor = {"name": "x", "shape": [4, *shape], "datatype": "FP64", "data": flat}
    values = [good_record(spec, 1), json.dumps({"inputs": [tensor]}).encode(), good_record(spec, 2)]
    batch = RecordDecoder(spec, RecordFormat.AUTO).decode([msg(v) for v in values])
    assert [(d.index, d.reason) for d in batch.dead] == [(1, Reason.NON_FINITE)]
    assert batch.row_message.tolist() == [0, 2]


# -- the nesting proofs against a reference ---------------------------------------------


def _regular(value: Any, shape: tuple[int, ...]) -> bool:
    """Reference: nested lists of exactly ``shape`` holding only (non-bool) numbers."""
    if not shape:
        return type(value) in (int, float)
    return (
        isinstance(value, list)
        and len(value) == shape[0]
        and all(_regular(v, shape[1:]) for v in value)
    )


def _leaf_lists(value: Any) -> list[list[Any]]:
    """Every list in a nested list, outermost first."""
    found = [value]
    for v in value:
        if isinstance(v, list):
            found += _leaf_lists(v)
    return found


@st.composite
def nested_numbers(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """A regular nested list of ``shape``, then maybe a few structural mutations."""
    flat = draw(
        st.lists(
            st.integers(-9, 9) | finite32,
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        )
    )
    value: Any = np.asarray(flat, dtype=object).reshape(shape).tolist()
    for _ in range(draw(st.integers(0, 2))):
        lists = _leaf_lists(value)
        target = draw(st.sampled_from(lists))
        op = draw(st.sampled_from(["wrap", "move", "empty", "merge", "append_list"]))
        if op == "wrap" and target:
            i = draw(st.integers(0, len(target) - 1))
            target[i] = [target[i]]
        elif op == "move" and target:
            other = draw(st.sampled_from(lists))
            other.append(target.pop())
        elif op == "empty" and target:
            target[draw(st.integers(0, len(target) - 1))] = []
        elif op == "merge" and len(target) >= 2:
            a = target.pop()
            target[-1] = [target[-1], a] if not isinstance(target[-1], list) else [*target[-1], a]
        elif op == "append_list":
            target.append([])
    return value


noise = st.sampled_from(
    [
        {},
        {"tags": ["a", [1]]},
        {"note": "[[ ]] ,"},
        {"note": 'q"\\'},
        {"ctx": {"instance": [1]}},
        {"tag": "instance"},
        {"m": [[1, 2], [3]]},
        {"note": "[[,],[,]]"},
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    shape=st.sampled_from([(4,), (1,), (2, 3), (3, 1), (1, 3), (2, 2, 2), (2, 1, 2)]),
    n_classes=st.sampled_from([1, 2, 3]),
    with_output=st.booleans(),
    extra=noise,
    instance_first=st.booleans(),
    indent=st.sampled_from([None, 1]),
)
def test_nesting_proofs_agree_with_a_reference(
    data: st.DataObject,
    shape: tuple[int, ...],
    n_classes: int,
    with_output: bool,
    extra: dict[str, Any],
    instance_first: bool,
    indent: int | None,
) -> None:
    spec = InputSpec(shape, n_classes)
    instance = data.draw(nested_numbers(shape))
    body: dict[str, Any] = {"instance": instance} if instance_first else {}
    body.update(extra)
    output = data.draw(nested_numbers((n_classes,))) if with_output else None
    if with_output:
        body["output"] = output
    if not instance_first:
        body["instance"] = instance
    raw = json.dumps(body, indent=indent).encode()
    accept = _regular(instance, shape) and (output is None or _regular(output, (n_classes,)))
    event("regular" if accept else "irregular")
    for fmt in (RecordFormat.JSON, RecordFormat.AUTO):
        batch = RecordDecoder(spec, fmt).decode([msg(raw)])
        if accept:
            assert batch.dead == [], (raw, batch.dead)
            np.testing.assert_array_equal(batch.X, np.asarray([instance], dtype=np.float32))
        else:
            assert [(d.index, d.reason) for d in batch.dead] == [(0, Reason.SHAPE)], raw


HEADER_NAMES = ["ce_id", "ce_type", "ce_inferenceservicename", "ce_namespace", "x-request-id"]
HEADER_NAMES += ["model_name", "model_version", "content-type", "x-other", "CE_ID", "ce-id"]
header_values = (
    st.binary(max_size=12)
    | st.text(max_size=8)
    | st.none()
    | st.sampled_from([b"org.kubeflow.serving.inference.response", b"\xff\xfe", 7])
)
header_lists = st.lists(
    st.tuples(st.sampled_from(HEADER_NAMES) | st.text(max_size=6), header_values)
    | st.sampled_from([("solo",), ("a", b"b", b"c"), [("list", b"pair")]]),
    max_size=8,
)


@FUZZ
@given(headers=header_lists | st.dictionaries(st.sampled_from(HEADER_NAMES), header_values))
def test_one_walk_over_headers_tells_what_the_three_questions_do(headers: Any) -> None:
    from monitor.stream import headers as h

    assert h.message_facts(headers) == (
        h.header_bytes(headers),
        *h.decoder_facts(headers),
        h.header_id(headers),
    )
