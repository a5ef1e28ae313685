"""The benchmark's table, ratios and targets, from one run's results (a plain dict)."""

from __future__ import annotations

from typing import Any

SCORE_BATCH = 512  # the worker's default max batch size: the serial bound uses this one

# (key, what, passes(results) -> bool | None)
TARGET_TEXT = {
    "worker_vs_serial": "worker (at-least-once) >= 80% of the serial bound (digits)",
    "eos_vs_alo": "exactly-once within 2x of at-least-once",
    "worker_vs_naive": "worker >= 300x the naive baseline",
    "p99_latency": "p99 latency < 250 ms at the steady load",
    "peak_rss": "peak RSS < 1.5 GB during the backlog",
}


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Serial bound, ratios and target verdicts for the digits detector (and the CNN's bound)."""
    out: dict[str, Any] = {}
    for name in ("digits", "cnn"):
        d = r.get(name)
        if not d or "consume" not in d or "score" not in d:
            continue
        c, dec = d["consume"]["rate"], d["decode"]["rate"]
        s = d["score"].get(str(SCORE_BATCH)) or max(d["score"].values())
        serial = 1.0 / (1.0 / c + 1.0 / dec + 1.0 / s)
        slowest = min(c, dec, s)
        ratios: dict[str, float] = {"serial_bound": serial, "min_stage": slowest}
        alo = d.get("worker_alo", {}).get("rate")
        if alo:
            ratios["worker_vs_serial"] = alo / serial
            ratios["worker_vs_min_stage"] = alo / slowest
            if d.get("naive"):
                ratios["worker_vs_naive"] = alo / d["naive"]["rate"]
            if d.get("worker_eos"):
                ratios["eos_vs_alo"] = d["worker_eos"]["rate"] / alo
            if d.get("scale_out"):
                ratios["two_vs_one_worker"] = d["scale_out"]["rate"] / alo
        out[name] = ratios
    digits = out.get("digits", {})
    rss = [
        max(run["peak_rss_mb"])
        for key in ("worker_alo", "worker_eos")
        if (run := r.get("digits", {}).get(key))
    ]
    steady = r.get("digits", {}).get("steady")
    verdicts: dict[str, bool | None] = {
        "worker_vs_serial": _at_least(digits.get("worker_vs_serial"), 0.8),
        "eos_vs_alo": _at_least(digits.get("eos_vs_alo"), 0.5),
        "worker_vs_naive": _at_least(digits.get("worker_vs_naive"), 300),
        "p99_latency": None if not steady else steady["p99_ms"] < 250,
        "peak_rss": None if not rss else max(rss) < 1500,
    }
    out["targets"] = verdicts
    return out


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def table(r: dict[str, Any], derived: dict[str, Any]) -> str:
    """The text printed at the end of a run (also pasted in the README fragment)."""
    lines: list[str] = []
    add = lines.append
    meta = r["meta"]
    add(f"distillation-monitor benchmark ({'quick' if meta['quick'] else 'full'} run)")
    add(f"machine: {meta['machine']}")
    add("")
    add(f"{'stage':<58} {'records/s':>12}  notes")
    for name in ("digits", "cnn"):
        d = r.get(name)
        if not d:
            continue
        add(f"-- {name} detector: {d['describe']}")
        if "prepare" in d:
            p = d["prepare"]
            add(
                f"{'0 prepare: produce the backlog':<58} {_rate(p['records_per_s']):>12}  "
                f"{p['records']:,} records of {p['bytes']:.0f} B, {p['partitions']} partitions"
            )
        if "consume" in d:
            add(
                f"{'1 raw consume (confluent-kafka, discard)':<58} {_rate(d['consume']['rate']):>12}"
            )
        for size, rate in d.get("score", {}).items():
            add(f"{f'2 raw scoring, batch {size}':<58} {_rate(rate):>12}")
        if "decode" in d:
            add(
                f"{'3 decode (RecordDecoder, batches of 512)':<58} {_rate(d['decode']['rate']):>12}"
            )
        for key, what in (
            ("worker_alo", "4 worker, at-least-once"),
            ("worker_eos", "4 worker, exactly-once"),
        ):
            if run := d.get(key):
                add(
                    f"{what:<58} {_rate(run['rate']):>12}  {run['records']:,} records in "
                    f"{run['seconds']:.1f} s, peak RSS {max(run['peak_rss_mb']):.0f} MB, "
                    f"alerts {run['alerts']:,}/{run['expected_alerts']:,} expected"
                )
        if n := d.get("naive"):
            add(
                f"{'5 naive loop (poll 1, json, predict 1, commit 1)':<58} {_rate(n['rate']):>12}  {n['records']:,} records"
            )
        if s := d.get("steady"):
            add(
                f"{'6 steady ' + format(s['rate'], ',.0f') + ' records/s for ' + format(s['seconds'], '.0f') + ' s':<58} "
                f"{_rate(s['achieved_rate']):>12}  latency p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, "
                f"p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms over {s['alerts']:,} alerts; "
                f"peak RSS {s['peak_rss_mb']:.0f} MB"
            )
        if so := d.get("scale_out"):
            add(
                f"{'8 two workers, one group, 4 partitions':<58} {_rate(so['rate']):>12}  "
                f"peak RSS {', '.join(f'{m:.0f}' for m in so['peak_rss_mb'])} MB"
            )
        if ratios := derived.get(name):
            add(
                f"{'   serial bound 1/(1/consume + 1/decode + 1/score@512)':<58} {_rate(ratios['serial_bound']):>12}"
            )
            add(
                f"{'   slowest stage min(consume, decode, score@512)':<58} {_rate(ratios['min_stage']):>12}"
            )
            for key, what in (
                ("worker_vs_serial", "worker / serial bound"),
                ("worker_vs_min_stage", "worker / min(stages)"),
                ("worker_vs_naive", "worker / naive"),
                ("eos_vs_alo", "exactly-once / at-least-once"),
                ("two_vs_one_worker", "two workers / one worker"),
            ):
                if key in ratios:
                    add(f"   {what:<55} {ratios[key]:>12.2f}")
    add("")
    add("targets")
    for key, verdict in derived["targets"].items():
        mark = "n/a " if verdict is None else ("PASS" if verdict else "MISS")
        add(f"  {mark}  {TARGET_TEXT[key]}")
    if meta["quick"]:
        add("  (quick run: smaller backlog and shorter steady load than the targets assume)")
    return "\n".join(lines)
