"""The KPIs the CX team watches: inquiries per 1,000 orders by reason, week by week."""

import dagster as dg

from cx_pipeline.assets.metadata import markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, WarehouseResource
from cx_pipeline.core.charts import line_chart
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.kpis import inquiries

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


defs = dg.Definitions(assets=[inquiry_kpis])
