"""Exactly-once commit steps around a transactional producer that keeps timing out
(pure logic: stand-ins for the Kafka clients)."""

from __future__ import annotations

from typing import Any

import checkpoint_standins
import pytest
from checkpoint_standins import NullMetrics
from confluent_kafka import KafkaError, KafkaException

from monitor.errors import FencedError
from monitor.stream.alerts import Outgoing
from monitor.stream.checkpoint import (
    SEND_OFFSETS_TIMEOUTS_STUCK,
    BatchOffsets,
    TransactionalCheckpoint,
)
from monitor.stream.publisher import Publisher


class TxnProducer:
    """Records the transactional calls; ``send_offsets`` times out when told to."""

    def __init__(self, times_out: bool) -> None:
        self.times_out = times_out
        self.calls: list[str] = []

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("send_offsets")
        if self.times_out:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class Host(checkpoint_standins.Host):
    def commit(self, offsets: Any) -> None:
        raise AssertionError("exactly-once commits offsets in the transaction")


def test_send_offsets_timing_out_again_and_again_replaces_the_producer() -> None:
    """After a broker restart librdkafka can keep timing out on a coordinator that is back:
    after a few timeouts in a row the checkpoint swaps in a new transactional producer and
    gives the batch back for re-processing, instead of retrying for ever."""
    stuck = TxnProducer(times_out=True)
    fresh = TxnProducer(times_out=False)
    host = Host()
    publisher = Publisher(stuck)  # type: ignore[arg-type]
    checkpoint = TransactionalCheckpoint(
        host,
        publisher,
        NullMetrics(),
        make_producer=lambda: fresh,  # type: ignore[arg-type,return-value]
    )
    offsets = BatchOffsets({("in", 0): 0}, {("in", 0): 10})
    checkpoint.begin(offsets)
    assert checkpoint.commit(offsets) is False
    assert stuck.calls.count("send_offsets") == SEND_OFFSETS_TIMEOUTS_STUCK
    assert publisher.producer is fresh and fresh.calls == ["init"]
    assert host.rewinds == 1

    checkpoint.begin(offsets)  # the batch again, through the new producer
    assert checkpoint.commit(offsets) is True
    assert fresh.calls == ["init", "begin", "send_offsets", "commit"]


class FailingAbort(TxnProducer):
    """A producer whose abort fails fatally with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(times_out=False)
        self.code = code

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")
        raise KafkaException(KafkaError(self.code, "failed", fatal=True))


def checkpoint_with(broken: TxnProducer, fresh: TxnProducer, host: Host) -> Any:
    return TransactionalCheckpoint(
        host,
        Publisher(broken),  # type: ignore[arg-type]
        NullMetrics(),
        make_producer=lambda: fresh,  # type: ignore[arg-type,return-value]
    )


def test_a_producer_broken_without_being_fenced_is_replaced_and_the_batch_redone() -> None:
    """Seen after a broker restart: aborting failed fatally with INVALID_TXN_STATE. Nobody
    else has our transactional id, so the worker carries on with a new producer."""
    broken, fresh, host = FailingAbort(KafkaError.INVALID_TXN_STATE), TxnProducer(False), Host()
    checkpoint = checkpoint_with(broken, fresh, host)
    offsets = BatchOffsets({("in", 0): 0}, {("in", 0): 10})
    checkpoint.begin(offsets)
    checkpoint.abort(offsets)
    assert checkpoint.publisher.producer is fresh and fresh.calls == ["init"]
    assert host.rewinds == 1
    checkpoint.begin(offsets)
    assert checkpoint.commit(offsets) is True


def test_a_fenced_producer_still_stops_the_worker() -> None:
    broken, fresh, host = FailingAbort(KafkaError.PRODUCER_FENCED), TxnProducer(False), Host()
    checkpoint = checkpoint_with(broken, fresh, host)
    offsets = BatchOffsets({("in", 0): 0}, {("in", 0): 10})
    checkpoint.begin(offsets)
    with pytest.raises(FencedError, match="fenced"):
        checkpoint.abort(offsets)
    assert checkpoint.publisher.producer is broken, "a zombie must not fence the new owner"


class FailingProduce(TxnProducer):
    """A producer that fails fatally (not fenced) on its first message."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("produce")
        raise KafkaException(KafkaError(KafkaError._INCONSISTENT, "sequence gap", fatal=True))


def test_a_batch_whose_producer_failed_fatally_while_producing_is_processed_again() -> None:
    """The fatal error closes the transaction on the client's side; the batch's alerts
    never reach subscribers, so its records must be processed again (before, the batch
    was dropped and the next transaction committed offsets past it)."""
    broken, fresh, host = FailingProduce(False), TxnProducer(False), Host()
    checkpoint = checkpoint_with(broken, fresh, host)
    offsets = BatchOffsets({("in", 0): 0}, {("in", 0): 10})
    checkpoint.begin(offsets)
    checkpoint.publish(Outgoing("alerts", b"{}", b"k", None, "alert"))
    assert checkpoint.commit(offsets) is False
    assert host.rewinds == 1, "the batch must be given back for re-processing"
    assert "send_offsets" not in broken.calls

    checkpoint.begin(offsets)  # the batch again, through a new producer
    assert checkpoint.publisher.producer is fresh
    assert checkpoint.commit(offsets) is True
