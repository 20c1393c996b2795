"""The bench's results as JSON lines and as a markdown report against the targets of docs/performance.md."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

FULL_RUN_SECONDS, FULL_RUN_RSS_MIB, FLOOR_RATIO = 60, 4096, 5
INCREMENTAL_SECONDS, INGEST_ROWS_PER_SECOND = 15, 100_000
# The time, memory and floor targets are set for this catalog size: below it, fixed costs dominate (the floor is a
# few milliseconds at 2,000 SKUs), so a smaller run reports them without judging them (met: None).
TARGET_SKUS = 1_000_000


def total(records: Iterable[Record], bench: str) -> Record | None:
    return next((r for r in records if r["bench"] == bench and r.get("step") == "TOTAL"), None)


def targets(records: list[Record]) -> list[tuple[str, str, str, bool | None]]:
    """(target, goal, measured, met) for every target the records measure."""
    rows: list[tuple[str, str, str, bool | None]] = []
    full, incremental, steady = (total(records, b) for b in ("full_run", "incremental", "steady_state"))
    ingest = total(records, "http_ingest")
    if full:
        scale = f"{full['skus']:,} SKUs, {full['receipt_lines']:,} receipt lines"
        at_scale = full["skus"] >= TARGET_SKUS
        rows += [
            (
                f"full run wall ({scale})",
                f"≤ {FULL_RUN_SECONDS} s",
                f"{full['seconds']:.1f} s",
                full["ok"] and full["seconds"] <= FULL_RUN_SECONDS if at_scale else None,
            ),
            (
                "full run peak RSS",
                f"≤ {FULL_RUN_RSS_MIB:,} MiB",
                f"{full['peak_rss_mib']:,} MiB",
                full["peak_rss_mib"] <= FULL_RUN_RSS_MIB if at_scale else None,
            ),
            (
                "full run / floor",
                f"≤ {FLOOR_RATIO}×",
                f"{full['floor_ratio']}× (floor {full['floor_seconds']:.2f} s)",
                full["floor_ratio"] <= FLOOR_RATIO if at_scale else None,
            ),
        ]
    if incremental:
        rows.append(
            (
                "incremental run wall (over HTTP)",
                f"≤ {INCREMENTAL_SECONDS} s",
                f"{incremental['seconds']:.1f} s",
                incremental["ok"] and incremental["seconds"] <= INCREMENTAL_SECONDS
                if incremental["skus"] >= TARGET_SKUS
                else None,
            )
        )
    if ingest:
        rows.append(
            (
                "HTTP ingest from the simulator",
                f"≥ {INGEST_ROWS_PER_SECOND:,} rows/s",
                f"{ingest['rows_per_second']:,} rows/s ({ingest['rows']:,} rows)",
                ingest["rows_per_second"] >= INGEST_ROWS_PER_SECOND,
            )
        )
    for run in (full, incremental):
        if run:
            expected = math.ceil(run["changed_skus"] / run["batch_size"])
            rows.append(
                (
                    f"storefront writes, {run['bench']}",
                    f"ceil({run['changed_skus']:,} / {run['batch_size']}) = {expected:,}",
                    f"{run['storefront_writes']:,}",
                    run["ok"] and run["storefront_writes"] == expected,
                )
            )
    if steady:
        rows.append(
            (
                "storefront writes, steady state",
                "0",
                f"{steady['storefront_writes']:,}",
                steady["ok"] and steady["storefront_writes"] == 0,
            )
        )
    return rows


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
    runs = [b for b in ("full_run", "incremental", "steady_state") if total(records, b)]
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
        lines += ["", "| feed over HTTP | rows | s | rows/s |", "|---|---:|---:|---:|"]
        lines += [f"| {r['step']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_second']:,} |" for r in ingest]
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
