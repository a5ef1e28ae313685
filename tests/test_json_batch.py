"""The whole-batch JSON path: it reads the plain layouts, and whatever it accepts it
decodes exactly as the per-record path does (which stays the judge of bad records)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monitor.stream import json_batch
from monitor.stream.json_batch import JsonBatch
from monitor.stream.records import DecodedBatch, InputSpec, Reason, RecordDecoder, RecordFormat

SPECS = [InputSpec((4,), 3), InputSpec((2, 2), 3), InputSpec((2, 1), 2), InputSpec((1, 2, 2), 2)]


def per_record(spec: InputSpec, fmt: RecordFormat = RecordFormat.JSON) -> RecordDecoder:
    decoder = RecordDecoder(spec, fmt)
    decoder._batch = None  # the reference: every message on its own
    return decoder


def same(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.X.dtype == b.X.dtype and a.X.shape == b.X.shape
    assert np.array_equal(a.X, b.X)
    assert (a.outputs is None) == (b.outputs is None)
    if a.outputs is not None and b.outputs is not None:
        assert np.array_equal(a.outputs, b.outputs)
    assert np.array_equal(a.has_output, b.has_output)
    assert np.array_equal(a.row_message, b.row_message)
    assert np.array_equal(a.row_in_message, b.row_in_message)
    assert a.dead == b.dead and a.ignored == b.ignored
    assert a.ids == b.ids and a.contexts == b.contexts and a.model_labels == b.model_labels


def record(
    x: np.ndarray,
    record_id: Any = None,
    output: list[float] | None = None,
    spaced: bool = False,
) -> bytes:
    body: dict[str, Any] = {} if record_id is None else {"id": record_id}
    body["instance"] = x.tolist()
    if output is not None:
        body["output"] = output
    return json.dumps(body, separators=None if spaced else (",", ":")).encode()


def batch_of(spec: InputSpec, n: int, **kwargs: Any) -> list[bytes]:
    rng = np.random.default_rng(n)
    return [record(rng.random(spec.shape).round(4), record_id=f"r-{i}", **kwargs) for i in range(n)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"spaced": True},
        {"output": [0.2, 0.3, 0.5]},
        {"output": [0.2, 0.3, 0.5], "spaced": True},
    ],
    ids=["compact", "spaced", "output", "output-spaced"],
)
def test_plain_records_take_the_batch_path_and_decode_as_one_by_one(
    spec: InputSpec, layout: dict[str, Any]
) -> None:
    output = layout.get("output")
    if output is not None:
        layout = {
            **layout,
            "output": [*output[: spec.n_classes - 1], sum(output[spec.n_classes - 1 :])],
        }
    values = batch_of(spec, 50, **layout)
    assert JsonBatch(spec).rows(values) is not None, "the batch path refused plain records"
    got = RecordDecoder(spec).decode_values(values)
    same(got, per_record(spec).decode_values(values))
    assert got.ids == [f"r-{i}" for i in range(50)] and not got.dead


def test_records_without_an_id_and_in_auto_format_take_the_batch_path() -> None:
    spec = InputSpec((2, 2), 3)
    values = [record(np.full((2, 2), i, dtype=float)) for i in range(5)]
    assert JsonBatch(spec).rows(values) is not None
    for fmt in (RecordFormat.JSON, RecordFormat.AUTO):
        got = RecordDecoder(spec, fmt).decode_values(values)
        same(got, per_record(spec, fmt).decode_values(values))
        assert got.ids == [None] * 5 and got.X[3].tolist() == [[3.0, 3.0], [3.0, 3.0]]


@pytest.mark.parametrize(
    "values",
    [
        # brackets shifted between neighbours: together a valid array of two rows
        [b'{"instance":[[1,2]}', b'{"instance":[3,4]],[[5,6],[7,8]]}'],
        [b'{"instance":[1,{"instance":2]}', b"[3,4]}"],
        [b'{"instance":[[1,2],[3,4]]}{"instance":[[5,6],[7,8]]}', b'{"x":1}'],
        [b'{"instance":[[1,2],[3,4]]', b'{"instance":[[5,6],[7,8]]}}'],
        [b'{"instance":[[1,2],[3,4]]},{"instance":[[5,6],[7,8]]}', b""],
        [b'{"instance":[[1,2],\n[3,4]]}', b'{"instance":[[5,6],[7,8]]}'],
        [b'{"instance":[[1,2],[3,4]];[[5,6],[7,8]]}', b'{"instance":[[5,6],[7,8]]}'],
    ],
    ids=["shifted", "split-object", "two-in-one", "brace-moved", "comma-joined", "newline", "mark"],
)
def test_messages_that_are_not_one_record_each_are_judged_one_by_one(
    values: list[bytes],
) -> None:
    spec = InputSpec((2, 2), 3)
    assert JsonBatch(spec).rows(values) is None
    got = RecordDecoder(spec).decode_values(values)
    same(got, per_record(spec).decode_values(values))


def test_one_bad_record_is_dead_lettered_alone_and_the_rest_scored() -> None:
    spec = InputSpec((4,), 3)
    values = batch_of(spec, 6)
    values[2] = b'{"id":"bad","instance":[1,2,3]}'
    values[4] = b'{"id":"nan","instance":[1,NaN,3,4]}'
    got = RecordDecoder(spec).decode_values(values)
    assert [(d.index, d.reason) for d in got.dead] == [(2, Reason.SHAPE), (4, Reason.NON_FINITE)]
    assert got.row_message.tolist() == [0, 1, 3, 5]


def test_numbers_beyond_float32_dead_letter_their_message_on_the_batch_path() -> None:
    spec = InputSpec((4,), 3)
    values = batch_of(spec, 4)
    values[1] = b'{"id":"big","instance":[-1e300,2,3,4]}'
    values[3] = b'{"id":"big32","instance":[1,2,3,1e39]}'
    assert JsonBatch(spec).rows(values) is not None
    got = RecordDecoder(spec).decode_values(values)
    same(got, per_record(spec).decode_values(values))
    assert [(d.index, d.reason) for d in got.dead] == [
        (1, Reason.NON_FINITE),
        (3, Reason.NON_FINITE),
    ]


# -- the template path: heads alike but for ids of one width ----------------------------


@pytest.fixture
def template_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regular-expression path turned off: a batch the template refuses is decoded
    one by one, so a test that needs the batch path proves the template took it."""
    monkeypatch.setattr(json_batch, "_between", lambda text, n: None)


