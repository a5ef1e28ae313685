"""The benchmark's table, ratios and targets, from one run's results (a plain dict)."""

from __future__ import annotations

from typing import Any

TARGET_TEXT = {
    "json_decode": "JSON decode >= 0.5x raw consume (digits)",
    "protobuf_decode": "protobuf decode >= 1.0x raw consume (digits)",
    "worker_json": "worker, at-least-once, JSON >= 0.2x min(raw consume, raw scoring) (digits)",
    "worker_protobuf": "worker, at-least-once, protobuf >= 0.4x min(raw consume, raw scoring)"
    " (digits)",
    "cnn_rss": "CNN backlog peak RSS < 1.5 GB, JSON and protobuf",
    "p99_latency": "p99 record-to-alert latency < 250 ms at the steady load",
    "eos_vs_alo": "exactly-once >= 0.9x at-least-once",
    "alerts": "every worker run alerted on exactly the records flagged offline, each once",
    "worker_vs_serial": "worker (at-least-once) >= 80% of the serial bound (digits)",
    "worker_vs_naive": "worker >= 300x the naive baseline",
    "peak_rss": "digits backlog peak RSS < 1.5 GB",
}
#: Result sections: (key, the JSON section that measured its scoring, title).
SECTIONS = (
    ("digits", "digits", "digits detector"),
    ("digits_pb", "digits", "digits detector, v2 protobuf records"),
    ("cnn", "cnn", "cnn detector"),
    ("cnn_pb", "cnn", "cnn detector, v2 protobuf records"),
)
WORKER_RUNS = ("worker_alo", "worker_eos", "worker_tuned")


