"""Receipt confirmation: discrepancies against purchase orders, the confirmation cycle, delay notices."""

import dagster as dg
import pandas as pd

from cx_pipeline.assets.metadata import Progress, markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, NotificationResource, WarehouseResource
from cx_pipeline.core.charts import line_chart
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.receiving import allocation, notices, reconciliation

OWNERS = ["team:cx-data"]


class ReceivingConfig(dg.Config):
    """When a PO line counts as fully, partially or over received, and when it is late."""

    short_tolerance_pct: float = reconciliation.ReceivingPolicy.short_tolerance_pct
    over_allowance_pct: float = reconciliation.ReceivingPolicy.over_allowance_pct
    late_grace_days: int = reconciliation.ReceivingPolicy.late_grace_days


class DelayNoticeConfig(dg.Config):
    """Lead times for the new delivery date, and dry-run mode (list what would be sent, send nothing)."""

    dry_run: bool = False
    qc_hours: float = allocation.AllocationPolicy.qc_hours
    transit_days: float = allocation.AllocationPolicy.transit_days


@dg.asset(
    group_name="receiving",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=["raw_receipts", "raw_purchase_orders"],
)
def receipt_discrepancies(
    context: dg.AssetExecutionContext, config: ReceivingConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Short, over-received, damaged and late purchase-order lines, each tracked open → customers notified →
    resolved."""
    policy = reconciliation.ReceivingPolicy(
        config.short_tolerance_pct, config.over_allowance_pct, config.late_grace_days
    )
    with warehouse.connect() as con:
        now = wms_clock(con)
        moved = reconciliation.reconcile(con, policy, now)
        summary = reconciliation.discrepancy_summary(con)
        states = reconciliation.receipt_states(con)
        newest = reconciliation.newest_open(con)
    open_now = int(summary.loc[summary["status"] != "resolved", "po_lines"].sum())
    context.log.info(f"receipt_discrepancies: {open_now} unresolved; this run {moved}")
    return dg.MaterializeResult(
        metadata={
            "unresolved": open_now,
            "opened": moved["opened"],
            "reopened": moved["reopened"],
            "resolved": moved["resolved"],
            "po_lines_redone": moved["po_lines_redone"],
            "by_kind_and_status": markdown(summary),
            "po_lines_by_receipt_state": markdown(states),
            "newest_open": markdown(newest),
            "wms_clock": str(now),
        }
    )


@dg.asset(
    group_name="receiving", kinds={"duckdb", "python"}, owners=OWNERS, pool=WAREHOUSE_POOL, deps=[receipt_discrepancies]
)
def receipt_confirmation_cycle(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Hours from a receipt's arrival in the WMS to its confirmation by the pipeline: p50 / p90 per day."""
    with warehouse.connect() as con:
        now = wms_clock(con)
        confirmed = reconciliation.confirm_receipts(con, now, context.run_id)
        daily = reconciliation.confirmation_cycle(con)
    metadata: dict[str, object] = {"receipts_confirmed_now": confirmed, "daily": markdown(daily, "no receipts yet")}
    if not daily.empty:
        latest = daily.iloc[-1]
        metadata |= {
            "latest_day": str(pd.Timestamp(latest["day"]).date()),
            "p50_hours": float(latest["p50_hours"]),
            "p90_hours": float(latest["p90_hours"]),
        }
        chart = line_chart(
            daily,
            "day",
            ["p50_hours", "p90_hours"],
            "Receipt confirmation cycle",
            "hours",
            warehouse.reports_dir / "receipt_confirmation_cycle.svg",
        )
        metadata["chart"] = dg.MetadataValue.path(str(chart.resolve()))
    else:
        context.log.info("receipt_confirmation_cycle: only backfilled receipts so far; the metric starts next run")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="receiving",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[receipt_discrepancies, "raw_open_orders", "raw_on_hand"],
)
def delay_notices(
    context: dg.AssetExecutionContext,
    config: DelayNoticeConfig,
    warehouse: WarehouseResource,
    notifications: NotificationResource,
) -> dg.MaterializeResult:
    """At most one notice per late order and run, naming what is late, why, and the new delivery date (or
    plainly that none is known yet); an update only when that date moves later; each sent once."""
    policy = allocation.AllocationPolicy(config.qc_hours, config.transit_days)
    # no client: a dry run, which lists what would be sent and sends nothing
    client = None if config.dry_run else notifications.client

    report_progress = Progress(context.log.info)

    def progress(done: int, total: int) -> None:
        report_progress(f"delay_notices: {done}/{total} sent", last=done == total)

    with warehouse.connect() as con:
        run = notices.notify_delays(con, policy, wms_clock(con), context.run_id, client, progress)
    if run.report is None:
        context.log.info(f"delay_notices (dry run): {len(run.due)} notices would be sent")
        return dg.MaterializeResult(
            metadata={
                "dry_run": True,
                "late_order_lines": run.late_order_lines,
                "would_send": len(run.due),
                **run.counts,
                "would_send_preview": markdown(run.preview),
            }
        )
    report = run.report
    context.log.info(f"delay_notices: {report.sent} sent, {report.already_sent} already sent, {report.failed} failed")
    if report.failed:
        raise dg.Failure(
            description=f"{report.failed} of {run.pending} notices were not accepted; they stay planned and the "
            "next run sends them (with the same idempotency keys). First errors:\n" + "\n".join(report.errors[:5]),
            metadata={"sent": report.sent, "failed": report.failed},
        )
    return dg.MaterializeResult(
        metadata={
            "late_order_lines": run.late_order_lines,
            "planned": run.planned,
            **run.counts,
            "sent": report.sent,
            "already_sent": report.already_sent,
            "discrepancies_now_customers_notified": run.notified,
            "ledger_by_cause": markdown(run.ledger_by_cause),
            "new_notices": markdown(run.preview),
        }
    )


defs = dg.Definitions(assets=[receipt_discrepancies, receipt_confirmation_cycle, delay_notices])
