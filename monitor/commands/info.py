"""``distillation-monitor info DIR``: what a saved detector's manifest says."""

from __future__ import annotations

import argparse
import json

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show what a saved detector's manifest says",
        description="Print a saved detector's manifest (threshold, loss, temperature, shapes, versions).",
    )
    p.add_argument(
        "detector", metavar="DIR", help="detector directory written by fit/save_detector"
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.detector.manifest import read_manifest

    manifest = read_manifest(args.detector)
    data = manifest.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    for key in sorted(data):
        value = data[key]
        if key == "reference_scores":
            value = f"{len(value)} values"
        print(f"{key:>22}: {value}")
    return 0
