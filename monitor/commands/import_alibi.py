"""``distillation-monitor import-alibi``: convert an alibi-detect ModelDistillation detector."""

from __future__ import annotations

import argparse

ORDER = 70

DESCRIPTION = """\
Convert a ModelDistillation detector saved by alibi-detect's legacy save_detector
(meta.dill, ModelDistillation.dill, model/model.h5, model/distilled_model.h5) into this
project's format (manifest.json + .keras models), WITHOUT executing pickled code: the
.dill files are read by a restricted reader that accepts only plain containers,
numbers, strings and numpy scalars, and refuses anything else. The models load in
Keras' safe mode. Threshold, temperature and loss type are kept.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-alibi",
        help="convert an alibi-detect ModelDistillation detector (no pickled code runs)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="alibi-detect detector directory")
    p.add_argument("dst", metavar="DST", help="detector directory to write")
    p.add_argument(
        "--reference-data",
        metavar="X.npy",
        help="clean inputs whose scores become the manifest's reference for drift tests",
    )
    p.add_argument("--name", default="ModelDistillation", help="detector name in the manifest")
    p.add_argument("--version", default="1", help="detector version in the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.detector.alibi_import import read_alibi_state

    read_alibi_state(args.src)  # refuses unsafe pickles before TensorFlow starts
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    from monitor.detector.alibi_import import import_alibi_detector

    reference = None
    if args.reference_data:
        from monitor.datafiles import load_array

        reference = load_array(args.reference_data)
    manifest = import_alibi_detector(
        args.src, args.dst, name=args.name, version=args.version, reference_data=reference
    )
    print(f"converted {args.src} -> {args.dst}")
    print(
        f"  threshold {manifest.threshold}, loss {manifest.loss_type}, temperature "
        f"{manifest.temperature:g}, input {manifest.input_shape}, {manifest.n_classes} classes"
    )
    if not manifest.reference_scores:
        print("  no reference scores (pass --reference-data for drift tests)")
    return 0
