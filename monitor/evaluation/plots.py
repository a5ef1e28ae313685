"""PNG plots of the report (matplotlib with the Agg backend, imported only here).

Distributions and ROC curves show the first seed (raw scores); the severity and window
plots show means over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.evaluation.harm import Case
from monitor.evaluation.metrics import roc_points
from monitor.evaluation.suite import POOLED
from monitor.evaluation.summary import BAR_MIN_SEVERITY

GROUP_COLOURS = {"clean": "tab:green", "harmless": "tab:blue", "harmful": "tab:red"}
SCORE_FLOOR = 1e-6
P_FLOOR = 1e-16


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_corruption(items: Sequence[Any], name_of: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(name_of(item), []).append(item)
    return out


def _grid(n: int, width: float, height: float, ncols: int = 4) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels in rows of ``ncols``; unused panels are hidden."""
    plt = _pyplot()
    cols = min(n, ncols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def score_distributions(cases: Sequence[Case], path: Path) -> Path:
    """Histograms of log10 scores of clean, harmless and harmful inputs, per case."""
    plt = _pyplot()
    rows = _by_corruption(cases, lambda c: c.spec.name)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(2.6 * ncols, 2.0 * len(rows)), squeeze=False
    )
    for i, (name, members) in enumerate(rows.items()):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(members):
                ax.axis("off")
                continue
            case = members[j]
            groups = {g: case.group(g) for g in GROUP_COLOURS}
            logs = {g: np.log10(np.maximum(v, SCORE_FLOOR)) for g, v in groups.items() if v.size}
            edges = np.histogram_bin_edges(np.concatenate(list(logs.values())), bins=30)
            for g, v in logs.items():
                ax.hist(
                    v, bins=edges, density=True, histtype="step", color=GROUP_COLOURS[g], label=g
                )
            ax.set_title(case.spec.label, fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.supxlabel("log10 harmfulness score", fontsize=8)
    return _save(fig, path)


def by_severity(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean harmless vs harmful score and classifier accuracy against severity/epsilon."""
    groups = _by_corruption(rows, lambda r: r["corruption"])
    fig, axes = _grid(len(groups), 3.2, 2.8)
    handles: list[Any] = []
    for ax, (name, members) in zip(axes, groups.items(), strict=True):
        levels = [m["level"] for m in members]
        lines = []
        for key, colour in (("score_harmless", "tab:blue"), ("score_harmful", "tab:red")):
            values = [np.nan if m[key] is None else m[key] for m in members]
            lines += ax.plot(levels, values, "o-", color=colour, label=f"mean {key[6:]} score")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epsilon" if members[0]["kind"] == "attack" else "severity", fontsize=8)
        ax.set_ylabel("mean score", fontsize=8)
        ax.tick_params(labelsize=7)
        acc = ax.twinx()
        lines += acc.plot(
            levels, [m["accuracy"] for m in members], "s--", color="grey", label="accuracy"
        )
        acc.set_ylim(0, 1.02)
        acc.set_ylabel("classifier accuracy", fontsize=8)
        acc.tick_params(labelsize=7)
        handles = handles or lines
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path, tight=False)


def roc_curves(cases: Sequence[Case], path: Path) -> Path:
    """ROC of harmful vs harmless per case, and detector vs entropy baseline pooled."""
    groups = _by_corruption(cases, lambda c: c.spec.name)
    pooled = [c for c in cases if c.spec.kind == "natural" and c.spec.level >= BAR_MIN_SEVERITY]
    fig, axes = _grid(len(groups) + bool(pooled), 2.9, 2.9)
    for ax, (name, members) in zip(axes, groups.items(), strict=False):
        for case in members:
            points = roc_points(case.group("harmless"), case.group("harmful"))
            if points is not None:
                ax.plot(*points, label=f"{case.spec.level:g}", linewidth=1)
        ax.set_title(name, fontsize=9)
    if pooled:
        ax = axes[-1]
        for baseline, style in ((False, "tab:red"), (True, "grey")):
            harmless = np.concatenate([c.group("harmless", baseline) for c in pooled])
            harmful = np.concatenate([c.group("harmful", baseline) for c in pooled])
            points = roc_points(harmless, harmful)
            if points is not None:
                label = "entropy baseline" if baseline else "detector"
                ax.plot(*points, color=style, label=label, linewidth=1)
        ax.set_title(f"{POOLED} pooled", fontsize=9)
    for ax in axes:
        ax.plot([0, 1], [0, 1], ":", color="black", linewidth=0.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("FPR (harmless)", fontsize=8)
        ax.set_ylabel("TPR (harmful)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path)


def window_curves(windows: dict[str, dict[str, Any]], p_value: float, path: Path) -> Path:
    """Median KS p-value and share of windows flagged against the contamination fraction."""
    plt = _pyplot()
    n = len(windows)
    fig, axes = plt.subplots(2, n, figsize=(2.8 * n, 5.0), squeeze=False)
    for j, (group, curves) in enumerate(windows.items()):
        for kind, entry in curves.items():
            colour = GROUP_COLOURS[kind]
            x = [100 * f for f in entry["fractions"]]
            axes[0][j].plot(
                x,
                np.maximum(entry["p_median"], P_FLOOR),
                "o-",
                color=colour,
                label=kind,
                markersize=3,
            )
            axes[1][j].plot(x, entry["detected"], "o-", color=colour, label=kind, markersize=3)
        axes[0][j].axhline(p_value, color="black", linestyle=":", linewidth=0.8)
        axes[0][j].set_yscale("log")
        axes[0][j].set_title(group, fontsize=9)
        axes[1][j].set_ylim(-0.02, 1.02)
        axes[1][j].set_xlabel("contamination %", fontsize=8)
        for ax in axes[:, j]:
            ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("median p-value", fontsize=8)
    axes[1][0].set_ylabel("windows flagged", fontsize=8)
    axes[0][0].legend(fontsize=6)
    return _save(fig, path)


def write_plots(
    out: Path,
    first_seed_cases: Sequence[Case],
    rows: Sequence[dict[str, Any]],
    windows: dict[str, dict[str, Any]],
    p_value: float,
) -> list[Path]:
    """All PNGs of the report, written into ``out``."""
    paths = []
    if first_seed_cases:
        paths.append(score_distributions(first_seed_cases, out / "score_distributions.png"))
        paths.append(by_severity(rows, out / "scores_by_severity.png"))
        paths.append(roc_curves(first_seed_cases, out / "roc_curves.png"))
    if windows:
        paths.append(window_curves(windows, p_value, out / "window_pvalues.png"))
    return paths
