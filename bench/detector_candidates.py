#!/usr/bin/env python3
"""Which detector should ``fit`` build by default? Every candidate measured on every case.

For each benchmark case (``monitor.evaluation.cases``) and seed: the case's classifier
is trained once, its test split is corrupted once (natural corruptions at severity 3+
and the attacks, as ``distillation-monitor evaluate`` builds them) and split in two
seeded halves, validation and test. Each candidate (``bench/candidates.py``) is trained
on the clean training split and measured on both halves with the evaluation's own code
(``run_seed``, ``seed_summary``, the window trials). Choose on the validation half; the
table shows the test half.

    .venv/bin/python bench/detector_candidates.py --quick
    .venv/bin/python bench/detector_candidates.py --cases digits,wine --seeds 0,1,2 \\
        --candidates fit-default,single,ens5-prob+depth=3 --out .local/candidates.json
    .venv/bin/python bench/detector_candidates.py --report .local/candidates.json --markdown

Progress goes to stderr; the table to stdout; every number per seed to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.candidate_tables import fmt, ranking, table  # noqa: E402
from bench.candidates import CANDIDATES, Candidate, build_scorer, parse_candidate  # noqa: E402

WINDOW = 200
WHOLE = "whole"  # the whole test split (--whole-split), instead of the two halves
MIN_WINDOW = 10
WINDOW_FRACTION = 0.3
P_VALUE = 0.01


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Prepared:
    """One case and seed: the classifier, clean data and the corrupted test sets."""

    name: str
    seed: int
    classifier: Any
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sets: list[tuple[Any, np.ndarray]]  # (CorruptionSpec, corrupted x_test)
    halves: dict[str, np.ndarray]  # "validation" / "test": row indices into x_test


def halves(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """A seeded, stratified half/half split of the test rows."""
    rng = np.random.default_rng([seed, 4242])
    validation: list[int] = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        validation += rows[: len(rows) // 2].tolist()
    val = np.sort(np.asarray(validation, dtype=np.int64))
    return {"validation": val, "test": np.setdiff1d(np.arange(len(y)), val)}


def case_specs(kind: str, quick: bool) -> list[Any]:
    """The corruptions and attacks ``evaluate`` runs for this kind of data, severity 3+."""
    from monitor.evaluation.harm import specs_for_kind

    return specs_for_kind(kind, [3, 5] if quick else [3, 4, 5], quick)


def prepare(name: str, seed: int, quick: bool, whole: bool = False) -> Prepared:
    from monitor.evaluation.cases import load_case
    from monitor.evaluation.harm import corrupt
    from monitor.tabular_corruptions import feature_stats

    case = load_case(name, seed)
    x, y = case.x_test, case.y_test
    # Tabular corruptions and attacks take their scale from the clean training split.
    stats = feature_stats(case.x_train) if case.kind == "tabular" else None
    steps = 5 if quick else 10
    sets = [
        (spec, corrupt(spec, x, y, case.classifier, seed, steps, stats=stats))
        for spec in case_specs(case.kind, quick)
    ]
    rows = {WHOLE: np.arange(len(y))} if whole else halves(y, seed)
    return Prepared(name, seed, case.classifier, case.x_train, x, y, sets, rows)


def window_size(n_clean: int, whole: bool) -> int | None:
    """200 records, or fewer when the clean rows are few: on a half, half the clean rows
    (the other half is the reference); on the whole split, ``evaluate``'s rule (what
    leaves a reference of 50 rows), so the numbers are ``evaluate``'s.

    A half of a test split is small: ``evaluate``'s rule would leave a 50-row reference
    there, make the test weak and compare candidates on noise.
    """
    from monitor.evaluation.windows import MIN_REFERENCE

    size = min(WINDOW, n_clean - MIN_REFERENCE if whole else n_clean // 2)
    return size if size >= MIN_WINDOW and n_clean - size >= MIN_REFERENCE else None


def measure(scorer: Any, prepared: Prepared, rows: np.ndarray, trials: int) -> dict[str, Any]:
    """The summary numbers of one candidate on one half of the test split."""
    from monitor.evaluation.metrics import flagged_rate
    from monitor.evaluation.suite import POOLED, SuiteOptions, run_seed, window_groups
    from monitor.evaluation.summary import BAR_MIN_SEVERITY, seed_summary
    from monitor.evaluation.windows import contamination_trials

    options = SuiteOptions(specs=(), p_value=P_VALUE, window=None)
    sets = [(spec, x_bad[rows]) for spec, x_bad in prepared.sets]
    result = run_seed(
        scorer,  # type: ignore[arg-type]  # duck-types ModelDistillation
        prepared.x_test[rows],
        prepared.y_test[rows],
        options,
        prepared.seed,
        {},
        user_sets=sets,
    )
    window = window_size(len(rows), whole=len(rows) == len(prepared.y_test))
    pooled = window_groups(result.cases, BAR_MIN_SEVERITY).get(POOLED, [])
    if window is not None and pooled:
        clean = result.cases[0].clean.scores
        result.curves[POOLED] = {}
        for kind in ("harmful", "harmless"):
            pool = np.concatenate([c.group(kind) for c in pooled])
            if pool.size:
                result.curves[POOLED][kind] = contamination_trials(
                    clean,
                    pool,
                    name=f"{POOLED}/{kind}",
                    seed=prepared.seed,
                    p_value=P_VALUE,
                    window=window,
                    trials=trials,
                    fractions=(0.0, WINDOW_FRACTION),
                )
    summary: dict[str, Any] = seed_summary(result)
    harmful = [
        c.group("harmful")
        for c in result.cases
        if c.spec.kind != "natural" or c.spec.level >= BAR_MIN_SEVERITY
    ]
    summary["flagged_harmful"] = flagged_rate(np.concatenate(harmful), scorer.threshold)
    summary["fpr_clean"] = result.clean["fpr"]
    summary["n_harmful"] = int(sum(len(h) for h in harmful))
    summary["window"] = window
    for key in ("natural_s3", "with_attacks"):
        a, b = summary.get(f"auc_{key}"), summary.get(f"baseline_auc_{key}")
        summary[f"delta_{key.split('_s3')[0]}"] = None if a is None or b is None else a - b
    return summary


def run(args: argparse.Namespace, candidates: Sequence[Candidate]) -> dict[str, Any]:
    """Every case x seed x candidate; returns the per-seed numbers of both halves."""
    results: dict[str, Any] = {}
    for name in args.cases:
        for seed in args.seeds:
            start = time.monotonic()
            prepared = prepare(name, seed, args.quick, args.whole_split)
            log(
                f"[{name} seed {seed}] classifier and {len(prepared.sets)} corrupted sets "
                f"in {time.monotonic() - start:.0f}s"
            )
            for candidate in candidates:
                start = time.monotonic()
                scorer, info = build_scorer(candidate, prepared.classifier, prepared.x_train, seed)
                row: dict[str, Any] = {"train": info}
                for half, rows in prepared.halves.items():
                    trials = args.trials if half != "validation" else max(50, args.trials // 5)
                    row[half] = measure(scorer, prepared, rows, trials)
                row["seconds"] = round(time.monotonic() - start, 1)
                results.setdefault(name, {}).setdefault(candidate.name, {})[str(seed)] = row
                if args.out:  # after every candidate: a long run that fails keeps its numbers
                    write(args, results, partial=True)
                shown = "  ".join(
                    f"{half} AUC+att {fmt(row[half].get('auc_with_attacks'))}"
                    for half in prepared.halves
                )
                log(
                    f"[{name} seed {seed}] {candidate.name:<18} {shown}  "
                    f"flag {fmt(row[half].get('flagged_harmful'))}  "
                    f"({row['seconds']:.0f}s, epochs {info['epochs']})"
                )
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Candidates: "
        + ", ".join(c.name for c in CANDIDATES)
        + ". Combine settings with +, e.g. ens5-prob+depth=3 or single+temperature=0.25.",
    )
    parser.add_argument("--cases", help="comma list of case names (default: every case)")
    parser.add_argument("--seeds", help="comma list of seeds (default 0,1,2; --quick: 0)")
    parser.add_argument("--candidates", help="comma list of candidates (default: all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="prune run: seed 0 only (unless --seeds), severities 3 and 5, one epsilon, "
        "5 PGD steps, 100 window trials",
    )
    parser.add_argument("--trials", type=int, help="window trials on the test half (default 500)")
    parser.add_argument(
        "--whole-split",
        action="store_true",
        help="measure on the whole test split, as evaluate --case does (for the numbers of "
        "a candidate already chosen; never choose on them)",
    )
    parser.add_argument("--out", help="write every per-seed number to this JSON file")
    parser.add_argument(
        "--report",
        metavar="RESULTS.json",
        help="print the tables of a saved run (--out) instead of running",
    )
    parser.add_argument("--markdown", action="store_true", help="tables in Markdown")
    args = parser.parse_args(argv)
    from monitor.evaluation.cases import case_names

    args.cases = args.cases.split(",") if args.cases else list(case_names())
    unknown = [c for c in args.cases if c not in case_names()]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(case_names())}")
    args.seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    if args.trials is None:
        args.trials = 100 if args.quick else 500
    return args


def report(results: dict[str, Any], heading: str, markdown: bool) -> None:
    """The three tables: every number on the test half, and the choice across cases on
    the validation half (where to choose) and on the test half (with --whole-split: the
    numbers and the comparison on the whole test split)."""
    first = next(iter(next(iter(next(iter(results.values())).values())).values()))
    if WHOLE in first:
        print(f"{heading.replace('test half', 'whole test split')}\n")
        print(table(results, WHOLE, markdown))
        print("\nacross cases, whole test split:\n")
        print(ranking(results, WHOLE, markdown))
        return
    print(f"{heading}\n")
    print(table(results, "test", markdown))
    print("\nacross cases, validation half (choose here):\n")
    print(ranking(results, "validation", markdown))
    print("\nacross cases, test half:\n")
    print(ranking(results, "test", markdown))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        meta = saved["meta"]
        mode = "quick" if meta["quick"] else "full"
        heading = f"test half: mean over seeds (worst seed); seeds {meta['seeds']}, {mode} run"
        report(saved["results"], f"{heading}, {meta['minutes']} min", args.markdown)
        return 0
    try:
        names = args.candidates.split(",") if args.candidates else [c.name for c in CANDIDATES]
        candidates = [parse_candidate(n) for n in names]
        args.candidates = names
    except ValueError as exc:
        log(f"error: {exc}")
        return 2
    from monitor.detector.tf_runtime import start_tensorflow

    start_tensorflow().get_logger().setLevel("ERROR")  # one retracing note per member
    started = time.monotonic()
    results = run(args, candidates)
    minutes = (time.monotonic() - started) / 60
    mode = "quick" if args.quick else "full"
    heading = f"test half: mean over seeds (worst seed); seeds {args.seeds}, {mode} run"
    report(results, f"{heading}, {minutes:.1f} min", args.markdown)
    if args.out:
        write(args, results, partial=False, minutes=minutes)
        log(f"written: {args.out}")
    return 0


def write(
    args: argparse.Namespace, results: dict[str, Any], partial: bool, minutes: float | None = None
) -> None:
    meta = {
        "cases": args.cases,
        "seeds": args.seeds,
        "quick": args.quick,
        "whole_split": args.whole_split,
        "trials": args.trials,
        "candidates": args.candidates,
        "partial": partial,
        "minutes": None if minutes is None else round(minutes, 1),
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
