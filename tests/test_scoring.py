"""How many threads the worker gives TensorFlow."""

from __future__ import annotations

import os

import pytest

from monitor.cpus import available_cpus
from monitor.stream.scoring import tensorflow_threads


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_auto_leaves_one_cpu_for_decoding_and_kafka(cpus: int, expected: int) -> None:
    assert tensorflow_threads(0, cpus) == expected


def test_an_explicit_count_is_kept_whatever_the_cpus() -> None:
    assert tensorflow_threads(3, 2) == 3
    assert tensorflow_threads(1, 64) == 1


def test_auto_reads_the_cpus_this_process_may_use() -> None:
    """Affinity capped by the CPU quota (test_cpu_quota.py)."""
    assert tensorflow_threads(0) == max(1, available_cpus() - 1)
    assert available_cpus() <= len(os.sched_getaffinity(0))
