"""`cx-pipeline demo`: run the whole pipeline once against the bundled demo world and summarise it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from cx_pipeline import warehouse
from cx_pipeline.core.sql import first_row
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.review import staleness

SYSTEMS = ("WMS", "CATALOG", "OMS", "HELPDESK", "NOTIFY", "STOREFRONT")


def load_definitions() -> dg.Definitions:
    """The code location's definitions, with resources built from the environment as it is now (after
    `point_at` aimed it at a simulator)."""
    from cx_pipeline.definitions import build_defs  # late: loading the definitions loads every room's assets

    return build_defs()


def simulator_env(url: str, token: str, warehouse_path: Path) -> dict[str, str]:
    """The env vars production uses, aimed at a simulator at `url`; the review app's store sits beside the
    warehouse."""
    return {
        **{f"CX_{system}_URL": url for system in SYSTEMS},
        **{f"CX_{system}_TOKEN": token for system in SYSTEMS},
        "CX_STOREFRONT_ADAPTER": "rest",
        "CX_WAREHOUSE_PATH": str(warehouse_path),
        "CX_APP_DB": str(warehouse_path.with_name("app.sqlite")),
    }


def point_at(url: str, token: str, warehouse_path: Path) -> None:
    """Configure every resource for the simulator through the same env vars production uses."""
    os.environ.update(simulator_env(url, token, warehouse_path))


STOREFRONTS = ("rest", "vendure")
DEFAULT_SKUS = {"rest": 2000, "vendure": 200}  # every SKU becomes a Vendure product: 200 take about a minute
VENDURE_ORDERS = 10  # paid orders placed in the Vendure shop (each is seven admin API calls)
VENDURE_LOCATIONS = {"WH-WEST": "Default Stock Location", "WH-EAST": "East"}  # the world's warehouses


def run_demo(data_dir: Path, seed: int, skus: int | None = None, storefront: str = "rest") -> int:
    from cx_pipeline.simulator import build_world

    if storefront == "vendure" and (missing := vendure_missing()):
        print(f"cx-pipeline demo --storefront vendure: {missing}", file=sys.stderr)
        return 2
    skus = skus or DEFAULT_SKUS[storefront]
    now = demo_clock(data_dir, seed, skus, storefront)
    print(f"Generating the demo world (seed {seed}, {skus:,} SKUs, clock {now:%Y-%m-%d %H:%M} UTC)...", flush=True)
    result, elapsed = run_on_world(build_world(seed=seed, n_skus=skus, now=now), data_dir, storefront)
    checks = result.get_asset_check_evaluations()
    print_summary(data_dir / "warehouse.duckdb", checks, result.success, elapsed)
    return 0 if result.success and all(c.passed for c in checks) else 1


def run_on_world(world: Any, data_dir: Path, storefront: str = "rest") -> tuple[Any, float]:
    """Serve `world` on 127.0.0.1 and run the whole job once into a fresh warehouse in `data_dir`; returns the
    run's result and its duration. The app store beside it (users, decisions, inspections) is kept, so
    decisions made in `cx-pipeline serve` between two demo runs are honoured by the second. With `storefront`
    vendure, a real Vendure shop seeded with the world's catalog is the catalog, the order source and the shop
    pushed to; the simulator stays the WMS (the stock truth), the helpdesk and the notification service."""
    from cx_pipeline.simulator import Simulator

    data_dir.mkdir(parents=True, exist_ok=True)
    warehouse_path = data_dir / "warehouse.duckdb"
    for stale in (warehouse_path, warehouse_path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    if storefront == "vendure":  # the simulator's helpdesk cannot name Vendure's orders (Vendure makes their codes)
        world = dataclasses.replace(world, inquiries=world.inquiries.assign(order_id=None))
    loaded = seed_qa_history(world, warehouse_path.with_name("app.sqlite"))
    if loaded:
        print(f"QA's inspection history loaded into the app store: {loaded:,} lots (one CSV upload)", flush=True)
    with Simulator(world=world).start() as sim, ExitStack() as stack:
        print(f"Simulator serving WMS, catalog, OMS, helpdesk, notifications and storefront on {sim.url}", flush=True)
        point_at(sim.url, sim.token, warehouse_path)
        shop = stack.enter_context(vendure_shop(world)) if storefront == "vendure" else None
        defs = load_definitions()  # after the environment names the sources and the shop
        started = time.monotonic()
        # An ephemeral instance: the demo keeps its outputs in the warehouse, not in Dagster's run history.
        result = defs.resolve_job_def("cx_pipeline_job").execute_in_process(
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        elapsed = time.monotonic() - started
        if shop is not None:
            print_vendure_view(shop, warehouse_path)
        return result, elapsed


def vendure_missing() -> str:
    """What to install for a Vendure shop, or "" when Node.js and npm are there."""
    from cx_pipeline.simulator.vendure_shop import NodeMissing, ensure_installed

    try:
        ensure_installed()
    except NodeMissing as exc:
        return str(exc)
    return ""


@contextmanager
def vendure_shop(world: Any) -> Iterator[Any]:
    """A real Vendure shop holding the world's catalog and a few paid orders, with the environment aimed at it
    as the catalog and order source and the storefront (the stock truth stays the simulator's WMS)."""
    from cx_pipeline.simulator.vendure_shop import VendureServer

    print("Starting a Vendure shop on 127.0.0.1 (Node.js)...", flush=True)
    with VendureServer() as shop:
        started = time.monotonic()
        products = shop.seed_world(world, orders=VENDURE_ORDERS)
        shop.create_stock_location(VENDURE_LOCATIONS["WH-EAST"])
        print(
            f"Vendure shop at {shop.admin_url}: {len(products):,} products (category and supplier as facets), "
            f"{VENDURE_ORDERS} paid orders, set up in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        os.environ.update(vendure_env(shop.admin_url, shop.username, shop.password))
        yield shop


def vendure_env(admin_url: str, username: str, password: str) -> dict[str, str]:
    """The env vars production uses for Vendure as catalog and order source and as the storefront."""
    login = {"URL": admin_url, "USERNAME": username, "PASSWORD": password}
    return {
        "CX_CATALOG_SOURCE": "vendure",
        "CX_OMS_SOURCE": "vendure",
        **{f"CX_{role}_{name}": value for role in ("CATALOG", "OMS", "STOREFRONT") for name, value in login.items()},
        "CX_OMS_WAREHOUSE": "WH-WEST",
        "CX_OMS_PROMISE_DAYS": "3",
        "CX_STOREFRONT_ADAPTER": "vendure",
        "CX_STOREFRONT_LOCATIONS": json.dumps(VENDURE_LOCATIONS),
    }


def print_vendure_view(shop: Any, warehouse_path: Path) -> None:
    """Compare what Vendure's shop API shows customers with the status the plan wanted, SKU by SKU."""
    with warehouse.connect(warehouse_path, read_only=True) as con:
        if not _exists(con, "stock_position"):
            return
        wanted = dict(con.execute("SELECT sku, publish_status FROM stock_position").fetchall())
    shown = shop.shop_stock_levels()
    agree = sum((shown.get(sku) == "OUT_OF_STOCK") == (status != "in_stock") for sku, status in wanted.items())
    print(
        f"\nVendure shop API (what customers see): {agree:,} of {len(wanted):,} SKUs show the status the pipeline "
        f"planned ({sum(v == 'OUT_OF_STOCK' for v in shown.values()):,} out of stock).\n"
        "  What a shop seeded today cannot show: long-registered products (Vendure sets createdAt on creation, so the "
        "review queue stays empty),\n  90 days of order history (the return-risk model's minimum) and helpdesk tickets "
        "naming its orders (Vendure makes their codes)."
    )


WORLD_DATA = ("review_decisions", "review_submissions", "review_queue", "review_history", "inspection_defects",
              "inspections", "qa_submissions", "inspection_lots", "return_risk", "risk_drivers", "dhu_segments",
              "kpi_weeks", "operator_worklist", "publications")  # fmt: skip


def demo_clock(data_dir: Path, seed: int, skus: int, storefront: str = "rest") -> datetime:
    """The demo world's clock. The app store (users, decisions, inspections) belongs to one world, so a demo
    run with the same seed, size and storefront rebuilds the same world, at the clock of the first one; another
    seed, size or storefront starts a new world and clears the store's data about the old one (users are kept)."""
    marker, store = data_dir / "app-world.json", data_dir / "app.sqlite"
    data_dir.mkdir(parents=True, exist_ok=True)
    known = json.loads(marker.read_text()) if marker.exists() else {}
    same = known.get("seed") == seed and known.get("skus") == skus
    if same and known.get("storefront", "rest") == storefront:
        return datetime.fromisoformat(known["now"])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if store.exists():
        from cx_pipeline.core import appstore

        with appstore.connect(store) as con, appstore.transaction(con):
            for table in WORLD_DATA:
                con.execute(f"DELETE FROM {table}")
        print(f"A new demo world (seed {seed}, {skus:,} SKUs): the app store keeps its users, not the old world's data")
    marker.write_text(json.dumps({"seed": seed, "skus": skus, "storefront": storefront, "now": now.isoformat()}))
    return now


def _counts(rows: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in rows) or "none"


def print_summary(warehouse_path: Path, checks: list[Any], success: bool, elapsed: float) -> None:
    passed = {c.asset_key.path[-1]: c.passed for c in checks}
    with warehouse.connect(warehouse_path, read_only=True) as con:
        print(f"\n{'Run succeeded' if success else 'Run FAILED'} in {elapsed:.1f} s.\n")
        print(f"{'feed':<22}{'rows':>9}{'new':>9}{'updated':>9}  contract")
        for feed in FEEDS.values():
            row = first_row(
                con,
                "SELECT rows_fetched, rows_new, rows_updated FROM ingest_batches WHERE feed = ? "
                "ORDER BY fetched_at DESC LIMIT 1",
                [feed.name],
            ) or (0, 0, 0)
            verdict = {True: "passed", False: "FAILED", None: "not run"}[passed.get(feed.table)]
            print(f"{feed.table:<22}{row[0]:>9,}{row[1]:>9,}{row[2]:>9,}  {verdict}")
        (quarantined,) = first_row(con, "SELECT count(*) FROM quarantine WHERE released_at IS NULL")
        receipts = first_row(
            con,
            """
            SELECT count(*), count(*) FILTER (WHERE qty_damaged > 0),
                   count(DISTINCT sku) FILTER (WHERE qty_damaged > 0)
            FROM valid_receipts""",
        )
        orders = first_row(con, "SELECT count(DISTINCT order_id) FROM valid_open_orders WHERE status = 'open'")
        inquiries = con.execute(
            "SELECT reason, count(*) FROM valid_inquiries GROUP BY reason ORDER BY count(*) DESC"
        ).fetchall()
        discrepancies = con.execute(
            "SELECT kind, count(*) FROM receipt_discrepancies WHERE status <> 'resolved' GROUP BY kind ORDER BY kind"
        ).fetchall()
        notices = first_row(
            con,
            """SELECT count(*) FILTER (status = 'sent'), count(*) FILTER (status = 'planned'),
                      count(DISTINCT order_id) FILTER (status = 'sent'),
                      count(*) FILTER (status = 'sent' AND revision > 1), count(new_eta) FILTER (status = 'sent'),
                      (SELECT count(*) FROM receipt_discrepancies WHERE status = 'customers_notified')
            FROM notice_ledger""",
        )
        notice_causes = con.execute(
            "SELECT cause, count(*) FROM notice_ledger WHERE status = 'sent' GROUP BY cause ORDER BY cause"
        ).fetchall()
        plan = first_row(
            con,
            """SELECT adapter, changes, catalog_size, to_out_of_stock, back_in_stock, quantity_only, plan_id
            FROM push_plans ORDER BY planned_at DESC LIMIT 1""",
        )
        pushed = first_row(
            con,
            "SELECT count(*) FILTER (ok), count(*) FILTER (NOT ok) FROM push_audit WHERE plan_id = ?",
            [plan[6] if plan else ""],
        )
    print(f"\nQuarantined rows (broke a contract, kept for review): {quarantined}")
    print(f"Receipt lines: {receipts[0]:,}; with damaged units: {receipts[1]:,} across {receipts[2]:,} SKUs")
    print(f"Open customer orders: {orders[0]:,}")
    print("Inquiries by reason: " + ", ".join(f"{reason} {n:,}" for reason, n in inquiries))
    print("\nReceipt discrepancies (PO lines) by kind: " + _counts(discrepancies))
    print(
        f"Delay notices: {notices[0]:,} sent to customers about {notices[2]:,} orders ({notices[3]:,} updates); "
        f"{notices[4]:,} with a new delivery date, {notices[0] - notices[4]:,} saying none is known yet; "
        f"by cause: {_counts(notice_causes)}; {notices[1]:,} still to send. Receipt discrepancies whose delayed "
        f"customers were told: {notices[5]:,}"
    )
    if plan:
        print(
            f"Storefront ({plan[0]}): {plan[1]:,} changes planned of {plan[2]:,} listed SKUs: {plan[3]:,} to out of "
            f"stock, {plan[4]:,} back in stock, {plan[5]:,} quantity only; {pushed[0]:,} pushed, {pushed[1]:,} failed"
        )
    print_review_queue(warehouse_path)
    print_quality(warehouse_path)
    print(f"\nWarehouse: {warehouse_path}")
    print(
        "Explore:   python -c \"import duckdb; duckdb.connect('"
        f"{warehouse_path}', read_only=True).sql('SHOW TABLES').show()\"\n"
        "           (raw_*, valid_*, quarantine, receipt_discrepancies, notice_ledger, stock_position, push_changes, "
        "push_audit, stale_products, inspections, inspection_dhu, return_risk, inquiry_kpis)"
    )
    print("Dagster UI: cp .env.example .env; cx-pipeline simulate  and, in another shell,  dg dev")


def print_review_queue(warehouse_path: Path) -> None:
    app_db = warehouse_path.with_name("app.sqlite")
    with warehouse.connect(warehouse_path, read_only=True) as con:
        assessed = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'stale_products'"
        if not first_row(con, assessed)[0]:
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


def seed_qa_history(world: Any, app_db: Path) -> int:
    """Load the demo world's past inspections into the app store as QA would: the lots, then one CSV upload
    (checked like any other). Skipped when the store already holds inspections; returns lots loaded."""
    from cx_pipeline.core import appstore
    from cx_pipeline.quality import inspections
    from cx_pipeline.quality.checklists import load_checklists
    from cx_pipeline.simulator.quality import INSPECTOR

    with appstore.connect(app_db) as store:
        if store.execute("SELECT 1 FROM inspections LIMIT 1").fetchone():
            return 0
        receipts, products = world.current("receipts"), world.current("products")
        lots = receipts.merge(products[["sku", "title", "category", "supplier_id"]], on="sku")
        lots = lots.rename(columns={"qty_received": "lot_size"})
        history_days = (world.clock - world.start).days + 1  # the one-off load reaches back the whole history
        inspections.publish_lots(
            store,
            [inspections.lot_tuples(lots[lots["lot_size"] > 0])],
            world.clock,
            inspections.LotWindow(pending_days=history_days),
        )
        return inspections.import_csv(store, world.quality.history_csv(), load_checklists(), INSPECTOR)


def _exists(con: Any, table: str) -> bool:
    return bool(first_row(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])[0])


def print_quality(warehouse_path: Path) -> None:
    from cx_pipeline.kpis import inquiries
    from cx_pipeline.quality import inspections

    with warehouse.connect(warehouse_path, read_only=True) as con:
        verdicts = dict(con.execute("SELECT verdict, count(*) FROM valid_inspections GROUP BY verdict").fetchall())
        segments = inspections.dhu_by(con, "category", "item").head(3) if _exists(con, "inspection_dhu") else None
        metrics = first_row(
            con,
            """SELECT deviance_model, deviance_baseline, capture_model, capture_baseline, actual_returns,
                      predicted_returns FROM return_risk_metrics ORDER BY scored_at DESC LIMIT 1""",
        )
        risks = (
            con.sql("SELECT sku, title, category, predicted, drivers FROM return_risk ORDER BY rank LIMIT 5").df()
            if _exists(con, "return_risk")
            else None
        )
        weekly = con.sql("SELECT * FROM inquiry_kpis").df() if _exists(con, "inquiry_kpis") else None
    lots = sum(verdicts.values())
    print(
        f"\nInspections: {lots:,} lots inspected ({verdicts.get('accept', 0):,} accepted, "
        f"{verdicts.get('reject', 0):,} rejected by Z1.4 level II)"
    )
    if segments is not None and not segments.empty:
        print("  highest DHU (defects per hundred units): " + ", ".join(
            f"{r.category}/{r.item} {r.dhu:.1f}" for r in segments.itertuples()
        ))  # fmt: skip
    if metrics:
        print(
            f"Return risk (held-out last 30 days): {metrics[4]:,} return inquiries, {metrics[5]:,.0f} predicted; "
            f"Poisson deviance {metrics[0]:.3f} (category-mean baseline {metrics[1]:.3f}); top-decile capture "
            f"{metrics[2]:.0%} (baseline {metrics[3]:.0%})"
        )
        for r in risks.itertuples():
            print(f"  {r.sku} {r.title} ({r.category}): {r.predicted:.1f} expected in 30 days; {', '.join(r.drivers)}")
    else:
        print("Return risk: not scored (see the run's log)")
    latest = inquiries.latest_complete_week(weekly) if weekly is not None else None
    if latest is not None:
        print(
            f"Inquiries per 1,000 orders (week of {latest['week']:%Y-%m-%d}): delivery delay "
            f"{latest['delivery_delay_per_1000']:.1f}, cancellation {latest['cancellation_per_1000']:.1f}, "
            f"return {latest['return_per_1000']:.1f}"
        )
