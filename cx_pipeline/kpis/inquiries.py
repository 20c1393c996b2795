"""Inquiry KPIs: inquiries per 1,000 orders by reason and week, the figures that show whether the pipeline's
work (delay notices, honest stock status, better inspections) reduces what customers have to ask."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

REASONS = ("delivery_delay", "cancellation", "return")

KPI_SQL = """
CREATE OR REPLACE TABLE inquiry_kpis AS
WITH orders AS (   -- an order counts in the week it was placed (weeks start on Monday, UTC)
    SELECT order_id, date_trunc('week', timezone('UTC', min(ordered_at)))::DATE AS week
    FROM valid_open_orders GROUP BY order_id
), weekly_orders AS (
    SELECT week, count(*) AS orders FROM orders GROUP BY week
), weekly_inquiries AS (
    SELECT date_trunc('week', timezone('UTC', created_at))::DATE AS week,
           count(*) FILTER (reason = 'delivery_delay') AS delivery_delay,
           count(*) FILTER (reason = 'cancellation') AS cancellation,
           count(*) FILTER (reason = 'return') AS return
    FROM valid_inquiries GROUP BY week
)
SELECT week, o.orders,
       coalesce(i.delivery_delay, 0) AS delivery_delay_inquiries, coalesce(i.cancellation, 0) AS cancellation_inquiries,
       coalesce(i.return, 0) AS return_inquiries,
       round(1000 * coalesce(i.delivery_delay, 0) / o.orders, 2) AS delivery_delay_per_1000,
       round(1000 * coalesce(i.cancellation, 0) / o.orders, 2) AS cancellation_per_1000,
       round(1000 * coalesce(i.return, 0) / o.orders, 2) AS return_per_1000,
       week + INTERVAL 7 DAY <= timezone('UTC', $now::TIMESTAMPTZ) AS complete
FROM weekly_orders o LEFT JOIN weekly_inquiries i USING (week)
ORDER BY week
"""


def build_kpis(con: duckdb.DuckDBPyConnection, now: datetime) -> pd.DataFrame:
    """(Re)build `inquiry_kpis`, one row per week with orders; `complete` marks weeks that have ended."""
    con.execute(KPI_SQL, {"now": now})
    return con.sql("SELECT * FROM inquiry_kpis").df()


def latest_complete_week(kpis: pd.DataFrame) -> pd.Series | None:
    """The last week that has ended and is not the first, partial week of the history."""
    complete = kpis[kpis["complete"]].iloc[1:]
    return complete.iloc[-1] if not complete.empty else None
