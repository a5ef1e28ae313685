"""How many threads the worker gives TensorFlow."""

from __future__ import annotations

import math
import os

import pytest

from monitor.cpus import available_cpus
from monitor.stream.scoring import tensorflow_threads


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (4, 4), (16, 16)])
def test_auto_gives_tensorflow_every_cpu_the_process_may_use(cpus: int, expected: int) -> None:
    assert tensorflow_threads(0, cpus) == expected


def test_an_explicit_count_is_kept_whatever_the_cpus() -> None:
    assert tensorflow_threads(3, 2) == 3
    assert tensorflow_threads(1, 64) == 1


def test_auto_reads_the_cpus_this_process_may_use() -> None:
    """Affinity capped by the CPU quota (test_cpu_quota.py)."""
    assert tensorflow_threads(0) == available_cpus()
    assert available_cpus() <= len(os.sched_getaffinity(0))


def test_big_inputs_are_scored_in_chunks_that_bound_their_memory() -> None:
    from monitor.stream.scoring import MAX_CHUNK_ELEMENTS, chunk_rows

    assert chunk_rows(2048, (8, 8)) == 2048  # small rows: the whole batch at once
    assert chunk_rows(2048, (32, 32, 3)) == 512  # images: 512 rows of 3,072 elements
    assert chunk_rows(512, (32, 32, 3)) == 512  # never more than asked
    assert chunk_rows(2048, (1000, 1000)) == 2
    assert chunk_rows(2048, (MAX_CHUNK_ELEMENTS * 2,)) == 1  # at least one row
    for shape in [(5,), (8, 8), (28, 28, 1), (32, 32, 3), (224, 224, 3)]:
        rows = chunk_rows(4096, shape)
        assert rows & (rows - 1) == 0 and rows * math.prod(shape) <= max(
            MAX_CHUNK_ELEMENTS, math.prod(shape)
        )
