"""``distillation-monitor demo``: the whole product on one laptop, in one command."""

from __future__ import annotations

import argparse

from monitor.demo.options import DEFAULT_DURATION, add_traffic_arguments, traffic_spec_kwargs

ORDER = 80
DEFAULT_DETECTOR = ".local/demo-detector"
DEFAULT_MALFORMED = 5

DESCRIPTION = """\
Start the local Kafka broker (unless it runs), build the digits demo detector (unless it
exists), create fresh topics, start the streaming worker (metrics on --metrics-port, or a
free port if that one is taken), and stream clean test digits mixed with corrupted ones
(noise, blur, occlusion, contrast, salt-and-pepper, FGSM and PGD attacks) plus a few
malformed records. A live line shows records/s, flagged records, the adversarial rate and
dead letters from the worker's /metrics. At the end, the alert topic is read back and held
against the truth: how many harmful corrupted records (the corruption flipped a correct
prediction) were flagged, how many harmless ones and clean ones (false positives), and the
dead letters. Exits non-zero if the worker failed or flagged nothing.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: broker, detector, worker, clean and corrupted traffic, verdict",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        metavar="DIR",
        help=f"demo detector directory, built there if missing (default {DEFAULT_DETECTOR})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help=f"seconds of traffic (default {DEFAULT_DURATION:g})",
    )
    add_traffic_arguments(p)
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        help="use this Kafka cluster instead of starting the local broker (127.0.0.1:19092)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9108,
        help="the worker's /metrics port; a free one is used if it is taken (default 9108)",
    )
    p.add_argument(
        "--topic-prefix",
        default="dmon-demo",
        help="prefix of the run's topics; topics of earlier runs with it are removed "
        "(default dmon-demo)",
    )
    p.add_argument(
        "--worker-log",
        default=".local/demo-worker.log",
        metavar="FILE",
        help="where the worker's log goes (default .local/demo-worker.log)",
    )
    p.add_argument(
        "--summary-json", default=None, metavar="FILE", help="also write the summary as JSON"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from monitor.demo.traffic import TrafficSpec
    from monitor.errors import DemoError

    if args.duration <= 0:
        raise DemoError(f"--duration must be positive, got {args.duration:g}")
    spec = TrafficSpec(**traffic_spec_kwargs(args))

    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    from monitor.demo.broker import LOCAL_BOOTSTRAP
    from monitor.demo.session import DemoOptions, run_demo

    options = DemoOptions(
        detector=Path(args.detector),
        spec=spec,
        bootstrap_servers=args.bootstrap_servers or LOCAL_BOOTSTRAP,
        duration=args.duration,
        rate=args.rate,
        malformed=DEFAULT_MALFORMED if args.malformed is None else args.malformed,
        metrics_port=args.metrics_port,
        topic_prefix=args.topic_prefix,
        worker_log=Path(args.worker_log),
        summary_json=Path(args.summary_json) if args.summary_json else None,
    )
    return run_demo(options, say=lambda line: print(line, flush=True))
