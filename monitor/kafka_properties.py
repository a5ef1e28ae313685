"""Which librdkafka settings apply to which client: consumer, producer or admin.

A user's ``--kafka-option`` goes to every client the worker makes unless it belongs to
one kind only: librdkafka warns (``CONFWARN``) about a consumer setting given to a
producer and the reverse, and would print that warning at every start. The two sets are
the properties marked ``C`` and ``P`` in librdkafka's CONFIGURATION.md (2.16), plus
confluent-kafka's own callbacks; everything else (``*``: connection, security, logging)
goes to every client. A setting unknown here is treated as general, so a newer
librdkafka's key still reaches the clients (and librdkafka judges it).

The admin client gets the general settings only: it neither consumes nor produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Client = Literal["consumer", "producer", "admin"]

CONSUMER_ONLY = frozenset(
    {
        "auto.commit.enable",
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "check.crcs",
        "consume.callback.max.messages",
        "consume_cb",
        "coordinator.query.interval.ms",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.message.max.bytes",
        "fetch.min.bytes",
        "fetch.queue.backoff.ms",
        "fetch.wait.max.ms",
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.protocol.type",
        "group.remote.assignor",
        "heartbeat.interval.ms",
        "isolation.level",
        "max.partition.fetch.bytes",
        "max.poll.interval.ms",
        "max.poll.records",
        "offset.store.method",
        "offset.store.path",
        "offset.store.sync.interval.ms",
        "offset_commit_cb",
        "partition.assignment.strategy",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "rebalance_cb",
        "session.timeout.ms",
        "share.acknowledgement.mode",
        # confluent-kafka's own
        "on_commit",
    }
)

PRODUCER_ONLY = frozenset(
    {
        "acks",
        "batch.num.messages",
        "batch.size",
        "compression.codec",
        "compression.level",
        "compression.type",
        "delivery.report.only.error",
        "delivery.timeout.ms",
        "dr_cb",
        "dr_msg_cb",
        "enable.gapless.guarantee",
        "enable.idempotence",
        "linger.ms",
        "message.send.max.retries",
        "message.timeout.ms",
        "msg_order_cmp",
        "partitioner",
        "partitioner_cb",
        "produce.offset.report",
        "queue.buffering.backpressure.threshold",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
        "queue.buffering.max.ms",
        "queuing.strategy",
        "request.required.acks",
        "request.timeout.ms",
        "retries",
        "sticky.partitioning.linger.ms",
        "transaction.timeout.ms",
        "transactional.id",
        # confluent-kafka's own
        "on_delivery",
    }
)

_NOT_FOR: dict[Client, frozenset[str]] = {
    "consumer": PRODUCER_ONLY,
    "producer": CONSUMER_ONLY,
    "admin": CONSUMER_ONLY | PRODUCER_ONLY,
}


def for_client(client: Client, settings: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``settings`` that applies to ``client``."""
    skip = _NOT_FOR[client]
    return {key: value for key, value in settings.items() if key not in skip}
