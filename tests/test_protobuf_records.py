"""v2-protobuf records: every datatype, raw and typed, several rows, detection in auto,
the response header, an independent encoder (tritonclient), fuzzing and hostile sizes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from protobuf_corpus import PROTOBUF_HEADERS, request, response
from test_records_fuzz import FUZZ, SPECS, check_outcomes, msg

from monitor.stream.protobuf_format import RESPONSE_HEADER, could_be_json
from monitor.stream.records import InputSpec, Reason, RecordDecoder, RecordFormat

F = RecordFormat
SPEC = InputSpec((2, 3), 4)
EXACT = ["FP16", "BF16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"]
EXACT += ["UINT8", "UINT16", "UINT32", "UINT64"]


def values_for(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values every datatype holds exactly (as float32 too)."""
    rng = np.random.default_rng(seed)
    if datatype.startswith("U"):
        return rng.integers(0, 100, size=shape).astype(np.float64)
    if datatype.startswith("INT"):
        return rng.integers(-100, 100, size=shape).astype(np.float64)
    return (rng.integers(-64, 64, size=shape) / 8).astype(np.float64)  # eighths: exact in BF16


def decode(
    values: list[bytes], fmt: F = F.V2_PROTOBUF, headers: Any = None, spec: InputSpec = SPEC
):
    return RecordDecoder(spec, fmt).decode_values(values, headers)


TYPED = [d for d in EXACT if d not in ("FP16", "BF16")]  # those two are raw only


@pytest.mark.parametrize(
    ("datatype", "raw"), [(d, True) for d in EXACT] + [(d, False) for d in TYPED]
)
def test_every_numeric_datatype_decodes_exactly(datatype: str, raw: bool) -> None:
    x = values_for(datatype, (3, 2, 3))
    batch = decode([request(x, datatype=datatype, raw=raw).SerializeToString()])
    assert batch.dead == []
    np.testing.assert_array_equal(batch.X, x.astype(np.float32))
    assert batch.row_message.tolist() == [0, 0, 0] and batch.row_in_message.tolist() == [0, 1, 2]


def test_raw_contents_are_read_little_endian_whatever_the_host() -> None:
    message = request(np.zeros((1, 2, 3)), datatype="INT32")
    message.raw_input_contents[0] = np.arange(6, dtype=">i4").tobytes()  # big-endian: wrong
    batch = decode([message.SerializeToString()])
    assert batch.X.ravel()[1] == float(np.frombuffer(np.int32(1).tobytes()[::-1], "<i4")[0])


def test_ids_labels_and_parameters_travel_with_the_rows() -> None:
    x = values_for("FP32", (2, 2, 3))
    value = request(x, record_id="req-9", model_name="digits", user="u1", retries=2)
    batch = decode([value.SerializeToString(), request(x[:1]).SerializeToString()])
    assert batch.ids == ["req-9", None]
    assert batch.contexts == {0: {"parameters": {"user": "u1", "retries": 2}}}
    assert batch.model_labels[0] is not None and batch.model_labels[0].model_name == "digits"


def test_the_response_header_gives_the_rows_outputs() -> None:
    x = values_for("FP32", (2, 2, 3))
    y = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    for raw in (True, False):
        head = [(RESPONSE_HEADER, response(y, raw=raw, record_id="r").SerializeToString())]
        batch = decode([request(x, record_id="r").SerializeToString()], headers=[head])
        assert batch.dead == []
        assert batch.outputs is not None
        np.testing.assert_array_equal(batch.outputs, y.astype(np.float32))


def test_a_response_output_of_another_shape_is_ignored() -> None:
    x = values_for("FP32", (1, 2, 3))
    ids = response(np.array([[3.0]]), datatype="INT64")  # a class id, not probabilities
    batch = decode(
        [request(x).SerializeToString()], headers=[[(RESPONSE_HEADER, ids.SerializeToString())]]
    )
    assert batch.dead == [] and batch.outputs is None and not batch.has_output.any()


@pytest.mark.parametrize("with_header", [True, False])
def test_auto_reads_protobuf_and_json_side_by_side(with_header: bool) -> None:
    x = values_for("FP32", (1, 2, 3))
    pb = request(x).SerializeToString()
    js = json.dumps({"id": "j", "instance": x[0].tolist()}).encode()
    head = PROTOBUF_HEADERS if with_header else None
    batch = decode([pb, js, pb], F.AUTO, [head, None, head])
    assert batch.dead == []
    np.testing.assert_array_equal(batch.X, np.concatenate([x, x, x]).astype(np.float32))


