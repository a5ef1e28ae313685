"""``distillation-monitor produce-demo``: labelled demo traffic for any Kafka cluster."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import threading
from collections.abc import Iterator

from monitor.demo.options import DEFAULT_DURATION, add_traffic_arguments, traffic_spec_kwargs

ORDER = 81

DESCRIPTION = """\
Stream the digits demo's test images to a Kafka topic at a steady rate, a share of them
corrupted (natural corruptions at severities 3-5, FGSM and PGD attacks against the demo
classifier), in the worker's json record format. Each record carries its truth as
context fields, copied into any alert the worker raises: "label" (true class),
"corruption" ("clean" or its name), "severity" or "epsilon", and "harmful" (true: the
corruption flipped the classifier's correct prediction; false: still right; null: clean,
or a digit the classifier gets wrong anyway).

Point it at any cluster with --bootstrap-servers and --kafka-option (the same
pass-through as `run`, also from DMON_KAFKA_* variables).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "produce-demo",
        help="stream clean and corrupted demo records to a topic (a traffic generator)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap servers (default: env DMON_BOOTSTRAP_SERVERS or 127.0.0.1:19092)",
    )
    p.add_argument(
        "--topic", default="inference-records", help="topic to write (default inference-records)"
    )
    p.add_argument(
        "--create-topic",
        action="store_true",
        help="create the topic (one partition) if it does not exist",
    )
    p.add_argument(
        "--detector",
        required=True,
        metavar="DIR",
        help="demo detector directory (demo-detector's output: its classifier is attacked "
        "and judges what is harmful)",
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds to stream (default {DEFAULT_DURATION:g}); the total is rate x duration",
    )
    amount.add_argument("--count", type=int, default=None, help="records to send in all")
    add_traffic_arguments(p)
    p.add_argument(
        "--run-id", default=None, help="prefix of the record ids (default: time and a random tag)"
    )
    p.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any librdkafka producer setting, repeatable (e.g. security.protocol=SASL_SSL)",
    )
    p.set_defaults(func=run)


def total_records(args: argparse.Namespace) -> int:
    from monitor.errors import DemoError

    if args.count is not None:
        if args.count < 1:
            raise DemoError(f"--count must be at least 1, got {args.count}")
        return int(args.count)
    duration = DEFAULT_DURATION if args.duration is None else args.duration
    if duration <= 0:
        raise DemoError(f"--duration must be positive, got {duration:g}")
    return max(1, round(args.rate * duration))


def run(args: argparse.Namespace) -> int:
    import os

    from monitor.config import _kafka_from_env, _parse_kafka_pairs
    from monitor.demo import topics
    from monitor.demo.broker import LOCAL_BOOTSTRAP
    from monitor.demo.traffic import TrafficSpec, new_run_id
    from monitor.errors import DemoError

    spec = TrafficSpec(**traffic_spec_kwargs(args))
    total = total_records(args)
    bootstrap = args.bootstrap_servers or os.environ.get("DMON_BOOTSTRAP_SERVERS", LOCAL_BOOTSTRAP)
    conf = {"bootstrap.servers": bootstrap, **_kafka_from_env(os.environ)}
    conf.update(_parse_kafka_pairs(args.kafka_option))
    if args.create_topic:
        topics.create_topics(conf, [args.topic])
    elif args.topic not in topics.topic_names(conf):
        raise DemoError(
            f"topic {args.topic} does not exist on {bootstrap} (--create-topic makes it)"
        )

    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    from confluent_kafka import Producer

    from monitor.demo.pacing import SentLog, send_steadily
    from monitor.demo.status import LiveLine
    from monitor.demo.traffic import DemoTraffic

    run_id = args.run_id or new_run_id()
    traffic = DemoTraffic(args.detector, spec, run_id)
    from monitor.kafka_properties import for_client
    from monitor.logs import kafka_logger

    producer = Producer(
        {
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
            **for_client("producer", conf),
            "logger": kafka_logger("producer"),
        }
    )
    malformed = args.malformed or 0
    print(
        f"producing {total} records to {args.topic} on {bootstrap} at {args.rate:g}/s "
        f"({spec.corrupt_fraction:.0%} corrupted, {malformed} malformed), ids {run_id}-*",
        flush=True,
    )
    line = LiveLine()

    def progress(sent: SentLog, elapsed: float) -> None:
        line.show(sent.progress(elapsed, total), elapsed)

    records = traffic.records(total, malformed)
    with _stop_on_signals() as stop:
        wanted = itertools.takewhile(lambda _record: not stop.is_set(), records)
        sent = send_steadily(producer, args.topic, wanted, args.rate, progress)
    line.show(sent.progress(sent.seconds, total), sent.seconds)
    line.finish()
    how = "stopped" if stop.is_set() else "done"
    print(f"{how}: {sent.total} records in {sent.seconds:.1f}s ({sent.rate:.0f}/s)")
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM ends the traffic after the record in hand, and what was sent is
    still flushed: an interrupt raised inside the client's callbacks (its log lines run
    Python code within ``poll``) would leave it in an undefined state."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, lambda _n, _f: stop.set()) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
