"""Micro-batches close on count, bytes or age, whichever comes first."""

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


def sizes(items: object) -> int:
    return sum(len(s) for s in items)  # type: ignore[attr-defined]


def test_batch_closes_once_it_holds_max_bytes_and_never_holds_more() -> None:
    clock = Clock()
    b: Batcher[str] = Batcher(100, 1.0, clock, max_bytes=10, bytes_of=sizes)
    b.add(["aaaa", "bbbb"])
    assert not b.is_due()
    b.add(["cc", "dddd", "e"])  # 15 bytes
    assert b.is_due()
    clock.now += 0.3
    assert b.take() == ["aaaa", "bbbb", "cc"]  # 10 bytes: the longest start that fits
    assert len(b) == 2 and not b.is_due(), "the rest opens the next batch..."
    assert abs(b.time_left() - 1.0) < 1e-9, "...whose clock starts now"
    b.add(["ffffff"])  # 11 bytes
    assert b.is_due()
    assert b.take() == ["dddd", "e"]
    assert b.take() == ["ffffff"]


def test_a_record_larger_than_max_bytes_is_a_batch_of_its_own() -> None:
    b: Batcher[str] = Batcher(100, 1.0, Clock(), max_bytes=4, bytes_of=sizes)
    b.add(["x" * 9, "y"])
    assert b.take() == ["x" * 9]
    assert b.take() == ["y"]


def test_dropping_records_gives_back_their_bytes() -> None:
    b: Batcher[str] = Batcher(100, 1.0, Clock(), max_bytes=10, bytes_of=sizes)
    b.add(["aaaaaa", "bbbbbb"])
    assert b.is_due()
    b.drop_where(lambda s: s.startswith("a"))
    assert not b.is_due()
    assert b.take() == ["bbbbbb"]
