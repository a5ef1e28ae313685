"""``distillation-monitor score``: offline batch scoring of a data file with a saved detector."""

from __future__ import annotations

import argparse

ORDER = 30

DESCRIPTION = """\
Score every row of a data file (.npy, .npz, .csv) with a saved detector and print a
summary: rows, flagged, flagged rate and score quantiles. With --output, also write one
line per row (index, score, flagged, the classifier's and the distilled model's
predicted classes) as CSV or JSON lines, chosen by the file suffix.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a data file offline with a saved detector",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--detector", required=True, metavar="DIR", help="detector directory")
    p.add_argument("--data", required=True, metavar="X.npy", help="inputs (.npy, .npz, .csv)")
    p.add_argument(
        "--data-key", help="array name inside a .npz --data (default: the only one, or X)"
    )
    p.add_argument("--output", metavar="scores.csv|.jsonl", help="per-row results file")
    p.add_argument(
        "--batch-size", type=int, default=512, help="rows per scoring call (default 512)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _write_rows(path: str, score: object, flagged: object, y: object, y_d: object) -> None:
    import json

    import numpy as np

    from monitor.errors import DataFileError

    s, f = np.asarray(score), np.asarray(flagged)
    cls, cls_d = np.asarray(y).argmax(axis=1), np.asarray(y_d).argmax(axis=1)
    lower = path.lower()
    try:
        with open(path, "w", encoding="utf-8") as fh:
            if lower.endswith(".csv"):
                fh.write("index,score,is_adversarial,predicted_class,distilled_class\n")
                for i in range(len(s)):
                    fh.write(f"{i},{float(s[i])!r},{int(f[i])},{int(cls[i])},{int(cls_d[i])}\n")
            elif lower.endswith((".jsonl", ".ndjson")):
                for i in range(len(s)):
                    row = {
                        "index": i,
                        "score": float(s[i]),
                        "is_adversarial": int(f[i]),
                        "predicted_class": int(cls[i]),
                        "distilled_class": int(cls_d[i]),
                    }
                    fh.write(json.dumps(row) + "\n")
            else:
                raise DataFileError(f"{path}: --output must end in .csv or .jsonl")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot write: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from monitor.errors import ConfigError, DataFileError

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.output and not args.output.lower().endswith((".csv", ".jsonl", ".ndjson")):
        raise DataFileError(f"{args.output}: --output must end in .csv or .jsonl")
    from monitor.detector.manifest import read_manifest

    read_manifest(args.detector)  # fail fast, before TensorFlow starts
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    import numpy as np
    from tqdm import tqdm

    from monitor.datafiles import fit_to_shape, load_array
    from monitor.detector.persistence import load_detector
    from monitor.errors import DetectorError

    detector = load_detector(args.detector)
    if detector.threshold is None:
        raise DetectorError(f"{args.detector}: the detector has no threshold; refit it")
    x = fit_to_shape(load_array(args.data, args.data_key), detector.input_shape, args.data)
    x = detector.validate(x)
    scores, ys, yds = [], [], []
    with tqdm(total=len(x), unit="row", desc="scoring", disable=args.quiet) as bar:
        for start in range(0, len(x), args.batch_size):
            s, y, y_d = detector.score(x[start : start + args.batch_size], return_predictions=True)
            scores.append(s)
            ys.append(y)
            yds.append(y_d)
            bar.update(len(s))
    score = np.concatenate(scores)
    flagged = score > detector.threshold
    if args.output:
        _write_rows(args.output, score, flagged, np.concatenate(ys), np.concatenate(yds))
    q = np.quantile(score.astype(np.float64), [0.0, 0.5, 0.9, 0.99, 1.0])
    print(
        f"rows {len(score)}  flagged {int(flagged.sum())}  rate {float(flagged.mean()):.4f}  "
        f"threshold {detector.threshold:.6g}"
    )
    print(f"score min {q[0]:.4g}  p50 {q[1]:.4g}  p90 {q[2]:.4g}  p99 {q[3]:.4g}  max {q[4]:.4g}")
    if args.output:
        print(f"per-row results written to {args.output}")
    return 0
