"""Writing the benchmark's input topics: N records, as fast as the client allows.

Record ``i`` holds pool entry ``i % len(pool)`` in partition ``i % partitions``, so the
expected alerts are known without scoring anything twice. In JSON it is
``{"id": "r-<i>", "instance": ...}``, built by one ``%`` per record from pre-serialised
instances; in protobuf a ``ModelInferRequest`` with the instance as float32
``raw_input_contents``, serialised once per pool entry, plus its id (serialised
messages concatenate into their merge). The producer batches a megabyte at a time with lz4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from bench.kafkautil import BOOTSTRAP, admin, create_topic, fast_producer, produce_all

Format = Literal["json", "protobuf"]

TEMPLATE = b'{"id":"r-%d","instance":%s}'


def record_maker(pool: list[bytes]) -> Callable[[int], bytes]:
    size = len(pool)

    def value_of(i: int) -> bytes:
        return TEMPLATE % (i, pool[i % size])

    return value_of


def protobuf_maker(pool_x: Sequence[np.ndarray] | np.ndarray) -> Callable[[int], bytes]:
    """``ModelInferRequest`` records of the pool's float32 instances, one row each."""
    from monitor.stream.protobuf_format import schema

    request = schema().request
    bodies = []
    for x in pool_x:
        body = request(model_name="bench")
        body.inputs.add(name="x", datatype="FP32", shape=[1, *x.shape])
        body.raw_input_contents.append(np.asarray(x, dtype="<f4").tobytes())
        bodies.append(body.SerializeToString())
    size = len(bodies)

    def value_of(i: int) -> bytes:
        return bodies[i % size] + request(id=f"r-{i}").SerializeToString()

    return value_of


def write_topic(
    topic: str,
    pool: list[bytes],
    n: int,
    partitions: int,
    bootstrap: str = BOOTSTRAP,
    fmt: Format = "json",
    pool_x: Sequence[np.ndarray] | np.ndarray = (),
) -> dict[str, float]:
    """Create ``topic`` and fill it with ``n`` records (JSON from ``pool``, protobuf
    from ``pool_x``); returns timing and size facts."""
    create_topic(admin(bootstrap), topic, partitions)
    value_of = record_maker(pool) if fmt == "json" else protobuf_maker(pool_x)
    started = time.perf_counter()
    produce_all(fast_producer(bootstrap), topic, n, value_of, partitions)
    seconds = time.perf_counter() - started
    mean_bytes = sum(len(value_of(i)) for i in range(min(n, 1000))) / min(n, 1000)
    return {"records": n, "seconds": seconds, "records_per_s": n / seconds, "bytes": mean_bytes}
