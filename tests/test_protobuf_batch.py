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

from monitor.stream.protobuf_format import MAX_TEMPLATES, PlainBatch, schema
from monitor.stream.protobuf_template import Layout, layout
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
    whole = all(data) and batch._protobuf.batch(data) is not None
    event("batch path" if whole else "one by one")
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


# -- the template path: byte comparison with one parsed message per length ------------
FLAT = InputSpec((4,), 3)
#: Top-level fields outside the schema, each a whole encoded field (tag and content).
UNKNOWN = {
    "varint": b"\x78\x96\x01",  # field 15, 150
    "fixed64": b"\x79" + bytes(8),
    "fixed32": b"\x7d" + bytes(4),
    "length": b"\x7a\x03abc",
}


def same_plain(a: PlainBatch | None, b: PlainBatch | None) -> None:
    """Equal batches, their elements compared bit for bit (NaN payloads included)."""
    assert a is not None and b is not None
    assert (a.rows, a.ids, a.labels) == (b.rows, b.ids, b.labels)
    assert a.x.dtype == b.x.dtype and a.x.shape == b.x.shape
    assert a.x.tobytes() == b.x.tobytes()


def agree(batch: RecordDecoder, one_by_one: RecordDecoder, values: list[bytes]) -> bool:
    """Whether the template path read the batch; when it did, it must give what parsing
    every message gives, and the decoder must give what one-by-one decoding gives."""
    reader = batch._protobuf
    assert reader is not None
    fast = reader.template_batch(values)
    if fast is not None:
        same_plain(fast, reader.parsed_batch(values))
    same(batch.decode_values(values), one_by_one.decode_values(values))
    return fast is not None


def encoded(
    x: np.ndarray, record_id: str = "", datatype: str = "FP32", model_name: str = "digits"
) -> bytes:
    return bytes(
        request(
            x, datatype=datatype, record_id=record_id, model_name=model_name
        ).SerializeToString()
    )


def with_id_last(x: np.ndarray, record_id: str) -> bytes:
    """The id written after the tensor (parsers merge the fields of concatenated messages)."""
    return encoded(x) + bytes(schema().request(id=record_id).SerializeToString())


def with_raw_first(x: np.ndarray, record_id: str) -> bytes:
    message = request(x, record_id=record_id)
    raw = schema().request()
    raw.raw_input_contents.extend(message.raw_input_contents)
    message.ClearField("raw_input_contents")
    return bytes(raw.SerializeToString()) + bytes(message.SerializeToString())


def test_a_plain_batch_is_read_without_parsing_each_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, one_by_one = decoders(FLAT)
    values = [plain(FLAT, i) for i in range(10, 60)]
    reader = batch._protobuf
    assert reader is not None
    parsed = reader.parsed_batch(values)
    monkeypatch.setattr(reader, "parsed_batch", lambda values: pytest.fail("parsed"))
    same_plain(reader.batch(values), parsed)
    got = batch.decode_values(values)
    same(got, one_by_one.decode_values(values))
    assert got.ids == [f"pb-{i}" for i in range(10, 60)] and not got.dead


def test_ids_of_several_lengths_take_one_template_each() -> None:
    batch, one_by_one = decoders(FLAT)
    values = [plain(FLAT, i) for i in (7, 12, 8, 123, 9, 10, 1000)]
    assert agree(batch, one_by_one, values)


def test_more_lengths_than_templates_are_parsed() -> None:
    batch, one_by_one = decoders(FLAT)
    values = [plain(FLAT, 10**i) for i in range(MAX_TEMPLATES + 1)]
    assert not agree(batch, one_by_one, values)
    assert not agree(batch, one_by_one, values[:1] + values)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, i: encoded(x),
        lambda x, i: encoded(x) + b"\x1a\x00",  # an empty id, written anyway
        with_id_last,
        with_raw_first,
        *[lambda x, i, u=u: encoded(x, i) + u for u in UNKNOWN.values()],
        *[lambda x, i, u=u: u + encoded(x, i) for u in UNKNOWN.values()],
    ],
    ids=[
        "no-id",
        "empty-id-written",
        "id-last",
        "raw-first",
        *[f"unknown-{k}-after" for k in UNKNOWN],
        *[f"unknown-{k}-before" for k in UNKNOWN],
    ],
)
def test_other_layouts_take_the_template_path(make: Any) -> None:
    batch, one_by_one = decoders(FLAT)
    values = [make(good_instance(FLAT, i)[None], f"id-{i}") for i in range(10)]
    assert agree(batch, one_by_one, values)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, i: encoded(x, i) + b"\x1a\x02zz",  # a second id: the last one counts
        lambda x, i: encoded(x, i) + b"\x18\x05",  # the id's number as a varint
        lambda x, i: encoded(x, i) + b"\x7b\x08\x01\x7c",  # a group (field 15)
        lambda x, i: b"\x9a\x00" + encoded(x, i),  # an empty id with a two-byte tag
        lambda x, i: b"\xfa\xff\xff\xff\x7f\x00" + encoded(x, i),  # a tag beyond 32 bits
    ],
    ids=["second-id", "id-as-varint", "group", "long-tag", "tag-beyond-32-bits"],
)
def test_layouts_the_walk_does_not_read_are_parsed(make: Any) -> None:
    batch, one_by_one = decoders(FLAT)
    values = [make(good_instance(FLAT, i)[None], f"id-{i}") for i in range(10)]
    assert not agree(batch, one_by_one, values)


