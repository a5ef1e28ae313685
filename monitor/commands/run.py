"""``distillation-monitor run``: the long-running streaming worker."""

from __future__ import annotations

import argparse

from monitor.config import add_arguments

ORDER = 10

DESCRIPTION = """\
Consume inference records from a Kafka topic in a consumer group, score them in
micro-batches with a saved detector, publish flagged instances to the alert topic and
undecodable records to the dead-letter topic, and commit offsets only when everything
a batch produced is acknowledged. Start more workers with the same --group-id to split
the partitions. SIGTERM/SIGINT stop cleanly; SIGHUP reloads the detector.

Every option can also come from a DMON_* environment variable or a TOML file
(--config); flags win over the environment, which wins over the file.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the streaming worker (Kafka in, alerts out, metrics on /metrics)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.add_argument(
        "--max-records",
        type=int,
        default=None,
        help="stop after this many records (for tests and one-off backfills); default: run forever",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from monitor.config import load_config
    from monitor.logs import setup_logging

    config = load_config(args)
    setup_logging(config.log_level, config.log_format)
    logging.getLogger("monitor.worker").info(
        "configuration: %s", config.redacted(), extra={"event": "configuration"}
    )

    from monitor.stream.worker import Worker

    Worker(config, started=getattr(args, "started", None)).run(max_records=args.max_records)
    return 0
