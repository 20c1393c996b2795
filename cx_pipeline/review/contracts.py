"""The contract of the decisions merchandisers record in the review app (Great Expectations)."""

from __future__ import annotations

from datetime import datetime

import great_expectations as gx
import great_expectations.expectations as gxe

from cx_pipeline.ingest.suites import CLOCK_SKEW
from cx_pipeline.review.staleness import DECISIONS, UNDO


def review_decisions_suite(now: datetime) -> gx.ExpectationSuite:
    """The contract of a batch of merchandisers' decisions imported from the review app."""
    return gx.ExpectationSuite(
        name="review_decisions_contract",
        expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="decision_id"),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("sku", "decision", "reviewer", "decided_at")),
            gxe.ExpectColumnValuesToBeInSet(column="decision", value_set=[*DECISIONS, UNDO]),
            gxe.ExpectColumnValuesToBeBetween(column="decided_at", max_value=now + CLOCK_SKEW),
            gxe.ExpectColumnValuesToBeInSet(column="_known_sku", value_set=[True]),
        ],
    )
