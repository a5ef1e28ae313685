"""Making sure the worker's output topics exist before the first batch.

Brokers often disable automatic topic creation (the local one does). A worker that
found its alert topic missing would hold every commit until someone noticed, so at
start it creates missing output topics with the input topic's partition count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def ensure_topics(
    admin_conf: dict[str, Any], input_topic: str, outputs: Sequence[str], timeout: float = 30.0
) -> None:
    """Create missing ``outputs``; warn (don't fail) when the input topic is missing."""
    admin = AdminClient(admin_conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        log.warning(
            "could not list topics (%s); assuming they exist", exc.args[0] if exc.args else exc
        )
        return
    existing = metadata.topics
    partitions = len(existing[input_topic].partitions) if input_topic in existing else 1
    if input_topic not in existing:
        log.warning("input topic %s does not exist yet; waiting for it", input_topic)
    brokers = max(1, len(metadata.brokers))
    missing = sorted({t for t in outputs if t and t not in existing})
    if not missing:
        return
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=min(3, brokers)) for t in missing
    ]
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created output topic %s (%d partitions)", topic, partitions)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            log.warning("could not create output topic %s: %s", topic, err)
