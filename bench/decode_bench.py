"""Micro-benchmark: records/s of the record decoder against other ways to parse JSON.

Run: ``.venv/bin/python bench/decode_bench.py [--records N] [--batch 512] [--repeat 3]``
(``--protobuf``: only the digits records as JSON and as v2 protobuf).
One thread; messages are ``confluent_kafka.Message`` objects like the consumer returns;
best of ``--repeat`` runs. Two rates per line: wall clock, and this process's CPU time
(steadier when other work shares the cores). The full suite (consume, score, end to end)
lives elsewhere in bench/.

The batch parsers compared with the decoder's whole-batch path (Arrow's and Polars'
newline-delimited JSON readers with an explicit schema, msgspec's typed decoding) are not
dependencies: install them into the venv to measure them too
(``.venv/bin/pip install pyarrow polars msgspec``); lines for missing ones say so.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Message

from monitor.stream import json_batch
from monitor.stream.protobuf_format import schema
from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat

Decode = Callable[[Sequence[Message], InputSpec], int]

CLOUDEVENTS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"0b7e-44"),
    ("ce_type", b"org.kubeflow.serving.inference.request"),
    ("ce_source", b"http://localhost:9081/"),
    ("ce_inferenceservicename", b"digits"),
    ("ce_namespace", b"ml"),
]


def _values(x: np.ndarray, digits: int | None) -> Any:
    """Nested lists of Python floats: the exact float32 value, or rounded to ``digits``
    (``digits=0`` gives sixteenths, like the digits demo's pixels)."""
    values = x.astype(np.float64)
    if digits == 0:
        return (np.floor(values * 16) / 16).tolist()
    return (values.round(digits) if digits is not None else values).tolist()


def make_messages(
    n: int,
    shape: tuple[int, ...],
    digits: int | None = None,
    fmt: str = "json",
    rows: int = 1,
    extra: dict[str, Any] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> list[Message]:
    """n messages holding float32 values drawn from [0, 1)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        x = rng.random((rows, *shape), dtype=np.float32)
        body: dict[str, Any]
        if fmt == "json":
            body = {"id": f"rec-{i}", "instance": _values(x[0], digits), **(extra or {})}
        else:
            tensor = {
                "name": "x",
                "shape": [rows, *shape],
                "datatype": "FP32",
                "data": _values(x.ravel(), digits),
            }
            body = {"id": f"req-{i}", "inputs": [tensor]}
        value = json.dumps(body).encode()
        out.append(Message(topic="bench", partition=0, offset=i, value=value, headers=headers))
    return out


def protobuf_messages(n: int, shape: tuple[int, ...], raw: bool, rows: int = 1) -> list[Message]:
    """The digits-like records of ``make_messages(n, shape, 0)`` as ModelInferRequest
    protobuf: float32 sixteenths, raw (``raw_input_contents``) or typed (``fp32_contents``)."""
    rng = np.random.default_rng(0)
    request_class = schema().request
    out = []
    for i in range(n):
        x = np.floor(rng.random((rows, *shape), dtype=np.float32) * 16) / 16
        request = request_class(model_name="digits", id=f"req-{i}")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[rows, *shape])
        if raw:
            request.raw_input_contents.append(x.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
        value = request.SerializeToString()
        out.append(Message(topic="bench", partition=0, offset=i, value=value))
    return out


def stdlib_per_record(messages: Sequence[Message], spec: InputSpec) -> int:
    """What a user would write: json.loads + np.asarray per record."""
    n = 0
    for m in messages:
        x = np.asarray(json.loads(m.value() or b"")["instance"], dtype=np.float32)
        n += x.shape == spec.shape
    return n


def orjson_per_batch(messages: Sequence[Message], spec: InputSpec) -> int:
    """orjson per record, one np.array per batch (no validation beyond numpy's)."""
    rows = [orjson.loads(m.value() or b"")["instance"] for m in messages]
    return len(np.asarray(rows, dtype=np.float32))


def digits_messages(n: int) -> list[Message]:
    """Records like the benchmark's digits backlog: an id and an 8x8 instance of
    4-decimal values, about 40% of them zero."""
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(256):
        x = np.where(rng.random((8, 8)) < 0.4, 0.0, rng.random((8, 8))).round(4)
        pool.append(orjson.dumps(x.tolist()))
    return [
        Message(
            topic="bench",
            partition=0,
            offset=i,
            value=b'{"id":"r-%d","instance":%s}' % (i, pool[i % 256]),
        )
        for i in range(n)
    ]


def one_by_one(fmt: RecordFormat) -> Decode:
    """The decoder with its whole-batch path turned off: every message parsed alone."""
    decoders: dict[InputSpec, RecordDecoder] = {}

    def decode(messages: Sequence[Message], spec: InputSpec) -> int:
        found = decoders.get(spec)
        if found is None:
            found = decoders[spec] = RecordDecoder(spec, fmt)
            found._batch = None
        return len(found.decode(messages).X)

    return decode


def regular_expressions_only() -> Decode:
    """The JSON decoder with its whole-batch path cutting every batch by the regular
    expressions, as it does when ids differ in width (``json_batch._templated`` off)."""
    inner = decoder(RecordFormat.JSON)

    def decode(messages: Sequence[Message], spec: InputSpec) -> int:
        templated = json_batch._templated
        json_batch._templated = lambda texts, lengths: None
        try:
            return inner(messages, spec)
        finally:
            json_batch._templated = templated

    return decode


def parsing_every_message() -> Decode:
    """The v2-protobuf decoder with its whole-batch path parsing every message, as it
    does for batches unlike their template (``ProtobufReader.parsed_batch``)."""
    decoders: dict[InputSpec, RecordDecoder] = {}

    def decode(messages: Sequence[Message], spec: InputSpec) -> int:
        found = decoders.get(spec)
        if found is None:
            found = decoders[spec] = RecordDecoder(spec, RecordFormat.V2_PROTOBUF)
            reader = found._protobuf
            assert reader is not None
            reader.batch = reader.parsed_batch  # type: ignore[method-assign]
        return len(found.decode(messages).X)

    return decode


def arrow_batch(messages: Sequence[Message], spec: InputSpec) -> int:
    """pyarrow.json over the joined batch, explicit schema; rows and ids to numpy."""
    import pyarrow as pa
    import pyarrow.json as paj

    values = pa.list_(pa.float64())
    for _ in spec.shape[1:]:
        values = pa.list_(values)
    schema = pa.schema([("id", pa.string()), ("instance", values)])
    table = paj.read_json(
        io.BytesIO(b"\n".join([m.value() or b"" for m in messages])),
        read_options=paj.ReadOptions(use_threads=False, block_size=1 << 26),
        parse_options=paj.ParseOptions(explicit_schema=schema),
    )
    column = table.column("instance").combine_chunks()
    for _ in spec.shape[1:]:
        column = column.flatten()
    x = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    table.column("id").to_pylist()
    return len(x) // spec.size


def polars_batch(messages: Sequence[Message], spec: InputSpec) -> int:
    """polars.read_ndjson over the joined batch, explicit schema; rows and ids to numpy."""
    import polars as pl

    values: Any = pl.List(pl.Float64)
    for _ in spec.shape[1:]:
        values = pl.List(values)
    frame = pl.read_ndjson(
        io.BytesIO(b"\n".join([m.value() or b"" for m in messages])),
        schema={"id": pl.String, "instance": values},
    )
    column = frame["instance"]
    for _ in spec.shape:
        column = column.explode()
    x = column.to_numpy().astype(np.float32)
    frame["id"].to_list()
    return len(x) // spec.size


def msgspec_batch(messages: Sequence[Message], spec: InputSpec) -> int:
    """msgspec: the batch as one typed JSON array of records, then one np.array."""
    import msgspec

    rows: Any = list[float]
    for _ in spec.shape[1:]:
        rows = list[rows]
    record = msgspec.defstruct("Record", [("instance", rows), ("id", str | None, None)])
    decoded = msgspec.json.Decoder(list[record]).decode(
        b"[" + b",".join([m.value() or b"" for m in messages]) + b"]"
    )
    return len(np.array([r.instance for r in decoded], dtype=np.float32))


def batch_parsers(n: int, batch: int, repeat: int) -> None:
    """The digits records through every candidate, side by side."""
    messages = digits_messages(n)
    spec = InputSpec((8, 8), 10)
    size = sum(len(m) for m in messages) / n
    print(f"Batch parsers, digits records (8x8, ~{size:.0f} bytes each)")
    rates = {
        "per record": run(
            "RecordDecoder, one by one",
            one_by_one(RecordFormat.JSON),
            messages,
            spec,
            batch,
            repeat,
        ),
        "batch": run(
            "RecordDecoder, whole-batch path",
            decoder(RecordFormat.JSON),
            messages,
            spec,
            batch,
            repeat,
        ),
        "regex": run(
            "RecordDecoder, whole-batch path, regexes only",
            regular_expressions_only(),
            messages,
            spec,
            batch,
            repeat,
        ),
    }
    run("orjson per record + one np.asarray", orjson_per_batch, messages, spec, batch, repeat)
    for label, module, parse in (
        ("pyarrow.json.read_json, explicit schema", "pyarrow", arrow_batch),
        ("polars.read_ndjson, explicit schema", "polars", polars_batch),
        ("msgspec typed list of records + np.array", "msgspec", msgspec_batch),
    ):
        if importlib.util.find_spec(module) is None:
            print(f"  {label:<50} {'not installed':>11}")
            continue
        rates[module] = run(label, parse, messages, spec, batch, repeat)
    base = rates["per record"]["cpu"]
    print(
        "  CPU-time rate / one by one: "
        + ", ".join(f"{k} {v['cpu'] / base:.2f}x" for k, v in rates.items() if k != "per record")
    )
    print(
        f"  whole-batch path / regexes only (CPU time): {rates['batch']['cpu'] / rates['regex']['cpu']:.2f}x"
    )


def decoder(fmt: RecordFormat) -> Decode:
    decoders: dict[InputSpec, RecordDecoder] = {}

    def decode(messages: Sequence[Message], spec: InputSpec) -> int:
        batch = decoders.setdefault(spec, RecordDecoder(spec, fmt)).decode(messages)
        if batch.dead:
            raise SystemExit(f"unexpected dead letters: {batch.dead[:3]}")
        return len(batch.X)

    return decode


def run(
    label: str,
    decode: Decode,
    messages: list[Message],
    spec: InputSpec,
    batch: int,
    repeat: int,
) -> dict[str, float]:
    """Best wall-clock and CPU-time rates (rows/s) over ``repeat`` runs."""
    wall = cpu = 0.0
    rows = 0
    for _ in range(repeat):
        rows = 0
        started, started_cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(messages), batch):
            rows += decode(messages[i : i + batch], spec)
        wall = max(wall, rows / (time.perf_counter() - started))
        cpu = max(cpu, rows / max(time.process_time() - started_cpu, 1e-9))
    print(f"  {label:<50} {wall:>11,.0f} {cpu:>11,.0f}")
    return {"wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--protobuf", action="store_true", help="only the JSON and v2 protobuf digits records"
    )
    args = parser.parse_args()
    n, batch, repeat = args.records, args.batch, args.repeat
    load = os.getloadavg()[0]
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average {load:.1f}; {n} records, batches of {batch}, best of {repeat}"
    )
    print(f"  {'':<50} {'wall rec/s':>11} {'cpu rec/s':>11}")
    flat, nested = InputSpec((64,), 10), InputSpec((8, 8), 10)
    if args.protobuf:
        protobuf_backlogs(n, flat, batch, repeat)
        return
    json_fmt, auto = decoder(RecordFormat.JSON), decoder(RecordFormat.AUTO)
    for digits in (None, 0):
        what = "exact float32 values" if digits is None else "sixteenths, like the digits demo"
        messages = make_messages(n, (64,), digits)
        size = sum(len(m) for m in messages) / n
        print(f"64-float json records, {what} (~{size:.0f} bytes each)")
        run(
            "stdlib json.loads + np.asarray per record", stdlib_per_record, messages, flat, batch, 1
        )
        run("orjson + one np.asarray per batch", orjson_per_batch, messages, flat, batch, repeat)
        run("RecordDecoder json, shape (64,)", json_fmt, messages, flat, batch, repeat)
        run("RecordDecoder auto, shape (64,)", auto, messages, flat, batch, repeat)
        run(
            "RecordDecoder json, shape (8, 8)",
            json_fmt,
            make_messages(n, (8, 8), digits),
            nested,
            batch,
            repeat,
        )
    print("Variants (exact float32 values, shape (64,))")
    with_arrays = make_messages(n, (64,), extra={"tags": ["a", "b"]})
    run("json with an array among the context fields", json_fmt, with_arrays, flat, batch, repeat)
    with_headers = make_messages(n, (64,), headers=CLOUDEVENTS)
    run("json with CloudEvents headers", json_fmt, with_headers, flat, batch, repeat)
    run(
        "v2, 1 row per message",
        decoder(RecordFormat.V2),
        make_messages(n, (64,), fmt="v2"),
        flat,
        batch,
        repeat,
    )
    many = make_messages(max(n // 64, 1), (64,), fmt="v2", rows=64)
    run(
        "v2, 64 rows per message", decoder(RecordFormat.V2), many, flat, max(batch // 64, 1), repeat
    )
    protobuf_backlogs(n, flat, batch, repeat)
    batch_parsers(n, args.batch, repeat)


def protobuf_backlogs(n: int, flat: InputSpec, batch: int, repeat: int) -> None:
    """The digits records as JSON and as v2 protobuf, raw and typed, side by side."""
    pb = decoder(RecordFormat.V2_PROTOBUF)
    as_json = make_messages(n, (64,), 0)
    raw, typed = protobuf_messages(n, (64,), raw=True), protobuf_messages(n, (64,), raw=False)
    sizes = ", ".join(
        f"{what} ~{sum(len(m) for m in ms) / n:.0f} B"
        for what, ms in (("json", as_json), ("raw", raw), ("typed", typed))
    )
    print(f"The same digits records, JSON and v2 protobuf ({sizes})")
    rates = {
        "json": run(
            "json, RecordDecoder json", decoder(RecordFormat.JSON), as_json, flat, batch, repeat
        )
    }
    rates["raw"] = run("v2-protobuf, raw_input_contents", pb, raw, flat, batch, repeat)
    rates["parsed"] = run(
        "v2-protobuf raw, every message parsed", parsing_every_message(), raw, flat, batch, repeat
    )
    rates["typed"] = run("v2-protobuf, typed fp32_contents", pb, typed, flat, batch, repeat)
    run("v2-protobuf raw, read by auto", decoder(RecordFormat.AUTO), raw, flat, batch, repeat)
    many = protobuf_messages(max(n // 64, 1), (64,), raw=True, rows=64)
    run("v2-protobuf raw, 64 rows per message", pb, many, flat, max(batch // 64, 1), repeat)
    base = rates["json"]["wall"]
    print(
        f"  protobuf / json (wall): raw {rates['raw']['wall'] / base:.2f}x, "
        f"typed {rates['typed']['wall'] / base:.2f}x; raw templates / every message parsed "
        f"{rates['raw']['wall'] / rates['parsed']['wall']:.2f}x"
    )


if __name__ == "__main__":
    main()
