"""Micro-batches close on size or on age, whichever comes first."""

from __future__ import annotations

from monitor.stream.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batch_closes_when_full_before_its_time() -> None:
    clock = Clock()
    b: Batcher[int] = Batcher(3, 1.0, clock)
    b.add([1, 2])
    assert not b.is_due()
    b.add([3])
    assert b.is_due()
    assert b.take() == [1, 2, 3]
    assert len(b) == 0


def test_batch_closes_on_age_counted_from_its_first_record() -> None:
    clock = Clock()
    b: Batcher[int] = Batcher(100, 0.5, clock)
    b.add([1])
    clock.now += 0.3
    b.add([2])
    assert not b.is_due()
    assert abs(b.time_left() - 0.2) < 1e-9
    clock.now += 0.2
    assert b.is_due()


def test_empty_batch_is_never_due() -> None:
    clock = Clock()
    b: Batcher[int] = Batcher(1, 0.0, clock)
    clock.now += 10
    assert not b.is_due()
    assert b.time_left() == 0.0


def test_dropping_revoked_records_keeps_the_rest() -> None:
    b: Batcher[int] = Batcher(10, 1.0, Clock())
    b.add([1, 2, 3, 4])
    assert b.drop_where(lambda x: x % 2 == 0) == 2
    assert b.take() == [1, 3]
    assert b.room == 10
