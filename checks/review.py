"""The contract of the merchandisers' decisions imported from the review app (blocking, like the feeds')."""

import dagster as dg

from cx_pipeline.checks.ingest import app_store_contract
from cx_pipeline.review import decisions
from cx_pipeline.review.contracts import review_decisions_suite

defs = dg.Definitions(
    asset_checks=[
        app_store_contract(
            "review_decisions",
            decisions.FEED,
            decisions.latest_import,
            review_decisions_suite,
            additional_deps=["raw_catalog"],
            description="Imported decisions keep their contract: a known product, a known decision, a reviewer and "
            "a time not in the future. Offending decisions are quarantined (never honoured) and the queue is not "
            "republished in that run.",
        )
    ]
)
