"""``distillation-monitor topics``: create and describe the worker's topics."""

from __future__ import annotations

import argparse

from monitor.config import add_arguments

ORDER = 15
#: The worker options that name the cluster and the topics; the rest do not apply here.
TOPIC_OPTIONS = (
    "bootstrap_servers",
    "input_topic",
    "alert_topic",
    "dead_letter_topic",
    "drift_topic",
)
DEFAULT_PARTITIONS = 1

DESCRIPTION = """\
Create the topics the worker reads and writes (input, alerts, dead letters and drift
events) and print what the cluster has: partitions, replicas, retention, largest
message. Topics that exist are left as they are.

It reads the same --config file and DMON_* variables as `run`, so the topics it creates
are the ones the worker will use. The worker can split an input topic's partitions
between at most that many workers of one group; the output topics get the same count.
With --describe nothing is created, and the exit code is 1 if a topic is missing.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "topics",
        help="create and describe the input, alert, dead-letter and drift topics",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, only=TOPIC_OPTIONS)
    p.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions of each topic created (default {DEFAULT_PARTITIONS}): the most "
        "workers one group can spread over",
    )
    p.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        metavar="N",
        help="copies of each partition (default: 3, or fewer when the cluster has fewer brokers)",
    )
    p.add_argument(
        "--topic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic setting for the topics created, repeatable (e.g. retention.ms=604800000)",
    )
    p.add_argument(
        "--describe", action="store_true", help="only describe; exit 1 if a topic is missing"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait on the cluster (default 30)"
    )
    p.set_defaults(func=run)


def _pairs(pairs: list[str]) -> dict[str, str]:
    from monitor.errors import ConfigError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --topic-config {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.errors import ConfigError

    if args.partitions < 1:
        raise ConfigError("--partitions must be at least 1")
    if args.replication_factor is not None and args.replication_factor < 1:
        raise ConfigError("--replication-factor must be at least 1")
    if args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    topic_config = _pairs(args.topic_config)
    config = load_config(args, need_detector=False)

    from monitor.topic_setup import create_topics, describe_topics, table, worker_topics

    topics = worker_topics(config)
    conf = config.admin_conf()
    created: list[str] = []
    if not args.describe:
        created = create_topics(
            conf,
            [name for _, name in topics],
            partitions=args.partitions,
            replication=args.replication_factor,
            topic_config=topic_config,
            timeout=args.timeout,
        )
    states = describe_topics(conf, topics, created=created, timeout=args.timeout)
    print(f"Kafka at {config.bootstrap_servers}")
    print(table(states))
    return 0 if all(s.exists for s in states) else 1
