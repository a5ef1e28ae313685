"""Tables of ``bench/detector_candidates.py`` results, as plain text or Markdown.

``results`` is the ``results`` object of the JSON the benchmark writes:
``{case: {candidate: {seed: {"validation": {...}, "test": {...}, ...}}}}``. Cells show
the mean over seeds and, in brackets, the worst seed (the lowest, or for the rates that
should be low, the highest).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# (key in the per-seed numbers, header, better when higher)
COLUMNS = (
    ("auc_natural_s3", "AUC nat3+", True),
    ("auc_with_attacks", "AUC +att", True),
    ("baseline_auc_with_attacks", "entropy +att", True),
    ("delta_natural", "lead nat3+", True),
    ("delta_with_attacks", "lead +att", True),
    ("flagged_harmful", "harmful flagged", True),
    ("fpr_clean", "clean flagged", False),
    ("window_harmful_30", "win 30%", True),
    ("window_all_clean", "win clean", False),
)


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def spread(per_seed: dict[str, Any], half: str, key: str, higher: bool) -> tuple[Any, Any]:
    """(mean over seeds, worst seed) of one number; None when no seed has it."""
    values = [r[half].get(key) for r in per_seed.values()]
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return float(np.mean(present)), (min(present) if higher else max(present))


def _render(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    out = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    return "\n".join([out[0], "-" * len(out[0]), *out[1:]])


def table(results: dict[str, Any], half: str, markdown: bool = False) -> str:
    """One row per case and candidate, every column: mean over seeds (worst seed)."""
    head = ["case", "candidate", *(h for _, h, _ in COLUMNS)]
    rows = []
    for name, by_candidate in results.items():
        for candidate, per_seed in by_candidate.items():
            cells = [name, candidate]
            for key, _, higher in COLUMNS:
                mean, worst = spread(per_seed, half, key, higher)
                signed = key.startswith("delta")
                cells.append(f"{fmt(mean, signed)} ({fmt(worst, signed)})")
            rows.append(cells)
    return _render(head, rows, markdown)


def ranking(results: dict[str, Any], half: str, markdown: bool = False) -> str:
    """Per candidate, over all cases: the mean AUC with attacks, the mean and the worst
    case's lead over the entropy baseline, and the harmful flagged rate, best first: what
    a choice across cases looks at. Each case's mean AUC is shown too."""
    cases = list(results)
    names = list(dict.fromkeys(c for by in results.values() for c in by))
    rows = []
    for candidate in names:
        if any(candidate not in results[case] for case in cases):
            continue
        auc = [spread(results[c][candidate], half, "auc_with_attacks", True)[0] for c in cases]
        delta = [spread(results[c][candidate], half, "delta_with_attacks", True)[0] for c in cases]
        flag = [spread(results[c][candidate], half, "flagged_harmful", True)[0] for c in cases]
        if None in auc or None in delta:
            continue
        rows.append((candidate, auc, float(np.mean(auc)), delta, float(np.mean(flag))))
    rows.sort(key=lambda r: -r[2])
    head = ["candidate", *cases, "mean AUC +att", "mean lead", "worst case lead", "harmful flagged"]
    cells = [
        [c, *(fmt(a) for a in auc), fmt(m), fmt(float(np.mean(d)), True), fmt(min(d), True), fmt(f)]
        for c, auc, m, d, f in rows
    ]
    return _render(head, cells, markdown)
