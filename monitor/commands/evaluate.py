"""``distillation-monitor evaluate``: does the detector separate harmful from harmless inputs?"""

from __future__ import annotations

import argparse

from monitor.evaluation.defaults import (
    CASES,
    DEFAULT_CASE,
    DEFAULT_EPSILONS,
    DEFAULT_SEEDS,
    DEFAULT_SEVERITIES,
    DEFAULT_TABULAR_EPSILONS,
    DEFAULT_TRIALS,
)

ORDER = 40

_CASE_LINES = "\n".join(f"  {name:<14} {text}" for name, text in CASES.items())

DESCRIPTION = f"""\
Measure how well a detector separates harmful inputs (the classifier is right on the
clean input, wrong on the corrupted one) from harmless ones (right on both), per
corruption and strength: natural corruptions at severities 1-5, FGSM and PGD attacks
at several epsilons, or your own corrupted set. Also runs the window drift test (KS
against clean reference scores) on windows contaminated with 0-100% harmful or harmless
inputs. The classifier's own predictive entropy is reported as the trivial baseline.

Benchmark cases (--case, default {DEFAULT_CASE}), bundled with scikit-learn, no download:
{_CASE_LINES}
Each seed has its own train/test split, classifier and detector (built with `fit`'s
defaults into --cache on first use and reused), evaluated on that seed's test split.
With --detector and --data, the seeds vary only the corruptions and window draws.

Images in [0, 1] get image corruptions (noise, blur, occlusion, brightness/contrast,
salt-and-pepper) and attacks with epsilons in pixel units. Anything else is tabular:
corruptions in each feature's own scale (noise in feature standard deviations, feature
dropout to the mean, swapped and shuffled features, out-of-range values) and attacks
whose epsilon is in feature standard deviations, all scaled by clean training data
(a case's training split, or --train-data). Prints tables, writes report.json and PNG
plots into --out.
"""

DEFAULT_OUT = ".local/evaluation"
DEFAULT_CACHE = ".local/eval-detector"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure harmful-vs-harmless separation and the window drift test",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--case",
        metavar="NAME",
        default=None,
        help=f"benchmark case: {', '.join(CASES)} (default {DEFAULT_CASE}, without --detector)",
    )
    p.add_argument("--detector", metavar="DIR", help="detector directory (default: the case's)")
    p.add_argument("--data", metavar="NPZ", help="clean data: .npz with X and integer labels y")
    p.add_argument(
        "--train-data",
        metavar="FILE",
        help="clean training inputs (.npz with X, .npy or .csv) that scale the tabular "
        "corruptions and attacks (default: --data)",
    )
    p.add_argument(
        "--corrupted",
        metavar="NPZ",
        help="your own corrupted set: .npz with X row-aligned with --data (and optionally y)",
    )
    p.add_argument(
        "--corruptions",
        default="auto",
        help="natural corruptions: comma list, 'all' or 'none' (default auto: all of the "
        "data's kind, image or tabular)",
    )
    p.add_argument(
        "--severities",
        default=DEFAULT_SEVERITIES,
        help=f"severities, e.g. 1-5 or 3,5 (default {DEFAULT_SEVERITIES})",
    )
    p.add_argument(
        "--attacks",
        default="auto",
        help="fgsm,pgd, 'none' or auto (default auto: both)",
    )
    p.add_argument(
        "--epsilons",
        default=None,
        help=f"attack epsilons (default {DEFAULT_EPSILONS} for images, {DEFAULT_TABULAR_EPSILONS}"
        " feature standard deviations for tabular data)",
    )
    p.add_argument("--seeds", default=None, help=f"seeds, e.g. 0,1,2 (default {DEFAULT_SEEDS})")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="records per drift window (default 200, smaller when the clean data leave too "
        "few rows for the reference; the test is skipped below 60 clean rows)",
    )
    p.add_argument(
        "--trials", type=int, default=None, help=f"windows per fraction (default {DEFAULT_TRIALS})"
    )
    p.add_argument(
        "--p-value",
        type=float,
        default=None,
        help="drift test significance (default: the worker's --drift-p-value default)",
    )
    p.add_argument("--max-rows", type=int, default=None, help="use at most this many clean rows")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report directory (default {DEFAULT_OUT})")
    p.add_argument(
        "--cache", default=DEFAULT_CACHE, help=f"case detectors (default {DEFAULT_CACHE})"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached case detectors")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: one seed, severities 3 and 5, one epsilon, 50 windows per fraction",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.evaluation.runner import evaluate

    return evaluate(args)
