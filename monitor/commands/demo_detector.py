"""``distillation-monitor demo-detector``: the digits classifier and its detector, offline."""

from __future__ import annotations

import argparse

ORDER = 50

DESCRIPTION = """\
Train a small classifier (Flatten -> Dense(64) -> Dense(10)) on scikit-learn's bundled
8x8 digits (no download) and its detector with `fit`'s defaults; save the detector
directory (with classifier.keras and demo.json inside). Seeded and reproducible; well
under a minute on two cores. Used by `make demo`, `evaluate` and the tests.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo-detector",
        help="build the digits demo classifier and detector",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="detector directory to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    import json

    from monitor.detector.demo import DEMO_INFO_FILE, build_demo_detector
    from monitor.detector.manifest import read_manifest
    from monitor.errors import DetectorError

    print(f"training the digits classifier and its detector (seed {args.seed}) ...")
    try:
        out = build_demo_detector(args.out, seed=args.seed)
    except OSError as exc:  # --out under a file, or not writable
        raise DetectorError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    manifest = read_manifest(out)
    info = json.loads((out / DEMO_INFO_FILE).read_text())
    epochs = info.get("member_epochs") or [0]
    print(f"detector saved to {out}")
    print(f"  classifier test accuracy {info['classifier_test_accuracy']:.3f}")
    print(
        f"  agreement {info.get('agreement', float('nan')):.3f} "
        f"({len(epochs)} distilled models averaged, {min(epochs)}-{max(epochs)} epochs each)"
    )
    print(
        f"  threshold {manifest.threshold:.6g}, loss {manifest.loss_type}, "
        f"temperature {manifest.temperature:g}"
    )
    return 0