def test_auto_gives_a_json_looking_request_a_second_chance() -> None:
    # A model name 123 bytes long: the request starts "\n{", which could be JSON.
    value = request(values_for("FP32", (1, 2, 3)), model_name="m" * 123).SerializeToString()
    assert could_be_json(value)
    batch = decode([value], F.AUTO)
    assert batch.dead == [] and len(batch.X) == 1


def test_a_json_content_type_keeps_auto_on_json() -> None:
    value = request(values_for("FP32", (1, 2, 3))).SerializeToString()
    batch = decode([value], F.AUTO, [[("content-type", b"application/json")]])
    assert [d.reason for d in batch.dead] in ([Reason.INVALID_JSON], [Reason.NOT_UTF8])


def test_fp16_and_bf16_must_be_raw() -> None:
    message = request(values_for("FP32", (1, 2, 3)), raw=False)
    message.inputs[0].datatype = "BF16"
    batch = decode([message.SerializeToString()])
    assert [d.reason for d in batch.dead] == [Reason.DTYPE]


# -- an independent encoder: tritonclient's own classes and request builder ------------


def _triton_request(x: np.ndarray, datatype: str, raw: bool, request_id: str) -> bytes:
    from tritonclient.grpc import InferInput, service_pb2
    from tritonclient.grpc._utils import _get_inference_request

    if raw:
        infer_input = InferInput("input-0", list(x.shape), datatype)
        infer_input.set_data_from_numpy(x)
        built = _get_inference_request(
            model_name="tiny",
            inputs=[infer_input],
            model_version="",
            request_id=request_id,
            outputs=None,
            sequence_id=0,
            sequence_start=False,
            sequence_end=False,
            priority=0,
            timeout=None,
            parameters=None,
        )
        return bytes(built.SerializeToString())
    message = service_pb2.ModelInferRequest(model_name="tiny", id=request_id)
    tensor = message.inputs.add(name="input-0", datatype=datatype, shape=list(x.shape))
    field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents"}[datatype]
    getattr(tensor.contents, field).extend(x.ravel().tolist())
    return bytes(message.SerializeToString())


NUMPY_OF = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "FP16": np.float16}
NUMPY_OF |= {"UINT8": np.uint8, "INT64": np.int64}


