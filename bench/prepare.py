"""Writing the benchmark's input topics: N small JSON records, as fast as the client allows.

Record ``i`` is ``{"id": "r-<i>", "instance": pool[i % len(pool)]}`` in partition
``i % partitions``, so the expected alerts are known without scoring anything twice.
The values are built by one ``%`` per record from pre-serialised instances; the producer
batches a megabyte at a time with lz4.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.kafkautil import BOOTSTRAP, admin, create_topic, fast_producer, produce_all

TEMPLATE = b'{"id":"r-%d","instance":%s}'


def record_maker(pool: list[bytes]) -> Callable[[int], bytes]:
    size = len(pool)

    def value_of(i: int) -> bytes:
        return TEMPLATE % (i, pool[i % size])

    return value_of


def write_topic(
    topic: str, pool: list[bytes], n: int, partitions: int, bootstrap: str = BOOTSTRAP
) -> dict[str, float]:
    """Create ``topic`` and fill it with ``n`` records; returns timing and size facts."""
    create_topic(admin(bootstrap), topic, partitions)
    value_of = record_maker(pool)
    started = time.perf_counter()
    produce_all(fast_producer(bootstrap), topic, n, value_of, partitions)
    seconds = time.perf_counter() - started
    mean_bytes = sum(len(value_of(i)) for i in range(min(n, 1000))) / min(n, 1000)
    return {"records": n, "seconds": seconds, "records_per_s": n / seconds, "bytes": mean_bytes}