TUNED_BATCH = 4096  # the "tuned" run: larger batches than the default, nothing else changed


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratios(d: dict[str, Any], scores: dict[str, float], batch: str) -> dict[str, float]:
    """Bounds and ratios of one section; ``scores`` is raw scoring by batch size."""
    c, dec = d["consume"]["rate"], d["decode"]["rate"]
    out: dict[str, float] = {"decode_vs_consume": dec / c}
    if floor := d.get("decode_floor"):
        out["parse_vs_consume"] = floor["parse"] / c
        out["floor_vs_consume"] = floor["both"] / c
    s = scores.get(batch)
    if s is None:
        return out
    serial = 1.0 / (1.0 / c + 1.0 / dec + 1.0 / s)
    out |= {"serial_bound": serial, "min_stage": min(c, dec, s), "consume_or_score": min(c, s)}
    alo = d.get("worker_alo", {}).get("rate")
    if alo:
        out["worker_vs_serial"] = alo / serial
        out["worker_vs_min_stage"] = alo / out["min_stage"]
        out["worker_vs_consume_or_score"] = alo / out["consume_or_score"]
        if d.get("naive"):
            out["worker_vs_naive"] = alo / d["naive"]["rate"]
        if d.get("worker_eos"):
            out["eos_vs_alo"] = d["worker_eos"]["rate"] / alo
        if d.get("scale_out"):
            out["two_vs_one_worker"] = d["scale_out"]["rate"] / alo
    tuned = d.get("worker_tuned")
    if tuned and str(TUNED_BATCH) in scores:
        at = 1.0 / (1.0 / c + 1.0 / dec + 1.0 / scores[str(TUNED_BATCH)])
        out["tuned_serial_bound"] = at
        out["tuned_vs_serial"] = tuned["rate"] / at
    return out


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Bounds, ratios and target verdicts of every section."""
    out: dict[str, Any] = {}
    batch = str(r["meta"]["worker_batch"])  # the serial bound scores batches of this size
    for name, scored_in, _title in SECTIONS:
        d = r.get(name)
        if d and "consume" in d and "decode" in d:
            out[name] = _ratios(d, r.get(scored_in, {}).get("score", {}), batch)
    digits, digits_pb = out.get("digits", {}), out.get("digits_pb", {})
    rss = [
        max(run["peak_rss_mb"])
        for key in ("worker_alo", "worker_eos")
        if (run := r.get("digits", {}).get(key))
    ]
    cnn_rss = [
        max(run["peak_rss_mb"])
        for name in ("cnn", "cnn_pb")
        if (run := r.get(name, {}).get("worker_alo"))
    ]
    runs = [
        run for name, _, _ in SECTIONS for key in WORKER_RUNS if (run := r.get(name, {}).get(key))
    ]
    steady = r.get("digits", {}).get("steady")
    verdicts: dict[str, bool | None] = {
        "json_decode": _at_least(digits.get("decode_vs_consume"), 0.5),
        "protobuf_decode": _at_least(digits_pb.get("decode_vs_consume"), 1.0),
        "worker_json": _at_least(digits.get("worker_vs_consume_or_score"), 0.2),
        "worker_protobuf": _at_least(digits_pb.get("worker_vs_consume_or_score"), 0.4),
        "cnn_rss": None if len(cnn_rss) < 2 else max(cnn_rss) < 1500,
        "p99_latency": None if not steady else steady["p99_ms"] < 250,
        "eos_vs_alo": _at_least(digits.get("eos_vs_alo"), 0.9),
        "alerts": None
        if not runs
        else all(
            run.get("exactly_flagged", True) and a == run["expected_alerts"]
            for run in runs
            for a in run["all_alerts"]
        ),
        "worker_vs_serial": _at_least(digits.get("worker_vs_serial"), 0.8),
        "worker_vs_naive": _at_least(digits.get("worker_vs_naive"), 300),
        "peak_rss": None if not rss else max(rss) < 1500,
    }
    out["targets"] = verdicts
    return out


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def table(r: dict[str, Any], derived: dict[str, Any]) -> str:
    """The text printed at the end of a run (also pasted in the README fragment)."""
    lines: list[str] = []

    def row(label: str, rate: float | None, note: str = "") -> None:
        lines.append(f"{label:<58} {_rate(rate):>12}  {note}".rstrip())

    meta = r["meta"]
    batch = meta["worker_batch"]
    lines += [
        f"distillation-monitor benchmark ({'quick' if meta['quick'] else 'full'} run)",
        f"machine: {meta['machine']}",
        "",
        f"{'stage':<58} {'records/s':>12}  notes",
    ]
    for name, _scored_in, title in SECTIONS:
        d = r.get(name)
        if not d:
            continue
        lines.append(f"-- {title}: {d['describe']}")
        if p := d.get("prepare"):
            row(
                "0 prepare: produce the backlog",
                p["records_per_s"],
                f"{p['records']:,} records of {p['bytes']:.0f} B, {p['partitions']} partitions",
            )
        if c := d.get("consume"):
            row("1 raw consume (confluent-kafka, discard)", c["rate"])
        for size, rate in d.get("score", {}).items():
            row(f"2 raw scoring, batch {size}", rate)
        if dec := d.get("decode"):
            row(f"3 decode (RecordDecoder, batches of {batch})", dec["rate"])
        if floor := d.get("decode_floor"):
            row("3 decode floor: simdjson parse of the instances alone", floor["parse"])
            row("3 decode floor: skeleton check alone", floor["check"])
            row("3 decode floor: both, nothing else", floor["both"])
        for key, what in (
            ("worker_alo", "4 worker, at-least-once"),
            ("worker_eos", "4 worker, exactly-once"),
            ("worker_tuned", f"4 worker, at-least-once, --max-batch-size {TUNED_BATCH}"),
        ):
            if run := d.get(key):
                rates = run.get("rates", [run["rate"]])
                tries = (
                    f"best of {', '.join(f'{r:,.0f}' for r in rates)}; " if len(rates) > 1 else ""
                )
                alerts = "/".join(f"{a:,}" for a in run.get("all_alerts", [run["alerts"]]))
                cpu = ""
                if run.get("cpu_us_worker") is not None:
                    cpu = (
                        f", CPU/record {run['cpu_us_worker']:.1f} us worker + "
                        f"{run.get('cpu_us_decoders') or 0:.1f} us decoding"
                    )
                row(
                    what,
                    run["rate"],
                    f"{tries}{run['records']:,} records in {run['seconds']:.1f} s, peak RSS "
                    f"{max(run['peak_rss_mb']):.0f} MB, alerts {alerts} of "
                    f"{run['expected_alerts']:,} expected{cpu}",
                )
        if n := d.get("naive"):
            row(
                "5 naive loop (poll 1, json, predict 1, commit 1)",
                n["rate"],
                f"{n['records']:,} records",
            )
        if s := d.get("steady"):
            settings = " ".join(meta.get("worker_options") or []) or "default settings"
            row(
                f"6 steady {s['rate']:,.0f} records/s for {s['seconds']:.0f} s ({settings})",
                s["achieved_rate"],
                f"latency p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, p99 "
                f"{s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms over {s['alerts']:,} alerts; "
                f"peak RSS {s['peak_rss_mb']:.0f} MB",
            )
        if so := d.get("scale_out"):
            row(
                "8 two workers, one group, 4 partitions",
                so["rate"],
                f"peak RSS {', '.join(f'{m:.0f}' for m in so['peak_rss_mb'])} MB",
            )
        if ratios := derived.get(name):
            if "serial_bound" in ratios:
                row(
                    f"   serial bound 1/(1/consume + 1/decode + 1/score@{batch})",
                    ratios["serial_bound"],
                )
                row(f"   slowest stage min(consume, decode, score@{batch})", ratios["min_stage"])
                row(f"   min(consume, score@{batch})", ratios["consume_or_score"])
            for key, what in (
                ("decode_vs_consume", "decode / raw consume"),
                ("parse_vs_consume", "simdjson parse alone / raw consume"),
                ("floor_vs_consume", "decode floor (parse + skeleton check) / raw consume"),
                ("worker_vs_consume_or_score", f"worker / min(consume, score@{batch})"),
                ("worker_vs_serial", "worker / serial bound"),
                ("worker_vs_min_stage", "worker / min(stages)"),
                ("worker_vs_naive", "worker / naive"),
                ("eos_vs_alo", "exactly-once / at-least-once"),
                ("two_vs_one_worker", "two workers / one worker"),
                ("tuned_vs_serial", f"tuned worker / serial bound at batch {TUNED_BATCH}"),
            ):
                if key in ratios:
                    lines.append(f"   {what:<55} {ratios[key]:>12.2f}")
    lines += ["", "targets"]
    for key, verdict in derived["targets"].items():
        mark = "n/a " if verdict is None else ("PASS" if verdict else "FAIL")
        lines.append(f"  {mark}  {TARGET_TEXT[key]}")
    if meta["quick"]:
        lines.append(
            "  (quick run: smaller backlog and shorter steady load than the targets assume)"
        )
    return "\n".join(lines)
