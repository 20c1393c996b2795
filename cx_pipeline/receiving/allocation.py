"""First-come-first-served allocation of stock (on hand, in QC, on order) to open order lines, and the cause
of each late line, both per fulfilment warehouse.

Per SKU and warehouse (the OMS assigns each line its fulfilment warehouse), supply is a queue of segments
ordered by when the units become sellable: sellable stock now, units in QC after the QC lead time, each open
PO line's outstanding units on its expected date plus QC (an overdue PO line has no date: the supplier is
late), and last the units a short or damaged delivery to that warehouse lost, which will not come (no date).
Open order lines queue by order time. A line is served by the segment that holds its last unit, so both
queues become cumulative ranges and one range join in DuckDB allocates everything at once.

The segment that serves a line also names its cause and the PO line behind it: a discrepancy at one
warehouse can only ever be the cause of lines fulfilled by that warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

DELAY_CAUSES = {
    "short_delivery": "a delivery from our supplier arrived short or damaged",
    "supplier_late": "a delivery from our supplier is late",
    "awaiting_stock": "new stock is on its way to our warehouse",
    "out_of_stock": "out of stock",
}
# Discrepancy kinds that a cause names (receipt_discrepancies.kind), for marking them customers-notified.
CAUSE_KINDS = {"short_delivery": ("short", "damaged"), "supplier_late": ("late",)}

# Supply segments, in queue order.
SHELF, QC, ON_ORDER, LOST = 0, 1, 2, 3


@dataclass(frozen=True)
class AllocationPolicy:
    """Lead times that turn a supply date into a delivery date for the customer."""

    qc_hours: float = 8.0  # received units are sellable after QC
    transit_days: float = 2.0  # from the warehouse to the customer


def allocate(con: duckdb.DuckDBPyConnection, policy: AllocationPolicy, now: datetime) -> str:
    """Create temp table `line_allocation`: every open order line with the supply segment that serves it
    (`segment`, null beyond all supply; `po_id`/`po_line` for a PO line's units), its new delivery ETA (null
    when that supply has no date) and whether it is served from the shelf. Needs `po_line_receipts` and
    `receipt_discrepancies`. Returns the table name.

    Supply is queued only at the SKUs and warehouses where an open line waits (532,000 of 2 M at 1 M SKUs): the
    stock read twice and every segment's running sum were most of the allocation's time."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE demand AS
        SELECT order_id, line_no, customer_id, sku, warehouse, qty, ordered_at, promised_at,
               sum(qty) OVER (PARTITION BY sku, warehouse ORDER BY ordered_at, order_id, line_no
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS demand_to
        FROM valid_open_orders WHERE status = 'open'"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE supply AS
        WITH waiting AS MATERIALIZED (SELECT DISTINCT sku, warehouse FROM demand),
        on_hand AS MATERIALIZED (
            SELECT sku, warehouse, on_hand, in_qc, damaged FROM valid_on_hand SEMI JOIN waiting USING (sku, warehouse)
        ), outstanding AS (  -- what an open PO line still owes: it may yet come
            SELECT po_id, po_line, sku, warehouse, expected_at, qty_ordered - qty_received AS qty
            FROM po_line_receipts WHERE po_status = 'open' AND qty_received < qty_ordered
        ), lost AS (
            -- Good units a short or damaged delivery left out and no open PO line still owes: the damaged gap
            -- includes the short one, so a line's loss is its largest gap less what it still owes.
            SELECT d.po_id, d.po_line, any_value(d.sku) AS sku, any_value(d.warehouse) AS warehouse,
                   any_value(d.expected_at) AS expected_at, max(d.qty_gap) - coalesce(any_value(o.qty), 0) AS qty
            FROM receipt_discrepancies d LEFT JOIN outstanding o USING (po_id, po_line)
            WHERE d.kind IN ('short', 'damaged') AND d.status <> 'resolved'
            GROUP BY d.po_id, d.po_line
        ), segments AS (
            SELECT sku, warehouse, {SHELF} AS segment, $now::TIMESTAMPTZ AS available_at,
                   greatest(on_hand - in_qc - damaged, 0) AS qty, NULL AS po_id, NULL::INTEGER AS po_line,
                   NULL::DATE AS expected_at
            FROM on_hand
            UNION ALL
            SELECT sku, warehouse, {QC}, $now::TIMESTAMPTZ + $qc::INTERVAL, in_qc, NULL, NULL, NULL FROM on_hand
            UNION ALL
            -- an overdue line keeps its place in the queue, but has no date any more
            SELECT sku, warehouse, {ON_ORDER},
                   CASE WHEN expected_at >= $now::DATE THEN expected_at::TIMESTAMPTZ + $qc::INTERVAL END,
                   qty, po_id, po_line, expected_at
            FROM outstanding SEMI JOIN waiting USING (sku, warehouse)
            UNION ALL
            SELECT sku, warehouse, {LOST}, NULL, qty, po_id, po_line, expected_at
            FROM lost SEMI JOIN waiting USING (sku, warehouse)
        )
        SELECT sku, warehouse, segment, available_at, qty, po_id, po_line,
               sum(qty) OVER w - qty AS supply_from, sum(qty) OVER w AS supply_to
        FROM segments WHERE qty > 0
        WINDOW w AS (PARTITION BY sku, warehouse
                     ORDER BY segment, available_at NULLS LAST, expected_at, po_id, po_line
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)""",
        {"now": now, "qc": timedelta(hours=policy.qc_hours)},
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE line_allocation AS
        SELECT d.*, s.segment, s.segment = {SHELF} AS from_stock, s.available_at, s.po_id, s.po_line,
               s.po_id AS supplied_by_po, s.qty IS NOT NULL AS has_supply,
               s.available_at + $transit::INTERVAL AS eta
        FROM demand d LEFT JOIN supply s
          ON s.sku = d.sku AND s.warehouse = d.warehouse
         AND d.demand_to > s.supply_from AND d.demand_to <= s.supply_to""",
        {"transit": timedelta(days=policy.transit_days)},
    )
    return "line_allocation"


