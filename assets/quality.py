"""Quality: the lots QA may inspect, QA's segmented results, defect rates (DHU) and return-inquiry risk."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from cx_pipeline.assets.metadata import markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, AppStoreResource, WarehouseResource
from cx_pipeline.core.charts import bar_chart
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.quality import inspections, returns
from cx_pipeline.quality.checklists import load_checklists

OWNERS = ["team:cx-data", "team:quality"]
TOP_ROWS = 20


class LotWindowConfig(dg.Config):
    """Which lots QA is offered in the web app; older ones stay in the warehouse only."""

    pending_days: int = Field(
        inspections.PENDING_DAYS, gt=0, description="lots received this many days ago or less, not inspected yet"
    )
    inspected_days: int = Field(
        inspections.INSPECTED_DAYS, gt=0, description="lots inspected this many days ago or less (to look at, amend)"
    )


@dg.asset(
    group_name="quality",
    kinds={"duckdb", "sqlite", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=["raw_receipts", "raw_catalog"],
)
def inspection_lots(
    context: dg.AssetExecutionContext,
    config: LotWindowConfig,
    warehouse: WarehouseResource,
    app_store: AppStoreResource,
) -> dg.MaterializeResult:
    """The lots (receipt lines) QA can act on, published to the web app: received in the last 7 days and not
    inspected yet, or inspected in the last 7 days (each run sends only the lots whose receipt changed, or whose
    product's title, category or supplier changed, since the last publication, and withdraws those that left)."""
    window = inspections.LotWindow(config.pending_days, config.inspected_days)
    with warehouse.connect() as con, app_store.connect() as store:
        now = wms_clock(con)
        published = inspections.refresh_lots(con, store, now, window, context.run_id)
        (offered,) = store.execute("SELECT count(*) FROM inspection_lots").fetchone()
    context.log.info(f"inspection_lots: {published:,} new or changed lots sent; {offered:,} offered to QA")
    return dg.MaterializeResult(
        metadata={
            "lots": published,
            "offered": offered,
            "pending_days": window.pending_days,
            "inspected_days": window.inspected_days,
        }
    )


@dg.asset(
    name="inspections",
    group_name="quality",
    kinds={"duckdb", "sqlite", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[inspection_lots],
)
def inspection_results(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, app_store: AppStoreResource
) -> dg.MaterializeResult:
    """QA's segmented inspection results (defects per checklist item and severity, per lot) entered in the web
    app since the last run, copied into the warehouse."""
    with warehouse.connect() as con, app_store.connect() as store:
        imported = inspections.import_inspections(store, con, context.run_id, datetime.now(UTC))
        verdicts, latest = inspections.by_verdict(con), inspections.latest(con)
    context.log.info(f"inspections: {imported:,} new inspected lots from {app_store.path}")
    return dg.MaterializeResult(
        metadata={
            "imported": imported,
            "lots_inspected": int(verdicts["lots"].sum()),
            "by_verdict": markdown(verdicts, "no inspections yet"),
            "latest": markdown(latest, "no inspections yet"),
        }
    )


@dg.asset(
    group_name="quality",
    kinds={"duckdb", "sqlite", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[inspection_results],
)
def inspection_dhu(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, app_store: AppStoreResource
) -> dg.MaterializeResult:
    """Defects per hundred units (DHU) by inspection segment, supplier and category over the last 90 days, from
    each lot's latest result (an amendment replaces the result it amends); per category and segment, published
    to the web app's segments page."""
    with warehouse.connect() as con:
        now = wms_clock(con)
        if inspections.dhu_is_current(con, now):
            kept = "kept: built today (WMS clock) from the same inspections; rebuilt with new ones or the next day"
            context.log.info(f"inspection_dhu: {kept}")
            return dg.MaterializeResult(metadata={"status": kept})
        inspections.build_dhu(con, now)
        by_segment = inspections.dhu_by(con, "category", "item")
        by_supplier = inspections.dhu_by(con, "supplier_id")
        by_category = inspections.dhu_by(con, "category")
    with app_store.connect() as store:
        inspections.publish_dhu(store, by_segment, context.run_id, now)
    metadata: dict[str, object] = {
        "status": "built",
        "segments": len(by_segment),
        "by_segment": markdown(by_segment, "no inspections in the window"),
        "by_supplier": markdown(by_supplier, "no inspections in the window"),
        "by_category": markdown(by_category, "no inspections in the window"),
    }
    if not by_segment.empty:
        top = by_segment.head(TOP_ROWS).assign(segment=lambda f: f["category"] + " / " + f["item"])
        chart = bar_chart(
            top, "segment", ["dhu"], "Defects per hundred units, by segment", "DHU",
            warehouse.reports_dir / "inspection_dhu.svg",
        )  # fmt: skip
        metadata |= {"highest_dhu": float(top["dhu"].iat[0]), "chart": dg.MetadataValue.path(str(chart.resolve()))}
    return dg.MaterializeResult(metadata=metadata)


class ReturnRiskConfig(dg.Config):
    """The risk is of return inquiries over the next 30 days, learnt from months of history: refit once per day
    of the WMS clock (the day's first run), not at every run, unless `every_run`."""

    every_run: bool = False


@dg.asset(
    group_name="quality",
    kinds={"duckdb", "sqlite", "scikitlearn"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[inspection_dhu, "raw_inquiries", "raw_open_orders", "raw_catalog"],
)
def return_risk(
    context: dg.AssetExecutionContext,
    config: ReturnRiskConfig,
    warehouse: WarehouseResource,
    app_store: AppStoreResource,
) -> dg.MaterializeResult:
    """Return inquiries expected per SKU in the next 30 days, with the inspection segments that drive each
    SKU's risk; evaluated on the last 30 days against a category-mean baseline. Refit once a day."""
    checklists = load_checklists()
    with warehouse.connect() as con:
        now = wms_clock(con)
        scored = returns.last_scored(con)
        if scored is not None and scored.astimezone(UTC).date() == now.astimezone(UTC).date() and not config.every_run:
            kept = f"kept: scored at {scored:%Y-%m-%d %H:%M} UTC (WMS clock); refit at the next day's first run"
            context.log.info(f"return_risk: {kept}")
            return dg.MaterializeResult(metadata={"status": kept})
        try:
            data = returns.cutoffs(con, now, checklists)
            evaluation, scores = returns.evaluate(data, checklists), returns.score(data, checklists)
        except returns.NotEnoughHistory as exc:
            context.log.warning(f"return_risk: {exc}")
            return dg.MaterializeResult(metadata={"status": f"not scored: {exc}"})
        returns.save(con, context.run_id, now, evaluation, scores)
    with app_store.connect() as store:
        returns.publish(store, scores, context.run_id, now)
    calibration = evaluation.calibration()
    chart = bar_chart(
        calibration.assign(decile=lambda f: "decile " + f["decile"].astype(str)).iloc[::-1],
        "decile", ["predicted", "actual"], "Return inquiries per SKU, held-out 30 days", "mean per SKU",
        warehouse.reports_dir / "return_risk_calibration.svg",
    )  # fmt: skip
    top = scores.ranking.head(TOP_ROWS).assign(drivers=lambda f: f["drivers"].map(", ".join))
    drivers = scores.coefficients[scores.coefficients["rank"] <= 2]
    context.log.info(
        f"return_risk: held-out deviance {evaluation.deviance_model:.3f} (baseline {evaluation.deviance_baseline:.3f}),"
        f" top-decile capture {evaluation.capture_model:.0%} (baseline {evaluation.capture_baseline:.0%})"
    )
    return dg.MaterializeResult(
        metadata={
            "status": "scored",
            "skus": len(scores.ranking),
            "predicted_returns_30d": float(scores.ranking["predicted"].sum()),
            "holdout_actual_returns": int(evaluation.holdout["actual"].sum()),
            "holdout_predicted_returns": float(evaluation.holdout["predicted"].sum()),
            "deviance_model": evaluation.deviance_model,
            "deviance_baseline": evaluation.deviance_baseline,
            "top_decile_capture_model": evaluation.capture_model,
            "top_decile_capture_baseline": evaluation.capture_baseline,
            "calibration_by_decile": markdown(calibration.round(3)),
            "driving_segments": markdown(drivers.round(4)),
            "top_risks": markdown(top.round(3)),
            "chart": dg.MetadataValue.path(str(chart.resolve())),
        }
    )


defs = dg.Definitions(assets=[inspection_lots, inspection_results, inspection_dhu, return_risk])
