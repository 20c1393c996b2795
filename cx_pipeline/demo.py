"""`cx-pipeline demo`: run the whole pipeline once against the bundled demo world and summarise it."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from cx_pipeline import staleness, warehouse
from cx_pipeline.feeds import FEEDS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("WMS", "CATALOG", "OMS", "HELPDESK", "NOTIFY", "STOREFRONT")


def load_definitions() -> Any:
    """The project's Dagster definitions. They live beside the library in the checkout (definitions.py,
    assets/, checks/), not in site-packages, so the demo needs an editable install from a checkout."""
    path = PROJECT_ROOT / "definitions.py"
    if not path.exists():
        sys.exit(f"cx-pipeline demo needs the project checkout (no {path}): install with `pip install -e .`")
    sys.path.insert(0, str(PROJECT_ROOT))
    spec = importlib.util.spec_from_file_location("cx_definitions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


def point_at(url: str, token: str, warehouse_path: Path) -> None:
    """Configure every upstream resource for the simulator through the same env vars production uses; the
    review app's store sits beside the warehouse."""
    for system in SYSTEMS:
        os.environ[f"CX_{system}_URL"] = url
        os.environ[f"CX_{system}_TOKEN"] = token
    os.environ["CX_STOREFRONT_ADAPTER"] = "rest"
    os.environ["CX_WAREHOUSE_PATH"] = str(warehouse_path)
    os.environ["CX_APP_DB"] = str(warehouse_path.with_name("app.sqlite"))


