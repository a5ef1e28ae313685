"""Micro-benchmark: records/s of the record decoder against stdlib json and orjson.

Run: ``.venv/bin/python bench/decode_bench.py [--records N] [--batch 512]``. One core,
messages built as ``confluent_kafka.Message`` objects like the consumer returns, best of
``--repeat`` runs. The full suite (consume, score, end to end) lives elsewhere in bench/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import orjson
from confluent_kafka import Message

from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat


def make_messages(
    n: int, shape: tuple[int, ...], digits: int | None, fmt: str, rows: int = 1
) -> list[Message]:
    """n messages with float32 values; ``digits`` rounds them (None: full float32 repr)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        x = rng.random((rows, *shape), dtype=np.float32)
        values = x.round(digits).tolist() if digits is not None else x.tolist()
        if fmt == "json":
            body = {"id": f"rec-{i}", "instance": values[0], "user": "u-1"}
        else:
            flat = np.asarray(values).ravel().tolist()
            body = {
                "id": f"req-{i}",
                "inputs": [
                    {"name": "x", "shape": [rows, *shape], "datatype": "FP32", "data": flat}
                ],
            }
        out.append(Message(topic="bench", partition=0, offset=i, value=json.dumps(body).encode()))
    return out


def stdlib_per_record(messages: Sequence[Message], spec: InputSpec) -> int:
    """What a user would write: json.loads + np.asarray per record."""
    n = 0
    for m in messages:
        x = np.asarray(json.loads(m.value() or b"")["instance"], dtype=np.float32)
        n += x.shape == spec.shape
    return n


def orjson_per_batch(messages: Sequence[Message], spec: InputSpec) -> int:
    """orjson per record, one np.array per batch."""
    rows = [orjson.loads(m.value() or b"")["instance"] for m in messages]
    return len(np.asarray(rows, dtype=np.float32))


def run(
    label: str,
    fn: Callable[[Sequence[Message], InputSpec], int],
    messages: list[Message],
    spec: InputSpec,
    batch: int,
    repeat: int,
    rows_per_message: int = 1,
) -> float:
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(messages), batch):
            fn(messages[i : i + batch], spec)
        best = max(best, len(messages) * rows_per_message / (time.perf_counter() - started))
    print(f"  {label:<52} {best:>12,.0f} records/s")
    return best


def decoder(fmt: RecordFormat) -> Callable[[Sequence[Message], InputSpec], int]:
    cache: dict[InputSpec, RecordDecoder] = {}

    def fn(messages: Sequence[Message], spec: InputSpec) -> int:
        dec = cache.setdefault(spec, RecordDecoder(spec, fmt))
        batch = dec.decode(messages)
        if batch.dead:
            raise SystemExit(f"unexpected dead letters: {batch.dead[:3]}")
        return len(batch.X)

    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, batch, repeat = args.records, args.batch, args.repeat
    print(f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    flat, nested = InputSpec((64,), 10), InputSpec((8, 8), 10)
    for digits in (None, 6):
        what = "full float32 repr" if digits is None else f"{digits} decimals"
        messages = make_messages(n, (64,), digits, "json")
        size = sum(len(m) for m in messages) / n
        print(f"64-float json records, {what} ({size:.0f} bytes each), batches of {batch}")
        run(
            "stdlib json.loads + np.asarray per record", stdlib_per_record, messages, flat, batch, 1
        )
        run("orjson + one np.array per batch", orjson_per_batch, messages, flat, batch, repeat)
        run(
            "RecordDecoder json, shape (64,)",
            decoder(RecordFormat.JSON),
            messages,
            flat,
            batch,
            repeat,
        )
        run(
            "RecordDecoder auto, shape (64,)",
            decoder(RecordFormat.AUTO),
            messages,
            flat,
            batch,
            repeat,
        )
        nested_messages = make_messages(n, (8, 8), digits, "json")
        run(
            "RecordDecoder json, shape (8, 8)",
            decoder(RecordFormat.JSON),
            nested_messages,
            nested,
            batch,
            repeat,
        )
    print("Open Inference Protocol (v2) requests, full float32 repr")
    v2 = make_messages(n, (64,), None, "v2")
    run("RecordDecoder v2, 1 row per message", decoder(RecordFormat.V2), v2, flat, batch, repeat)
    v2_multi = make_messages(max(n // 64, 1), (64,), None, "v2", rows=64)
    run(
        "RecordDecoder v2, 64 rows per message",
        decoder(RecordFormat.V2),
        v2_multi,
        flat,
        max(batch // 64, 1),
        repeat,
        rows_per_message=64,
    )


if __name__ == "__main__":
    main()
