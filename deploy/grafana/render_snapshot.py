"""Render the main panels of the Grafana dashboard from a running Prometheus into a PNG.

No Grafana runs in CI or in the docs build, so this draws the panels that matter with
matplotlib: records/s and flagged/s, adversarial ratio, the score distribution over time
(heatmap) and over the whole range (histogram), both with the detector threshold, score
quantiles, dead letters by reason, end-to-end latency and batch duration quantiles. The
PromQL comes from the dashboard JSON itself (panels found by title), with Grafana's
variables replaced as Grafana would, so the picture shows what the dashboard shows.

    python deploy/grafana/render_snapshot.py http://127.0.0.1:9090 --minutes 5 \\
        --out docs/dashboard.png

Needs matplotlib (the ``dev`` or ``eval`` extra); everything else is the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DASHBOARD = Path(__file__).resolve().parent / "dashboards" / "distillation-monitor.json"
P = "distillation_monitor_"
COLORS = {"flagged": "#d62728", "clean": "#1f77b4", "threshold": "#444444"}


class SnapshotError(Exception):
    """A problem the user can fix (Prometheus unreachable, a bad query, no data)."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    t: np.ndarray  # unix seconds
    v: np.ndarray


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step: float
    rate_interval: str
    job: str
    instance: str

    @property
    def range(self) -> str:
        return f"{max(1, round(self.end - self.start))}s"


# -- Prometheus -------------------------------------------------------------------------


class Prometheus:
    """The two HTTP API calls we need, with Prometheus' error message on failure."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise SnapshotError(f"{path} {params.get('query', '')!r}: {detail}") from None
        except OSError as exc:
            raise SnapshotError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        if doc.get("status") != "success":
            raise SnapshotError(f"{path}: {doc}")
        return doc["data"]

    def range(self, expr: str, w: Window) -> list[Series]:
        data = self._get(
            "query_range", query=expr, start=str(w.start), end=str(w.end), step=str(w.step)
        )
        out = []
        for s in data["result"]:
            pts = np.asarray(s["values"], dtype=object)
            out.append(Series(s["metric"], pts[:, 0].astype(float), pts[:, 1].astype(float)))
        return out

    def instant(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        data = self._get("query", query=expr, time=str(at))
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def scrape_interval(self) -> float:
        """The global scrape interval from the running configuration (15 s if unset)."""
        text = self._get("status/config")["yaml"]
        match = re.search(r"^\s+scrape_interval:\s*(\S+)", text, re.M)
        return parse_duration(match.group(1)) if match else 15.0


def parse_duration(text: str) -> float:
    """Prometheus durations such as ``15s``, ``1m30s``, ``500ms``, ``2h`` in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise SnapshotError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# -- the dashboard's queries --------------------------------------------------------------


