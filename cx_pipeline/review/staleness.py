"""Stale long-registered products: an explainable staleness score per product and the periodic review queue.

Every rule that applies to a product adds its points and a reason in words ("registered 4.2 years ago; no
receipt for 75 days"); a product whose points reach `flag_score` is flagged. Products registered at least
`long_registered_years` ago form the review cohort. A flagged cohort product enters the review queue when
its review is due: never reviewed, or the cadence of its last decision has run out. A decision keeps it
out until then, unless something material changes first: a spike of cancellation inquiries, or the
storefront showing a stock status that disagrees with the WMS.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cx_pipeline.core.sql import exists, first_row
from cx_pipeline.core.transactions import transaction

DECISIONS = ("keep", "refresh_listing", "discontinue")
UNDO = "undo"  # a decision row that takes back an earlier one (`undoes`)
REASON_CODES = (
    "registered",
    "no_receipt",
    "no_order",
    "out_of_stock",
    "cancellations",
    "status_mismatch",
    "incomplete",
)


class StalenessPolicy(BaseModel):
    """Thresholds, points and review cadence. Every field is a `stale_products` config setting."""

    model_config = ConfigDict(frozen=True)

    long_registered_years: float = Field(2.0, gt=0, description="registered this long ago: in the review cohort")
    no_receipt_days: int = Field(60, gt=0, description="no goods received for this many days")
    no_order_days: int = Field(45, gt=0, description="no customer order for this many days")
    out_of_stock_days: int = Field(14, gt=0, description="out of stock for this many days")
    cancellation_window_days: int = Field(30, gt=0, description="window for counting cancellation inquiries")
    cancellations: int = Field(2, gt=0, description="cancellation inquiries in the window that count as a reason")
    mismatch_window_days: int = Field(30, gt=0, description="window for storefront stock-status mismatches")
    mismatches: int = Field(1, gt=0, description="runs in the window that found the storefront status wrong")
    points_registered: float = Field(1.0, ge=0, description="points for being long-registered")
    points_no_receipt: float = Field(2.0, ge=0, description="points for no recent receipt")
    points_no_order: float = Field(2.0, ge=0, description="points for no recent order")
    points_out_of_stock: float = Field(2.0, ge=0, description="points for a long out-of-stock spell")
    points_cancellations: float = Field(3.0, ge=0, description="points for cancellation inquiries")
    points_status_mismatch: float = Field(2.0, ge=0, description="points for a storefront status mismatch")
    points_incomplete: float = Field(1.0, ge=0, description="points for missing required catalog attributes")
    flag_score: float = Field(3.0, gt=0, description="points at which a product is flagged")
    keep_days: int = Field(180, gt=0, description="next review after a `keep` decision, in days")
    refresh_listing_days: int = Field(60, gt=0, description="next review after `refresh_listing`, in days")
    discontinue_days: int = Field(
        30, gt=0, description="next review after `discontinue` if the catalog still lists the product, in days"
    )
    cancellation_spike: int = Field(
        3, gt=0, description="cancellation inquiries since a decision that bring the product back early"
    )


DDL = """
CREATE TABLE IF NOT EXISTS stale_assessment (  -- the last assessment of stale_products, for the next one (`assess`)
    assessed_at       TIMESTAMPTZ NOT NULL,     -- its WMS clock
    basis             VARCHAR[] NOT NULL,       -- BASIS_SQL's values then
    decisions_through BIGINT NOT NULL,          -- the review decisions it had seen
    products          BIGINT NOT NULL           -- the rows it left (a table emptied since is assessed whole)
);
-- the input batches (judged) and push plans the assessments have seen, by id
CREATE TABLE IF NOT EXISTS stale_assessed_inputs (id VARCHAR PRIMARY KEY);
-- the review queue's CSV as last written (`export_queue`)
CREATE TABLE IF NOT EXISTS stale_queue_export (path VARCHAR PRIMARY KEY, fingerprint VARCHAR NOT NULL);
"""


# One CTE per signal; each is a small aggregate joined to the catalog, so the whole assessment is one scan
# of each input. Days are counted on the WMS's clock ($now). "Never on record" only counts as "no receipt
# for N days" when the warehouse's history reaches back N days. `{only}` narrows the products assessed (and
# the scans of their receipts and orders) to a list of SKUs (see `assess`); empty, it assesses every product.
ASSESS_SQL = """
WITH receipts AS (
    SELECT sku, max(received_at) AS last_receipt_at FROM valid_receipts {only} GROUP BY sku
), orders AS (
    SELECT sku, max(ordered_at) AS last_order_at FROM valid_open_orders {only} GROUP BY sku
), history AS (
    SELECT (SELECT min(received_at) FROM valid_receipts) AS receipts_from,
           (SELECT min(ordered_at) FROM valid_open_orders) AS orders_from
), window_cancellations AS (
    FROM valid_inquiries WHERE reason = 'cancellation' AND created_at > $now - to_days($cancellation_window_days)
), cancellation_skus AS (
    -- an inquiry names its SKU, or else counts for every SKU of its order
    SELECT DISTINCT i.inquiry_id, coalesce(i.sku, o.sku) AS sku, i.created_at
    FROM window_cancellations i
    LEFT JOIN (  -- the lines of those orders only (not every order line made distinct)
        SELECT DISTINCT order_id, sku FROM valid_open_orders
        WHERE order_id IN (SELECT order_id FROM window_cancellations WHERE sku IS NULL)
    ) o ON i.sku IS NULL AND o.order_id = i.order_id
), latest_decision AS (
    -- the newest decision in force: an undo takes its decision back, so the one before it counts again
    SELECT sku, decision_id, decision, note, reviewer, decided_at FROM valid_review_decisions
    WHERE decision <> 'undo'
      AND decision_id NOT IN (SELECT undoes FROM valid_review_decisions WHERE undoes IS NOT NULL)
    QUALIFY row_number() OVER (PARTITION BY sku ORDER BY decided_at DESC, decision_id DESC) = 1
), cancellations AS (
    SELECT c.sku, count(*) AS cancellations_30d,
           count(*) FILTER (c.created_at > d.decided_at) AS cancellations_since_decision
    FROM cancellation_skus c LEFT JOIN latest_decision d USING (sku) WHERE c.sku IS NOT NULL GROUP BY c.sku
), mismatches AS (
    -- a plan found the storefront showing a stock status the WMS had not just changed (a sell-out or a
    -- restock in the same run is the push doing its job, not a listing gone stale)
    SELECT c.sku, count(*) AS mismatches_30d, max(p.planned_at) AS last_mismatch_at
    FROM push_changes c JOIN push_plans p USING (plan_id)
    WHERE c.change IN ('to_out_of_stock', 'back_in_stock') AND coalesce(c.shop_was_stale, true)
      AND p.planned_at > $now - to_days($mismatch_window_days)
    GROUP BY c.sku
), completeness AS (
    SELECT c.sku, count(*) AS required_attributes,
           count(*) FILTER (c.attributes->>f.attribute IS NOT NULL) AS filled_attributes,
           list(f.attribute ORDER BY f.position) FILTER (c.attributes->>f.attribute IS NULL) AS missing_attributes
    FROM valid_catalog c {only} JOIN families f USING (category) GROUP BY c.sku
), facts AS (
    SELECT c.sku, c.title, c.category, c.supplier_id, c.status AS product_status, c.registered_at,
           date_diff('day', c.registered_at, $now) / 365.25 AS years_registered,
           -- days since the last receipt / order: null when there is none on record (then the days of
           -- history stand in for the rule and its reason, but are never shown as "days since")
           r.last_receipt_at, date_diff('day', r.last_receipt_at, $now) AS days_since_receipt,
           date_diff('day', coalesce(r.last_receipt_at, h.receipts_from), $now) AS days_without_receipt,
           o.last_order_at, date_diff('day', o.last_order_at, $now) AS days_since_order,
           date_diff('day', coalesce(o.last_order_at, h.orders_from), $now) AS days_without_order,
           CASE WHEN s.publish_status = 'out_of_stock' THEN s.since END AS out_of_stock_since,
           coalesce(date_diff('day', out_of_stock_since, $now), 0) AS days_out_of_stock,
           coalesce(x.cancellations_30d, 0) AS cancellations_30d,
           coalesce(x.cancellations_since_decision, 0) AS cancellations_since_decision,
           coalesce(m.mismatches_30d, 0) AS mismatches_30d, m.last_mismatch_at,
           coalesce(k.filled_attributes / k.required_attributes, 1.0) AS completeness,
           coalesce(k.missing_attributes, []) AS missing_attributes,
           d.decision_id AS last_decision_id, d.decision AS last_decision, d.note AS last_note,
           d.reviewer AS last_reviewer, d.decided_at AS last_decided_at
    FROM valid_catalog c {only} CROSS JOIN history h
    LEFT JOIN receipts r USING (sku) LEFT JOIN orders o USING (sku)
    LEFT JOIN stock_status_since s USING (sku) LEFT JOIN cancellations x USING (sku)
    LEFT JOIN mismatches m USING (sku) LEFT JOIN completeness k USING (sku) LEFT JOIN latest_decision d USING (sku)
), rules AS (
    SELECT *,
           years_registered >= $long_registered_years AS long_registered,
           long_registered AS r_registered,
           coalesce(days_without_receipt >= $no_receipt_days, false) AS r_no_receipt,
           coalesce(days_without_order >= $no_order_days, false) AS r_no_order,
           days_out_of_stock >= $out_of_stock_days AS r_out_of_stock,
           cancellations_30d >= $cancellations AS r_cancellations,
           mismatches_30d >= $mismatches AS r_status_mismatch,
           completeness < 1 AS r_incomplete
    FROM facts
), scored AS (
    SELECT *,
           r_registered::INT * $points_registered + r_no_receipt::INT * $points_no_receipt
           + r_no_order::INT * $points_no_order + r_out_of_stock::INT * $points_out_of_stock
           + r_cancellations::INT * $points_cancellations + r_status_mismatch::INT * $points_status_mismatch
           + r_incomplete::INT * $points_incomplete AS score,
           list_filter([
               CASE WHEN r_registered THEN printf('registered %.1f years ago', years_registered) END,
               CASE WHEN r_no_receipt THEN CASE WHEN last_receipt_at IS NULL
                   THEN printf('no receipt on record (%d days of history)', days_without_receipt)
                   ELSE printf('no receipt for %d days', days_since_receipt) END END,
               CASE WHEN r_no_order THEN CASE WHEN last_order_at IS NULL
                   THEN printf('no order on record (%d days of history)', days_without_order)
                   ELSE printf('no order for %d days', days_since_order) END END,
               CASE WHEN r_out_of_stock THEN printf('out of stock for %d days', days_out_of_stock) END,
               CASE WHEN r_cancellations THEN printf('%d cancellation inquir%s in %d days', cancellations_30d,
                   CASE WHEN cancellations_30d = 1 THEN 'y' ELSE 'ies' END, $cancellation_window_days) END,
               CASE WHEN r_status_mismatch THEN printf('storefront showed the wrong stock status in %d run%s',
                   mismatches_30d, CASE WHEN mismatches_30d = 1 THEN '' ELSE 's' END) END,
               CASE WHEN r_incomplete THEN printf('catalog %d %% complete (missing %s)',
                   floor(completeness * 100)::INT, array_to_string(missing_attributes, ', ')) END
           ], lambda x: x IS NOT NULL) AS reasons,
           list_filter([
               CASE WHEN r_registered THEN 'registered' END, CASE WHEN r_no_receipt THEN 'no_receipt' END,
               CASE WHEN r_no_order THEN 'no_order' END, CASE WHEN r_out_of_stock THEN 'out_of_stock' END,
               CASE WHEN r_cancellations THEN 'cancellations' END,
               CASE WHEN r_status_mismatch THEN 'status_mismatch' END, CASE WHEN r_incomplete THEN 'incomplete' END
           ], lambda x: x IS NOT NULL) AS reason_codes,
           last_decided_at + to_days(CASE last_decision WHEN 'keep' THEN $keep_days
               WHEN 'refresh_listing' THEN $refresh_listing_days ELSE $discontinue_days END) AS decision_due,
           -- material change since the decision: a cancellation spike, or a newly found status mismatch
           cancellations_since_decision >= $cancellation_spike
               OR coalesce(last_mismatch_at > last_decided_at, false) AS material_change
    FROM rules
)
SELECT * EXCLUDE (days_without_receipt, days_without_order,
                  r_registered, r_no_receipt, r_no_order, r_out_of_stock, r_cancellations, r_status_mismatch,
                  r_incomplete, decision_due, cancellations_since_decision),
       score >= $flag_score AS flagged,
       CASE WHEN NOT long_registered THEN NULL
            WHEN last_decided_at IS NULL THEN registered_at + to_days(($long_registered_years * 365.25)::INT)
            ELSE decision_due END AS next_review_due,
       CASE WHEN product_status = 'discontinued' THEN 'retired'
            WHEN NOT long_registered THEN 'not_in_cohort'
            WHEN last_decided_at IS NOT NULL AND material_change THEN 'material_change'
            WHEN last_decided_at IS NOT NULL AND decision_due > $now THEN 'not_due'
            WHEN NOT flagged THEN 'not_flagged'
            WHEN last_decided_at IS NULL THEN 'never_reviewed'
            ELSE 'due' END AS review_state,
       review_state IN ('never_reviewed', 'due', 'material_change') AS in_queue,
       $now::TIMESTAMPTZ AS assessed_at,  -- this row's; the latest assessment's is stale_assessment.assessed_at
       $assessment::BIGINT AS assessment  -- which assessment wrote the row: a row that kept its number is unchanged
