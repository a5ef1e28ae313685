"""Protobuf (``v2-protobuf``) records for tests: good ones, and named kinds of bad ones.

Built with the package's own message classes; tests/test_protobuf_records.py checks those
against an independent encoder (tritonclient). Every bad kind carries a protobuf
``content-type`` header, so it holds for ``auto`` as for ``v2-protobuf``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from poison_corpus import Poison, good_instance, good_output

from monitor.stream.protobuf_format import RESPONSE_HEADER, schema
from monitor.stream.records import InputSpec, Reason, RecordFormat

F = RecordFormat
R = Reason
PROTOBUF_HEADERS = [("content-type", b"application/x-protobuf")]


def request(
    x: np.ndarray,
    datatype: str = "FP32",
    raw: bool = True,
    shape: list[int] | None = None,
    record_id: str = "",
    model_name: str = "digits",
    **parameters: Any,
) -> Any:
    """A ``ModelInferRequest`` holding ``x`` (its rows first) as one input tensor."""
    message = schema().request()
    message.model_name = model_name
    message.id = record_id
    tensor = message.inputs.add()
    tensor.name = "input-0"
    tensor.datatype = datatype
    tensor.shape.extend(list(x.shape) if shape is None else shape)
    set_contents(tensor, message.raw_input_contents, x, datatype, raw)
    for key, value in parameters.items():
        param = message.parameters[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = str(value)
    return message


def response(y: np.ndarray, raw: bool = True, record_id: str = "", datatype: str = "FP32") -> Any:
    """A ``ModelInferResponse`` holding ``y`` as its one output tensor."""
    message = schema().response()
    message.id = record_id
    tensor = message.outputs.add()
    tensor.name = "probabilities"
    tensor.datatype = datatype
    tensor.shape.extend(y.shape)
    set_contents(tensor, message.raw_output_contents, y, datatype, raw)
    return message


LITTLE_ENDIAN = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
TYPED = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}


def set_contents(tensor: Any, raw_list: Any, x: np.ndarray, datatype: str, raw: bool) -> None:
    if raw:
        if datatype == "BF16":
            bits = np.asarray(x, dtype="<f4").ravel().view("<u4") >> 16
            raw_list.append(bits.astype("<u2").tobytes())
        else:
            raw_list.append(np.asarray(x, dtype=LITTLE_ENDIAN[datatype]).tobytes())
    else:
        as_type = np.float64 if datatype.startswith("FP") else np.int64
        if datatype == "UINT64":
            as_type = np.uint64
        values = np.asarray(x).astype(as_type).ravel().tolist()
        getattr(tensor.contents, TYPED[datatype]).extend(values)


def good_protobuf_record(
    spec: InputSpec, seed: int = 0, rows: int = 1, raw: bool = True
) -> tuple[bytes, np.ndarray]:
    """A valid request of ``rows`` instances, and the instances."""
    x = np.stack([good_instance(spec, seed + r) for r in range(rows)])
    return request(x, raw=raw, record_id=f"good-pb-{seed}").SerializeToString(), x


def _bytes(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def protobuf_poisons(spec: InputSpec) -> list[Poison]:
    """Every kind of bad protobuf record, built for ``spec``."""
    x = good_instance(spec)[None]
    good = _bytes(request(x))
    out = good_output(spec)[None]

    def p(name: str, value: bytes, reason: Reason, response_bytes: bytes | None = None) -> Poison:
        headers = list(PROTOBUF_HEADERS)
        if response_bytes is not None:
            headers.append((RESPONSE_HEADER, response_bytes))
        return Poison(name, value, reason, F.V2_PROTOBUF, headers)

    def changed(**kw: Any) -> bytes:
        return _bytes(request(x, **kw))

    both = request(x)
    both.inputs[0].contents.fp32_contents.extend(x.ravel().tolist())
    extra_raw = request(x)
    extra_raw.raw_input_contents.append(b"\0\0\0\0")
    wrong_field = request(x, raw=False)
    wrong_field.inputs[0].contents.ClearField("fp32_contents")
    wrong_field.inputs[0].contents.int_contents.extend([1] * spec.size)
    short_typed = request(x, raw=False)
    del short_typed.inputs[0].contents.fp32_contents[-1]
    ambiguous = request(x)
    ambiguous.inputs.append(ambiguous.inputs[0])
    ambiguous.raw_input_contents.append(ambiguous.raw_input_contents[0])
    no_contents = request(x)
    no_contents.ClearField("raw_input_contents")
    nan = x.copy()
    nan.flat[0] = np.nan
    beyond = x.astype(np.float64)
    beyond.flat[-1] = 1e39
    inf_out = out.copy()
    inf_out.flat[0] = np.inf
    bad_utf8 = good.replace(b"digits", b"digi\xff\xfe", 1)
    return [
        p("pb_truncated", good[:-3], R.INVALID_PROTOBUF),
        p("pb_cut_in_half", good[: len(good) // 2], R.INVALID_PROTOBUF),
        p("pb_garbage", b"\xff" * 16, R.INVALID_PROTOBUF),
        p("pb_json_under_protobuf_type", b'{"instance": [1, 2]}', R.INVALID_PROTOBUF),
        p("pb_end_group_tag", b"\x0c" + good, R.INVALID_PROTOBUF),
        p("pb_invalid_utf8_string", bad_utf8, R.INVALID_PROTOBUF),
        p("pb_length_beyond_message", b"\x2a\xff\xff\xff\xff\x0f" + good, R.INVALID_PROTOBUF),
        p("pb_inputs_as_varint", b"\x28\x01", R.SCHEMA),
        p("pb_no_inputs", _bytes(schema().request(model_name="m")), R.SCHEMA),
        p("pb_raw_and_typed_contents", _bytes(both), R.SCHEMA),
        p("pb_raw_count_differs_from_inputs", _bytes(extra_raw), R.SCHEMA),
        p("pb_no_contents_at_all", _bytes(no_contents), R.SCHEMA),
        p("pb_two_ambiguous_inputs", _bytes(ambiguous), R.SCHEMA),
        p("pb_too_many_inputs", b"\x2a\x00" * 65 + good, R.SCHEMA),
        p("pb_raw_wrong_length", _raw_len(x, -4), R.SHAPE),
        p("pb_raw_longer_than_shape", _raw_len(x, 4), R.SHAPE),
        p("pb_typed_one_short", _bytes(short_typed), R.SHAPE),
        p("pb_typed_in_wrong_field", _bytes(wrong_field), R.DTYPE),
        p("pb_fp16_typed", _fp16_typed(x), R.DTYPE),
        p("pb_bytes_datatype", _relabel(x, "BYTES"), R.DTYPE),
        p("pb_bool_datatype", _relabel(x, "BOOL"), R.DTYPE),
        p("pb_unknown_datatype", _relabel(x, "FP99"), R.DTYPE),
        p("pb_negative_dimension", changed(shape=[-1, *spec.shape]), R.SHAPE),
        p("pb_zero_rows", changed(shape=[0, *spec.shape]), R.SHAPE),
        p("pb_too_many_dimensions", changed(shape=[1] * 40), R.SHAPE),
        p("pb_row_shape_mismatch", changed(shape=[1, spec.size + 1]), R.SHAPE),
        p("pb_huge_dimension", changed(shape=[1, 2**62]), R.SHAPE),
        p("pb_declared_rows_bomb", changed(shape=[10_000_000, *spec.shape]), R.TOO_MANY_ROWS),
        p("pb_declared_rows_beyond_data", changed(shape=[spec.max_rows, *spec.shape]), R.SHAPE),
        p("pb_nan_raw", _bytes(request(nan)), R.NON_FINITE),
        p(
            "pb_fp64_beyond_float32",
            _bytes(request(beyond, datatype="FP64", raw=False)),
            R.NON_FINITE,
        ),
        p("pb_response_not_protobuf", good, R.INVALID_PROTOBUF, b"\xff\xff\xff"),
        p(
            "pb_response_for_another_request",
            _bytes(request(x, record_id="a")),
            R.SCHEMA,
            _bytes(response(out, record_id="b")),
        ),
        p("pb_response_raw_short", good, R.SHAPE, _short_response(out)),
        p("pb_response_infinity", good, R.NON_FINITE, _bytes(response(inf_out))),
    ]


def _raw_len(x: np.ndarray, delta: int) -> bytes:
    message = request(x)
    data = message.raw_input_contents[0]
    message.raw_input_contents[0] = data[:delta] if delta < 0 else data + b"\0" * delta
    return _bytes(message)


def _short_response(y: np.ndarray) -> bytes:
    message = response(y)
    message.raw_output_contents[0] = message.raw_output_contents[0][:-4]
    return _bytes(message)


def _relabel(x: np.ndarray, datatype: str) -> bytes:
    message = request(x)
    message.inputs[0].datatype = datatype
    return _bytes(message)


def _fp16_typed(x: np.ndarray) -> bytes:
    message = request(x, raw=False)
    message.inputs[0].datatype = "FP16"
    return _bytes(message)