def load_targets(path: Path = DASHBOARD) -> dict[str, list[tuple[str, str]]]:
    """{panel title: [(expr, legend format), ...]}, rows' nested panels included."""
    dash = json.loads(path.read_text())
    out: dict[str, list[tuple[str, str]]] = {}
    for panel in dash["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            targets = [(t["expr"], t.get("legendFormat", "")) for t in p.get("targets", [])]
            if targets:
                out[p["title"]] = targets
    return out


def panel(targets: dict[str, list[tuple[str, str]]], prefix: str) -> list[tuple[str, str]]:
    """The targets of the panel whose title starts with ``prefix`` (titles may hold $vars)."""
    found = [t for title, t in targets.items() if title.startswith(prefix)]
    if len(found) != 1:
        raise SnapshotError(f"the dashboard has {len(found)} panels titled {prefix!r}...")
    return found[0]


def substitute(expr: str, w: Window) -> str:
    """What Grafana sends for the dashboard's variables."""
    for var, value in {
        "$__rate_interval": w.rate_interval,
        "$__interval": w.rate_interval,
        "$job": w.job,
        "$instance": w.instance,
    }.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise SnapshotError(f"unknown Grafana variable in {expr!r}")
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt or fmt == "__auto":
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


# -- drawing --------------------------------------------------------------------------------


def _times(t: np.ndarray) -> Any:
    return [datetime.fromtimestamp(x, UTC) for x in t]


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def draw_lines(
    ax: Any,
    prom: Prometheus,
    w: Window,
    targets: list[tuple[str, str]],
    *,
    prefix: str = "",
    skip_zero: bool = False,
    styles: dict[str, dict[str, Any]] | None = None,
) -> int:
    """One line per series of each target; returns how many were drawn."""
    drawn = 0
    for expr, fmt in targets:
        for s in prom.range(substitute(expr, w), w):
            finite = s.v[np.isfinite(s.v)]
            if skip_zero and not np.any(finite != 0):
                continue
            name = prefix + legend(fmt, s.labels)
            style = (styles or {}).get(legend(fmt, s.labels), {})
            ax.plot(_times(s.t), s.v, label=name, linewidth=1.4, **style)
            drawn += 1
    return drawn


def bucket_edges(les: list[float]) -> np.ndarray:
    """Edges for finite bucket bounds plus one overflow bucket above the last (for +Inf)."""
    finite = [x for x in les if math.isfinite(x)]
    ratio = finite[-1] / finite[-2] if len(finite) > 1 and finite[-2] > 0 else 2.0
    lower = finite[0] / ratio if finite[0] > 0 else finite[0] - 1.0
    return np.array([lower, *finite, finite[-1] * ratio])


def decumulate(series: list[Series]) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Cumulative ``le`` buckets -> (bounds, times, per-bucket counts of shape (n_le, n_t))."""
    by_le = sorted(series, key=lambda s: float(s.labels["le"]))
    times = np.unique(np.concatenate([s.t for s in by_le]))
    cum = np.zeros((len(by_le), len(times)))
    for i, s in enumerate(by_le):
        cum[i, np.searchsorted(times, s.t)] = np.nan_to_num(s.v)
    counts = np.diff(cum, axis=0, prepend=0.0).clip(min=0.0)
    return [float(s.labels["le"]) for s in by_le], times, counts


def per_decade(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts divided by each bucket's width in decades, so that narrow buckets (dense near
    the threshold) do not look emptier than wide ones. Along axis 0."""
    lower = np.where(edges[:-1] > 0, edges[:-1], edges[1:] / 10)
    widths = np.log10(edges[1:]) - np.log10(lower)
    shape = (-1,) + (1,) * (counts.ndim - 1)
    return counts / widths.reshape(shape)


def occupied(edges: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Score range (bucket edges) that holds any records, for the axis limits."""
    rows = np.flatnonzero(counts.reshape(len(counts), -1).sum(axis=1) > 0)
    if not rows.size:
        return float(edges[0]), float(edges[-1])
    return float(edges[rows[0]]), float(edges[rows[-1] + 1])


def draw_heatmap(ax: Any, series: list[Series], threshold: float | None) -> None:
    """Each time column shows how that interval's scores spread over the buckets.

    Columns are normalised (share of the interval's records per decade of score), so a
    shift of the distribution shows even when the traffic rate changes; a square-root
    colour scale keeps the thin tail above the threshold visible.
    """
    from matplotlib.colors import PowerNorm

    les, times, counts = decumulate(series)
    edges = bucket_edges(les)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    t_edges = np.concatenate([times - step / 2, [times[-1] + step / 2]])
    totals = counts.sum(axis=0, keepdims=True)
    share = per_decade(
        np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0), edges
    )
    mesh = ax.pcolormesh(
        _times(t_edges),
        edges,
        np.ma.masked_less_equal(share, 0),
        cmap="magma",
        shading="flat",
        norm=PowerNorm(0.5, vmin=0.0),
    )
    ax.set_yscale("log")
    ax.set_ylim(*occupied(edges, counts))
    ax.set_facecolor("black")
    ax.figure.colorbar(mesh, ax=ax, pad=0.01, label="share of records per decade of score")
    if threshold is not None:
        ax.axhline(threshold, color="#00e5ff", linestyle="--", linewidth=1.4)
        ax.text(
            0.01,
            threshold,
            f" threshold {threshold:.4g}",
            color="#00e5ff",
            va="bottom",
            transform=ax.get_yaxis_transform(),
            fontsize=9,
        )
    ax.set_ylabel("score")


def draw_histogram(ax: Any, buckets: list[tuple[float, float]], threshold: float | None) -> None:
    """Bars per score bucket over the whole range; flagged buckets (above threshold) in red."""
    buckets = sorted(buckets)
    les = [le for le, _ in buckets]
    cum = np.array([c for _, c in buckets])
    counts = np.diff(cum, prepend=0.0).clip(min=0.0)
    edges = bucket_edges(les)
    above = edges[1:] > (threshold if threshold is not None else math.inf)
    colors = np.where(above, COLORS["flagged"], COLORS["clean"])
    heights = per_decade(counts, edges)
    ax.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color=colors, alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*occupied(edges, counts))
    ax.set_xlabel("score (bucket bounds of the score histogram)")
    ax.set_ylabel("records per decade of score")
    if threshold is not None:
        ax.axvline(threshold, color=COLORS["threshold"], linestyle="--", linewidth=1.2)
        total = counts.sum()
        flagged = counts[above].sum()
        share = flagged / total if total else 0.0
        ax.text(
            0.98,
            0.95,
            f"threshold {threshold:.4g} (dashed)\n{flagged:,.0f} of {total:,.0f} above: {share:.1%}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "#bbbbbb", "alpha": 0.9},
        )


@dataclass(frozen=True)
class Totals:
    consumed: float
    scored: float
    flagged: float
    dead: float
    threshold: float | None
    detector: str


def counted(prom: Prometheus, expr: str, w: Window) -> dict[tuple[tuple[str, str], ...], float]:
    """What a counter expression counted in the window: its value at the end minus at the
    start, per label set. Exact where ``increase()`` extrapolates; a series that reset (a
    worker restarted) counts from zero."""
    before = {tuple(sorted(lab.items())): v for lab, v in prom.instant(expr, w.start)}
    out = {}
    for lab, v in prom.instant(expr, w.end):
        key = tuple(sorted(lab.items()))
        start = before.get(key, 0.0)
        out[key] = v - start if v >= start else v
    return out


def totals(prom: Prometheus, w: Window) -> Totals:
    sel = f'{{job=~"{w.job}", instance=~"{w.instance}"}}'

    def one(expr: str) -> float | None:
        result = prom.instant(expr, w.end)
        return result[0][1] if result else None

    def increase(name: str) -> float:
        return sum(counted(prom, f"sum({P}{name}{sel})", w).values())

    info = prom.instant(f"{P}detector_info{sel}", w.end)
    name = info[0][0].get("name", "?") if info else "?"
    version = info[0][0].get("version", "") if info else ""
    return Totals(
        consumed=increase("records_consumed_total"),
        scored=increase("records_scored_total"),
        flagged=increase("records_flagged_total"),
        dead=increase("records_dead_lettered_total"),
        threshold=one(f"max({P}detector_threshold{sel})"),
        detector=f"{name} {version}".strip(),
    )


def render(prom: Prometheus, w: Window, out: Path, title: str) -> Totals:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    targets = load_targets()
    tot = totals(prom, w)
    th = tot.threshold
    fig, axes = plt.subplots(4, 2, figsize=(14, 15), dpi=80, layout="constrained")
    (a_rate, a_ratio), (a_heat, a_hist), (a_q, a_dead), (a_lat, a_batch) = axes

    def timeseries(ax: Any, name: str, ylabel: str, **kw: Any) -> None:
        ax.set_title(name, loc="left", fontsize=11, fontweight="bold")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        if draw_lines(ax, prom, w, **kw):
            ax.legend(fontsize=8, loc="upper left")
        else:
            _no_data(ax)

    flagged_red = {"flagged": {"color": COLORS["flagged"]}}
    timeseries(
        a_rate,
        "Records / s",
        "records/s",
        targets=panel(targets, "Records / s")[:4],
        skip_zero=True,
        styles=flagged_red,
    )
    timeseries(
        a_ratio,
        "Adversarial ratio",
        "flagged fraction",
        targets=panel(targets, "Adversarial ratio"),
    )
    a_ratio.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    quantile_styles = {"threshold": {"color": COLORS["threshold"], "linestyle": "--"}}
    timeseries(
        a_q,
        "Score quantiles and threshold",
        "score",
        targets=panel(targets, "Score quantiles"),
        styles=quantile_styles,
    )
    a_q.set_yscale("log")
    timeseries(
        a_dead,
        "Dead letters by reason",
        "records/s",
        targets=panel(targets, "Dead letters by reason"),
        skip_zero=True,
    )
    timeseries(
        a_lat,
        "End-to-end latency (record timestamp to alert ack)",
        "seconds",
        targets=panel(targets, "End-to-end latency"),
    )
    timeseries(
        a_batch,
        "Batch duration (decode, score, publish)",
        "seconds",
        targets=panel(targets, "Batch duration"),
    )

    a_heat.set_title("Score distribution over time", loc="left", fontsize=11, fontweight="bold")
    (heat_expr, _fmt) = panel(targets, "Score distribution")[0]
    heat = prom.range(substitute(heat_expr, w), w)
    if heat:
        draw_heatmap(a_heat, heat, th)
        a_heat.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    else:
        _no_data(a_heat)

    a_hist.set_title("Score histogram over the range", loc="left", fontsize=11, fontweight="bold")
    sel = f'{{job=~"{w.job}", instance=~"{w.instance}"}}'
    hist = counted(prom, f"sum by (le) ({P}instance_score_bucket{sel})", w)
    if hist:
        draw_histogram(a_hist, [(float(dict(key)["le"]), v) for key, v in hist.items()], th)
        a_hist.grid(alpha=0.3)
    else:
        _no_data(a_hist)

    share = tot.flagged / tot.scored if tot.scored else 0.0
    fig.suptitle(
        f"{title}\n{tot.consumed:,.0f} records consumed, {tot.scored:,.0f} scored, "
        f"{tot.flagged:,.0f} flagged ({share:.1%}), {tot.dead:,.0f} dead letters  |  "
        f"detector {tot.detector}, threshold {th if th is not None else float('nan'):.4g}",
        fontsize=13,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    _shrink_png(out)
    return tot


def _shrink_png(path: Path) -> None:
    """Re-save with a 256-colour palette: a third of the size, no visible loss for charts."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--out", type=Path, default=Path("docs/dashboard.png"), help="PNG to write")
    p.add_argument("--minutes", type=float, default=15.0, help="range ending at --end")
    p.add_argument("--start", type=float, help="range start, unix seconds (overrides --minutes)")
    p.add_argument("--end", type=float, help="range end, unix seconds (default now)")
    p.add_argument("--step", type=float, help="seconds between points (default: range/150)")
    p.add_argument(
        "--rate-interval",
        help="window of rate() and increase() (default as Grafana: max(step + scrape "
        "interval, 4 x scrape interval))",
    )
    p.add_argument("--job", default=".*", help="job regex (default all)")
    p.add_argument("--instance", default=".*", help="instance regex (default all)")
    p.add_argument("--title", default="distillation-monitor", help="figure title")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prom = Prometheus(args.prometheus)
    try:
        end = args.end if args.end is not None else time.time()
        start = args.start if args.start is not None else end - args.minutes * 60
        if start >= end:
            raise SnapshotError("the range is empty: --start must be before --end")
        scrape = prom.scrape_interval()
        step = args.step or max((end - start) / 150, scrape)
        rate_interval = args.rate_interval or f"{math.ceil(max(step + scrape, 4 * scrape))}s"
        w = Window(start, end, step, rate_interval, args.job, args.instance)
        tot = render(prom, w, args.out, args.title)
    except SnapshotError as exc:
        print(f"render_snapshot: {exc}", file=sys.stderr)
        return 1
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB): {tot.consumed:.0f} consumed, "
        f"{tot.flagged:.0f} flagged, {tot.dead:.0f} dead letters over {w.range} "
        f"(step {w.step:g}s, rate interval {w.rate_interval})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
