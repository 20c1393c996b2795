"""The ops lead's KPIs week by week: each kind of inquiry per 1,000 orders beside the work meant to reduce it
(the confirmation cycle and delay notices; stale-product reviews and storefront mismatches; inspections and
DHU), computed in the warehouse and published whole to the app store for the KPI page."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import duckdb

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, note_publication
from cx_pipeline.core.sql import first_row
from cx_pipeline.core.transactions import transaction


@dataclass(frozen=True)
class Metric:
    name: str  # as published in `kpi_weeks.metric`
    label: str
    unit: str


@dataclass(frozen=True)
class Kpi:
    """One KPI (its inquiries per 1,000 orders) and what should move it, one chart per unit."""

    name: str
    title: str
    charts: tuple[tuple[Metric, ...], ...]  # the first chart is the KPI itself

    @property
    def headline(self) -> Metric:
        return self.charts[0][0]

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(m for chart in self.charts for m in chart)


PER_1000 = "per 1,000 orders"
KPIS = (
    Kpi(
        "delivery_delay",
        "Delivery-delay inquiries",
        (
            (Metric("delivery_delay_per_1000", "Delivery-delay inquiries", PER_1000),),
            (
                Metric("cycle_p50_hours", "Confirmation cycle p50", "hours"),
                Metric("cycle_p90_hours", "Confirmation cycle p90", "hours"),
            ),
            (Metric("notices_sent", "Delay notices sent", "notices"),),
        ),
    ),
    Kpi(
        "cancellation",
        "Cancellation inquiries",
        (
            (Metric("cancellation_per_1000", "Cancellation inquiries", PER_1000),),
            (
                Metric("products_reviewed", "Stale products reviewed", "products"),
                Metric("stock_mismatches", "Storefront stock mismatches", "products"),
            ),
        ),
    ),
    Kpi(
        "return",
        "Return inquiries",
        (
            (Metric("return_per_1000", "Return inquiries", PER_1000),),
            (Metric("inspections_logged", "Inspections logged", "lots"),),
            (Metric("dhu", "Defects per hundred units", "DHU"),),
        ),
    ),
)
METRICS = tuple(m.name for kpi in KPIS for m in kpi.metrics)

# Weeks start on Monday (UTC) and are labelled as ISO weeks (2026-W46), which sort as text. A week counts once it
# has ended (`inquiry_kpis.complete`) and if it lies wholly inside the order history (the first week may not).
# Every measure is placed in the week its event happened: a receipt's cycle in its arrival week, a notice in the
# week it was sent, a mismatch in the week of the plan that found it, an inspection in the week it was done.
WEEKLY_SQL = """
CREATE OR REPLACE TABLE kpi_weeks AS
WITH weeks AS (
    SELECT week, delivery_delay_per_1000, cancellation_per_1000, return_per_1000 FROM inquiry_kpis
    WHERE complete AND week >= (SELECT min(timezone('UTC', ordered_at)) FROM valid_open_orders)
), cycle AS (
    SELECT date_trunc('week', timezone('UTC', received_at))::DATE AS week,
           round(quantile_cont(epoch(confirmed_at - received_at) / 3600, 0.5), 2) AS cycle_p50_hours,
           round(quantile_cont(epoch(confirmed_at - received_at) / 3600, 0.9), 2) AS cycle_p90_hours
    FROM receipt_confirmations WHERE NOT backfill GROUP BY ALL
), notices AS (
    SELECT date_trunc('week', timezone('UTC', sent_at))::DATE AS week, count(*) AS notices_sent
    FROM notice_ledger WHERE status = 'sent' GROUP BY ALL
), reviews AS (   -- products decided that week: an undone decision is no review, a product decided twice is one
    SELECT date_trunc('week', timezone('UTC', d.decided_at))::DATE AS week, count(DISTINCT d.sku) AS products_reviewed
    FROM valid_review_decisions d
    WHERE d.decision IN ('keep', 'refresh_listing', 'discontinue')
        AND d.decision_id NOT IN (SELECT undoes FROM valid_review_decisions WHERE undoes IS NOT NULL)
    GROUP BY ALL
), mismatches AS (   -- as the staleness score counts them: a flip the WMS had not just caused
    SELECT date_trunc('week', timezone('UTC', p.planned_at))::DATE AS week, count(*) AS stock_mismatches
    FROM push_changes c JOIN push_plans p USING (plan_id)
    WHERE c.change IN ('to_out_of_stock', 'back_in_stock') AND coalesce(c.shop_was_stale, true)
    GROUP BY ALL
), wide AS (
    SELECT strftime(w.week, '%G-W%V') AS week,
           w.delivery_delay_per_1000::DOUBLE AS delivery_delay_per_1000, c.cycle_p50_hours::DOUBLE AS cycle_p50_hours,
           c.cycle_p90_hours::DOUBLE AS cycle_p90_hours, coalesce(n.notices_sent, 0)::DOUBLE AS notices_sent,
           w.cancellation_per_1000::DOUBLE AS cancellation_per_1000,
           coalesce(r.products_reviewed, 0)::DOUBLE AS products_reviewed,
           coalesce(m.stock_mismatches, 0)::DOUBLE AS stock_mismatches,
           w.return_per_1000::DOUBLE AS return_per_1000,
           coalesce(i.inspections_logged, 0)::DOUBLE AS inspections_logged, i.dhu::DOUBLE AS dhu
    FROM weeks w LEFT JOIN cycle c USING (week) LEFT JOIN notices n USING (week) LEFT JOIN reviews r USING (week)
    LEFT JOIN mismatches m USING (week) LEFT JOIN kpi_inspected_weeks i USING (week)
)
-- long: one row per week and metric; null where the week had nothing to measure (no receipt, no inspection)
SELECT week, metric, value FROM wide UNPIVOT INCLUDE NULLS (value FOR metric IN (COLUMNS(* EXCLUDE (week))))
ORDER BY week, metric
"""


DDL = """
CREATE TABLE IF NOT EXISTS kpi_inspected_weeks (  -- inspections logged and DHU per week, see `refresh_inspected_weeks`
    week               DATE NOT NULL,
    inspections_logged BIGINT NOT NULL,
    dhu                DOUBLE
);
CREATE TABLE IF NOT EXISTS kpi_inspected_from (   -- one row: the inspections it was built from (`inspection_inputs`)
    inputs VARCHAR NOT NULL
);
ALTER TABLE kpi_inspected_from ADD COLUMN IF NOT EXISTS weeks BIGINT;  -- its rows: other than these, emptied since
"""
INSPECTED_SQL = """
INSERT INTO kpi_inspected_weeks
WITH lots AS (   -- defects per hundred inspected units: all defects found over all units sampled
    SELECT i.inspection_id, i.inspected_at, any_value(i.sample_size) AS units, coalesce(sum(d.defects), 0) AS defects
    FROM valid_inspections i LEFT JOIN inspection_defects d USING (inspection_id) GROUP BY ALL
)
SELECT date_trunc('week', timezone('UTC', inspected_at))::DATE AS week, count(*) AS inspections_logged,
       round(100 * sum(defects) / nullif(sum(units), 0), 3) AS dhu
