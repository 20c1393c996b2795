"""Blocking checks on the storefront push plan: nothing is pushed from a plan that flips too much of the
catalog or from stock inputs that failed their contracts."""

import dagster as dg

from cx_pipeline.assets.metadata import markdown
from cx_pipeline.assets.resources import WAREHOUSE_POOL, WarehouseResource
from cx_pipeline.ingest.contracts import latest_verdicts
from cx_pipeline.storefront import push, stock


@dg.asset_check(asset="storefront_push_plan", name="flip_share_within_limit", blocking=True, pool=WAREHOUSE_POOL)
def flip_share_within_limit(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """A plan that flips more than the configured share of the catalog is stopped unless forced."""
    with warehouse.connect(read_only=True) as con:
        row = push.plan_row(con, context.op_execution_context.run_id)
    flips = row["to_out_of_stock"] + row["back_in_stock"]
    share, limit = float(row["flip_share"]), float(row["max_flip_share"])
    within = share <= limit
    return dg.AssetCheckResult(
        passed=within or bool(row["forced"]),
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{flips:,} of the {row['catalog_size']:,} catalog SKUs the shop lists would flip "
            f"({share:.1%}; limit {limit:.0%})"
            + (
                ""
                if within
                else " — FORCED by the operator"
                if row["forced"]
                else ". Nothing was pushed. If this is real (a big delivery, a reopened warehouse), re-run with "
                "storefront_push_plan config force: true; otherwise look for a broken feed."
            )
        ),
        metadata={"flips": flips, "flip_share": share, "max_flip_share": limit, "forced": bool(row["forced"])},
    )


@dg.asset_check(asset="storefront_push_plan", name="inputs_passed_contracts", blocking=True, pool=WAREHOUSE_POOL)
def inputs_passed_contracts(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Nothing is pushed while the latest batch of a stock input (on hand, open orders, catalog) is unjudged or
    failed its contract structurally; bad rows below that only hold their own SKUs, which are listed here."""
    with warehouse.connect(read_only=True) as con:
        inputs = latest_verdicts(con, stock.STOCK_INPUTS)
        held = stock.held_skus(con)
    broken = inputs.blocking
    return dg.AssetCheckResult(
        passed=broken.empty,
        description=(
            f"every stock input passed its contract structurally; {len(held)} SKUs held by bad rows"
            if broken.empty
            else "stock inputs whose latest batch failed its contract structurally or was never judged: "
            + ", ".join(broken["feed"])
        ),
        metadata={"inputs": markdown(inputs.table), "held_skus": len(held), "held_sample": markdown(held.head(20))},
    )


defs = dg.Definitions(asset_checks=[flip_share_within_limit, inputs_passed_contracts])
