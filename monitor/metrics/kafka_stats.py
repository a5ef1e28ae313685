"""Consumer lag and broker connection state from librdkafka's statistics JSON.

librdkafka emits its statistics every ``statistics.interval.ms`` through ``stats_cb``; the
worker hands the string to :meth:`KafkaStatsCollector.update`. The newest snapshot per
client type (consumer, producer) is kept and turned into metric families at scrape time,
the custom-collector shape of prometheus_client's own ``gc_collector``. Keying by type
rather than handle name means a re-created client replaces the old one's series instead
of leaving them behind.

``update`` runs inside librdkafka's callback: an exception there would surface from the
worker's ``poll()``, so malformed input is logged and ignored, never raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# librdkafka broker states; UP is the only one in which requests flow.
BROKER_UP = "UP"


@dataclass(frozen=True)
class BrokerState:
    up: bool
    connects: int
    disconnects: int


@dataclass(frozen=True)
class ClientSnapshot:
    """What one statistics emit says, reduced to what we export."""

    time: float
    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    brokers: dict[str, BrokerState] = field(default_factory=dict)
    rebalances: int | None = None


def parse_stats(stats_json: str | bytes) -> tuple[str, ClientSnapshot]:
    """(client type, snapshot) from one statistics JSON document; ValueError if malformed.

    Lag: ``topics.*.partitions.*.consumer_lag``, skipping the internal partition -1 and the
    lag -1 that librdkafka reports for partitions it does not consume or cannot measure.
    Brokers: real brokers only (``nodeid >= 0``; bootstrap and logical entries such as the
    group coordinator alias are left out), labelled by their ``host:port``.
    """
    doc = orjson.loads(stats_json)
    if not isinstance(doc, dict):
        raise ValueError("statistics are not a JSON object")
    client = str(doc.get("type") or "unknown")
    lag: dict[tuple[str, str], int] = {}
    for topic_name, topic in _items(doc.get("topics")):
        for part_id, part in _items(topic.get("partitions")):
            partition = part.get("partition", part_id)
            value = part.get("consumer_lag", -1)
            if int(partition) < 0 or not isinstance(value, int) or value < 0:
                continue
            lag[(str(topic.get("topic", topic_name)), str(int(partition)))] = value
    brokers: dict[str, BrokerState] = {}
    for key, broker in _items(doc.get("brokers")):
        if int(broker.get("nodeid", -1)) < 0 or broker.get("source") == "logical":
            continue
        name = str(broker.get("nodename") or key)
        brokers[name] = BrokerState(
            up=broker.get("state") == BROKER_UP,
            connects=int(broker.get("connects", 0)),
            disconnects=int(broker.get("disconnects", 0)),
        )
    cgrp = doc.get("cgrp")
    rebalances = (
        int(cgrp["rebalance_cnt"]) if isinstance(cgrp, dict) and "rebalance_cnt" in cgrp else None
    )
    return client, ClientSnapshot(float(doc.get("time", 0)), lag, brokers, rebalances)


def _items(obj: object) -> Iterable[tuple[str, dict]]:
    if not isinstance(obj, dict):
        return ()
    return ((str(k), v) for k, v in obj.items() if isinstance(v, dict))


@dataclass(frozen=True)
class _Families:
    lag: GaugeMetricFamily
    up: GaugeMetricFamily
    connects: CounterMetricFamily
    disconnects: CounterMetricFamily
    rebalances: CounterMetricFamily
    time: GaugeMetricFamily

    def all(self) -> list[Metric]:
        return [self.lag, self.up, self.connects, self.disconnects, self.rebalances, self.time]


class KafkaStatsCollector(Collector):
    """Exports the latest statistics of each client type as metric families."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._clients: dict[str, ClientSnapshot] = {}
        self._warned = False

    def update(self, stats_json: str | bytes) -> bool:
        """Replace the snapshot of the emitting client; False (and a log line) if unusable."""
        try:
            client, snapshot = parse_stats(stats_json)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Logged once at warning, afterwards at debug: stats arrive every few seconds.
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "ignoring unusable librdkafka statistics: %s", exc)
            self._warned = True
            return False
        with self._lock:
            self._clients[client] = snapshot
        return True

    def _families(self) -> _Families:
        p = self.prefix
        return _Families(
            lag=GaugeMetricFamily(
                f"{p}consumer_lag",
                "Records between the consumer's committed offset and the partition's end "
                "(librdkafka consumer_lag), per assigned partition.",
                labels=["topic", "partition"],
            ),
            up=GaugeMetricFamily(
                f"{p}broker_up",
                "1 while librdkafka's connection to the broker is in state UP, else 0.",
                labels=["client", "broker"],
            ),
            connects=CounterMetricFamily(
                f"{p}broker_connects",
                "Connection attempts to the broker by this client (librdkafka connects).",
                labels=["client", "broker"],
            ),
            disconnects=CounterMetricFamily(
                f"{p}broker_disconnects",
                "Connections to the broker that were lost, e.g. by a broker restart "
                "(librdkafka disconnects).",
                labels=["client", "broker"],
            ),
            rebalances=CounterMetricFamily(
                f"{p}consumer_rebalances",
                "Consumer group rebalances seen by the consumer (librdkafka rebalance_cnt).",
                labels=[],
            ),
            time=GaugeMetricFamily(
                f"{p}kafka_statistics_timestamp_seconds",
                "Wall-clock time of the latest librdkafka statistics, per client; old values "
                "mean the lag and broker metrics are stale.",
                labels=["client"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families().all()

    def lag(self) -> dict[tuple[str, str], int]:
        """Consumer lag per (topic, partition), the largest any client reports."""
        with self._lock:
            clients = list(self._clients.values())
        lag: dict[tuple[str, str], int] = {}
        for snap in clients:
            for key, value in snap.lag.items():
                lag[key] = max(value, lag.get(key, 0))
        return lag

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        with self._lock:
            clients = dict(self._clients)
        rebalances = 0
        for client, snap in sorted(clients.items()):
            fam.time.add_metric([client], snap.time)
            for broker, state in sorted(snap.brokers.items()):
                fam.up.add_metric([client, broker], 1.0 if state.up else 0.0)
                fam.connects.add_metric([client, broker], state.connects)
                fam.disconnects.add_metric([client, broker], state.disconnects)
            rebalances += snap.rebalances or 0
        for (topic, partition), value in sorted(self.lag().items()):
            fam.lag.add_metric([topic, partition], value)
        if any(s.rebalances is not None for s in clients.values()):
            fam.rebalances.add_metric([], rebalances)
        # Families without samples (no stats yet, or a producer-only process) are left out.
        yield from (f for f in fam.all() if f.samples)