def delayed_lines(con: duckdb.DuckDBPyConnection) -> str:
    """Create temp table `delayed_lines`: allocated lines that miss their promise, with their cause, decided
    from the segment that serves the line at its own warehouse. Needs `line_allocation` and the
    `receipt_discrepancies` table. Returns the table name.

    `no_date` says why a line has no ETA: `overdue` (its PO line is past due) or `none_scheduled`."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE delayed_lines AS
        WITH short_lines AS (  -- PO lines whose delivery came short or damaged (so, at their own warehouse)
            SELECT DISTINCT po_id, po_line FROM receipt_discrepancies
            WHERE kind IN ('short', 'damaged') AND status <> 'resolved'
        )
        SELECT a.*,
               CASE WHEN a.segment = {LOST} OR (a.segment = {ON_ORDER} AND s.po_id IS NOT NULL) THEN 'short_delivery'
                    WHEN a.segment = {ON_ORDER} AND a.available_at IS NULL THEN 'supplier_late'
                    WHEN a.segment IN ({QC}, {ON_ORDER}) THEN 'awaiting_stock'
                    ELSE 'out_of_stock' END AS cause,
               CASE WHEN a.eta IS NOT NULL THEN NULL
                    WHEN a.segment = {ON_ORDER} THEN 'overdue' ELSE 'none_scheduled' END AS no_date
        FROM line_allocation a LEFT JOIN short_lines s ON s.po_id = a.po_id AND s.po_line = a.po_line
        -- a line served from stock on the shelf is the warehouse's to ship, not a stock delay
        WHERE NOT coalesce(a.from_stock, false) AND (a.eta IS NULL OR a.eta > a.promised_at)"""
    )
    return "delayed_lines"
