"""Decoding inference records into numpy batches: formats, headers, poison, identity."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Message
from poison_corpus import (
    Poison,
    for_format,
    good_instance,
    good_output,
    good_record,
    good_v2_record,
    poison_corpus,
)
from protobuf_corpus import good_protobuf_record

from monitor.errors import ConfigError
from monitor.stream.records import (
    DecodedBatch,
    InputSpec,
    ModelLabels,
    Reason,
    RecordDecoder,
    RecordFormat,
    record_identity,
    record_times,
)

F = RecordFormat
FLAT = InputSpec((64,), 10)
NESTED = InputSpec((8, 8), 10)
SPECS = {"flat": FLAT, "nested": NESTED}


def msg(
    value: bytes | None,
    headers: Any = None,
    key: bytes | None = None,
    offset: int = 0,
    topic: str = "records",
) -> Message:
    return Message(
        topic=topic,
        partition=3,
        offset=offset,
        key=key,
        value=value,
        headers=headers,
        timestamp=(1, 1_700_000_000_000),
    )


def good_for(fmt: RecordFormat, spec: InputSpec, seed: int) -> tuple[bytes, np.ndarray]:
    """A valid message in ``fmt`` (json for auto) and the instance it holds."""
    x = good_instance(spec, seed)
    if fmt is F.V2_PROTOBUF:
        return good_protobuf_record(spec, seed)
    if fmt is F.V2:
        return good_v2_record(spec, seed), x[None]
    if fmt is F.V1:
        return json.dumps({"instances": [x.tolist()]}).encode(), x[None]
    if fmt is F.SELDON:
        return json.dumps({"data": {"ndarray": [x.tolist()]}}).encode(), x[None]
    return good_record(spec, seed), x[None]


@cache
def corpus(spec_name: str) -> list[Poison]:
    return poison_corpus(SPECS[spec_name])


def _cases() -> list[Any]:
    params = []
    for spec_name in SPECS:
        for case in corpus(spec_name):
            for fmt in dict.fromkeys([case.fmt, F.AUTO]):
                params.append(
                    pytest.param(spec_name, case.name, fmt, id=f"{spec_name}-{fmt}-{case.name}")
                )
    return params


# -- poison ----------------------------------------------------------------------------


def test_corpus_has_at_least_50_kinds_covering_every_input_reason() -> None:
    cases = corpus("flat")
    assert len(cases) >= 50
    reasons = {case.reason for case in cases}
    assert reasons == set(Reason) - {Reason.DECODER_ERROR}


@pytest.mark.parametrize(("spec_name", "name", "fmt"), _cases())
def test_poison_is_one_dead_letter_and_its_neighbours_decode(
    spec_name: str, name: str, fmt: RecordFormat
) -> None:
    spec = SPECS[spec_name]
    case = next(c for c in corpus(spec_name) if c.name == name)
    before, x_before = good_for(case.fmt, spec, 1)
    after, x_after = good_for(case.fmt, spec, 2)
    batch = RecordDecoder(spec, fmt).decode(
        [msg(before), msg(case.value, case.headers), msg(after)]
    )
    assert [(d.index, d.reason) for d in batch.dead] == [(1, case.reason)], batch.dead
    assert batch.dead[0].detail
    assert batch.ignored == []
    np.testing.assert_array_equal(batch.X, np.concatenate([x_before, x_after]))
    assert batch.row_message.tolist() == [0, 2]


@pytest.mark.parametrize("fmt", list(RecordFormat))
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_whole_corpus_interleaved_with_good_records(spec_name: str, fmt: RecordFormat) -> None:
    spec = SPECS[spec_name]
    good_fmt = F.JSON if fmt is F.AUTO else fmt
    cases = for_format(corpus(spec_name), fmt)
    messages, expected_x, expected_dead = [], [], []
    for i, case in enumerate(cases):
        raw, x = good_for(good_fmt, spec, i)
        messages.append(msg(raw))
        expected_x.append(x)
        expected_dead.append((len(messages), case.reason))
        messages.append(msg(case.value, case.headers))
    batch = RecordDecoder(spec, fmt).decode(messages)
    assert [(d.index, d.reason) for d in batch.dead] == expected_dead
    np.testing.assert_array_equal(batch.X, np.concatenate(expected_x))
    assert batch.row_message.tolist() == list(range(0, len(messages), 2))
    assert len(batch.model_labels) == len(messages)


def test_non_finite_row_dead_letters_its_whole_multi_row_message() -> None:
    body = json.loads(good_v2_record(FLAT, rows=3))
    body["inputs"][0]["data"][64 * 2 + 5] = 1e39
    good, x = good_for(F.V2, FLAT, 7)
    batch = RecordDecoder(FLAT, F.V2).decode([msg(json.dumps(body).encode()), msg(good)])
    assert [(d.index, d.reason) for d in batch.dead] == [(0, Reason.NON_FINITE)]
    np.testing.assert_array_equal(batch.X, x)
    assert batch.row_message.tolist() == [1]


def test_unexpected_failures_become_dead_letters_not_exceptions() -> None:
    class Broken:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def value(self) -> bytes:
            raise self.exc

        def headers(self) -> None:
            return None

    messages: list[Any] = [
        Broken(KeyError("boom")),
        Broken(RecursionError()),
        Broken(MemoryError()),
        msg(good_record(FLAT)),
    ]
    batch = RecordDecoder(FLAT).decode(messages)
    assert [(d.index, d.reason) for d in batch.dead] == [
        (0, Reason.DECODER_ERROR),
        (1, Reason.INVALID_JSON),
        (2, Reason.TOO_LARGE),
    ]
    assert "KeyError" in batch.dead[0].detail
    assert len(batch.X) == 1


def test_an_unreadable_message_takes_its_place_among_the_dead_letters() -> None:
    class Broken:
        def value(self) -> bytes:
            raise KeyError("boom")

        def headers(self) -> None:
            return None

    messages: list[Any] = [msg(good_record(FLAT)), msg(b"{"), Broken(), msg(b""), Broken()]
    batch = RecordDecoder(FLAT).decode(messages)
    assert [(d.index, d.reason) for d in batch.dead] == [
        (1, Reason.INVALID_JSON),
        (2, Reason.DECODER_ERROR),
        (3, Reason.EMPTY),
        (4, Reason.DECODER_ERROR),
    ]
    assert batch.row_message.tolist() == [0]


def test_dead_letter_detail_is_bounded() -> None:
    long_key = "k" * 5000
    raw = b'{"%s": 1, "%s": 2}' % (long_key.encode(), long_key.encode())
    batch = RecordDecoder(FLAT).decode([msg(raw)])
    assert batch.dead[0].reason == Reason.SCHEMA
    assert len(batch.dead[0].detail) <= 300


def test_duplicate_keys_are_refused_because_parsers_disagree_on_the_winner() -> None:
    first, second = good_instance(FLAT, 1).tolist(), good_instance(FLAT, 2).tolist()
    raw = b'{"instance": %s, "instance": %s}' % (
        json.dumps(first).encode(),
        json.dumps(second).encode(),
    )
    assert orjson.loads(raw)["instance"] == second  # last wins there; simdjson takes the first
    batch = RecordDecoder(FLAT).decode([msg(raw)])
    assert batch.dead[0].reason == Reason.SCHEMA
    assert len(batch.X) == 0


def test_oversized_message_is_refused_before_parsing() -> None:
    spec = InputSpec((64,), 10, max_message_bytes=100)
    raw = good_record(spec)
    batch = RecordDecoder(spec).decode([msg(raw)])
    assert batch.dead[0].reason == Reason.TOO_LARGE
    assert str(len(raw)) in batch.dead[0].detail


# -- good records ----------------------------------------------------------------------


def _decode(spec: InputSpec, values: list[bytes], fmt: RecordFormat = F.JSON) -> DecodedBatch:
    batch = RecordDecoder(spec, fmt).decode([msg(v, offset=i) for i, v in enumerate(values)])
    assert batch.dead == [], batch.dead
    return batch


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_json_records_decode_to_float32_exactly(spec_name: str) -> None:
    spec = SPECS[spec_name]
    raws = [good_record(spec, i) for i in range(5)]
    batch = _decode(spec, raws)
    expected = np.asarray([json.loads(r)["instance"] for r in raws], dtype=np.float32)
    assert batch.X.dtype == np.float32 and batch.X.flags.c_contiguous
    assert batch.X.shape == (5, *spec.shape)
    np.testing.assert_array_equal(batch.X, expected)
    assert batch.outputs is None
    assert batch.has_output.tolist() == [False] * 5
    assert batch.row_message.dtype == np.int64 and batch.row_message.tolist() == [0, 1, 2, 3, 4]
    assert batch.row_in_message.dtype == np.int32 and batch.row_in_message.tolist() == [0] * 5
    assert batch.model_labels == [None] * 5


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_output_is_returned_when_every_row_has_one(spec_name: str) -> None:
    spec = SPECS[spec_name]
    raws = [good_record(spec, i, output=True) for i in range(3)]
    batch = _decode(spec, raws)
    assert batch.outputs is not None and batch.outputs.dtype == np.float32
    np.testing.assert_array_equal(batch.outputs, np.stack([good_output(spec, i) for i in range(3)]))
    assert batch.has_output.all()


def test_outputs_are_none_when_some_rows_lack_one_and_null_means_absent() -> None:
    raws = [
        good_record(FLAT, 0, output=True),
        good_record(FLAT, 1),
        json.dumps({"instance": good_instance(FLAT, 2).tolist(), "output": None}).encode(),
    ]
    batch = _decode(FLAT, raws)
    assert batch.outputs is None
    assert batch.has_output.tolist() == [True, False, False]
    assert len(batch.X) == 3


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize(
    "extra",
    [
        {"tags": ["a", "b"], "matrix": [[1, 2], [3]]},  # other arrays: no bracket proof
        {"note": "[[[ ]]] [ ,"},  # brackets inside strings
        {"nested": {"instance": [1, 2, 3]}},  # an "instance" key deeper down
        {"model": "m", "n": None, "ok": True},
        {"note": 'say "hi" \\ caf\u00e9'},  # escapes: the raw text can't be trusted
        {"tag": "instance", "kind": "output"},  # the keys also appear as values
    ],
    ids=[
        "arrays",
        "brackets-in-strings",
        "nested-instance-key",
        "scalars",
        "escapes",
        "key-values",
    ],
)
def test_records_with_arrays_or_brackets_in_other_fields_still_decode(
    spec_name: str, extra: dict[str, Any]
) -> None:
    spec = SPECS[spec_name]
    raws = [good_record(spec, i, output=True, **extra) for i in range(3)]
    batch = _decode(spec, raws)
    np.testing.assert_array_equal(batch.X, np.stack([good_instance(spec, i) for i in range(3)]))
    assert batch.outputs is not None


def test_formatting_whitespace_integers_and_bom_are_accepted() -> None:
    x = good_instance(NESTED, 3)
    pretty = json.dumps({"instance": x.tolist(), "id": "p"}, indent=2).encode()
    ints = json.dumps({"instance": np.arange(64).reshape(8, 8).tolist()}).encode()
    bom = b"\xef\xbb\xbf" + good_record(NESTED, 4)
    batch = _decode(NESTED, [pretty, ints, bom])
    np.testing.assert_array_equal(batch.X[0], x)
    np.testing.assert_array_equal(batch.X[1], np.arange(64, dtype=np.float32).reshape(8, 8))
    np.testing.assert_array_equal(batch.X[2], good_instance(NESTED, 4))


def test_an_empty_innermost_array_cannot_pass_for_a_number() -> None:
    spec = InputSpec((2, 1), 2)
    batch = RecordDecoder(spec).decode(
        [msg(b'{"instance": [[], [5]]}'), msg(b'{"instance": [[4], [5]]}')]
    )
    assert [(d.index, d.reason) for d in batch.dead] == [(0, Reason.SHAPE)]
    np.testing.assert_array_equal(batch.X, [[[4.0], [5.0]]])


def test_empty_batch() -> None:
    batch = RecordDecoder(NESTED).decode([])
    assert batch.X.shape == (0, 8, 8) and batch.X.dtype == np.float32
    assert batch.outputs is None
    assert batch.has_output.shape == (0,) and batch.row_message.shape == (0,)
    assert batch.dead == [] and batch.ignored == [] and batch.model_labels == []


# -- other formats ---------------------------------------------------------------------


def _v2_body(x: np.ndarray, shape: list[int], nested: bool = False, **extra: Any) -> bytes:
    data = x.reshape(shape).tolist() if nested else x.ravel().tolist()
    tensor = {"name": "input-0", "shape": shape, "datatype": "FP32", "data": data}
    return json.dumps({"id": "req", "inputs": [tensor], **extra}).encode()


@pytest.mark.parametrize("nested", [False, True], ids=["flat-data", "nested-data"])
def test_v2_request_with_several_rows(nested: bool) -> None:
    x = np.stack([good_instance(NESTED, i) for i in range(3)])
    one = good_instance(NESTED, 9)[None]
    batch = _decode(
        NESTED,
        [_v2_body(x, [3, 8, 8], nested), _v2_body(one, [1, 8, 8], nested)],
        F.V2,
    )
    np.testing.assert_array_equal(batch.X, np.concatenate([x, one]))
    assert batch.row_message.tolist() == [0, 0, 0, 1]
    assert batch.row_in_message.tolist() == [0, 1, 2, 0]


def test_v2_shapes_without_batch_dimension_or_with_unit_dimensions() -> None:
    x = good_instance(NESTED, 1)
    batch = _decode(
        NESTED,
        [_v2_body(x, [8, 8]), _v2_body(x, [1, 8, 8, 1]), _v2_body(x, [1, 1, 8, 8], nested=True)],
        F.V2,
    )
    np.testing.assert_array_equal(batch.X, np.stack([x, x, x]))


def test_v2_numeric_datatypes_are_accepted() -> None:
    x = np.arange(64, dtype=np.float32)
    bodies = []
    for datatype in ("FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT8", "uint16"):
        tensor = {
            "name": "x",
            "shape": [1, 64],
            "datatype": datatype,
            "data": x.astype(int).tolist(),
        }
        bodies.append(json.dumps({"inputs": [tensor]}).encode())
    batch = _decode(FLAT, bodies, F.V2)
    np.testing.assert_array_equal(batch.X, np.stack([x] * len(bodies)))


def test_v2_outputs_with_the_classifier_shape_are_used_others_ignored() -> None:
    x = np.stack([good_instance(FLAT, i) for i in range(2)])
    probs = np.stack([good_output(FLAT, i) for i in range(2)])
    outputs = [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [3, 4]},
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "probabilities", "shape": [2, 10], "datatype": "FP32", "data": probs.tolist()},
    ]
    with_probs = _v2_body(x, [2, 64], outputs=outputs, model_name="digits", model_version="3")
    labels_only = _v2_body(x, [2, 64], outputs=outputs[:2])
    batch = _decode(FLAT, [with_probs], F.V2)
    assert batch.outputs is not None
    np.testing.assert_array_equal(batch.outputs, probs)
    assert batch.model_labels == [ModelLabels("digits", "3", None)]
    batch = _decode(FLAT, [labels_only], F.V2)
    assert batch.outputs is None and not batch.has_output.any()


def test_v2_picks_the_one_input_that_fits_among_several() -> None:
    x = good_instance(FLAT, 1)
    body = {
        "inputs": [
            {"name": "mask", "shape": [1, 3], "datatype": "INT32", "data": [1, 0, 1]},
            {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()},
        ]
    }
    batch = _decode(FLAT, [json.dumps(body).encode()], F.V2)
    np.testing.assert_array_equal(batch.X, x[None])


def test_v1_instances_and_predictions() -> None:
    x = np.stack([good_instance(NESTED, i) for i in range(2)])
    probs = np.stack([good_output(NESTED, i) for i in range(2)])
    with_preds = {"instances": x.tolist(), "predictions": probs.tolist()}
    class_ids = {"instances": x.tolist(), "predictions": [1, 2]}
    batch = _decode(NESTED, [json.dumps(with_preds).encode()], F.V1)
    np.testing.assert_array_equal(batch.X, x)
    assert batch.outputs is not None
    np.testing.assert_array_equal(batch.outputs, probs)
    batch = _decode(NESTED, [json.dumps(class_ids).encode()], F.V1)
    assert batch.outputs is None
    np.testing.assert_array_equal(batch.X, x)


def test_seldon_ndarray_and_tensor() -> None:
    x = np.stack([good_instance(FLAT, i) for i in range(2)])
    ndarray = {"data": {"names": [f"f{i}" for i in range(64)], "ndarray": x.tolist()}}
    tensor = {"data": {"tensor": {"shape": [2, 64], "values": x.ravel().tolist()}}}
    batch = _decode(FLAT, [json.dumps(ndarray).encode(), json.dumps(tensor).encode()], F.SELDON)
    np.testing.assert_array_equal(batch.X, np.concatenate([x, x]))
    assert batch.row_message.tolist() == [0, 0, 1, 1]


def test_auto_sniffs_each_message() -> None:
    x = good_instance(FLAT, 5)
    raws = [
        good_record(FLAT, 5),
        _v2_body(x[None], [1, 64]),
        json.dumps({"instances": [x.tolist()]}).encode(),
        json.dumps({"data": {"ndarray": [x.tolist()]}}).encode(),
        json.dumps(
            {"id": "r", "outputs": [{"name": "p", "shape": [1], "datatype": "FP32", "data": [1]}]}
        ).encode(),
        json.dumps({"predictions": [[0.5, 0.5]]}).encode(),
    ]
    batch = RecordDecoder(FLAT, F.AUTO).decode([msg(r) for r in raws])
    assert batch.dead == []
    np.testing.assert_array_equal(batch.X, np.stack([x] * 4))
    assert batch.ignored == [(4, "response"), (5, "response")]


# -- headers ---------------------------------------------------------------------------

KSERVE_REQUEST = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"5f1a-77"),
    ("ce_type", b"org.kubeflow.serving.inference.request"),
    ("ce_source", b"http://localhost:9081/"),
    ("ce_inferenceservicename", b"digits"),
    ("ce_namespace", b"ml"),
    ("ce_component", b"predictor"),
    ("content-type", b"application/json"),
]


@pytest.mark.parametrize(
    "headers",
    [
        [("ce_type", b"org.kubeflow.serving.inference.response"), ("ce_id", b"5f1a-77")],
        [("Ce-Type", "org.kubeflow.serving.inference.response")],
        [("type", b"io.seldon.serving.inference.response"), ("requestid", b"r-1")],
        {"ce_type": b"io.seldon.serving.inference.response"},
    ],
    ids=["cloudevents", "http-style-name", "seldon", "mapping"],
)
def test_response_events_are_ignored_not_scored(headers: Any) -> None:
    raws = [
        msg(good_record(FLAT, 0)),
        msg(good_record(FLAT, 1), headers),
        msg(b"not json", headers),
    ]
    batch = RecordDecoder(FLAT, F.AUTO).decode(raws)
    assert batch.ignored == [(1, "response"), (2, "response")]
    assert batch.dead == []
    assert batch.row_message.tolist() == [0]


def test_model_labels_come_from_headers_and_the_body_wins() -> None:
    seldon = [
        ("type", b"io.seldon.serving.inference.request"),
        ("modelid", b"clf"),
        ("namespace", b"prod"),
    ]
    raws = [
        msg(good_record(FLAT, 0), KSERVE_REQUEST),
        msg(good_record(FLAT, 1, model_name="digits-v2", model_version="7"), KSERVE_REQUEST),
        msg(good_record(FLAT, 2), seldon),
        msg(good_record(FLAT, 3)),
        msg(b"{}", KSERVE_REQUEST),
    ]
    batch = RecordDecoder(FLAT).decode(raws)
    assert batch.model_labels == [
        ModelLabels("digits", None, "ml"),
        ModelLabels("digits-v2", "7", "ml"),
        ModelLabels("clf", None, "prod"),
        None,
        ModelLabels("digits", None, "ml"),  # dead letters keep the header's labels
    ]
    assert [d.index for d in batch.dead] == [4]
    assert batch.model_labels[0] is batch.model_labels[4]  # interned
    assert ModelLabels("digits", None, "ml").as_dict() == {
        "model_name": "digits",
        "namespace": "ml",
    }


def test_odd_headers_are_harmless() -> None:
    headers = [
        ("ce_type", None),
        ("ce_id", b"\xff\xfe"),
        ("x", b"1"),
        ("ce_namespace", b"n" * 1000),
    ]
    batch = RecordDecoder(FLAT).decode([msg(good_record(FLAT), headers)])
    assert batch.dead == [] and len(batch.X) == 1
    label = batch.model_labels[0]
    assert label is not None and label.namespace is not None and len(label.namespace) == 256


# -- identity --------------------------------------------------------------------------


def test_identity_prefers_body_id_then_event_id_then_request_id_then_coordinates() -> None:
    body_id = msg(good_record(FLAT, 0, user="u1"), KSERVE_REQUEST, key=b"k1")
    no_id = json.dumps({"instance": good_instance(FLAT).tolist()}).encode()
    event = msg(no_id, KSERVE_REQUEST)
    seldon = msg(no_id, [("requestid", b"seldon-9")])
    bare = msg(no_id, offset=42)
    ident = record_identity(body_id, F.JSON, 0)
    assert ident.id == "good-0"
    assert ident.key == b"k1"
    assert ident.event_type == "org.kubeflow.serving.inference.request"
    assert ident.model == ModelLabels("digits", None, "ml")
    assert ident.context == {"user": "u1"}
    assert (ident.topic, ident.partition, ident.offset) == ("records", 3, 0)
    assert ident.timestamp_ms == 1_700_000_000_000
    assert record_identity(event, F.JSON, 0).id == "5f1a-77"
    assert record_identity(seldon, F.AUTO, 0).id == "seldon-9"
    assert record_identity(bare, "json", 0).id == "records/3/42"


def test_identity_of_rows_in_a_multi_row_message_gets_a_suffix() -> None:
    x = np.stack([good_instance(FLAT, i) for i in range(3)])
    m = msg(_v2_body(x, [3, 64], parameters={"tenant": "a"}))
    assert [record_identity(m, F.V2, r).id for r in range(3)] == ["req#0", "req#1", "req#2"]
    assert record_identity(m, F.AUTO, 1).context == {"parameters": {"tenant": "a"}}
    single = msg(_v2_body(x[:1], [1, 64]))
    assert record_identity(single, F.V2, 0).id == "req"


def test_identity_context_is_capped() -> None:
    raw = good_record(FLAT, 0, small="s", big="x" * 5000, after=[1, 2, 3])
    ctx = record_identity(msg(raw), F.JSON, 0).context
    assert ctx == {"small": "s", "after": [1, 2, 3], "_dropped_fields": 1}
    assert len(orjson.dumps(ctx)) <= 2048 + 32


@pytest.mark.parametrize(
    "value", [None, b"", b"\xff", b"[1]", b'{"id": ' + b"[" * 3000 + b"]" * 3000 + b"}"]
)
def test_identity_never_raises_on_odd_bodies(value: bytes | None) -> None:
    ident = record_identity(msg(value, offset=5), F.AUTO, 0)
    assert ident.id == "records/3/5"
    assert ident.context == {}


# -- spec and robustness ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (), "n_classes": 2},
        {"shape": (0, 3), "n_classes": 2},
        {"shape": (3,), "n_classes": 0},
        {"shape": (3,), "n_classes": 2, "max_message_bytes": 0},
        {"shape": (True,), "n_classes": 2},
        {"shape": (None, 3), "n_classes": 2},
        {"shape": (2.0,), "n_classes": 2},
        {"shape": (3,), "n_classes": 2.5},
    ],
)
def test_invalid_input_spec_is_a_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        InputSpec(**kwargs)


def test_input_spec_accepts_a_list_shape_and_numpy_integers() -> None:
    spec = InputSpec([8, 8], 10)  # type: ignore[arg-type]
    assert spec.shape == (8, 8) and spec.size == 64
    from_model = InputSpec((np.int64(8), np.int32(8)), np.int64(10))  # type: ignore[arg-type]
    assert from_model == spec and hash(from_model) == hash(spec)
    assert type(from_model.shape[0]) is int and type(from_model.n_classes) is int


def test_a_stuck_parser_is_replaced_and_decoding_goes_on() -> None:
    decoder = RecordDecoder(FLAT)
    stuck = decoder._parser
    leaked = stuck.parse(b'{"a": [1]}')  # a proxy kept alive blocks re-use
    # a context field keeps these records off the whole-batch path, whose parser is its own
    batch = decoder.decode([msg(good_record(FLAT, i, note="n")) for i in range(3)])
    assert batch.dead == [] and len(batch.X) == 3
    assert decoder._parser is not stuck
    assert leaked is not None  # still alive here


def test_a_stuck_batch_parser_is_replaced_and_its_batch_decoded_one_by_one() -> None:
    decoder = RecordDecoder(NESTED)
    assert decoder._batch is not None
    stuck = decoder._batch._parser
    leaked = stuck.parse(b'{"a": [1]}')
    records = [msg(good_record(NESTED, i)) for i in range(3)]
    first = decoder.decode(records)
    assert first.dead == [] and first.ids == ["good-0", "good-1", "good-2"]
    assert decoder._batch._parser is not stuck
    assert decoder._batch.rows([m.value() for m in records]) is not None  # the new one works
    assert leaked is not None


def test_decoder_reuse_across_batches_gives_independent_results() -> None:
    decoder = RecordDecoder(FLAT)
    first = decoder.decode([msg(good_record(FLAT, 0))])
    second = decoder.decode([msg(good_record(FLAT, 1))])
    np.testing.assert_array_equal(first.X[0], good_instance(FLAT, 0))
    np.testing.assert_array_equal(second.X[0], good_instance(FLAT, 1))


def test_header_caches_stay_bounded_under_hostile_headers() -> None:
    from monitor.stream import headers as h

    for i in range(10_000):
        h.decoder_facts([(f"x-{i}", b"1"), ("ce_namespace", f"ns-{i}".encode())])
    assert len(h._FACTS_CACHE) <= h._CACHE_MAX
    assert len(h._FIELD_CACHE) <= h._CACHE_MAX
    assert len(h._LABEL_CACHE) <= h._CACHE_MAX
    assert h.decoder_facts([("ce_namespace", b"ns-1")]) == (ModelLabels(None, None, "ns-1"), False)


def test_a_nested_output_cannot_lend_its_brackets_to_a_flat_instance() -> None:
    # Shape (3, 1) with 3 classes: flat instance + nested output have the right bracket
    # count and the skeleton [[],[],[]] is in the message, but it is the output's.
    spec = InputSpec((3, 1), 3)
    swapped = b'{"instance": [1, 2, 3], "output": [[0.1], [0.2], [0.7]]}'
    good = b'{"output": [0.1, 0.2, 0.7], "instance": [[1], [2], [3]]}'
    batch = RecordDecoder(spec).decode([msg(swapped), msg(good)])
    assert [(d.index, d.reason) for d in batch.dead] == [(0, Reason.SHAPE)]
    np.testing.assert_array_equal(batch.X, [[[1.0], [2.0], [3.0]]])
    assert batch.outputs is not None
    np.testing.assert_array_equal(batch.outputs, np.float32([[0.1, 0.2, 0.7]]))


def test_a_wrongly_sized_decode_dead_letters_its_message_not_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import monitor.stream.records as records

    real = records.json_rows

    def buggy(doc: Any, keys: list[str], raw: bytes, plan: Any) -> Any:
        n, x, y, labels = real(doc, keys, raw, plan)
        if b"buggy" in raw:
            return n, b"\0" * 8, y, labels  # one number instead of 64
        return n, x, y, labels

    monkeypatch.setattr(records, "json_rows", buggy)
    messages = [
        msg(good_record(FLAT, 0, model_name="m")),  # labels in the body: the general path
        msg(good_record(FLAT, 1, model_name="buggy")),
        msg(good_record(FLAT, 2, output=True, model_name="m")),
    ]
    batch = RecordDecoder(FLAT).decode(messages)
    assert [(d.index, d.reason) for d in batch.dead] == [(1, Reason.DECODER_ERROR)]
    np.testing.assert_array_equal(
        batch.X, np.stack([good_instance(FLAT, 0), good_instance(FLAT, 2)])
    )
    assert batch.has_output.tolist() == [False, True]


IDS = [b'"r-1"', b'""', b"7", b"7.5", b"true", b"null", b'["x"]', b'{"a": 1}', b'"\\u00e9t\\u00e9"']
BODIES = [
    b'{"id": ID, "instance": [1, 2]}',
    b'{"instance": [1, 2], "output": [0.1, 0.9], "id": ID}',
    b'{"id": ID, "instance": [1, 2], "user": "u1"}',
    b'{"id": ID, "instance": [1, 2], "model_name": "m"}',
    b'{"id": ID, "id": "dup", "instance": [1, 2]}',
    b'{"instance": [1, 2]}',
    b'[{"id": ID}]',
    b'{"id": ID, "instance": [1, 2',
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("rid", IDS)
@pytest.mark.parametrize("row", [0, 2])
def test_identity_of_plain_json_records_matches_the_general_path(
    body: bytes, rid: bytes, row: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortcut for bodies holding only id, instance and output gives what reading
    the whole body gives, and leaves every other body to it."""
    import monitor.stream.records as records

    message = msg(body.replace(b"ID", rid), key=b"k", offset=9)
    fast = record_identity(message, F.JSON, row)
    monkeypatch.setattr(records, "_plain_json_id", lambda raw: None)
    assert fast == record_identity(message, F.JSON, row)


def test_the_plain_json_shortcut_reads_only_bodies_it_can_answer_for() -> None:
    from monitor.stream.records import _plain_json_id

    assert _plain_json_id(b'{"id": "r-1", "instance": [1, 2], "output": [0.5]}') == "r-1"
    assert _plain_json_id(b'{"id": 7, "instance": [1, 2]}') is None  # str(7) is the general path's
    assert _plain_json_id(b'{"id": "r-1", "user": "u1"}') is None  # context to keep
    assert _plain_json_id(b'{"id": "r-1",') is None
    assert _plain_json_id(b'{"id": "r-2"}') == "r-2", "the parser is usable after a failure"


def test_record_times_are_seconds_and_zero_where_a_message_has_none() -> None:
    stamped = msg(b"{}")  # 1_700_000_000_000 ms
    unstamped = Message(topic="records", value=b"{}", timestamp=(0, -1))
    times = record_times([stamped, unstamped, stamped])
    assert times.tolist() == [1_700_000_000.0, 0.0, 1_700_000_000.0]