@pytest.mark.parametrize(
    ("datatype", "raw"),
    [(d, True) for d in NUMPY_OF] + [("FP32", False), ("FP64", False), ("INT32", False)],
)
def test_records_built_by_tritonclient_decode_to_the_same_arrays_and_scores(
    datatype: str, raw: bool, fitted_detector: Any, tiny_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x_all, _ = tiny_data
    spec = InputSpec(x_all.shape[1:], 3)
    x = x_all[:40]
    if datatype in ("INT32", "UINT8", "INT64"):
        x = np.clip(np.round(x * 10), 0, 100)
    x = x.astype(NUMPY_OF[datatype])
    values = [_triton_request(x[i : i + 4], datatype, raw, f"t-{i}") for i in range(0, len(x), 4)]
    batch = decode(values, F.V2_PROTOBUF, spec=spec)
    assert batch.dead == [] and batch.ids == [f"t-{i}" for i in range(0, len(x), 4)]
    expected = x.astype(np.float32)
    np.testing.assert_array_equal(batch.X, expected)
    np.testing.assert_array_equal(fitted_detector.score(batch.X), fitted_detector.score(expected))
    auto = decode(values, F.AUTO, spec=spec)
    np.testing.assert_array_equal(auto.X, expected)


def test_our_classes_and_tritonclients_agree_on_the_bytes() -> None:
    from tritonclient.grpc import service_pb2

    x = values_for("FP32", (2, 2, 3)).astype(np.float32)
    ours = request(x, record_id="same", model_name="tiny", raw=False)
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.id == "same" and list(theirs.inputs[0].shape) == [2, 2, 3]
    assert list(theirs.inputs[0].contents.fp32_contents) == x.ravel().tolist()
    assert bytes(theirs.SerializeToString()) == bytes(ours.SerializeToString())


# -- fuzzing -----------------------------------------------------------------------------


@st.composite
def mutated_request(draw: st.DrawFn, spec: InputSpec) -> bytes:
    """A valid request (raw or typed, some rows) with a few bytes changed."""
    rows = draw(st.integers(1, 3))
    x = np.random.default_rng(draw(st.integers(0, 9))).normal(size=(rows, *spec.shape))
    datatype = draw(st.sampled_from(["FP32", "FP64", "INT32", "FP16"]))
    raw_contents = datatype == "FP16" or draw(st.booleans())
    raw = bytearray(request(x, datatype=datatype, raw=raw_contents).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        byte = draw(st.integers(0, 255))
        if op == "delete" and pos < len(raw):
            del raw[pos]
        elif op == "insert":
            raw.insert(pos, byte)
        elif pos < len(raw):
            raw[pos] = byte
    return bytes(raw)


@FUZZ
@given(data=st.data(), spec=st.sampled_from(SPECS), fmt=st.sampled_from([F.V2_PROTOBUF, F.AUTO]))
def test_mutated_requests_never_raise(data: st.DataObject, spec: InputSpec, fmt: F) -> None:
    values = [data.draw(mutated_request(spec)) for _ in range(data.draw(st.integers(1, 5)))]
    head = data.draw(st.sampled_from([None, PROTOBUF_HEADERS]))
    batch = RecordDecoder(spec, fmt).decode([msg(v, head) for v in values])
    check_outcomes(batch, len(values), spec)


@FUZZ
@given(
    data=st.data(),
    spec=st.sampled_from(SPECS),
    datatype=st.sampled_from(EXACT),
    raw=st.booleans(),
    rows=st.integers(1, 4),
)
def test_valid_requests_come_back_exactly(
    data: st.DataObject, spec: InputSpec, datatype: str, raw: bool, rows: int
) -> None:
    raw = raw or datatype in ("FP16", "BF16")
    x = values_for(datatype, (rows, *spec.shape), data.draw(st.integers(0, 1000)))
    batch = RecordDecoder(spec, F.V2_PROTOBUF).decode(
        [msg(request(x, datatype=datatype, raw=raw).SerializeToString())]
    )
    assert batch.dead == []
    np.testing.assert_array_equal(batch.X, x.astype(np.float32))


# -- hostile sizes: bounded memory, measured in a fresh interpreter -----------------------

_MEASURE = textwrap.dedent(
    """
    import json, resource
    from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat
    from monitor.stream.protobuf_format import schema
    schema()
    limit = 1_048_576
    decoder = RecordDecoder(InputSpec((8,), 3, max_message_bytes=limit), RecordFormat.V2_PROTOBUF)
    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))
    def field(tag, body):
        return bytes([tag]) + varint(len(body)) + body
    n = limit - 32
    bombs = {
        "empty inputs": b"\\x2a\\x00" * (limit // 2),
        "requested outputs": b"\\x32\\x00" * (limit // 2),
        "packed shape": field(0x2A, field(0x1A, b"\\x01" * n)),
        "unpacked shape": field(0x2A, b"\\x18\\x01" * (n // 2)),
        "packed contents": field(0x2A, b"\\x12\\x04FP32" + field(0x2A, field(0x32, b"\\x00" * n))),
        "unpacked ints": field(0x2A, b"\\x12\\x05INT32" + field(0x2A, b"\\x10\\x01" * (n // 2))),
        "raw contents": field(0x3A, b"\\x00" * n),
        "parameters": b"\\x22\\x00" * (limit // 2),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reasons = {}
    for name, bomb in bombs.items():
        assert len(bomb) <= limit, name
        for _ in range(10):
            batch = decoder.decode_values([bomb])
            reasons[name] = [str(d.reason) for d in batch.dead]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps(reasons))
    print(grown)
    """
)


def test_giant_repeated_fields_are_dead_letters_at_a_bounded_cost() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reasons_line, grown_line = done.stdout.strip().splitlines()[-2:]
    reasons = json.loads(reasons_line)
    assert all(len(r) == 1 for r in reasons.values()), reasons
    assert reasons["empty inputs"] == ["schema"]
    assert reasons["packed shape"] == reasons["unpacked shape"] == ["shape"]
    # upb parses into an arena: about 40x a message of empty sub-messages, freed with the
    # message (ten in a row don't add up), so a 1 MiB record costs at most this much.
    assert int(grown_line) < 100 * 1024, f"decoding grew the process by {grown_line} KB"
