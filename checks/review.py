"""The contract of the merchandisers' decisions imported from the review app (blocking, like the feeds')."""

from datetime import UTC, datetime

import dagster as dg

from assets.resources import WarehouseResource
from checks.contracts import CONTRACT_CHECK, quarantine, verdict
from checks.suites import review_decisions_suite, validate
from cx_pipeline import review


@dg.asset_check(
    asset="review_decisions",
    name=CONTRACT_CHECK,
    blocking=True,
    additional_deps=["raw_catalog"],
    description="Imported decisions keep their contract: a known product, a known decision, a reviewer and a "
    "time not in the future. Offending decisions are quarantined (never honoured) and the queue is not "
    "republished in that run.",
)
def review_decisions_contract(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """The latest import of review decisions keeps its contract."""
    with warehouse.connect() as con:
        frame = review.latest_import(con)
        suite = review_decisions_suite(datetime.now(UTC))  # decisions carry the app's clock, not a source's
        violations = validate(frame, suite)
        quarantined = quarantine(con, review.FEED, frame, violations)
    return verdict(context, "review_decisions", frame, suite, violations, quarantined)


review_checks = [review_decisions_contract]
