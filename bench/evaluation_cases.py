#!/usr/bin/env python3
"""Every benchmark case through ``distillation-monitor evaluate``, and the targets checked.

Runs ``distillation-monitor evaluate --case NAME`` for each case, one after another (the
command itself, as a user runs it, with its defaults unless told otherwise), times it,
then reads each ``report.json`` and prints one Markdown table per case: the numbers
docs/evaluation.md quotes and each target's PASS/FAIL on the mean over seeds, with the
worst seed next to it. The targets:

- every case: AUC harmful vs harmless >= the entropy baseline + 0.05 (natural
  corruptions at severity 3+, and with the attacks);
- every case: windows with 30% harmful inputs flagged >= 0.99, all-clean <= 0.05;
- digits demo: AUC with attacks >= 0.90, harmful flagged at the threshold >= 0.80,
  clean inputs flagged <= 0.05.

    .venv/bin/python bench/evaluation_cases.py                 # all cases, 3 seeds
    .venv/bin/python bench/evaluation_cases.py --cases wine --extra=--quick
    .venv/bin/python bench/evaluation_cases.py --report-only   # tables from the last run

Reports go to --out/<case>/ (report.json and the plots), the tables to stdout and
--out/targets.md, the run times to --out/times.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("digits", "digits_cnn", "wine", "breast_cancer")
DIGITS = "digits"


@dataclass(frozen=True)
class Row:
    """One line of a case's table: a mean over seeds, the worst seed, an optional target."""

    label: str
    mean: float | None
    worst: float | None
    target: float | None = None
    at_least: bool = True
    signed: bool = False  # a difference: shown with its sign

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.mean is None:
            return "not measured"
        ok = self.mean >= self.target if self.at_least else self.mean <= self.target
        return "PASS" if ok else "FAIL"

    def cells(self) -> list[str]:
        target = ""
        if self.target is not None:
            target = f"{'>=' if self.at_least else '<='} {self.target:g}"
        values = [_num(v, self.signed) for v in (self.mean, self.worst)]
        return [self.label, *values, target, self.verdict]


def _num(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"


def _seeds(summary: dict[str, Any], key: str) -> list[float]:
    return [v for v in summary.get(key, {}).get("per_seed", []) if v is not None]


def _stat(summary: dict[str, Any], key: str, at_least: bool) -> tuple[float | None, float | None]:
    values = _seeds(summary, key)
    if not values:
        return None, None
    return sum(values) / len(values), (min(values) if at_least else max(values))


def _lead(summary: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """Detector minus entropy baseline: mean over seeds and the worst seed's lead."""
    pairs = zip(
        summary.get(f"auc_{key}", {}).get("per_seed", []),
        summary.get(f"baseline_auc_{key}", {}).get("per_seed", []),
        strict=False,
    )
    leads = [a - b for a, b in pairs if a is not None and b is not None]
    return (sum(leads) / len(leads), min(leads)) if leads else (None, None)


def case_rows(case: str, summary: dict[str, Any]) -> list[Row]:
    """The table of one case, targets attached where they apply to it."""
    digits = case == DIGITS
    return [
        Row(
            "AUC harmful vs harmless, natural severity 3+", *_stat(summary, "auc_natural_s3", True)
        ),
        Row(
            "AUC harmful vs harmless, natural 3+ and attacks",
            *_stat(summary, "auc_with_attacks", True),
            0.90 if digits else None,
        ),
        Row("entropy baseline, natural 3+", *_stat(summary, "baseline_auc_natural_s3", True)),
        Row(
            "entropy baseline, natural 3+ and attacks",
            *_stat(summary, "baseline_auc_with_attacks", True),
        ),
        Row(
            "detector minus baseline, natural 3+", *_lead(summary, "natural_s3"), 0.05, signed=True
        ),
        Row(
            "detector minus baseline, with attacks",
            *_lead(summary, "with_attacks"),
            0.05,
            signed=True,
        ),
        Row(
            "harmful flagged at the threshold, natural 3+ and attacks",
            *_stat(summary, "tpr_harmful_with_attacks", True),
            0.80 if digits else None,
        ),
        Row(
            "clean inputs flagged at the threshold",
            *_stat(summary, "fpr_clean", False),
            0.05 if digits else None,
            False,
        ),
        Row("windows with 30% harmful flagged", *_stat(summary, "window_harmful_30", True), 0.99),
        Row("all-clean windows flagged", *_stat(summary, "window_all_clean", False), 0.05, False),
    ]


def markdown(case: str, report: dict[str, Any], seconds: float | None) -> str:
    meta = report["meta"]
    window = meta.get("window")
    lines = [
        f"#### {case}",
        "",
        f"{meta['data']}; seeds {', '.join(map(str, meta['seeds']))}; "
        f"clean accuracy {_num(report['summary']['clean_accuracy']['mean'])}; "
        + (f"windows of {window} records" if window else "no window test")
        + (f"; {seconds / 60:.1f} min" if seconds is not None else ""),
        "",
        "| | mean | worst seed | target | result |",
        "|---|---|---|---|---|",
    ]
    for row in case_rows(case, report["summary"]):
        if row.mean is None and row.target is None:
            continue
        lines.append("| " + " | ".join(row.cells()) + " |")
    for note in meta.get("notes", []):
        lines.append(f"\nnote: {note}")
    return "\n".join(lines) + "\n"


def run_case(case: str, out: Path, cache: Path, extra: Sequence[str]) -> float:
    """``distillation-monitor evaluate --case`` as a subprocess; returns its wall time."""
    command = [
        sys.executable, "-m", "monitor", "evaluate", "--case", case,
        "--out", str(out / case), "--cache", str(cache), *extra,
    ]  # fmt: skip
    print(f"$ {' '.join(command[2:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with (out / f"{case}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, cwd=ROOT, env=dict(os.environ))
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma list (default: all)")
    parser.add_argument("--out", default=".local/evaluation-cases", help="report directory")
    parser.add_argument("--cache", default=".local/eval-detector", help="case detectors")
    parser.add_argument(
        "--extra", action="append", default=[], help="an option passed on to evaluate"
    )
    parser.add_argument("--report-only", action="store_true", help="only read the reports")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times_file = out / "times.json"
    times: dict[str, float] = json.loads(times_file.read_text()) if times_file.is_file() else {}
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not args.report_only:
        for case in cases:
            times[case] = run_case(case, out, Path(args.cache), args.extra)
            times_file.write_text(json.dumps(times, indent=2) + "\n")
    tables = []
    for case in cases:
        report = json.loads((out / case / "report.json").read_text())
        tables.append(markdown(case, report, times.get(case)))
    if times:
        total = sum(times.get(c, 0.0) for c in cases)
        tables.append(f"total run time: {total / 60:.1f} min")
    text = "\n".join(tables)
    (out / "targets.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
