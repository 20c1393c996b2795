"""The bench's results as JSON lines and as a markdown report against the targets of docs/performance.md."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

FULL_RUN_SECONDS, PEAK_RSS_MIB, WRITE_FLOOR_RATIO = 60, 4096, 5  # the first load
INCREMENTAL_SECONDS, READ_FLOOR_RATIO, DAILY_FULL_READ_SECONDS = 15, 10, 30
NOTHING_NEW_SECONDS, SOLD_OUT_TO_SHOWN_OUT_SECONDS, RETURN_RISK_SECONDS = 5, 300, 15
INGEST_ROWS_PER_SECOND = 100_000
RUNS = ("full_run", "incremental", "steady_state", "fast_path", "daily_full_read")
# The time, memory and floor targets are set for this catalog size: below it, fixed costs dominate (the floor is a
# few milliseconds at 2,000 SKUs), so a smaller run reports them without judging them (met: None).
TARGET_SKUS = 1_000_000
Row = tuple[str, str, str, bool | None]


def total(records: Iterable[Record], bench: str) -> Record | None:
    return next((r for r in records if r["bench"] == bench and r.get("step") == "TOTAL"), None)


def step(records: Iterable[Record], bench: str, name: str) -> Record | None:
    return next((r for r in records if r["bench"] == bench and r.get("step") == name), None)


def targets(records: list[Record]) -> list[Row]:
    """(target, goal, measured, met) for every target the records measure."""
    full = total(records, "full_run")
    at_scale = bool(full) and full["skus"] >= TARGET_SKUS

    def judged(met: bool) -> bool | None:
        return met if at_scale else None

    rows: list[Row] = [*_scale_rows(records, judged)] if full else []
    if ingest := total(records, "http_ingest"):
        rows.append(
            (
                "HTTP ingest (the simulator's pages, replayed as recorded)",
                f"≥ {INGEST_ROWS_PER_SECOND:,} rows/s",
                f"{ingest['rows_per_second']:,} rows/s ({ingest['rows']:,} rows in {ingest['seconds']:.1f} s, "
                f"of which the server {ingest['server_seconds']:.1f} s)",
                ingest["rows_per_second"] >= INGEST_ROWS_PER_SECOND,
            )
        )
    for bench in RUNS:
        run = total(records, bench)
        if run and "changed_skus" in run:
            expected = math.ceil(run["changed_skus"] / run["batch_size"])
            goal = (
                "0"
                if bench == "steady_state"
                else f"ceil({run['changed_skus']:,} / {run['batch_size']}) = {expected:,}"
            )
            rows.append(
                (
                    f"storefront writes, {bench}",
                    goal,
                    f"{run['storefront_writes']:,}",
                    run["ok"] and run["storefront_writes"] == expected and (bench != "steady_state" or expected == 0),
                )
            )
    return rows


def _scale_rows(records: list[Record], judged: Any) -> Iterable[Row]:
    full = total(records, "full_run")
    assert full is not None
    runs = [r for b in RUNS if (r := total(records, b))]
    peak = max(r["peak_rss_mib"] for r in runs)
    scale = f"{full['skus']:,} SKUs, {full['receipt_lines']:,} receipt lines"
    yield (
        f"first load wall ({scale})",
        f"≤ {FULL_RUN_SECONDS} s",
        f"{full['seconds']:.1f} s",
        judged(full["ok"] and full["seconds"] <= FULL_RUN_SECONDS),
    )
    yield (
        "first load / write floor",
        f"≤ {WRITE_FLOOR_RATIO}×",
        f"{full['write_floor_ratio']}× (write floor {full['write_floor_seconds']:.2f} s)",
        judged(full["write_floor_ratio"] <= WRITE_FLOOR_RATIO),
    )
    yield ("peak RSS, every run", f"≤ {PEAK_RSS_MIB:,} MiB", f"{peak:,} MiB", judged(peak <= PEAK_RSS_MIB))
    if model := step(records, "full_run", "return_risk"):
        yield (
            "return_risk at this scale (full run's step)",
            f"≤ {RETURN_RISK_SECONDS} s",
            f"{model['seconds']:.1f} s",
            judged(model["ok"] and model["seconds"] <= RETURN_RISK_SECONDS),
        )
    if incremental := total(records, "incremental"):
        yield (
            "3-hourly run wall (over HTTP, read by change)",
            f"≤ {INCREMENTAL_SECONDS} s",
            f"{incremental['seconds']:.1f} s",
            judged(incremental["ok"] and incremental["seconds"] <= INCREMENTAL_SECONDS),
        )
        yield (
            "3-hourly run / read floor",
            f"≤ {READ_FLOOR_RATIO}×",
            f"{incremental['floor_ratio']}× (read floor {incremental['floor_seconds']:.2f} s)",
            judged(incremental["floor_ratio"] <= READ_FLOOR_RATIO),
        )
    if daily := total(records, "daily_full_read"):
        yield (
            "daily full read run wall (catalog, stock and shop whole)",
            f"≤ {DAILY_FULL_READ_SECONDS} s",
            f"{daily['seconds']:.1f} s",
            judged(daily["ok"] and daily["seconds"] <= DAILY_FULL_READ_SECONDS),
        )
    if tick := total(records, "nothing_new"):
        steady = total(records, "steady_state")
        if tick["launched"] and steady:  # the tick found a reason: the nothing-new case costs the run it started
            seconds, what = tick["seconds"] + steady["seconds"], f"tick and run ({tick['reason']})"
        else:
            seconds, what = tick["seconds"], "the schedule's tick, no run started"
        yield (
            "nothing new",
            f"≤ {NOTHING_NEW_SECONDS} s",
            f"{seconds:.2f} s: {what}",
            judged(seconds <= NOTHING_NEW_SECONDS),
        )
    if fast := total(records, "fast_path"):
        latency = fast["poll_seconds"] + fast["tick_seconds"] + fast["seconds"]
        yield (
            "sold out to shown out (fast path, worst case)",
            f"≤ {SOLD_OUT_TO_SHOWN_OUT_SECONDS} s",
            f"{latency:.1f} s: sensor every {fast['poll_seconds']} s + tick {fast['tick_seconds']:.2f} s "
            f"+ run {fast['seconds']:.1f} s",
            judged(fast["ok"] and latency <= SOLD_OUT_TO_SHOWN_OUT_SECONDS),
        )


MET = {True: "yes", False: "NO", None: f"not judged below {TARGET_SKUS:,} SKUs"}


def markdown(records: list[Record], command: str) -> str:
    machine = next((r for r in records if r["bench"] == "machine"), {})
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB; DuckDB {machine.get('duckdb')}, "
        f"Dagster {machine.get('dagster')}; {machine.get('at', '')[:16]}",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
        *(f"| {t} | {goal} | {got} | {MET[met]} |" for t, goal, got, met in targets(records)),
    ]
    runs = [b for b in RUNS if total(records, b)]
    if runs:
        steps = list(dict.fromkeys(r["step"] for r in records if r["bench"] in runs))
        by = {(r["bench"], r["step"]): r for r in records if r["bench"] in runs}
        lines += [
            "",
            "| step | " + " | ".join(f"{b} s | {b} peak MiB" for b in runs) + " |",
            "|---|" + "---:|---:|" * len(runs),
        ]
        for step in steps:
            cells = [
                (by.get((b, step), {}).get("seconds", ""), by.get((b, step), {}).get("peak_rss_mib", "")) for b in runs
            ]
            lines.append(f"| {step} | " + " | ".join(f"{s} | {m}" for s, m in cells) + " |")
    ingest = [r for r in records if r["bench"] == "http_ingest"]
    if ingest:
        lines += ["", "| feed over HTTP | rows | s | of which the server s | rows/s |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {r['step']} | {r['rows']:,} | {r['seconds']} | {r['server_seconds']} | {r['rows_per_second']:,} |"
            for r in ingest
        ]
    executors = [r for r in records if r["bench"] == "executors"]
    if executors:
        lines += [
            "",
            f"| executor ({executors[0]['skus']:,}-SKU demo world) | run s | steps | sum of step s | processes "
            "| most steps at once |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['step']} | {r['seconds']} | {r['steps']} | {r['step_seconds']} | {r['processes']} "
            f"| {r['most_at_once']} |"
            for r in executors
        ]
    return "\n".join(lines) + "\n"


def save(records: list[Record], out: Path, command: str) -> str:
    """Write `results.jsonl` and `results.md` in `out`; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = markdown(records, command)
    (out / "results.md").write_text(text)
    return text