def lengths_of(values: list[bytes]) -> np.ndarray:
    return np.array([len(v) for v in values])


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
@pytest.mark.usefixtures("template_only")
def test_plain_records_with_ids_of_one_width_take_the_template_path(
    spec: InputSpec, spaced: bool
) -> None:
    rng = np.random.default_rng(1)
    ids = [f"r-{i:04d}" for i in range(40)]
    values = [record(rng.random(spec.shape).round(4), i, spaced=spaced) for i in ids]
    assert json_batch._templated(values, lengths_of(values)) is not None
    got = RecordDecoder(spec).decode_values(values)
    assert got.ids == ids and not got.dead and len(got.X) == 40
    same(got, per_record(spec).decode_values(values))


@pytest.mark.usefixtures("template_only")
def test_the_template_path_reads_records_without_ids_empty_ids_and_utf8_ids() -> None:
    spec = InputSpec((2, 2), 3)
    x = np.arange(4.0).reshape(2, 2) / 8
    for ids in ([None] * 3, [""] * 3, ["é€", "€é", "ab€"], ["x" * 300] * 2):
        values = [
            record(x + k)
            if i is None
            else b'{"id":"%s","instance":%s}' % (i.encode(), json.dumps((x + k).tolist()).encode())
            for k, i in enumerate(ids)
        ]
        assert JsonBatch(spec).rows(values) is not None, ids
        got = RecordDecoder(spec).decode_values(values)
        same(got, per_record(spec).decode_values(values))
        assert got.ids == [None if i is None else i[:256] for i in ids]


