"""Command-line options shared by ``demo`` and ``produce-demo`` (standard library only,
so that ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_RATE = 200.0
DEFAULT_DURATION = 60.0
DEFAULT_CORRUPT_FRACTION = 0.3


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def add_traffic_arguments(p: argparse.ArgumentParser) -> None:
    """What the generated traffic looks like and how fast it flows."""
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=DEFAULT_RATE,
        help=f"records per second, held steady (default {DEFAULT_RATE:g})",
    )
    p.add_argument(
        "--corrupt-fraction",
        type=float,
        default=DEFAULT_CORRUPT_FRACTION,
        help=f"share of records that are corrupted (default {DEFAULT_CORRUPT_FRACTION:g})",
    )
    p.add_argument(
        "--corruptions",
        default="all",
        help="comma-separated corruptions to draw from: gaussian_noise, blur, occlusion, "
        "brightness_contrast, salt_and_pepper, fgsm, pgd (default all)",
    )
    p.add_argument(
        "--severities",
        default="3,4,5",
        help="severities (1-5) for the natural corruptions, drawn uniformly (default 3,4,5)",
    )
    p.add_argument(
        "--epsilons",
        default="0.05,0.1",
        help="L-infinity budgets for the fgsm and pgd attacks (default 0.05,0.1)",
    )
    p.add_argument(
        "--malformed",
        type=_not_negative,
        default=None,
        help="records sent deliberately broken (spread evenly), to show dead letters",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the traffic (default 0)")


def traffic_spec_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``TrafficSpec`` keyword arguments from the parsed options."""
    from monitor.demo.traffic import parse_corruptions
    from monitor.errors import DemoError

    try:
        severities = tuple(int(s) for s in args.severities.split(",") if s.strip())
        epsilons = tuple(float(e) for e in args.epsilons.split(",") if e.strip())
    except ValueError as exc:
        raise DemoError(f"--severities/--epsilons: {exc}") from None
    return {
        "corrupt_fraction": args.corrupt_fraction,
        "corruptions": parse_corruptions(args.corruptions),
        "severities": severities,
        "epsilons": epsilons,
        "seed": args.seed,
    }
