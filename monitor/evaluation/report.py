"""The report: rows averaged over seeds, the terminal tables and ``report.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.evaluation.suite import SeedResult
from monitor.evaluation.summary import BarCheck

# (key in a flattened row, column title, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "acc", ".3f"),
    ("n_harmful", "harmful", ".0f"),
    ("n_harmless", "harmless", ".0f"),
    ("score_clean", "s.clean", ".3g"),
    ("score_harmless", "s.hless", ".3g"),
    ("score_harmful", "s.hful", ".3g"),
    ("auc_harmful_vs_harmless", "AUC", ".3f"),
    ("ap_harmful_vs_harmless", "AP", ".3f"),
    ("auc_harmful_vs_clean", "AUC/cl", ".3f"),
    ("tpr_harmful", "TPR", ".3f"),
    ("fpr_clean", "FPR/cl", ".3f"),
    ("fpr_harmless", "FPR/hl", ".3f"),
    ("baseline_auc_harmful_vs_harmless", "base AUC", ".3f"),
)
WINDOW_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


def _flatten(row: dict[str, Any]) -> dict[str, float | None]:
    flat: dict[str, float | None] = {
        "accuracy": row["accuracy"],
        "n_harmful": row["n_harmful"],
        "n_harmless": row["n_harmless"],
    }
    for group in ("clean", "harmless", "harmful"):
        flat[f"score_{group}"] = row["scores"][group]["mean"]
    flat |= row["detector"]
    flat |= {f"baseline_{k}": v for k, v in row["baseline"].items()}
    return flat


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def aggregate_rows(results: Sequence[SeedResult]) -> list[dict[str, Any]]:
    """One row per case, each number the mean over the seeds where it is defined."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        for case, row in zip(result.cases, result.case_rows, strict=True):
            by_label.setdefault(case.spec.label, []).append(row)
    out = []
    for label, rows in by_label.items():
        flats = [_flatten(r) for r in rows]
        merged: dict[str, Any] = {
            "label": label,
            "corruption": rows[0]["corruption"],
            "kind": rows[0]["kind"],
            "level": rows[0]["level"],
            "seeds": len(rows),
            "measurable_seeds": sum(bool(r["measurable"]) for r in rows),
        }
        merged |= {k: _mean([f.get(k) for f in flats]) for k in flats[0]}
        out.append(merged)
    return out


def aggregate_windows(results: Sequence[SeedResult]) -> dict[str, dict[str, Any]]:
    """Per window group and contaminant: mean detection rate and median p-value over seeds."""
    out: dict[str, dict[str, Any]] = {}
    for result in results:
        for group, curves in result.curves.items():
            for kind, curve in curves.items():
                entry = out.setdefault(group, {}).setdefault(
                    kind, {"fractions": list(curve.fractions), "detected": [], "p_median": []}
                )
                entry["detected"].append(list(curve.detected))
                entry["p_median"].append(list(curve.p_median))
    for group_entries in out.values():
        for entry in group_entries.values():
            entry["detected"] = np.mean(entry["detected"], axis=0).tolist()
            entry["p_median"] = np.median(entry["p_median"], axis=0).tolist()
    return out


def _cell(value: float | None, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def case_table(rows: Sequence[dict[str, Any]]) -> str:
    """The per-case table (means over seeds); ``*`` marks cases too small to separate."""
    label_width = max([len("case"), *(len(r["label"]) for r in rows)]) + 1
    widths = [max(len(title), 6) for _, title, _ in COLUMNS]
    head = "case".ljust(label_width) + " ".join(
        t.rjust(w) for (_, t, _), w in zip(COLUMNS, widths, strict=True)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "" if r["measurable_seeds"] == r["seeds"] else "*"
        cells = " ".join(
            _cell(r.get(key), fmt, w) for (key, _, fmt), w in zip(COLUMNS, widths, strict=True)
        )
        lines.append((r["label"] + mark).ljust(label_width) + cells)
    return "\n".join(lines)


def window_table(windows: dict[str, dict[str, Any]]) -> str:
    """Share of windows flagged by the KS test per contamination fraction."""
    width = max([len("window group"), *(len(g) for g in windows)]) + 2
    head = "window group".ljust(width) + "contaminant".ljust(12)
    head += " ".join(f"{round(f * 100)}%".rjust(6) for f in WINDOW_FRACTIONS)
    lines = [head, "-" * len(head)]
    for group, curves in windows.items():
        for kind, entry in curves.items():
            rates = dict(zip(entry["fractions"], entry["detected"], strict=True))
            cells = " ".join(
                _cell(next((v for f, v in rates.items() if abs(f - q) < 1e-9), None), ".3f", 6)
                for q in WINDOW_FRACTIONS
            )
            lines.append(group.ljust(width) + kind.ljust(12) + cells)
    return "\n".join(lines)


def bar_lines(checks: Sequence[BarCheck]) -> str:
    lines = []
    for c in checks:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[c.passed]
        value = "-" if c.value is None else f"{c.value:.3f}"
        worst = "" if c.worst is None else f" (worst seed {c.worst:.3f})"
        op = ">=" if c.at_least else "<="
        lines.append(f"  [{verdict}] {c.name}: {value}{worst}, target {op} {c.target:g}")
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the report; NaN is not JSON, so any stray NaN becomes null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    path.write_text(json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
