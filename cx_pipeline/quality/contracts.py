"""The contract of the inspection results QA enters in the app (Great Expectations)."""

from __future__ import annotations

from datetime import datetime

import great_expectations as gx
import great_expectations.expectations as gxe

from cx_pipeline.ingest.suites import CLOCK_SKEW
from cx_pipeline.quality.aql import SEVERITIES


def inspections_suite(now: datetime) -> gx.ExpectationSuite:
    """The contract of a batch of QA's inspection results (one row per lot, item and severity)."""
    required = ("receipt_id", "line_no", "sku", "category", "lot_size", "sample_size", "inspector", "inspected_at")
    flags = ("_known_lot", "_known_item", "_sample_as_planned", "_defects_within_sample")
    return gx.ExpectationSuite(
        name="inspections_contract",
        expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="_item_key"),  # inspection|item|severity
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required),
            gxe.ExpectColumnValuesToBeInSet(column="severity", value_set=list(SEVERITIES)),
            gxe.ExpectColumnValuesToBeInSet(column="verdict", value_set=["accept", "reject"]),
            gxe.ExpectColumnValuesToBeBetween(column="defects", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="lot_size", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="inspected_at", max_value=now + CLOCK_SKEW),
            *(gxe.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]) for flag in flags),
        ],
    )
