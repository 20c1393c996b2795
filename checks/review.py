"""The contract of the merchandisers' decisions imported from the review app (blocking, like the feeds')."""

from checks.contracts import app_store_contract
from cx_pipeline import review
from cx_pipeline.suites import review_decisions_suite

review_checks = [
    app_store_contract(
        "review_decisions",
        review.FEED,
        review.latest_import,
        review_decisions_suite,
        additional_deps=["raw_catalog"],
        description="Imported decisions keep their contract: a known product, a known decision, a reviewer and "
        "a time not in the future. Offending decisions are quarantined (never honoured) and the queue is not "
        "republished in that run.",
    )
]
