"""The contract of QA's inspection results imported from the web app (blocking, like the feeds')."""

import dagster as dg

from cx_pipeline.checks.ingest import app_store_contract
from cx_pipeline.quality import inspections
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.quality.contracts import inspections_suite

defs = dg.Definitions(
    asset_checks=[
        app_store_contract(
            "inspections",
            inspections.FEED,
            lambda con: inspections.latest_import(con, load_checklists()),
            inspections_suite,
            additional_deps=["raw_receipts"],
            description="Imported inspection results keep their contract: a received lot, items of its category's "
            "checklist, known severities, whole defect counts within the Z1.4 sample, and a time not in the future. "
            "Offending lots are quarantined and nothing downstream uses this run's import.",
        )
    ]
)
