"""The contract of QA's inspection results imported from the web app (blocking, like the feeds')."""

from datetime import UTC, datetime

import dagster as dg

from assets.resources import WarehouseResource
from checks.contracts import CONTRACT_CHECK, quarantine, verdict
from checks.suites import inspections_suite, validate
from cx_pipeline import inspections
from cx_pipeline.rules import load_checklists


@dg.asset_check(
    asset="inspections",
    name=CONTRACT_CHECK,
    blocking=True,
    additional_deps=["raw_receipts"],
    description="Imported inspection results keep their contract: a received lot, items of its category's "
    "checklist, known severities, whole defect counts within the Z1.4 sample, and a time not in the future. "
    "Offending lots are quarantined and nothing downstream uses this run's import.",
)
def inspections_contract(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """The latest import of inspection results keeps its contract."""
    with warehouse.connect() as con:
        frame = inspections.latest_import(con, load_checklists())
        suite = inspections_suite(datetime.now(UTC))  # entries carry the app's clock, not a source's
        violations = validate(frame, suite)
        quarantined = quarantine(con, inspections.FEED, frame, violations)
    return verdict(context, "inspections", frame, suite, violations, quarantined)


quality_checks = [inspections_contract]
