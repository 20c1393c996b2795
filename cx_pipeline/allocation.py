"""First-come-first-served allocation of stock (on hand, in QC, on order) to open order lines.

Per SKU and warehouse (the OMS assigns each line its fulfilment warehouse), supply is a queue of segments
ordered by when the units become sellable: sellable stock now, units in QC after the QC lead time, then each
open PO line's outstanding units on its expected date (an overdue PO line has no date: the supplier is late).
Open order lines queue by order time. A line is served by the segment that holds its last unit, so both
queues become cumulative ranges and one range join in DuckDB allocates everything at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

DELAY_CAUSES = {
    "short_delivery": "a delivery from our supplier arrived short or damaged",
    "supplier_late": "a delivery from our supplier is late",
    "awaiting_stock": "the item is on its way to our warehouse",
    "out_of_stock": "the item is out of stock and no delivery is scheduled yet",
}


@dataclass(frozen=True)
class AllocationPolicy:
    """Lead times that turn a supply date into a delivery date for the customer."""

    qc_hours: float = 8.0  # received units are sellable after QC
    transit_days: float = 2.0  # from the warehouse to the customer


def allocate(con: duckdb.DuckDBPyConnection, policy: AllocationPolicy, now: datetime) -> str:
    """Create temp table `line_allocation`: every open order line with its supply date, new delivery ETA
    (null when no supply is dated) and whether it misses its promise. Returns the table name."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE supply AS
        WITH segments AS (
            SELECT sku, warehouse, 0 AS rank, $now::TIMESTAMPTZ AS available_at,
                   greatest(on_hand - in_qc - damaged, 0) AS qty, NULL AS po_id
            FROM valid_on_hand
            UNION ALL
            SELECT sku, warehouse, 1, $now::TIMESTAMPTZ + $qc::INTERVAL, in_qc, NULL FROM valid_on_hand
            UNION ALL
            -- an overdue line keeps its place in the queue, but has no date any more
            SELECT sku, warehouse, 2, CASE WHEN expected_at >= $now::DATE THEN expected_at::TIMESTAMPTZ END,
                   qty_ordered - qty_received, po_id
            FROM po_line_receipts
            WHERE po_status = 'open' AND qty_received < qty_ordered
        )
        SELECT sku, warehouse, rank, available_at, qty, po_id,
               sum(qty) OVER w - qty AS supply_from, sum(qty) OVER w AS supply_to
        FROM segments WHERE qty > 0
        WINDOW w AS (PARTITION BY sku, warehouse ORDER BY rank, available_at NULLS LAST, po_id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)""",
        {"now": now, "qc": timedelta(hours=policy.qc_hours)},
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE line_allocation AS
        WITH demand AS (
            SELECT order_id, line_no, customer_id, sku, warehouse, qty, ordered_at, promised_at,
                   sum(qty) OVER (PARTITION BY sku, warehouse ORDER BY ordered_at, order_id, line_no
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS demand_to
            FROM valid_open_orders WHERE status = 'open'
        )
        SELECT d.*, s.rank = 0 AS from_stock, s.available_at, s.po_id AS supplied_by_po,
               s.qty IS NOT NULL AS has_supply, s.available_at + $transit::INTERVAL AS eta
        FROM demand d LEFT JOIN supply s
          ON s.sku = d.sku AND s.warehouse = d.warehouse
         AND d.demand_to > s.supply_from AND d.demand_to <= s.supply_to""",
        {"transit": timedelta(days=policy.transit_days)},
    )
    return "line_allocation"


def delayed_lines(con: duckdb.DuckDBPyConnection) -> str:
    """Create temp table `delayed_lines`: allocated lines that miss their promise, with their cause.
    Needs `line_allocation` and the `receipt_discrepancies` table. Returns the table name."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE delayed_lines AS
        SELECT a.*,
               CASE WHEN a.has_supply AND a.available_at IS NULL THEN 'supplier_late'
                    WHEN EXISTS (SELECT 1 FROM receipt_discrepancies x WHERE x.sku = a.sku
                                 AND x.kind IN ('short', 'damaged') AND x.status <> 'resolved') THEN 'short_delivery'
                    WHEN a.has_supply THEN 'awaiting_stock'
                    ELSE 'out_of_stock' END AS cause
        FROM line_allocation a
        -- a line served from stock on the shelf is the warehouse's to ship, not a stock delay
        WHERE NOT coalesce(a.from_stock, false) AND (a.eta IS NULL OR a.eta > a.promised_at)"""
    )
    return "delayed_lines"
