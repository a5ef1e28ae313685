"""``distillation-monitor alerts``: read the alert topic as a subscriber should."""

from __future__ import annotations

import argparse

from monitor.config import add_arguments

ORDER = 12
#: The worker options that say where the alerts are; the rest do not apply here.
READER_OPTIONS = ("bootstrap_servers", "alert_topic", "drift_topic", "log_format")

DESCRIPTION = """\
Print the alerts on the alert topic, one line each (or one JSON object per line with
--json: CloudEvents in structured mode, the alert under "data"), the way a service
that acts on them should read them: only committed messages (read_committed), each
checked against the published contract (CloudEvents headers, payload valid against its
JSON Schema; a message that breaks it is reported on stderr, not printed), and each
event once (a worker that restarts re-sends some alerts with the same ce_id; they are
dropped). Reads from the start of the topic up to its end and exits, or with --follow
keeps printing new alerts until interrupted. --drift reads the drift topic too.

It reads the same --config file and DMON_* variables as `run`. No consumer group is
joined and nothing is committed, so it never disturbs the workers. Exit code 1 if a
message broke the contract.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts",
        help="print the alerts (and drift events) on their topics, checked, each once",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, only=READER_OPTIONS)
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new alerts until interrupted"
    )
    p.add_argument("--drift", action="store_true", help="also read the drift topic (--drift-topic)")
    p.add_argument("--json", action="store_true", help="one CloudEvents JSON object per line")
    p.add_argument(
        "--from-end",
        action="store_true",
        help="start at the end of the topics: only alerts published from now on",
    )
    p.add_argument(
        "--max", type=int, default=None, metavar="N", help="stop after printing N events"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the cluster at start (default 30)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import sys
    import threading

    from monitor.config import load_config
    from monitor.errors import ConfigError
    from monitor.logs import setup_logging
    from monitor.subscriber import Reading, tail

    if args.max is not None and args.max < 1:
        raise ConfigError("--max must be at least 1")
    config = load_config(args, need_detector=False)
    setup_logging(config.log_level, config.log_format)
    topics = [config.alert_topic]
    if args.drift and config.drift_topic not in topics:
        topics.append(config.drift_topic)
    reading = Reading(topics, args.follow, args.from_end, args.json, args.max)

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def write(line: str) -> None:
        print(line, flush=True)

    try:
        counts = tail(config.reader_conf(), reading, write, stop, timeout=args.timeout)
    except BrokenPipeError:  # the reader of our output went away (| head): done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logging.getLogger("monitor.subscriber").info(
        "read %d messages from %s: printed %d, dropped %d duplicates, %d broke the contract",
        counts.read,
        ", ".join(topics),
        counts.printed,
        counts.duplicates,
        counts.invalid,
        extra={"event": "finished", "topics": topics, **vars(counts)},
    )
    return 1 if counts.invalid else 0