def run_demo(data_dir: Path, seed: int, skus: int) -> int:
    from cx_pipeline.simulator import Simulator, build_world

    data_dir.mkdir(parents=True, exist_ok=True)
    warehouse_path = data_dir / "warehouse.duckdb"
    # A fresh warehouse each time; the review app's store (users, decisions) is kept, so decisions made in
    # `cx-pipeline serve` between two demo runs are honoured by the second.
    for stale in (warehouse_path, warehouse_path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    print(f"Generating the demo world (seed {seed}, {skus:,} SKUs)...", flush=True)
    world = build_world(seed=seed, n_skus=skus)
    defs = load_definitions()
    with Simulator(world=world).start() as sim:
        print(f"Simulator serving WMS, catalog, OMS, helpdesk, notifications and storefront on {sim.url}", flush=True)
        point_at(sim.url, sim.token, warehouse_path)
        started = time.monotonic()
        # An ephemeral instance: the demo keeps its outputs in the warehouse, not in Dagster's run history.
        result = defs.resolve_job_def("cx_pipeline_job").execute_in_process(
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        checks = result.get_asset_check_evaluations()
        elapsed = time.monotonic() - started
    print_summary(warehouse_path, checks, result.success, elapsed)
    return 0 if result.success and all(c.passed for c in checks) else 1


def _counts(rows: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in rows) or "none"


def print_summary(warehouse_path: Path, checks: list[Any], success: bool, elapsed: float) -> None:
    passed = {c.asset_key.path[-1]: c.passed for c in checks}
    with warehouse.connect(warehouse_path, read_only=True) as con:
        print(f"\n{'Run succeeded' if success else 'Run FAILED'} in {elapsed:.1f} s.\n")
        print(f"{'feed':<22}{'rows':>9}{'new':>9}{'updated':>9}  contract")
        for feed in FEEDS.values():
            row = warehouse.one(
                con,
                "SELECT rows_fetched, rows_new, rows_updated FROM ingest_batches WHERE feed = ? "
                "ORDER BY fetched_at DESC LIMIT 1",
                [feed.name],
            ) or (0, 0, 0)
            verdict = {True: "passed", False: "FAILED", None: "not run"}[passed.get(feed.table)]
            print(f"{feed.table:<22}{row[0]:>9,}{row[1]:>9,}{row[2]:>9,}  {verdict}")
        (quarantined,) = warehouse.one(con, "SELECT count(*) FROM quarantine WHERE released_at IS NULL")
        receipts = warehouse.one(
            con,
            """
            SELECT count(*), count(*) FILTER (WHERE qty_damaged > 0),
                   count(DISTINCT sku) FILTER (WHERE qty_damaged > 0)
            FROM valid_receipts""",
        )
        orders = warehouse.one(con, "SELECT count(DISTINCT order_id) FROM valid_open_orders WHERE status = 'open'")
        inquiries = con.execute(
            "SELECT reason, count(*) FROM valid_inquiries GROUP BY reason ORDER BY count(*) DESC"
        ).fetchall()
        discrepancies = con.execute(
            "SELECT kind, count(*) FROM receipt_discrepancies WHERE status <> 'resolved' GROUP BY kind ORDER BY kind"
        ).fetchall()
        notices = warehouse.one(
            con, "SELECT count(*) FILTER (status = 'sent'), count(*) FILTER (status = 'planned') FROM notice_ledger"
        )
        notice_causes = con.execute(
            "SELECT cause, count(*) FROM notice_ledger WHERE status = 'sent' GROUP BY cause ORDER BY cause"
        ).fetchall()
        plan = warehouse.one(
            con,
            """SELECT adapter, changes, catalog_size, to_out_of_stock, back_in_stock, quantity_only, plan_id
            FROM push_plans ORDER BY planned_at DESC LIMIT 1""",
        )
        pushed = warehouse.one(
            con,
            "SELECT count(*) FILTER (ok), count(*) FILTER (NOT ok) FROM push_audit WHERE plan_id = ?",
            [plan[6] if plan else ""],
        )
    print(f"\nQuarantined rows (broke a contract, kept for review): {quarantined}")
    print(f"Receipt lines: {receipts[0]:,}; with damaged units: {receipts[1]:,} across {receipts[2]:,} SKUs")
    print(f"Open customer orders: {orders[0]:,}")
    print("Inquiries by reason: " + ", ".join(f"{reason} {n:,}" for reason, n in inquiries))
    print("\nReceipt discrepancies (PO lines) by kind: " + _counts(discrepancies))
    print(f"Delay notices: {notices[0]:,} sent to customers ({_counts(notice_causes)}); {notices[1]:,} still to send")
    if plan:
        print(
            f"Storefront ({plan[0]}): {plan[1]:,} changes planned of {plan[2]:,} listed SKUs: {plan[3]:,} to out of "
            f"stock, {plan[4]:,} back in stock, {plan[5]:,} quantity only; {pushed[0]:,} pushed, {pushed[1]:,} failed"
        )
    print_review_queue(warehouse_path)
    print(f"\nWarehouse: {warehouse_path}")
    print(
        f"Explore:   duckdb {warehouse_path}   (raw_*, valid_*, receipt_discrepancies, notice_ledger, "
        "stock_position, push_changes, push_audit, stale_products)"
    )
    print("Dagster UI: cx-pipeline simulate  and, in another shell,  dagster dev -w workspace.yaml")


def print_review_queue(warehouse_path: Path) -> None:
    app_db = warehouse_path.with_name("app.sqlite")
    with warehouse.connect(warehouse_path, read_only=True) as con:
        assessed = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stale_products'"
        if not warehouse.one(con, assessed)[0]:
            print("\nStale-product review: not assessed (see the run's errors above)")
            return
        counts = staleness.queue_summary(con)
        by_reason = staleness.queue_by(con, "reason")
        top = staleness.queue(con, limit=5)
    print(
        f"\nStale-product review: {counts['long_registered']:,} long-registered products, "
        f"{counts['flagged_long_registered']:,} of them flagged; {counts['queue']:,} in the review queue "
        f"({counts['never_reviewed']:,} never reviewed, {counts['due_again']:,} due again, "
        f"{counts['material_change']:,} back after a material change; {counts['decided_not_due']:,} decided, not due)"
    )
    print("  by reason: " + _counts(list(by_reason.itertuples(index=False, name=None))))
    for row in top.itertuples(index=False):
        print(f"  {row.sku} {row.title} ({row.category}, score {row.score:.1f}): {row.reasons}")
    print(f"  full queue: {warehouse_path.parent / 'reports' / 'stale_products_queue.csv'}")
    print(
        f"Review app: cx-pipeline users add NAME --role merchandiser --app-db {app_db}\n"
        f"            cx-pipeline serve --app-db {app_db}      (then open http://127.0.0.1:8080)"
    )
