"""Making sure the worker's output topics exist before the first batch.

Brokers often disable automatic topic creation (the local one does). A worker that
found its alert topic missing would hold every commit until someone noticed, so at
start it creates missing output topics with the input topic's partition count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from monitor.errors import ConfigError

log = logging.getLogger(__name__)


def ensure_topics(
    admin_conf: dict[str, Any], input_topic: str, outputs: Sequence[str], timeout: float = 30.0
) -> None:
    """Create missing ``outputs``; warn (don't fail) when the input topic is missing."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**admin_conf, "error_cb": errors.append}
    admin = AdminClient(conf)
    try:
        metadata = _list_topics(admin, errors, timeout)
    except KafkaException as exc:
        log.warning(
            "could not list topics (%s); assuming they exist", exc.args[0] if exc.args else exc
        )
        return
    existing = metadata.topics
    partitions = len(existing[input_topic].partitions) if input_topic in existing else 1
    if input_topic not in existing:
        log.warning(
            "input topic %s does not exist yet; waiting for it (create it, and the output "
            "topics, with: distillation-monitor topics --input-topic %s --partitions N)",
            input_topic,
            input_topic,
        )
    brokers = max(1, len(metadata.brokers))
    missing = sorted({t for t in outputs if t and t not in existing})
    if not missing:
        admin.poll(0)  # serves librdkafka's log lines to Python logging
        return
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=min(3, brokers)) for t in missing
    ]
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            log.info(
                "created output topic %s (%d partitions)",
                topic,
                partitions,
                extra={"event": "topic_created", "topic": topic, "partitions": partitions},
            )
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            log.warning("could not create output topic %s: %s", topic, err)
    admin.poll(0)


#: Errors that no retry fixes: the credentials or the permissions are wrong.
AUTH_ERRORS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def _list_topics(admin: AdminClient, errors: list[KafkaError], timeout: float) -> Any:
    """``list_topics`` in short steps, serving the client's log lines and errors between
    them: a wrong password fails at once and says so (librdkafka would otherwise keep
    retrying silently until ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException:
            admin.poll(0)
            denied = next((e for e in errors if e.code() in AUTH_ERRORS), None)
            if denied is not None:
                raise ConfigError(
                    f"Kafka refused the credentials: {denied.str()} (check the SASL or SSL "
                    "settings, e.g. DMON_KAFKA_SASL_PASSWORD)"
                ) from None
            if time.monotonic() >= deadline:
                raise


def message_limits(
    admin_conf: dict[str, Any], topics: Sequence[str], timeout: float = 30.0
) -> dict[str, int]:
    """Each topic's ``max.message.bytes``, the largest record batch its brokers accept.

    Topics whose limit cannot be read (no describe permission, say) are left out: the
    worker assumes Kafka's default for them and learns a lower limit from a refusal.
    """
    admin = AdminClient(admin_conf)
    wanted = sorted({t for t in topics if t})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in wanted]
    limits: dict[str, int] = {}
    if not resources:
        return limits
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entry = future.result().get("max.message.bytes")
            if entry is not None and entry.value is not None:
                limits[resource.name] = int(entry.value)
        except (KafkaException, ValueError) as exc:
            log.warning(
                "could not read max.message.bytes of %s (%s); assuming Kafka's default",
                resource.name,
                exc.args[0] if exc.args else exc,
            )
    admin.poll(0)  # serves librdkafka's log lines to Python logging
    return limits
