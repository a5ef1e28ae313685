"""The whole-batch path of ``v2-protobuf`` records: plain requests are read at once, and
whatever it accepts decodes exactly as each message on its own does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from poison_corpus import good_instance
from protobuf_corpus import protobuf_poisons, request
from test_json_batch import same

from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat

PB = RecordFormat.V2_PROTOBUF
SPECS = [InputSpec((4,), 3), InputSpec((2, 2), 3)]


def decoders(spec: InputSpec) -> tuple[RecordDecoder, RecordDecoder]:
    """(the decoder, a reference that reads every message on its own), both warm: a
    first plain batch has made the batch path's plans."""
    batch, one_by_one = RecordDecoder(spec, PB), RecordDecoder(spec, PB)
    one_by_one._protobuf.batch = lambda values: None  # type: ignore[method-assign,union-attr]
    warm = [plain(spec, 0)]
    batch.decode_values(warm)
    one_by_one.decode_values(warm)
    return batch, one_by_one


def plain(spec: InputSpec, seed: int, rows: int = 1, datatype: str = "FP32", **kw: Any) -> bytes:
    x = np.stack([good_instance(spec, seed + r) for r in range(rows)])
    message = request(x, datatype=datatype, record_id=f"pb-{seed}", **kw)
    return bytes(message.SerializeToString())


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32"])
def test_plain_requests_take_the_batch_path_and_decode_as_one_by_one(
    spec: InputSpec, rows: int, datatype: str
) -> None:
    batch, one_by_one = decoders(spec)
    values = [plain(spec, i, rows, datatype) for i in range(20)]
    batch.decode_values(values[:1])  # this shape and datatype's plan
    one_by_one.decode_values(values[:1])
    assert batch._protobuf is not None and batch._protobuf.batch(values) is not None
    got = batch.decode_values(values)
    same(got, one_by_one.decode_values(values))
    assert got.ids == [f"pb-{i}" for i in range(20)] and len(got.X) == 20 * rows
    assert got.row_in_message.tolist() == list(range(rows)) * 20


def test_a_new_shape_is_checked_one_by_one_before_it_takes_the_batch_path() -> None:
    spec = InputSpec((4,), 3)
    decoder = RecordDecoder(spec, PB)
    values = [plain(spec, i) for i in range(3)]
    assert decoder._protobuf is not None and decoder._protobuf.batch(values) is None
    decoder.decode_values(values)
    assert decoder._protobuf.batch(values) is not None


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_every_bad_request_among_plain_ones_is_judged_alone(spec: InputSpec) -> None:
    batch, one_by_one = decoders(spec)
    for poison in protobuf_poisons(spec):
        values = [plain(spec, 1), poison.value or b"", plain(spec, 2)]
        got = batch.decode_values(values)
        same(got, one_by_one.decode_values(values))
        assert [d.index for d in got.dead] in ([], [1]), poison.name


@pytest.mark.parametrize(
    "odd",
    [
        {"model_name": "other"},
        {"threshold": 3},
        {"record_id": ""},
        {"shape": None, "datatype": "FP64"},
    ],
    ids=["other-model", "parameters", "no-id", "other-datatype"],
)
def test_requests_unlike_the_others_decode_as_one_by_one(odd: dict[str, Any]) -> None:
    spec = InputSpec((4,), 3)
    batch, one_by_one = decoders(spec)
    x = good_instance(spec, 9)[None]
    other = bytes(request(x, **{"record_id": "odd", **odd}).SerializeToString())
    values = [plain(spec, 1), other, plain(spec, 2)]
    same(batch.decode_values(values), one_by_one.decode_values(values))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 400), st.integers(0, 255)), max_size=3
    ),
    cut=st.none() | st.tuples(st.integers(0, 9), st.integers(0, 400)),
)
def test_damaged_requests_decode_as_one_by_one(
    flips: list[tuple[int, int, int]], cut: tuple[int, int] | None
) -> None:
    spec = InputSpec((2, 2), 3)
    batch, one_by_one = decoders(spec)
    values = [bytearray(plain(spec, i)) for i in range(10)]
    for which, at, byte in flips:
        values[which][at % len(values[which])] = byte
    if cut is not None:
        values[cut[0]] = values[cut[0]][: cut[1]]
    data = [bytes(v) for v in values]
    assert batch._protobuf is not None
    event(
        "batch path"
        if data and min(map(len, data)) and batch._protobuf.batch(data)
        else "one by one"
    )
    same(batch.decode_values(data), one_by_one.decode_values(data))


def test_a_signalling_nan_is_dead_lettered_as_non_finite_on_both_paths() -> None:
    spec = InputSpec((4,), 3)
    batch, one_by_one = decoders(spec)
    bad = request(good_instance(spec, 3)[None], record_id="snan")
    raw = bytearray(bad.raw_input_contents[0])
    raw[0:4] = np.array([0x7F800001], dtype="<u4").tobytes()  # float32 signalling NaN
    bad.raw_input_contents[0] = bytes(raw)
    values = [plain(spec, 1), bytes(bad.SerializeToString()), plain(spec, 2)]
    got = batch.decode_values(values)
    same(got, one_by_one.decode_values(values))
    assert [(d.index, d.reason.value) for d in got.dead] == [(1, "non_finite")]
