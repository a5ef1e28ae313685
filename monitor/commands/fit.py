"""``distillation-monitor fit``: train a detector for a saved classifier and save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

ORDER = 20

# Mirrors monitor.detector.architectures (kept literal so --help needs no TensorFlow).
DEFAULT_LOSS_TYPE = "xent"
DEFAULT_TEMPERATURE = 0.5
DEFAULT_AGREEMENT = 0.95
DEFAULT_MAX_EPOCHS = 200
DEFAULT_MEMBERS = 5  # monitor.detector.ensemble.DEFAULT_MEMBERS
DEFAULT_HIDDEN_LAYERS = 3  # monitor.detector.architectures.DEFAULT_DEPTH

DESCRIPTION = """\
Train the distilled model of a saved Keras classifier on clean data, infer the threshold
and save the detector directory (manifest.json + the two models in .keras format).

By default a small distilled architecture is derived from the classifier's input and
output shapes (--hidden-layers dense layers for flat/small inputs, a tiny conv stack for
images), --members such models are trained from different initialisations, each until
its top class agrees with the classifier's on --agreement of a held-out part of --data (at
most --epochs epochs), and their probabilities are averaged into one distilled model. The
disagreement that remains is what makes harmful inputs stand out; a near-perfect copy
detects less, and the average makes the score depend less on one model's random start.
Five three-layer members separated harmful from harmless inputs best on the benchmark
cases (docs/detector-selection.md); --members 1 --hidden-layers 1 scores about 4x faster
and detects less. With --distilled, that model is trained alone unless --members says
otherwise. The threshold is the --threshold-perc percentile of the scores on
--threshold-data, or on the held-out part.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="train and save a detector for a Keras classifier",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="CLASSIFIER.keras", help="trained classifier")
    p.add_argument(
        "--data", required=True, metavar="X.npy", help="clean training inputs (.npy, .npz, .csv)"
    )
    p.add_argument(
        "--data-key", help="array name inside a .npz --data (default: the only one, or X)"
    )
    p.add_argument(
        "--distilled", metavar="ARCH.keras", help="distilled model to train instead of the default"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="detector directory to write")
    p.add_argument(
        "--loss-type",
        choices=("kld", "xent"),
        default=DEFAULT_LOSS_TYPE,
        help=f"distillation loss and score (default {DEFAULT_LOSS_TYPE})",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"classifier output temperature; <1 sharpens (default {DEFAULT_TEMPERATURE})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_MAX_EPOCHS,
        help=f"maximum epochs (exactly this many with --agreement 0; default {DEFAULT_MAX_EPOCHS})",
    )
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument(
        "--agreement",
        type=float,
        default=DEFAULT_AGREEMENT,
        help=f"stop when the top classes agree on this fraction of held-out data; 0 disables (default {DEFAULT_AGREEMENT})",
    )
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="distilled models trained and averaged into the detector's distilled model "
        f"(default {DEFAULT_MEMBERS}; 1 with --distilled)",
    )
    p.add_argument(
        "--hidden-layers",
        type=int,
        default=DEFAULT_HIDDEN_LAYERS,
        help="dense hidden layers of the default distilled model for flat or small inputs "
        f"(default {DEFAULT_HIDDEN_LAYERS}; not with --distilled)",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.2,
        help="share of --data held out for the agreement check and the threshold (default 0.2)",
    )
    p.add_argument(
        "--threshold-perc",
        type=float,
        default=95.0,
        help="threshold percentile of clean scores (default 95)",
    )
    p.add_argument(
        "--threshold-data",
        metavar="X_normal.npy",
        help="clean data for the threshold (default: the held-out part of --data)",
    )
    p.add_argument("--data-type", help="recorded in the manifest, e.g. image or tabular")
    p.add_argument(
        "--name", default="ModelDistillation", help="detector name in the manifest and alerts"
    )
    p.add_argument("--version", default="1", help="detector version in the manifest and alerts")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the detector already in --out (a running worker keeps the old one "
        "until it reloads)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from monitor.errors import ConfigError

    if args.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.members is None:
        args.members = 1 if args.distilled else DEFAULT_MEMBERS
    if args.members < 1:
        raise ConfigError("--members must be at least 1")
    if args.hidden_layers < 1:
        raise ConfigError("--hidden-layers must be at least 1")
    if args.distilled and args.hidden_layers != DEFAULT_HIDDEN_LAYERS:
        raise ConfigError(
            "--hidden-layers shapes the default distilled model; not with --distilled"
        )
    if not 0.0 <= args.agreement <= 1.0:
        raise ConfigError("--agreement must be between 0 and 1")
    if not 0.0 < args.holdout_fraction < 1.0:
        raise ConfigError("--holdout-fraction must be between 0 and 1 (exclusive)")
    if not 0.0 <= args.threshold_perc <= 100.0:
        raise ConfigError("--threshold-perc must be between 0 and 100")
    if not args.temperature > 0:
        raise ConfigError("--temperature must be positive")
    from monitor.detector.fit_checks import check_output_dir

    check_output_dir(args.out, args.force)


def _agreement_line(distilled: Any, target: float) -> str:
    """How far training went: the (averaged) model's agreement and each member's epochs."""
    epochs = distilled.member_epochs
    if not epochs:
        return f"  agreement {distilled.agreement:.3f} (no target)"
    reached = "reached" if distilled.reached else "NOT reached by every member"
    if len(epochs) == 1:
        trained = f"after {epochs[0]} epochs"
    else:
        trained = f"({len(epochs)} models averaged, {min(epochs)}-{max(epochs)} epochs each)"
    return f"  agreement {distilled.agreement:.3f} {trained} (target {target} {reached})"


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    from pathlib import Path

    import keras
    import numpy as np

    from monitor.datafiles import fit_to_shape, load_array
    from monitor.detector.distillation import ModelDistillation
    from monitor.detector.ensemble import distil
    from monitor.detector.fit_checks import check_rows, threshold_warning
    from monitor.detector.persistence import load_keras_model, save_detector
    from monitor.detector.progress import EpochProgress
    from monitor.errors import DetectorError

    keras.utils.set_random_seed(args.seed)
    classifier = load_keras_model(Path(args.model))
    distilled = load_keras_model(Path(args.distilled)) if args.distilled else None
    if not isinstance(classifier, keras.Model) or (
        distilled is not None and not isinstance(distilled, keras.Model)
    ):
        raise DetectorError("--model and --distilled must be Keras models")
    try:
        detector = ModelDistillation(
            threshold=float("inf"),  # replaced by infer_threshold below
            distilled_model=distilled,
            model=classifier,
            loss_type=args.loss_type,
            temperature=args.temperature,
            data_type=args.data_type,
        )
    except (TypeError, ValueError) as exc:
        raise DetectorError(str(exc)) from None
    if distilled is None and args.hidden_layers != DEFAULT_HIDDEN_LAYERS:
        from monitor.detector.architectures import default_distilled_model

        detector.replace_distilled_model(
            default_distilled_model(
                detector.input_shape, detector.n_classes, depth=args.hidden_layers
            )
        )
    x = fit_to_shape(load_array(args.data, args.data_key), detector.input_shape, args.data)
    x = detector.validate(x)
    check_rows(len(x), args.holdout_fraction)

    def progress(member: int) -> list[EpochProgress]:
        label = "distilling" if args.members == 1 else f"distilling {member + 1}/{args.members}"
        return [] if args.quiet else [EpochProgress(args.epochs, label)]

    distilled = distil(
        detector,
        x,
        members=args.members,
        target=args.agreement,
        holdout_fraction=args.holdout_fraction,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        member_callbacks=progress,
    )
    x_holdout = distilled.x_holdout
    if args.threshold_data:
        x_threshold = fit_to_shape(
            load_array(args.threshold_data), detector.input_shape, args.threshold_data
        )
    else:
        x_threshold = x_holdout
    threshold = detector.infer_threshold(x_threshold, threshold_perc=args.threshold_perc)
    manifest = save_detector(detector, args.out, name=args.name, version=args.version)
    scores = np.asarray(detector.score(x_holdout))
    print(f"detector saved to {args.out}")
    print(f"  trained on {len(x) - len(x_holdout)} rows, held out {len(x_holdout)}")
    print(_agreement_line(distilled, args.agreement))
    print(
        f"  threshold {threshold:.6g} ({args.threshold_perc:g}th percentile of "
        f"{len(x_threshold)} clean scores); held-out flagged rate "
        f"{float(np.mean(scores > threshold)):.3f}"
    )
    print(
        f"  loss {manifest.loss_type}, temperature {manifest.temperature:g}, manifest hash {manifest.sha256[:16]}"
    )
    warning = threshold_warning(len(x_threshold), args.threshold_perc)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