FROM lots GROUP BY ALL
"""


def refresh_inspected_weeks(con: duckdb.DuckDBPyConnection) -> bool:
    """Bring `kpi_inspected_weeks` up to date with the inspections; return whether it was rebuilt.

    It reads every inspection's defects (17 M rows at 1 M SKUs: most of the weekly KPIs' time), so it is rebuilt
    only when the inspections changed since, by the fingerprint the DHU keeps (`inspection_inputs`), or when that
    fingerprint is missing or the table no longer holds the weeks it recorded.
    """
    (inputs,) = first_row(con, "SELECT inputs FROM inspection_inputs")  # the quality room's view
    kept = first_row(con, "SELECT inputs, weeks = (SELECT count(*) FROM kpi_inspected_weeks) FROM kpi_inspected_from")
    if kept == (inputs, True):
        return False
    with transaction(con):
        con.execute("DELETE FROM kpi_inspected_weeks")
        con.execute(INSPECTED_SQL)
        con.execute("DELETE FROM kpi_inspected_from")
        con.execute("INSERT INTO kpi_inspected_from SELECT ?, count(*) FROM kpi_inspected_weeks", [inputs])
    return True


def build_weekly(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, float | None]]:
    """(Re)build `kpi_weeks` from `inquiry_kpis` (build that first) and the rooms' tables; return its rows."""
    refresh_inspected_weeks(con)
    con.execute(WEEKLY_SQL)
    return con.execute("SELECT week, metric, value FROM kpi_weeks ORDER BY week, metric").fetchall()


def publish(store: sqlite3.Connection, rows: list[tuple[str, str, float | None]], run_id: str, now: datetime) -> int:
    """Replace the KPI page's weeks in the app store in one transaction; return how many weeks."""
    with appstore.transaction(store):
        store.execute("DELETE FROM kpi_weeks")
        store.executemany("INSERT INTO kpi_weeks VALUES (?, ?, ?)", rows)
        (weeks,) = store.execute("SELECT count(DISTINCT week) FROM kpi_weeks").fetchone()
        note_publication(store, "kpi_weeks", run_id, iso(now), weeks)
    return weeks


# --- the app's side ---

CHANGES_SQL = """
WITH known AS (SELECT * FROM kpi_weeks WHERE value IS NOT NULL),
ends AS (SELECT metric, min(week) AS first_week, max(week) AS last_week FROM known GROUP BY metric)
SELECT e.metric, e.first_week, e.last_week, f.value AS first_value, l.value AS last_value,
       CASE WHEN f.value <> 0 AND e.last_week > e.first_week THEN 100.0 * (l.value - f.value) / f.value END
           AS change_pct
FROM ends e JOIN known f ON f.metric = e.metric AND f.week = e.first_week
JOIN known l ON l.metric = e.metric AND l.week = e.last_week
"""


@dataclass(frozen=True)
class Published:
    weeks: list[str]
    values: dict[str, list[float | None]]  # metric -> one value per week (None: nothing to measure)
    changes: dict[str, dict[str, object]]  # metric -> first and last week on record, their values, change_pct


def published(store: sqlite3.Connection) -> Published:
    """The weeks as the pipeline last published them, each metric as a series over all of them."""
    rows = store.execute("SELECT week, metric, value FROM kpi_weeks ORDER BY week").fetchall()
    weeks = sorted({r["week"] for r in rows})
    position = {week: i for i, week in enumerate(weeks)}
    values: dict[str, list[float | None]] = {metric: [None] * len(weeks) for metric in METRICS}
    for r in rows:
        if r["metric"] in values:
            values[r["metric"]][position[r["week"]]] = r["value"]
    changes = {r["metric"]: dict(r) for r in store.execute(CHANGES_SQL)}
    return Published(weeks, values, changes)