def test_an_id_that_is_not_utf8_is_dead_lettered_as_when_parsed() -> None:
    batch, one_by_one = decoders(FLAT)
    values = [plain(FLAT, i) for i in range(10, 16)]
    values[3] = values[3].replace(b"pb-13", b"pb-\xff\xfe")
    assert not agree(batch, one_by_one, values)
    got = batch.decode_values(values)
    assert [(d.index, d.reason.value) for d in got.dead] == [(3, "invalid_protobuf")]


def test_non_finite_elements_are_dead_lettered_as_when_parsed() -> None:
    batch, one_by_one = decoders(FLAT)
    x = np.stack([good_instance(FLAT, i) for i in range(6)])
    x[1, 0], x[3, 2], x[4, 1] = np.nan, np.inf, -np.inf
    values = [encoded(x[i : i + 1], f"id-{i}") for i in range(6)]
    assert agree(batch, one_by_one, values)
    got = batch.decode_values(values)
    assert [(d.index, d.reason.value) for d in got.dead] == [(i, "non_finite") for i in (1, 3, 4)]


def test_long_ids_are_cut_as_when_parsed() -> None:
    batch, one_by_one = decoders(FLAT)
    for letter in "aé":
        values = [encoded(good_instance(FLAT, i)[None], f"{i}" + letter * 300) for i in range(5)]
        assert agree(batch, one_by_one, values)
        assert [len(i or "") for i in batch.decode_values(values).ids] == [256] * 5


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.binary(min_size=1, max_size=6),
    at=st.integers(0, 5),
)
def test_id_bytes_are_accepted_exactly_when_the_parser_accepts_them(chosen: bytes, at: int) -> None:
    batch, one_by_one = decoders(FLAT)
    width = len(chosen)
    values = [encoded(good_instance(FLAT, i)[None], f"{i}" * width) for i in range(6)]
    start = values[at].index(b"\x1a" + bytes([width])) + 2
    values[at] = values[at][:start] + chosen + values[at][start + width :]
    event("template path" if agree(batch, one_by_one, values) else "parsed")


#: Datatypes of raw elements and their sizes in bytes.
RAW_SIZES = {"FP32": 4, "FP64": 8, "FP16": 2, "BF16": 2, "INT8": 1, "UINT16": 2}


@st.composite
def requests(draw: st.DrawFn) -> list[bytes]:
    """A batch of plain requests: random ids (absent, empty, any Unicode, any length),
    random raw bits (NaN and infinity included), mostly alike in everything else."""
    datatype = draw(st.sampled_from(sorted(RAW_SIZES)))
    rows = draw(st.sampled_from([1, 2]))
    layout = draw(st.sampled_from(["canonical", "id-last", "raw-first"]))
    ids = st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
    odd = draw(st.booleans())  # some messages of another datatype or model
    out = []
    for _ in range(draw(st.integers(1, 12))):
        record_id = draw(ids)
        message = request(
            np.zeros((rows, *FLAT.shape)),
            datatype=draw(st.sampled_from([datatype] * 5 + ["FP32"])) if odd else datatype,
            record_id=record_id or "",
            model_name=draw(st.sampled_from(["digits"] * 9 + ["other"])) if odd else "digits",
        )
        size = RAW_SIZES[message.inputs[0].datatype] * rows * FLAT.size
        message.raw_input_contents[0] = draw(st.binary(min_size=size, max_size=size))
        value = bytes(message.SerializeToString())
        if layout == "id-last" and record_id is not None:
            message.ClearField("id")
            value = bytes(message.SerializeToString())
            value += bytes(schema().request(id=record_id).SerializeToString())
        elif layout == "raw-first":
            raw = schema().request()
            raw.raw_input_contents.extend(message.raw_input_contents)
            message.ClearField("raw_input_contents")
            value = bytes(raw.SerializeToString()) + bytes(message.SerializeToString())
        out.append(value)
    return out


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    values=requests(),
    flip=st.none() | st.tuples(st.integers(0, 11), st.integers(0, 400), st.integers(0, 255)),
)
def test_random_batches_decode_as_one_by_one_on_either_path(
    values: list[bytes], flip: tuple[int, int, int] | None
) -> None:
    batch, one_by_one = decoders(FLAT)
    batch.decode_values(values)  # this batch's datatypes, shapes and models, checked
    one_by_one.decode_values(values)
    if flip is not None:
        which, at, byte = flip
        damaged = bytearray(values[which % len(values)])
        damaged[at % len(damaged)] = byte
        values[which % len(values)] = bytes(damaged)
    event("template path" if agree(batch, one_by_one, values) else "parsed")


def test_layout_locates_the_payloads_the_parser_reads() -> None:
    x = good_instance(FLAT, 1)[None]
    for value in (encoded(x, "abc"), with_id_last(x, "abc"), with_raw_first(x, "abc")):
        where = layout(value)
        parsed = schema().request.FromString(value)
        assert where is not None
        assert value[slice(*where.raw)] == parsed.raw_input_contents[0]
        assert value[slice(*where.id)] == b"abc"
    assert layout(encoded(x)) == Layout((0, 0), layout(encoded(x)).raw)  # type: ignore[union-attr]
    assert layout(encoded(x)[:-1]) is None  # cut inside the raw contents
    assert layout(encoded(x) + encoded(x)) is None  # two raw entries
