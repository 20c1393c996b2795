"""Stock position and the storefront push: what can be sold, what the shop shows, and only the changes."""

import dagster as dg

from cx_pipeline.assets.metadata import Progress, markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, ContractsResource, StorefrontResource, WarehouseResource
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.storefront import push, shop_state, stock

OWNERS = ["team:cx-data"]


class StockPositionConfig(dg.Config):
    """Safety buffer and floor for every SKU, an optional CSV of per-SKU overrides (`sku,safety_buffer,floor,note`),
    and `position_whole`: position every SKU, not only those whose rows may have changed since the last run."""

    safety_buffer: int = stock.StockPolicy.safety_buffer
    floor: int = stock.StockPolicy.floor
    overrides_csv: str = ""
    position_whole: bool = False


class PushPlanConfig(dg.Config):
    """The flip-share guard: stop when more than `max_flip_share` of the listed SKUs would change between in
    and out of stock in one run, unless `force` (an operator's explicit override for this run). A storefront
    that lists no SKUs at all stops the plan unless `empty_shop_ok` (a new shop, not yet stocked)."""

    max_flip_share: float = 0.2
    force: bool = False
    empty_shop_ok: bool = False


class PushConfig(dg.Config):
    """`dry_run`: plan and report, write nothing."""

    dry_run: bool = False


