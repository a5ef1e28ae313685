"""Command-line entry point: ``distillation-monitor`` and ``python -m monitor``."""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal (what is written
    before this level applies is caught by ``tf_runtime.start_tensorflow``).

    oneDNN stays as TensorFlow has it (on): turning it off only hid one start-up line,
    and cost a convolutional detector more than half its scoring speed.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


LOG_LEVEL_HELP = "DEBUG, INFO, WARNING or ERROR, any case (env DMON_LOG_LEVEL; default INFO)"


def _add_log_level(parser: argparse.ArgumentParser, default: object) -> None:
    from monitor.config import LOG_LEVELS

    parser.add_argument(
        "--log-level",
        dest="log_level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        default=default,
        help=LOG_LEVEL_HELP,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillation-monitor",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_log_level(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    for command in sub.choices.values():
        # after the command too; unset there, so it keeps a value given before it
        if not any("--log-level" in action.option_strings for action in command._actions):
            _add_log_level(command, argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.started = started  # for the worker's time-to-ready line
    try:
        from monitor.config import early_log_level
        from monitor.logs import setup_logging

        setup_logging(early_log_level(args.log_level), replace=False)
        return int(args.func(args) or 0)
    except MonitorError as exc:
        print(f"distillation-monitor: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("distillation-monitor: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback at DEBUG
        import logging

        logging.getLogger("monitor.cli").debug("unexpected error", exc_info=True)
        print(
            f"distillation-monitor: unexpected error: {type(exc).__name__}: {exc} "
            "(a bug; --log-level DEBUG shows where)",
            file=sys.stderr,
        )
        return 70
