"""Create and describe the worker's topics: the work behind ``distillation-monitor topics``.

Brokers often refuse automatic topic creation and kcat cannot create topics, so the
command does it with Kafka's admin API, from the same configuration the worker reads.
A topic that exists is described, never changed: adding partitions moves keys to other
partitions, and that is the operator's decision, not a side effect of a setup command.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from monitor.config import WorkerConfig
from monitor.errors import TopicError

#: Topic settings shown by ``describe``: how long records stay and how large one may be.
SHOWN_CONFIGS = ("retention.ms", "max.message.bytes", "cleanup.policy")


@dataclass(frozen=True)
class TopicState:
    """One of the worker's topics as the cluster has it (``partitions`` 0: missing)."""

    role: str
    name: str
    partitions: int = 0
    replication: int = 0
    configs: Mapping[str, str] = field(default_factory=dict)
    created: bool = False

    @property
    def exists(self) -> bool:
        return self.partitions > 0


def worker_topics(config: WorkerConfig) -> list[tuple[str, str]]:
    """(role, topic) for every topic the worker reads or writes, the drift topic only
    when it is not the alert topic."""
    topics = [
        ("input", config.input_topic),
        ("alerts", config.alert_topic),
        ("dead letters", config.dead_letter_topic),
    ]
    if config.drift_topic and config.drift_topic != config.alert_topic:
        topics.append(("drift", config.drift_topic))
    return topics


def _admin(conf: Mapping[str, Any]) -> AdminClient:
    """librdkafka's own log is off (a one-shot command reports what failed in one line;
    unreachable, it would print a line every 50 ms); ``--kafka-option log_level=7`` brings
    it back."""
    return AdminClient({"log_level": 0, **conf})


def _metadata(admin: AdminClient, conf: Mapping[str, Any], timeout: float) -> Any:
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0]
        detail = err.str() if isinstance(err, KafkaError) else str(err)
        raise TopicError(
            f"cannot reach Kafka at {conf.get('bootstrap.servers')}: {detail}"
        ) from None


def create_topics(
    conf: Mapping[str, Any],
    names: Sequence[str],
    *,
    partitions: int,
    replication: int | None = None,
    topic_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing ``names`` and wait until each partition has a leader; return
    the names created. ``replication`` None: min(3, brokers in the cluster)."""
    admin = _admin(conf)  # must outlive its futures
    metadata = _metadata(admin, conf, timeout)
    brokers = max(1, len(metadata.brokers))
    factor = min(3, brokers) if replication is None else replication
    if factor > brokers:
        raise TopicError(
            f"--replication-factor {factor} needs {factor} brokers; the cluster has {brokers}"
        )
    missing = [n for n in dict.fromkeys(names) if n not in metadata.topics]
    new = [
        NewTopic(
            n, num_partitions=partitions, replication_factor=factor, config=dict(topic_config or {})
        )
        for n in missing
    ]
    created: list[str] = []
    for name, future in (
        admin.create_topics(new, operation_timeout=timeout) if new else {}
    ).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another client was quicker
                raise TopicError(f"cannot create topic {name}: {err.str()}") from None
    _wait_for_leaders(admin, conf, missing, timeout)
    return created


def _wait_for_leaders(
    admin: AdminClient, conf: Mapping[str, Any], names: Sequence[str], timeout: float
) -> None:
    """A created topic is usable once metadata shows a leader for every partition."""
    deadline = time.monotonic() + timeout
    while names:
        topics = _metadata(admin, conf, timeout).topics
        if all(
            n in topics
            and topics[n].error is None
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics {', '.join(names)} have no leader after {timeout:g}s")
        time.sleep(0.1)


def describe_topics(
    conf: Mapping[str, Any],
    topics: Sequence[tuple[str, str]],
    *,
    created: Sequence[str] = (),
    timeout: float = 30.0,
) -> list[TopicState]:
    """The state of each (role, topic); a missing topic has 0 partitions."""
    admin = _admin(conf)
    metadata = _metadata(admin, conf, timeout).topics
    present = sorted({name for _, name in topics if name in metadata})
    configs = _configs(admin, present, timeout)
    states = []
    for role, name in topics:
        meta = metadata.get(name)
        if meta is None or meta.error is not None:
            states.append(TopicState(role, name))
            continue
        replicas = min((len(p.replicas) for p in meta.partitions.values()), default=0)
        states.append(
            TopicState(
                role,
                name,
                partitions=len(meta.partitions),
                replication=replicas,
                configs=configs.get(name, {}),
                created=name in created,
            )
        )
    return states


def _configs(admin: AdminClient, names: Sequence[str], timeout: float) -> dict[str, dict[str, str]]:
    """The ``SHOWN_CONFIGS`` of each topic; left out where the broker will not say."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    out: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException:
            continue  # no describe permission: the table shows "-"
        out[resource.name] = {
            key: str(entries[key].value)
            for key in SHOWN_CONFIGS
            if key in entries and entries[key].value is not None
        }
    return out


def _retention(value: str | None) -> str:
    if value is None:
        return "-"
    ms = int(value)
    if ms < 0:
        return "forever"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def table(states: Sequence[TopicState]) -> str:
    """The states as an aligned text table, one topic a line."""
    rows = [("role", "topic", "partitions", "replicas", "retention", "max message", "state")]
    for s in states:
        state = "created" if s.created else "exists" if s.exists else "MISSING"
        rows.append(
            (
                s.role,
                s.name,
                str(s.partitions) if s.exists else "-",
                str(s.replication) if s.exists else "-",
                _retention(s.configs.get("retention.ms")) if s.exists else "-",
                s.configs.get("max.message.bytes", "-") if s.exists else "-",
                state,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
