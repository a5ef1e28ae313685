"""Command-line entry point: ``distillation-monitor`` and ``python -m monitor``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from monitor._version import __version__
from monitor.commands import command_modules
from monitor.errors import MonitorError

DESCRIPTION = """\
Catch adversarial, corrupted and harmfully drifting inputs to ML classifiers, live on Kafka.

A distilled copy of your classifier is trained to reproduce its output distribution on
clean data; the harmfulness score of an input is the distillation loss between the two
models' outputs. Inputs scoring above the threshold are flagged.
"""


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal.

    oneDNN stays as TensorFlow has it (on): turning it off only hid one start-up line,
    and cost a convolutional detector more than half its scoring speed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillation-monitor",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("DMON_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (env DMON_LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=str(args.log_level).upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        return int(args.func(args) or 0)
    except MonitorError as exc:
        print(f"distillation-monitor: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("distillation-monitor: interrupted", file=sys.stderr)
        return 130