FROM scored  -- unordered: readers order by QUEUE_ORDER; sorting 1 M wide rows here cost a quarter of the step
"""
# Most urgent first; among equals the earliest registered (by day, as the app shows it), then by SKU. The app orders
# its copy by the same columns.
QUEUE_ORDER = "score DESC, CAST(timezone('UTC', registered_at) AS DATE), sku"


# What an assessment depends on beyond each product's own rows: if any of it differs from the last assessment's,
# every product is assessed again. Within one WMS day the rules count whole days, so a product whose rows did not
# change keeps its row; the few rules that compare timestamps (the inquiry and mismatch windows, a decision's
# cadence) are covered by `TOUCHED_SQL`.
BASIS_SQL = """
SELECT CAST($now AS DATE) AS day, $policy AS policy,
       (SELECT min(received_at) FROM valid_receipts) AS receipts_from,
       (SELECT min(ordered_at) FROM valid_open_orders) AS orders_from,
       -- rows quarantined or released in batches already assessed (a new batch's own rows are in TOUCHED_SQL)
       (SELECT count(*) || '/' || count(released_at) FROM quarantine
        WHERE batch_id IN (SELECT id FROM stale_assessed_inputs)) AS quarantine,
       (SELECT count(*) || '/' || coalesce(max(absent_since)::VARCHAR, '') FROM snapshot_absent
        WHERE feed = 'catalog') AS absent
"""
# The products whose row may have changed since the last assessment: those named by
# a batch not judged then (of the catalog, receipts, orders, inquiries: an unjudged batch hides its rows), a new
# review decision or push plan, or a stock status that differs from the one assessed; and those a window or a
# cadence moved past between the two assessments' clocks ($earlier, $later: the WMS clock, estimated from the
# source's, may also step back a little).
TOUCHED_SQL = """
CREATE OR REPLACE TEMP TABLE stale_touched AS
WITH new_batches AS (
    SELECT batch_id AS _batch_id FROM ingest_batches
    WHERE feed IN ('catalog', 'receipts', 'open_orders', 'inquiries') AND batch_id NOT IN (FROM stale_assessed_inputs)
)
SELECT sku FROM raw_catalog SEMI JOIN new_batches USING (_batch_id)
UNION SELECT sku FROM raw_receipts SEMI JOIN new_batches USING (_batch_id)
UNION SELECT sku FROM raw_open_orders SEMI JOIN new_batches USING (_batch_id)
UNION SELECT coalesce(i.sku, o.sku) FROM (FROM raw_inquiries SEMI JOIN new_batches USING (_batch_id)) i
    LEFT JOIN raw_open_orders o ON i.sku IS NULL AND o.order_id = i.order_id
UNION SELECT coalesce(i.sku, o.sku) FROM valid_inquiries i  -- out of the window since
    LEFT JOIN raw_open_orders o ON i.sku IS NULL AND o.order_id = i.order_id
    WHERE i.created_at + to_days($cancellation_window_days) BETWEEN $earlier AND $later
UNION SELECT sku FROM valid_review_decisions WHERE decision_id > $decisions_through
UNION SELECT c.sku FROM push_changes c JOIN push_plans p USING (plan_id)
    WHERE plan_id NOT IN (FROM stale_assessed_inputs)
       OR p.planned_at + to_days($mismatch_window_days) BETWEEN $earlier AND $later
UNION SELECT sku FROM stale_products p JOIN stock_status_since s USING (sku)
    WHERE p.out_of_stock_since IS DISTINCT FROM CASE WHEN s.publish_status = 'out_of_stock' THEN s.since END
UNION SELECT sku FROM stale_products WHERE next_review_due BETWEEN $earlier AND $later
"""


def assess(
    con: duckdb.DuckDBPyConnection,
    policy: StalenessPolicy,
    families: dict[str, list[str]],
    now: datetime,
    whole: bool = False,
) -> int | None:
    """Bring `stale_products` to `now`: one row per catalog product with its signals, score, reasons in words,
    review state and whether it is in the review queue. Within a WMS day, on the same policy and data basis, only
    the products whose rows may have changed are assessed again; otherwise (or `whole`) all. Returns how many
    products were assessed again (None: all of them).

    A product's new rows are known by their batch (`ingest_batches`), as every feed lands them; rows written into
    the raw tables by hand come in no batch, and need `whole`."""
    family_rows = pd.DataFrame(
        [(family, attribute, i) for family, attrs in families.items() for i, attribute in enumerate(attrs)],
        columns=["category", "attribute", "position"],
    )
    settings = {**policy.model_dump(), "now": now, "assessment": secrets.randbits(63)}
    con.register("families", family_rows)
    try:
        policy_key = orjson.dumps([policy.model_dump(), families], option=orjson.OPT_SORT_KEYS).decode()
        basis = _basis(con, now, policy_key)
        last = _last_assessment(con)
        touched = None
        if not whole and last is not None and last["basis"] == basis:
            earlier, later = sorted((last["assessed_at"], now))
            params = {**settings, "earlier": earlier, "later": later, "decisions_through": last["decisions_through"]}
            con.execute(TOUCHED_SQL, {k: v for k, v in params.items() if f"${k}" in TOUCHED_SQL})
            (touched,) = first_row(con, "SELECT count(*) FROM stale_touched")
        with transaction(con):
            if touched is None:
                con.execute(f"CREATE OR REPLACE TABLE stale_products AS {ASSESS_SQL.format(only='')}", settings)
            else:
                only = "SEMI JOIN stale_touched USING (sku)"
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE stale_reassessed AS {ASSESS_SQL.format(only=only)}", settings
                )
                con.execute("DELETE FROM stale_products WHERE sku IN (SELECT sku FROM stale_touched)")
                con.execute("INSERT INTO stale_products SELECT * FROM stale_reassessed")
            _note_assessment(con, now, policy_key)
    finally:
        con.unregister("families")
    return touched


def _last_assessment(con: duckdb.DuckDBPyConnection) -> dict[str, object] | None:
    """The last assessment's clock, basis and decisions, if `stale_products` still holds all it wrote (in this
    code's columns: a table from before `assessment` is assessed whole)."""
    row = exists(con, "stale_products", "assessment") and first_row(
        con,
        """SELECT assessed_at, basis, decisions_through FROM stale_assessment
        WHERE products = (SELECT count(*) FROM stale_products)""",
    )
    return dict(zip(("assessed_at", "basis", "decisions_through"), row, strict=True)) if row else None


def _basis(con: duckdb.DuckDBPyConnection, now: datetime, policy_key: str) -> list[str]:
    return [str(value) for value in first_row(con, BASIS_SQL, {"now": now, "policy": policy_key}) or ()]


def _note_assessment(con: duckdb.DuckDBPyConnection, now: datetime, policy_key: str) -> None:
    """Record the inputs this assessment saw, then its basis over them (so that the next run, asking over the same
    inputs, finds the same basis unless something on it changed)."""
    con.execute(
        """INSERT INTO stale_assessed_inputs
        SELECT batch_id FROM ingest_batches
        WHERE judged_at IS NOT NULL AND feed IN ('catalog', 'receipts', 'open_orders', 'inquiries', 'review_decisions')
        UNION SELECT plan_id FROM push_plans
        EXCEPT FROM stale_assessed_inputs"""
    )
    con.execute("DELETE FROM stale_assessment")
    con.execute(
        """INSERT INTO stale_assessment SELECT $now, $basis,
               (SELECT coalesce(max(decision_id), 0) FROM valid_review_decisions),
               (SELECT count(*) FROM stale_products)""",
        {"now": now, "basis": _basis(con, now, policy_key)},
    )


def queue_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts for the asset's metadata and the demo summary."""
    row = con.execute(
        """SELECT count(*), count(*) FILTER (long_registered), count(*) FILTER (flagged),
                  count(*) FILTER (flagged AND long_registered), count(*) FILTER (in_queue),
                  count(*) FILTER (review_state = 'never_reviewed'), count(*) FILTER (review_state = 'due'),
                  count(*) FILTER (review_state = 'material_change'), count(*) FILTER (review_state = 'not_due')
        FROM stale_products"""
    ).fetchall()[0]
    keys = (
        "products",
        "long_registered",
        "flagged",
        "flagged_long_registered",
        "queue",
        "never_reviewed",
        "due_again",
        "material_change",
        "decided_not_due",
    )
    return dict(zip(keys, (int(v) for v in row), strict=True))


def queue_by(con: duckdb.DuckDBPyConnection, dimension: str) -> pd.DataFrame:
    """Queue size by `reason` (a product counts once per reason) or by `category`."""
    if dimension == "reason":
        return con.sql(
            """SELECT reason, count(*) AS products FROM
            (SELECT unnest(reason_codes) AS reason FROM stale_products WHERE in_queue)
            GROUP BY reason ORDER BY products DESC, reason"""
        ).df()
    if dimension == "category":
        return con.sql(
            """SELECT category, count(*) AS products, round(avg(score), 1) AS avg_score FROM stale_products
            WHERE in_queue GROUP BY category ORDER BY products DESC, category"""
        ).df()
    raise ValueError(f"unknown dimension {dimension!r}")


QUEUE_COLUMNS = (
    "sku, title, category, supplier_id, product_status, registered_at, score, review_state, "
    "array_to_string(reasons, '; ') AS reasons, last_decision, last_decided_at, next_review_due"
)


def export_queue(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """The whole review queue as CSV at `path`, most urgent first, written by DuckDB (not through pandas: at a
    million SKUs the queue holds hundreds of thousands of products). Written only when its rows differ from the
    last export's or the file is gone (a fingerprint of the rows, which also fix their order); True if written."""
    rows = f"SELECT {QUEUE_COLUMNS} FROM stale_products WHERE in_queue"
    (fingerprint,) = first_row(con, f"SELECT count(*) || '/' || coalesce(sum(hash(q)), 0) FROM ({rows}) q")
    exported = first_row(con, "SELECT fingerprint FROM stale_queue_export WHERE path = ?", [str(path)])
    if path.exists() and exported == (fingerprint,):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    con.sql(f"{rows} ORDER BY {QUEUE_ORDER}").write_csv(str(path))
    with transaction(con):
        con.execute("DELETE FROM stale_queue_export WHERE path = ?", [str(path)])
        con.execute("INSERT INTO stale_queue_export VALUES (?, ?)", [str(path), fingerprint])
    return True


def queue(con: duckdb.DuckDBPyConnection, limit: int | None = None) -> pd.DataFrame:
    """The review queue, most urgent first, with each product's reasons in words."""
    return con.sql(
        f"""SELECT {QUEUE_COLUMNS} FROM stale_products WHERE in_queue ORDER BY {QUEUE_ORDER}
        {f"LIMIT {int(limit)}" if limit else ""}"""
    ).df()