@dg.asset(
    group_name="storefront",
    kinds={"duckdb", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=["raw_on_hand", "raw_open_orders", "raw_catalog"],
)
def stock_position(
    context: dg.AssetExecutionContext, config: StockPositionConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per SKU: on hand − in QC − damaged − reserved by open orders − safety buffer, and the storefront state
    it calls for (out of stock at or below the floor)."""
    policy = stock.StockPolicy(config.safety_buffer, config.floor)
    with warehouse.connect() as con:
        position = stock.refresh_position(
            con, policy, config.overrides_csv or None, wms_clock(con), context.run_id, config.position_whole
        )
    counts, again = position.counts, position.repositioned
    context.log.info(
        f"stock_position: positioned {'every SKU' if again is None else f'{again:,} SKUs whose rows changed'}; {counts}"
    )
    return dg.MaterializeResult(
        metadata={
            **counts,
            "positioned": counts["skus"] if again is None else again,
            "positioned_whole": again is None,
            "most_oversold": markdown(position.most_oversold),
        }
    )


@dg.asset(
    group_name="storefront", kinds={"duckdb", "python"}, owners=OWNERS, pool=WAREHOUSE_POOL, deps=[stock_position]
)
def storefront_push_plan(
    context: dg.AssetExecutionContext,
    config: PushPlanConfig,
    warehouse: WarehouseResource,
    storefront: StorefrontResource,
) -> dg.MaterializeResult:
    """The dry-run diff: which SKUs the storefront shows wrongly now, and what each would be set to; and what
    became of the writes of an earlier run that died while pushing."""
    adapter = storefront.client
    with warehouse.connect() as con:
        try:
            shop = shop_state.read_shop(
                con,
                adapter,
                shop=push.public_url(storefront.url),
                plan_id=context.run_id,
                every_hours=storefront.full_read_every_hours,
                empty_shop_ok=config.empty_shop_ok,
            )
        except push.EmptyStorefrontError as exc:
            raise dg.Failure(description=str(exc)) from None
        if shop.note:
            context.log.warning(f"storefront_push_plan: {shop.note}")
        how = "read whole" if shop.full_read else f"read by change ({shop.rows_read:,} SKUs changed)"
        context.log.info(f"storefront_push_plan: the {adapter.name} storefront lists {shop.listed:,} SKUs ({how})")
        if shop.drift and shop.drift.skus:
            context.log.warning(
                f"storefront_push_plan: the full read found {shop.drift.skus:,} SKUs the shop's change log had "
                f"not listed ({shop.drift.changed:,} changed, {shop.drift.new:,} new, {shop.drift.gone:,} gone)"
            )
        outcome = push.settle_and_plan(
            con,
            shop_state.TABLE,
            plan_id=context.run_id,
            adapter=adapter.name,
            max_flip_share=config.max_flip_share,
            force=config.force,
            now=wms_clock(con),
        )
    row, settled, unlisted = outcome.row, outcome.settled, outcome.unlisted
    if unlisted:
        context.log.warning(
            f"storefront_push_plan: {row['not_listed']:,} catalog SKUs are not listed by the {adapter.name} "
            f"storefront, so nothing can be pushed for them (e.g. {', '.join(unlisted)})"
        )
    for warning in adapter.warnings:
        context.log.warning(f"storefront_push_plan: {warning}")
    for old in settled.itertuples(index=False):
        context.log.warning(
            f"storefront_push_plan: plan {old.interrupted_plan} was interrupted while pushing; of the "
            f"{old.sent_unanswered:,} SKUs it sent without recording an answer, the storefront shows "
            f"{old.applied:,} applied and {old.not_applied:,} not applied (this plan writes those again if they "
            "still differ)"
        )
    return dg.MaterializeResult(
        metadata={
            "plan_id": context.run_id,
            "empty_shop": shop.listed == 0,
            "shop_read": "full" if shop.full_read else "changes",
            "shop_rows_read": shop.rows_read,
            **drift_metadata(shop.drift),
            "interrupted_plans_settled": markdown(settled, "no interrupted push to settle"),
            "interrupted_applied": int(settled["applied"].sum()),
            "interrupted_not_applied": int(settled["not_applied"].sum()),
            "catalog_size": row["catalog_size"],
            "changes": row["changes"],
            "to_out_of_stock": row["to_out_of_stock"],
            "back_in_stock": row["back_in_stock"],
            "quantity_only": row["quantity_only"],
            "held": row["held"],
            "not_listed": row["not_listed"],
            "not_listed_sample": ", ".join(unlisted) or "every catalog SKU is listed",
            "storefront_warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in adapter.warnings) or "none"),
            "flip_share": float(row["flip_share"]),
            "forced": row["forced"],
            "diff": markdown(outcome.diff, "the storefront already shows the right state"),
        }
    )


@dg.asset(group_name="storefront", kinds={"python"}, owners=OWNERS, pool=WAREHOUSE_POOL, deps=[storefront_push_plan])
def storefront_status_push(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    warehouse: WarehouseResource,
    storefront: StorefrontResource,
    contracts: ContractsResource,
) -> dg.MaterializeResult:
    """This run's plan written to the storefront in batches, every SKU in the audit table as sent before the
    write and with the shop's answer after it."""
    plan_id = context.run_id  # a push always goes with the diff planned in the same run
    with warehouse.connect() as con:
        if config.dry_run:
            would_change = push.mark_dry_run(con, plan_id)
            return dg.MaterializeResult(metadata={"dry_run": True, "plan_id": plan_id, "would_change": would_change})
        adapter = storefront.client

        report_progress = Progress(context.log.info)

        def progress(done: int, total: int) -> None:
            report_progress(f"storefront_status_push: batch {done}/{total}", last=done == total)

        outcome = push.push_plan(
            con, adapter, plan_id, lambda: wms_clock(con), progress, max_held_runs=contracts.max_held_runs
        )
    report = outcome.report
    metadata = {
        "plan_id": plan_id,
        "adapter": adapter.name,
        "batches": report.batches,
        "pushed": report.pushed,
        "failed": report.failed,
        "customer_view_mismatches": outcome.mismatches,
        "batches_done_earlier": report.skipped_batches,
        "audit": markdown(outcome.audit),
    }
    if problems := outcome.problems:
        raise dg.Failure(description="\n\n".join(problems), metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


def drift_metadata(drift: shop_state.Drift | None) -> dict[str, int]:
    """What a full read of the shop found that its change log had not listed (nothing without a change log)."""
    if drift is None:
        return {}
    return {"drift_skus": drift.skus, "drift_changed": drift.changed, "drift_new": drift.new, "drift_gone": drift.gone}


defs = dg.Definitions(assets=[stock_position, storefront_push_plan, storefront_status_push])