@pytest.mark.parametrize(
    "values",
    [
        # an id holding a quote, a backslash, a control character, bytes that aren't UTF-8
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"a"","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"a\\","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"a\n","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"a\x00","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"\xc3(","instance":[1,2,3,4]}'],
        # a key differing by one byte, a message not ending with its brace, a short one
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"iD":"ab","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b' "id":"ab","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"ab","instance":[1,2,3,4]} '],
        [b'{"id":"ab","instance":[1,2,3,4] ', b'{"id":"ab","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]1', b'{"id":"ab","instance":[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4]}', b'{"id":"ab","instance":}'],
        [b'{"instance":[1,2,3,4]}', b'{"instance":[1,2,3,4],"id":"a"}'],
        # brackets shifted between neighbours whose heads are alike
        [b'{"id":"ab","instance":[1,2,3}', b'{"id":"ab","instance":4],[1,2,3,4]}'],
        [b'{"id":"ab","instance":[1,2,3,4];[1,2,3,4]}', b'{"id":"ab","instance":[1,2,3,4]}'],
    ],
    ids=[
        "quote",
        "backslash",
        "line-break",
        "nul",
        "not-utf8",
        "key",
        "first-byte",
        "trailing-blank",
        "no-brace",
        "digit-for-brace",
        "short",
        "id-after",
        "shifted",
        "mark",
    ],
)
@pytest.mark.usefixtures("template_only")
def test_the_template_path_refuses_what_one_by_one_would_judge(values: list[bytes]) -> None:
    spec = InputSpec((4,), 3)
    assert json_batch._templated(values, lengths_of(values)) is None or (
        JsonBatch(spec).rows(values) is None
    )
    got = RecordDecoder(spec).decode_values(values)
    same(got, per_record(spec).decode_values(values))


def test_ids_of_different_widths_are_left_to_the_regular_expression() -> None:
    spec = InputSpec((4,), 3)
    values = batch_of(spec, 12)  # r-0 ... r-11
    assert json_batch._templated(values, lengths_of(values)) is None
    assert JsonBatch(spec).rows(values) is not None
    same(RecordDecoder(spec).decode_values(values), per_record(spec).decode_values(values))


#: Id bytes of one width: the plain ones most traffic has, UTF-8 ones, or anything
#: (quotes, backslashes, control bytes, bytes that aren't UTF-8).
PLAIN_IDS = st.text("ab-_9 ~\x7f", min_size=3, max_size=3).map(str.encode)
ODD_IDS = st.one_of(
    st.sampled_from(["é.", "€", ".é", '"a"', "a\\"]).map(str.encode),
    st.binary(min_size=3, max_size=3),
)
ID_BYTES = st.one_of(PLAIN_IDS, PLAIN_IDS, PLAIN_IDS, PLAIN_IDS, ODD_IDS)


