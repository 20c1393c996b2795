"""The KPIs the CX team watches (inquiries per 1,000 orders by reason, week by week, beside the work meant to
reduce them) and the operator's work list, both published to the web app."""

import dagster as dg

from cx_pipeline.assets.metadata import markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, AppStoreResource, WarehouseResource
from cx_pipeline.assets.schedules import WAREHOUSE_TAG, pipeline_job
from cx_pipeline.core.charts import line_chart
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.kpis import inquiries, weekly, worklist

OWNERS = ["team:cx-data", "team:quality"]
TOP_ROWS = 20


@dg.asset(
    group_name="cx_kpis",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=["raw_inquiries", "raw_open_orders"],
)
def inquiry_kpis(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Inquiries per 1,000 orders by reason (delivery delay, cancellation, return), weekly."""
    with warehouse.connect() as con:
        weekly = inquiries.build_kpis(con, wms_clock(con))
    per_1000 = [f"{reason}_per_1000" for reason in inquiries.REASONS]
    metadata: dict[str, object] = {"weeks": len(weekly), "weekly": markdown(weekly.tail(TOP_ROWS), "no orders yet")}
    if (latest := inquiries.latest_complete_week(weekly)) is not None:
        metadata |= {"week": str(latest["week"].date()), **{c: float(latest[c]) for c in per_1000}}
        chart = line_chart(
            weekly[weekly["complete"]], "week", per_1000, "Inquiries per 1,000 orders", "per 1,000 orders",
            warehouse.reports_dir / "inquiry_kpis.svg",
        )  # fmt: skip
        metadata["chart"] = dg.MetadataValue.path(str(chart.resolve()))
    context.log.info(f"inquiry_kpis: {len(weekly)} weeks")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="cx_kpis",
    kinds={"duckdb", "sqlite"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    # Not after delay_notices: a run whose notices the API refused fails there, and the KPIs should still be
    # published. Only complete weeks are, and their notices were sent (or not) in earlier runs.
    deps=[inquiry_kpis, "receipt_confirmation_cycle", "stale_products", "inspection_dhu"],
)
def kpi_weeks(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, app_store: AppStoreResource
) -> dg.MaterializeResult:
    """The KPI page's weekly series, published to the web app: each kind of inquiry per 1,000 orders beside the
    confirmation cycle and notices sent, stale products reviewed and storefront mismatches, inspections and DHU
    (complete weeks only)."""
    with warehouse.connect() as con, app_store.connect() as store:
        rows = weekly.build_weekly(con)
        weeks = weekly.publish(store, rows, context.run_id, wms_clock(con))
    context.log.info(f"kpi_weeks: {weeks} complete weeks published to the KPI page")
    return dg.MaterializeResult(metadata={"weeks": weeks, "metrics": len(weekly.METRICS)})


@dg.asset(
    group_name="cx_kpis",
    kinds={"duckdb", "sqlite"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[*(feed.table for feed in FEEDS.values()), "stock_position", "storefront_status_push", "delay_notices"],
)
def operator_worklist(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, app_store: AppStoreResource
) -> dg.MaterializeResult:
    """The operator's work list, published whole to the web app: SKUs held from the push, writes customers do
    not see, quarantined rows by feed and rule, catalog SKUs the shop does not list, notices that failed. A run
    that fails before this step starts `cx_worklist_job` (`worklist_after_failed_run`), so the list is
    republished after every run."""
    with warehouse.connect() as con, app_store.connect() as store:
        found = worklist.problems(con)
        worklist.publish(store, found, context.run_id, wms_clock(con))
    by_kind = {kind: sum(1 for row in found if row[0] == kind) for kind in worklist.KINDS}
    context.log.info(f"operator_worklist: {len(found):,} problems published ({by_kind})")
    return dg.MaterializeResult(metadata={"problems": len(found), **by_kind})


worklist_job = dg.define_asset_job(
    name="cx_worklist_job",
    selection=[operator_worklist],
    description="Republish the operator's work list (after a pipeline run that failed before it did).",
    tags={WAREHOUSE_TAG: "write"},  # queued behind any run that writes the warehouse
)


@dg.run_failure_sensor(
    monitored_jobs=[pipeline_job], request_job=worklist_job, default_status=dg.DefaultSensorStatus.RUNNING
)
def worklist_after_failed_run(context: dg.RunFailureSensorContext) -> dg.RunRequest:
    """A failed run is when the operator needs the work list most, and it never reached the step that
    publishes it: publish it in a run of its own."""
    return dg.RunRequest(run_key=f"worklist-after-{context.dagster_run.run_id}")


defs = dg.Definitions(
    assets=[inquiry_kpis, kpi_weeks, operator_worklist], jobs=[worklist_job], sensors=[worklist_after_failed_run]
)
