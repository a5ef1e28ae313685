"""What ``distillation-monitor evaluate`` does: resolve inputs, run every seed, report.

Kept out of the command module so the CLI starts without numpy, scikit-learn or
TensorFlow; this module imports TensorFlow only when a detector is loaded or built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor._version import __version__
from monitor.config import WorkerConfig
from monitor.errors import EvaluationError
from monitor.evaluation.cases import get_case
from monitor.evaluation.defaults import CASES, DEFAULT_SEEDS, DEFAULT_SEVERITIES, DEFAULT_TRIALS
from monitor.evaluation.harm import (
    ATTACKS,
    FAMILIES,
    FAMILY_EPSILONS,
    IMAGE,
    MIN_GROUP,
    TABULAR_FAMILY,
    CorruptionSpec,
    plan,
)
from monitor.evaluation.plans import (
    SeedPlan,
    case_clean_data,
    case_name,
    case_train_inputs,
    load_for,
    seed_plans,
)
from monitor.evaluation.report import (
    aggregate_rows,
    aggregate_windows,
    bar_lines,
    case_table,
    window_table,
    write_json,
)
from monitor.evaluation.suite import SeedResult, SuiteOptions, planned_steps, run_seed
from monitor.evaluation.summary import BAR_MIN_SEVERITY, across_seeds, quality_bar
from monitor.evaluation.windows import DEFAULT_FRACTIONS, MIN_REFERENCE
from monitor.tabular_corruptions import FeatureStats, feature_stats

DEFAULT_WINDOW = 200
MIN_WINDOW = 10

if TYPE_CHECKING:
    from monitor.detector.distillation import ModelDistillation

QUICK_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
QUICK_TRIALS = 50


# -- option parsing ---------------------------------------------------------------------


def parse_ints(text: str, what: str) -> list[int]:
    """ "1-5", "1..5", "3,5" or a mix, in the order given, without repeats."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            sep = ".." if ".." in part else "-" if "-" in part[1:] else None
            if sep:
                lo, hi = (int(v) for v in part.split(sep, 1))
                out += list(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise EvaluationError(
            f"--{what}: expected integers like 1-5 or 3,5, got {text!r}"
        ) from None
    if not out:
        raise EvaluationError(f"--{what}: no values in {text!r}")
    return list(dict.fromkeys(out))


def parse_floats(text: str, what: str, upper: float = 1.0) -> list[float]:
    """Positive numbers below ``upper``, in the order given, without repeats."""
    try:
        out = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise EvaluationError(f"--{what}: expected numbers like 0.03,0.1, got {text!r}") from None
    if not out or any(not 0 < v < upper for v in out):
        raise EvaluationError(f"--{what}: values must be between 0 and {upper:g}, got {text!r}")
    return list(dict.fromkeys(out))


def parse_names(text: str, choices: tuple[str, ...], what: str) -> list[str] | None:
    """Names from a comma list; 'all' is every choice, 'none' is empty, 'auto' is None."""
    text = text.strip().lower()
    if text == "auto":
        return None
    if text == "all":
        return list(choices)
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise EvaluationError(
            f"--{what}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}, all, none"
        )
    return list(dict.fromkeys(names))


# -- data --------------------------------------------------------------------------------


def load_npz(path: str, need_y: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y) from an .npz file, with a clear error for anything missing or malformed."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise EvaluationError(f"{path}: cannot read an .npz file: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise EvaluationError(
            f"{path}: not an .npz file; save the inputs and labels as one: "
            "numpy.savez(path, X=inputs, y=labels)"
        )
    with loaded as data:
        arrays = {k: data[k] for k in data.files}
    if "X" not in arrays:
        raise EvaluationError(f"{path}: no array named X (found {', '.join(arrays) or 'none'})")
    x = arrays["X"]
    y = arrays.get("y")
    if y is None and need_y:
        raise EvaluationError(f"{path}: no array named y with the labels")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise EvaluationError(f"{path}: y must be 1-D with one label per row of X")
        if y.dtype.kind not in "iu" and not (
            y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
        ):
            raise EvaluationError(f"{path}: y must hold integer class labels")
        y = y.astype(np.int64)
    if x.dtype.kind not in "iuf":
        raise EvaluationError(f"{path}: X must be numeric, got dtype {x.dtype}")
    return x, y


def unit_range(x: np.ndarray) -> bool:
    return bool(x.size) and float(np.min(x)) >= 0.0 and float(np.max(x)) <= 1.0


# -- detectors ---------------------------------------------------------------------------


def detector_info(detector: ModelDistillation, plan_: SeedPlan) -> dict[str, Any]:
    manifest = detector.manifest
    return {
        "path": str(plan_.detector_dir),
        "built_now": plan_.build,
        "name": manifest.name if manifest else None,
        "version": manifest.version if manifest else None,
        "threshold": detector.threshold,
        "loss_type": detector.loss_type,
        "temperature": detector.temperature,
        "distilled_parameters": int(detector.distilled_model.count_params()),
        "reference_scores": len(detector.reference_scores),
    }


# -- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    options: SuiteOptions
    seeds: list[int]
    plans: list[SeedPlan]
    data: tuple[np.ndarray, np.ndarray] | None
    user_sets: list[tuple[CorruptionSpec, np.ndarray]]
    notes: list[str]
    data_description: str
    case: str | None = None  # the benchmark case, None for the user's own data
    kind: str = IMAGE  # which corruption family: "image" or "tabular"
    train_stats: FeatureStats | None = None  # tabular scale from the user's training data


def _seeds(args: argparse.Namespace, quick: bool) -> list[int]:
    seeds = parse_ints(args.seeds or DEFAULT_SEEDS, "seeds")
    return seeds[:1] if quick and args.seeds is None else seeds


def _severities(args: argparse.Namespace, quick: bool) -> list[int]:
    severities = parse_ints(args.severities, "severities")
    if quick and args.severities == DEFAULT_SEVERITIES:
        severities = [3, 5]
    if any(s not in (1, 2, 3, 4, 5) for s in severities):
        raise EvaluationError("--severities must be between 1 and 5")
    return severities


def _epsilons(args: argparse.Namespace, quick: bool, kind: str) -> list[float]:
    """``--quick`` without ``--epsilons`` keeps only the middle default, a typical strength.
    Image epsilons are in [0, 1] pixel units; tabular ones in feature standard deviations."""
    upper = 1.0 if kind == IMAGE else 10.0
    epsilons = parse_floats(args.epsilons or FAMILY_EPSILONS[kind], "epsilons", upper)
    if quick and args.epsilons is None:
        middle = len(epsilons) // 2
        epsilons = epsilons[middle : middle + 1]
    return epsilons


def _window(
    args: argparse.Namespace, n_clean: int | None, notes: list[str], source: str = "--data"
) -> int | None:
    """The drift window: ``--window``, or the default shrunk to what the clean data allow
    (each trial needs the window and a reference of ``MIN_REFERENCE`` other clean rows);
    None skips the window test. ``n_clean`` None: an image case, large enough."""
    if args.window is not None and args.window < MIN_WINDOW:
        raise EvaluationError(f"--window must be at least {MIN_WINDOW} records")
    if n_clean is None or n_clean - (args.window or DEFAULT_WINDOW) >= MIN_REFERENCE:
        return int(args.window or DEFAULT_WINDOW)
    room = n_clean - MIN_REFERENCE
    need = f"a window and a reference of at least {MIN_REFERENCE} other clean rows"
    if args.window is not None:
        fix = f"use --window {room} or less" if room >= MIN_WINDOW else "leave --window out"
        raise EvaluationError(
            f"--window {args.window} needs {args.window + MIN_REFERENCE} clean rows ({need}); "
            f"{source} has {n_clean}: {fix}, or give more clean rows"
        )
    if room < MIN_WINDOW:
        notes.append(
            f"window drift test skipped: it needs at least {MIN_WINDOW + MIN_REFERENCE} clean "
            f"rows ({need}), {source} has {n_clean}"
        )
        return None
    notes.append(
        f"windows of {room} records instead of {DEFAULT_WINDOW}: {n_clean} clean rows leave "
        f"{MIN_REFERENCE} for the reference; more clean rows allow larger windows"
    )
    return room


def _trials(args: argparse.Namespace, quick: bool) -> int:
    if args.trials is not None:
        trials = int(args.trials)
    else:
        trials = QUICK_TRIALS if quick else DEFAULT_TRIALS
    if trials < 1:
        raise EvaluationError("--trials must be positive")
    return trials


def _p_value(args: argparse.Namespace) -> float:
    """The worker's own default, so the evaluation measures the test the worker runs."""
    p_value = args.p_value if args.p_value is not None else WorkerConfig.drift_p_value
    if not 0 < p_value < 1:
        raise EvaluationError("--p-value must be between 0 and 1")
    return float(p_value)


@dataclass(frozen=True)
class CleanInput:
    """The clean data (None: the case's test split of each seed) and what it allows."""

    data: tuple[np.ndarray, np.ndarray] | None
    description: str
    kind: str  # "image": (n, H, W[, C]) in [0, 1]; "tabular": anything else


def _clean_input(args: argparse.Namespace, case: str | None, notes: list[str]) -> CleanInput:
    if args.max_rows is not None and args.max_rows < 1:
        raise EvaluationError("--max-rows must be at least 1")
    if args.data:
        x, y = load_npz(args.data, need_y=True)
        assert y is not None
        if args.max_rows:
            x, y = x[: args.max_rows], y[: args.max_rows]
        images = x.ndim >= 3 and unit_range(x)
        if not images:
            notes.append(
                "the data are not images (n, H, W[, C]) with values in [0, 1]: using the "
                "tabular corruptions and attacks, scaled by each feature's standard deviation "
                f"on {'--train-data' if args.train_data else '--data'}"
            )
        kind = IMAGE if images else TABULAR_FAMILY
        return CleanInput((x, y), f"{args.data} ({len(x)} rows)", kind)
    if args.corrupted:
        raise EvaluationError("--corrupted needs the clean originals, row-aligned, in --data")
    if args.train_data:
        raise EvaluationError("--train-data only applies to your own --data")
    assert case is not None
    description = f"{case}: {CASES[case]}, test split"
    if case == "digits":
        description = "digits demo test split (sklearn digits, 8x8 in [0, 1])"
    return CleanInput(None, description, get_case(case).kind)


def _train_stats(args: argparse.Namespace, clean: CleanInput) -> FeatureStats | None:
    """The tabular scale for the user's own data: ``--train-data``, else ``--data``."""
    if clean.data is None or clean.kind == IMAGE:
        return None
    x = clean.data[0]
    if args.train_data:
        from monitor.datafiles import fit_to_shape, load_array

        x = fit_to_shape(load_array(args.train_data), x.shape[1:], args.train_data)
    try:
        return feature_stats(x)
    except ValueError as exc:
        raise EvaluationError(f"{args.train_data or args.data}: {exc}") from None


def _user_sets(
    args: argparse.Namespace, data: tuple[np.ndarray, np.ndarray] | None
) -> list[tuple[CorruptionSpec, np.ndarray]]:
    """The ``--corrupted`` set, checked to be row-aligned with the clean data."""
    if not args.corrupted:
        return []
    assert data is not None  # _clean_input refuses --corrupted without --data
    xc, yc = load_npz(args.corrupted, need_y=False)
    xc = xc[: len(data[0])] if args.max_rows else xc
    if xc.shape != data[0].shape:
        raise EvaluationError(
            f"{args.corrupted}: X has shape {xc.shape}, the clean data {data[0].shape}"
        )
    if yc is not None and not np.array_equal(yc[: len(data[1])], data[1]):
        raise EvaluationError(f"{args.corrupted}: y differs from the clean data's labels")
    return [(CorruptionSpec(Path(args.corrupted).stem, "user", 0.0), xc)]


def _case_specs(
    args: argparse.Namespace, severities: list[int], epsilons: list[float], kind: str
) -> list[CorruptionSpec]:
    """The natural corruptions and attacks of the data's family (image or tabular);
    ``auto`` means all of them."""
    names = FAMILIES[kind]
    natural = parse_names(args.corruptions, names, "corruptions")
    attacks = parse_names(args.attacks, ATTACKS, "attacks")
    return plan(
        list(names) if natural is None else natural,
        severities,
        list(ATTACKS) if attacks is None else attacks,
        epsilons,
        kind,
    )


def prepare(args: argparse.Namespace) -> Setup:
    """Turn the command-line options into a plan, failing early on anything unusable."""
    quick = bool(args.quick)
    seeds = _seeds(args, quick)
    severities = _severities(args, quick)
    trials = _trials(args, quick)
    p_value = _p_value(args)

    notes: list[str] = []
    case = case_name(args)
    clean = _clean_input(args, case, notes)
    epsilons = _epsilons(args, quick, clean.kind)
    user_sets = _user_sets(args, clean.data)
    plans = seed_plans(args, seeds, case)
    if clean.data is None:
        window = _window(args, _case_test_rows(plans, args.max_rows), notes, "the test split")
    else:
        window = _window(args, len(clean.data[0]), notes)
    specs = _case_specs(args, severities, epsilons, clean.kind)
    if not specs and not user_sets:
        raise EvaluationError("nothing to evaluate: no corruptions, attacks or --corrupted set")
    options = SuiteOptions(
        specs=tuple(specs),
        p_value=p_value,
        window=window,
        trials=trials,
        fractions=QUICK_FRACTIONS if quick else DEFAULT_FRACTIONS,
        pgd_steps=5 if quick else 10,
    )
    description = clean.description
    if clean.data is None:
        splits = ", ".join(dict.fromkeys(str(p.data_seed) for p in plans))
        description += f", split seed {splits}"
    return Setup(
        options,
        seeds,
        plans,
        clean.data,
        user_sets,
        notes,
        description,
        case=plans[0].case if clean.data is None else None,
        kind=clean.kind,
        train_stats=_train_stats(args, clean),
    )


def _case_test_rows(plans: list[SeedPlan], max_rows: int | None) -> int | None:
    """Test rows of a tabular case (the fewest over the seeds' splits) for the window size;
    None for the image cases, large enough for the default window."""
    case = plans[0].case
    if case is None or get_case(case).kind == IMAGE:
        return None
    return min(len(case_clean_data(p, max_rows)[0]) for p in plans)


def _clean_data(
    setup: Setup, plan_: SeedPlan, max_rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    if setup.data is not None:
        return setup.data
    return case_clean_data(plan_, max_rows)


def _check_labels(y: np.ndarray, detector: ModelDistillation, where: str | None) -> None:
    """Labels must be the classifier's output indices, or nothing can be right or wrong."""
    n_classes = int(detector.n_classes)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise EvaluationError(
            f"{where or 'the labels'}: y holds {int(y.min())}..{int(y.max())}, but the "
            f"classifier has {n_classes} outputs: labels must be class indices 0..{n_classes - 1}"
        )


def _stats_for(setup: Setup, plan_: SeedPlan) -> FeatureStats | None:
    """The tabular corruptions' scale for this seed: the case's training split, or the
    user's training data; None for images."""
    if setup.kind != TABULAR_FAMILY:
        return None
    if setup.data is None:
        return feature_stats(case_train_inputs(plan_))
    return setup.train_stats


def evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation described by the command-line ``args``; returns the exit code."""
    from tqdm import tqdm

    setup = prepare(args)
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow()
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"--out {out}: {exc}") from None
    for note in setup.notes:
        print(f"note: {note}", file=sys.stderr)

    per_seed = planned_steps(setup.options) + len(setup.user_sets)
    total = sum(per_seed + p.build for p in setup.plans)
    results: list[SeedResult] = []
    with tqdm(
        total=total, desc="evaluate", unit="step", file=sys.stderr, dynamic_ncols=True
    ) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        for plan_ in setup.plans:
            if plan_.build:
                bar.set_postfix_str(f"building {plan_.case} detector seed {plan_.seed}")
            detector = load_for(plan_, verbose=False)
            if plan_.build:
                step(f"{plan_.case} detector")
            x, y = _clean_data(setup, plan_, args.max_rows)
            _check_labels(y, detector, args.data)
            results.append(
                run_seed(
                    detector,
                    x,
                    y,
                    setup.options,
                    plan_.seed,
                    detector_info(detector, plan_),
                    user_sets=setup.user_sets,
                    progress=step,
                    stats=_stats_for(setup, plan_),
                )
            )
    report = build_report(setup, results)
    print_report(setup, results, report)
    write_json(out / "report.json", report)
    written = [out / "report.json"]
    if not args.no_plots:
        from monitor.evaluation.plots import write_plots

        written += write_plots(
            out, results[0].cases, report["cases"], report["windows"], setup.options.p_value
        )
    print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return 0


def build_report(setup: Setup, results: list[SeedResult]) -> dict[str, Any]:
    summary = across_seeds(results)
    o = setup.options
    return {
        "meta": {
            "package_version": __version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "data": setup.data_description,
            "case": setup.case,
            "data_kind": setup.kind,
            "seeds": setup.seeds,
            "cases": [s.label for s in o.specs] + [s.label for s, _ in setup.user_sets],
            "p_value": o.p_value,
            "window": o.window,
            "trials": o.trials,
            "fractions": list(o.fractions),
            "reference_size": o.reference_size,
            "window_min_severity": o.window_min_severity,
            "min_group": MIN_GROUP,
            "bar_min_severity": BAR_MIN_SEVERITY,
            "notes": setup.notes,
        },
        "seeds": [r.to_dict() for r in results],
        "cases": aggregate_rows(results),
        "windows": aggregate_windows(results),
        "summary": summary,
        "quality_bar": [c.to_dict() for c in quality_bar(summary, setup.kind == IMAGE)],
    }


def _fmt(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def print_report(setup: Setup, results: list[SeedResult], report: dict[str, Any]) -> None:
    o = setup.options
    thresholds = ", ".join(f"{r.detector['threshold']:.4g}" for r in results)
    print(
        f"\nDetector(s): {', '.join(dict.fromkeys(r.detector['path'] for r in results))}"
        f"\nData: {setup.data_description}; seeds {', '.join(map(str, setup.seeds))}; "
        f"threshold(s) {thresholds}; clean accuracy "
        f"{np.mean([r.clean['accuracy'] for r in results]):.3f}\n"
    )
    print(case_table(report["cases"]))
    print(
        "\nMeans over seeds. acc: classifier accuracy on the corrupted set; harmful/harmless:"
        "\ncounts; s.*: mean score of clean, harmless, harmful inputs; AUC, AP: harmful vs"
        "\nharmless; AUC/cl: harmful vs clean; TPR: harmful flagged at the threshold; FPR/cl,"
        "\nFPR/hl: clean and harmless flagged; base AUC: the classifier's predictive entropy"
        f"\nas the score. * fewer than {MIN_GROUP} harmful or harmless in some seed (left out"
        "\nof the summary means)."
    )
    if report["windows"]:
        print(
            f"\nWindow drift test: share of {o.window}-record windows flagged (KS p < {o.p_value:g},"
            f" {o.trials} trials per fraction, clean reference of up to {o.reference_size} scores"
            "\nnot overlapping the window), by contamination with harmful or harmless inputs:\n"
        )
        print(window_table(report["windows"]))
    summary = report["summary"]
    print("\nSummary over seeds (mean ± std):")
    labels = {
        "auc_user": "AUC harmful vs harmless, your corrupted set",
        "baseline_auc_user": "  entropy baseline",
        "auc_natural_s3": "AUC harmful vs harmless, natural severity 3+",
        "baseline_auc_natural_s3": "  entropy baseline",
        "auc_with_attacks": "AUC harmful vs harmless, natural 3+ and attacks",
        "baseline_auc_with_attacks": "  entropy baseline",
        "window_all_clean": "all-clean windows flagged",
        "window_harmful_10": "10% harmful windows flagged",
        "window_harmful_20": "20% harmful windows flagged",
        "window_harmful_30": "30% harmful windows flagged",
        "window_harmless_10": "10% harmless windows flagged",
        "window_harmless_20": "20% harmless windows flagged",
        "window_harmless_30": "30% harmless windows flagged",
        "tpr_harmful_natural_s3": "harmful flagged at the threshold, natural 3+",
        "tpr_harmful_with_attacks": "harmful flagged at the threshold, with attacks",
        "fpr_clean": "clean inputs flagged at the threshold",
        "manifest_all_clean": "all-clean vs the manifest's reference",
        "manifest_harmful_30": "30% harmful vs the manifest's reference",
    }
    for key, label in labels.items():
        if summary.get(key, {}).get("mean") is not None:  # rows this run could measure
            print(f"  {label:<50} {_fmt(summary[key])}")
    checks = quality_bar(summary, absolute=setup.kind == IMAGE)
    if any(
        summary.get(k, {}).get("mean") is not None for k in ("auc_natural_s3", "auc_with_attacks")
    ):
        if setup.kind == IMAGE:
            print("\nQuality bar (set for the digits demo with its default options):")
        else:
            print("\nQuality bar (for tabular data: the lead over the entropy baseline, windows):")
        print(bar_lines(checks))