def property_settings(examples: int) -> Any:
    """Hypothesis settings of these properties: large batches, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def mutated(draw: st.DrawFn, values: list[bytes], times: int) -> list[bytes]:
    """``values`` with ``times`` drawn ``MUTATIONS``, each of one record by another."""
    for _ in range(times):
        i = draw(st.integers(0, len(values) - 1))
        j = draw(st.integers(0, len(values) - 1))
        values[i] = draw(st.sampled_from(MUTATIONS))(values[i], values[j])
    return values


@st.composite
def templated_batches(draw: st.DrawFn) -> tuple[InputSpec, list[bytes]]:
    spec = draw(st.sampled_from(SPECS))
    spaced = draw(st.booleans())
    head = b'{"id": "' if spaced else b'{"id":"'
    middle = b'", "instance": ' if spaced else b'","instance":'
    values = []
    for _ in range(draw(st.integers(1, 6))):
        x = np.array(draw(st.lists(numbers, min_size=spec.size, max_size=spec.size)), dtype=object)
        array = json.dumps(x.reshape(spec.shape).tolist()).encode()
        values.append(head + draw(ID_BYTES) + middle + array + b"}")
    return spec, mutated(draw, values, draw(st.sampled_from([0, 0, 1, 2])))


@property_settings(400)
@given(case=templated_batches())
def test_the_template_path_decodes_exactly_as_one_by_one(
    case: tuple[InputSpec, list[bytes]],
) -> None:
    spec, values = case
    templated = json_batch._templated(values, lengths_of(values)) is not None
    accepted = JsonBatch(spec).rows(values) is not None
    event("template" if templated and accepted else "refused" if templated else "other")
    same(RecordDecoder(spec).decode_values(values), per_record(spec).decode_values(values))


# -- the property: batch and one-by-one agree on anything ----------------------------

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0.0, -0.0, 1e300, -1e39, 5e-324]),
)
ids = st.none() | st.text(max_size=12) | st.integers() | st.sampled_from(["", "a" * 300, "é€"])


@st.composite
def valid_records(draw: st.DrawFn, spec: InputSpec) -> bytes:
    x = np.array(draw(st.lists(numbers, min_size=spec.size, max_size=spec.size)), dtype=object)
    has_output = draw(st.booleans())
    output = draw(st.lists(numbers, min_size=spec.n_classes, max_size=spec.n_classes))
    return record(
        x.reshape(spec.shape),
        record_id=draw(ids),
        output=output if has_output else None,
        spaced=draw(st.booleans()),
    )


MUTATIONS = [
    lambda v, w: v[:-1],
    lambda v, w: v[:-1] + b" ",
    lambda v, w: v + b"}",
    lambda v, w: v[: len(v) // 2] + w[len(w) // 2 :],
    lambda v, w: v.replace(b"[", b"", 1),
    lambda v, w: v.replace(b"]", b"", 1),
    lambda v, w: v.replace(b"],", b"]],", 1),
    lambda v, w: v.replace(b"[", b"[[", 1),
    lambda v, w: v.replace(b",", b";", 1),
    lambda v, w: v.replace(b",", b",\n", 1),
    lambda v, w: v.replace(b"{", b'{"model_name":"m",', 1),
    lambda v, w: v.replace(b"{", b'{"instance":[1],', 1),
    lambda v, w: v + b"," + w,
    lambda v, w: v.replace(b"1", b"NaN", 1),
    lambda v, w: v.replace(b"0", b"01", 1),
    lambda v, w: b" " + v,
    lambda v, w: b" " + v[1:],
    lambda v, w: v.replace(b'"id"', b'"i\\u0064"', 1),
    lambda v, w: v.replace(b'"r', b'"\xff', 1),
]


@st.composite
def batches(draw: st.DrawFn) -> tuple[InputSpec, list[bytes]]:
    spec = draw(st.sampled_from(SPECS))
    values = draw(st.lists(valid_records(spec), min_size=1, max_size=6))
    return spec, mutated(draw, values, draw(st.integers(0, 2)))


@property_settings(400)
@given(case=batches())
def test_the_batch_path_decodes_exactly_as_one_by_one(case: tuple[InputSpec, list[bytes]]) -> None:
    spec, values = case
    event("batch path" if JsonBatch(spec).rows(values) is not None else "one by one")
    same(RecordDecoder(spec).decode_values(values), per_record(spec).decode_values(values))


# -- headers (CloudEvents and others), in the ``json`` format --------------------------

CE = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-1"),
    ("ce_type", b"org.kubeflow.serving.inference.request"),
    ("ce_source", b"http://localhost:9081/"),
    ("ce_inferenceservicename", b"digits"),
    ("ce_namespace", b"ml"),
]
HEADER_SETS: list[Any] = [
    None,
    [],
    CE,
    [("ce_type", b"org.kubeflow.serving.inference.response"), ("ce_id", b"r")],
    [("content-type", b"application/x-protobuf")],
    [("x-big", b"x" * 2_000_000)],
    [("ce_id", b"\xff\xfe")],
]


def test_records_with_cloudevents_headers_take_the_batch_path_with_header_ids_and_labels() -> None:
    spec = InputSpec((2, 2), 3)
    values = batch_of(spec, 4)
    values[1] = record(np.ones((2, 2)))  # no body id: the header's is used
    headers = [CE] * 4
    got = RecordDecoder(spec).decode_values(values, headers)
    same(got, per_record(spec).decode_values(values, headers))
    assert got.ids == ["r-0", "evt-1", "r-2", "r-3"]
    assert got.model_labels[0] is not None and got.model_labels[0].model_name == "digits"


@property_settings(300)
@given(case=batches(), data=st.data())
def test_with_headers_the_batch_path_decodes_exactly_as_one_by_one(
    case: tuple[InputSpec, list[bytes]], data: st.DataObject
) -> None:
    spec, values = case
    headers = [data.draw(st.sampled_from(HEADER_SETS)) for _ in values]
    if all(h is None for h in headers):
        headers[0] = CE
    event("batch path" if JsonBatch(spec).rows(values) is not None else "one by one")
    same(
        RecordDecoder(spec).decode_values(values, headers),
        per_record(spec).decode_values(values, headers),
    )
