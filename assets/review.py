"""Stale long-registered products: the review decisions from the web app and the periodic review queue."""

from datetime import UTC, datetime

import dagster as dg

from cx_pipeline.assets.metadata import markdown, timed
from cx_pipeline.assets.resources import WAREHOUSE_POOL, AppStoreResource, WarehouseResource
from cx_pipeline.ingest.clock import wms_clock
from cx_pipeline.review import decisions, staleness
from cx_pipeline.review.families import load_families

OWNERS = ["team:cx-data", "team:merchandising"]
PREVIEW_ROWS = 20


class StalenessConfig(dg.Config, staleness.StalenessPolicy):
    """Thresholds, points and review cadence of the staleness assessment (see docs/review.md), `families_file`:
    a YAML of required catalog attributes per category (default: the bundled one), and `assess_whole`: assess
    every product, not only those whose rows may have changed since the day's first run."""

    families_file: str = ""
    assess_whole: bool = False


@dg.asset(group_name="catalog_review", kinds={"duckdb", "sqlite", "python"}, owners=OWNERS, pool=WAREHOUSE_POOL)
def review_decisions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, app_store: AppStoreResource
) -> dg.MaterializeResult:
    """Merchandisers' review decisions (keep, refresh listing, discontinue) recorded in the review app since
    the last run, copied into the warehouse."""
    with warehouse.connect() as con, app_store.connect() as store:
        imported = decisions.import_decisions(store, con, context.run_id, datetime.now(UTC))
        recent, total = decisions.latest(con), decisions.count(con)
    context.log.info(f"review_decisions: {imported} new decisions imported from {app_store.path}")
    return dg.MaterializeResult(
        metadata={"imported": imported, "decisions_total": total, "latest": markdown(recent, "no decisions yet")}
    )


@dg.asset(
    group_name="catalog_review",
    kinds={"duckdb", "sqlite", "python"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[
        review_decisions,
        "raw_catalog",
        "raw_receipts",
        "raw_open_orders",
        "raw_inquiries",
        "stock_position",
        "storefront_push_plan",  # the storefront status mismatches it found
    ],
)
def stale_products(
    context: dg.AssetExecutionContext,
    config: StalenessConfig,
    warehouse: WarehouseResource,
    app_store: AppStoreResource,
) -> dg.MaterializeResult:
    """Every product's staleness with its reasons in words, and the review queue of long-registered products
    whose review is due, published to the review app and exported as CSV."""
    policy = staleness.StalenessPolicy(**config.model_dump(exclude={"families_file", "assess_whole"}))
    families = load_families(config.families_file or None)
    seconds: dict[str, float] = {}  # each part's, for the log: the first publication of a day sends months of history
    with warehouse.connect() as con:
        with timed(seconds, "assessment"):
            reassessed = staleness.assess(con, policy, families, wms_clock(con), whole=config.assess_whole)
        with timed(seconds, "summary and CSV"):
            counts = staleness.queue_summary(con)
            by_reason = staleness.queue_by(con, "reason")
            by_category = staleness.queue_by(con, "category")
            top = staleness.queue(con, limit=PREVIEW_ROWS)
            export = warehouse.reports_dir / "stale_products_queue.csv"
            exported = staleness.export_queue(con, export)
        with timed(seconds, "publication"), app_store.connect() as store:
            published = decisions.publish_queue(store, con, context.run_id)
    again = "every product" if reassessed is None else f"{reassessed:,} products whose rows may have changed"
    context.log.info(
        f"stale_products: assessed {again}; {counts['queue']:,} products to review of "
        f"{counts['long_registered']:,} long-registered; "
        f"the review app's copy: {published.sent:,} rows sent, {published.withdrawn:,} withdrawn, "
        f"{published.cohort:,} products in all; the queue's CSV "
        + ("written" if exported else "unchanged, not written again")
        + " ("
        + ", ".join(f"{part} {s:.1f} s" for part, s in seconds.items())
        + ")"
    )
    return dg.MaterializeResult(
        metadata={
            **counts,
            "assessed": counts["products"] if reassessed is None else reassessed,
            "assessed_whole": reassessed is None,
            "published_to_app": published.cohort,
            "sent_to_app": published.sent,
            "queue_by_reason": markdown(by_reason, "the queue is empty"),
            "queue_by_category": markdown(by_category, "the queue is empty"),
            "top_of_queue": markdown(top, "the queue is empty"),
            "queue_csv": dg.MetadataValue.path(str(export.resolve())),
            "queue_csv_written": exported,
        }
    )


defs = dg.Definitions(assets=[review_decisions, stale_products])
