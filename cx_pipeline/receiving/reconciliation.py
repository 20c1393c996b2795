"""Receipt confirmation: reconcile receipts against purchase-order lines, and time the confirmation cycle.

Discrepancies live in `receipt_discrepancies`, one row per PO line and kind, and keep their history:
each run opens what it finds, refreshes what is still wrong and resolves what a later receipt (or the PO's
closing) settled. `delay_notices` moves the ones that caused customer notices to `customers_notified`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from cx_pipeline.core.sql import first_row
from cx_pipeline.core.transactions import transaction

DISCREPANCY_KINDS = ("short", "over", "damaged", "late")
DISCREPANCY_STATUSES = ("open", "customers_notified", "resolved")

DDL = """
CREATE TABLE IF NOT EXISTS receipt_discrepancies (
    po_id          VARCHAR NOT NULL,
    po_line        INTEGER NOT NULL,
    kind           VARCHAR NOT NULL,    -- short, over, damaged, late
    sku            VARCHAR NOT NULL,
    supplier_id    VARCHAR,
    warehouse      VARCHAR,
    qty_ordered    INTEGER NOT NULL,
    qty_received   INTEGER NOT NULL,
    qty_damaged    INTEGER NOT NULL,
    qty_gap        INTEGER NOT NULL,    -- units missing (short, damaged) or in excess (over); 0 for late
    damage_reasons VARCHAR,
    expected_at    DATE,
    last_received_at TIMESTAMPTZ,
    days_late      INTEGER NOT NULL,
    status         VARCHAR NOT NULL,    -- open -> customers_notified -> resolved
    resolution     VARCHAR,             -- later_receipt, po_closed, po_cancelled
    opened_at      TIMESTAMPTZ NOT NULL,
    notified_at    TIMESTAMPTZ,
    resolved_at    TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (po_id, po_line, kind)
);
CREATE TABLE IF NOT EXISTS reconciled (     -- what `po_line_receipts` reflects, so a run redoes only what changed
    feed      VARCHAR NOT NULL,         -- receipts or purchase_orders
    batch_id  VARCHAR NOT NULL          -- every row of this batch is reconciled
);
CREATE TABLE IF NOT EXISTS reconciled_with (  -- one row: the policy and quarantine the lines were judged with
    policy     VARCHAR NOT NULL,
    quarantine VARCHAR NOT NULL
);
-- and how many discrepancies it left: fewer or more now, the table was rebuilt or emptied since
ALTER TABLE reconciled_with ADD COLUMN IF NOT EXISTS discrepancies BIGINT;
-- and the raw tables' landing clock (`_loaded_at`) then, if no batch was left unjudged: every batch landed by then
-- is reconciled, so the next run looks for new batches only among the rows landed since
ALTER TABLE reconciled_with ADD COLUMN IF NOT EXISTS landed_through TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS confirmed_through (  -- one row, from the last `confirm_receipts`:
    loaded_at TIMESTAMPTZ,                      -- the receipts' landing clock then (`_loaded_at`)
    complete  BOOLEAN NOT NULL                  -- whether every receipt landed was valid then (none held back)
);
CREATE TABLE IF NOT EXISTS receipt_confirmations (
    receipt_id   VARCHAR NOT NULL,      -- one row per receipt, kept so by `confirm_receipts` (no index: bulk loads)
    warehouse    VARCHAR,
    received_at  TIMESTAMPTZ NOT NULL,  -- arrival in the WMS (first line)
    confirmed_at TIMESTAMPTZ NOT NULL,  -- reconciled by the pipeline, on the WMS clock
    backfill     BOOLEAN NOT NULL,      -- first seen in the initial full load: not part of the cycle metric
    run_id       VARCHAR
);
"""


@dataclass(frozen=True)
class ReceivingPolicy:
    """When a PO line counts as fully received (like Odoo's reception threshold and ERPNext's over-receipt
    allowance) and when it counts as late."""

    short_tolerance_pct: float = 0.0  # received below ordered x (1 - this) is short
    over_allowance_pct: float = 5.0  # received above ordered x (1 + this) is over-received
    late_grace_days: int = 0  # nothing received this many days after the expected date is late


TOUCHED = "SEMI JOIN touched USING (po_id, po_line)"  # limits a statement to the PO lines to redo


def touched_po_lines(con: duckdb.DuckDBPyConnection, judged: tuple[str, str]) -> bool:
    """Create temp table `touched`: the PO lines whose receipt state may have changed since the last
    reconciliation, and temp table `pending`: the batches that brought the changes. Returns False when every
    line must be redone instead: the first time, when the policy or the quarantine of PO lines or receipts
    changed since the last reconciliation (`judged`, from `judged_with`; a quarantined row leaves `valid_*`
    without a new batch), or when `receipt_discrepancies` no longer holds what it left.

    A line is redone when a batch not yet reconciled touched its PO line or one of its receipts, and while
    nothing has arrived against it: its days late grow with the clock.
    """
    pending_batches(con)
    kept = first_row(
        con,
        """SELECT policy, quarantine, discrepancies = (SELECT count(*) FROM receipt_discrepancies)
        FROM reconciled_with""",
    )
    if kept != (*judged, True):
        return False
    con.execute(
        """CREATE OR REPLACE TEMP TABLE touched AS
        SELECT po_id, po_line FROM raw_purchase_orders
        WHERE _batch_id IN (SELECT batch_id FROM pending WHERE feed = 'purchase_orders')
        UNION SELECT po_id, po_line FROM raw_receipts
        WHERE _batch_id IN (SELECT batch_id FROM pending WHERE feed = 'receipts')
        UNION SELECT po_id, po_line FROM po_line_receipts WHERE first_received_at IS NULL"""
    )
    return True


def pending_batches(con: duckdb.DuckDBPyConnection) -> None:
    """Create temp table `pending`: the batches of PO lines and receipts not reconciled yet, and temp table
    `landed`: what `reconciled_with.landed_through` keeps at the end. Only the rows landed since the last
    reconciliation are looked at when it left no batch unjudged (all of them otherwise: 30 M rows at 1 M SKUs)."""
    con.execute(
        """CREATE OR REPLACE TEMP TABLE landed AS
        SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM ingest_batches
                                     WHERE feed IN ('purchase_orders', 'receipts') AND judged_at IS NULL)
                    THEN greatest((SELECT max(_loaded_at) FROM raw_purchase_orders),
                                  (SELECT max(_loaded_at) FROM raw_receipts)) END AS through"""
    )
    since = first_row(con, "SELECT landed_through FROM reconciled_with WHERE landed_through IS NOT NULL")
    scope, params = ("", {}) if since is None else ("WHERE _loaded_at >= $since", {"since": since[0]})
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE pending AS
        SELECT DISTINCT 'purchase_orders' AS feed, _batch_id AS batch_id FROM raw_purchase_orders {scope}
        UNION SELECT DISTINCT 'receipts', _batch_id FROM raw_receipts {scope}
        EXCEPT SELECT feed, batch_id FROM reconciled
        -- a batch its contract has not judged yet is not in `valid_*`: it is pending until it is
        EXCEPT SELECT feed, batch_id FROM ingest_batches WHERE judged_at IS NULL""",
        params,
    )


def judged_with(con: duckdb.DuckDBPyConnection, policy: ReceivingPolicy) -> tuple[str, str]:
    """The policy and a fingerprint of the quarantine of PO lines and receipts, as `reconciled_with` keeps them."""
    (quarantine,) = first_row(
        con,
        """SELECT concat_ws('/', count(*), max(quarantined_at), max(released_at)) FROM quarantine
        WHERE feed IN ('purchase_orders', 'receipts')""",
    )
    return repr(policy), quarantine


def receipts_may_have_moved(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether a pending receipts batch brought new versions of receipts landed before (or cannot say: a batch
    `ingest_batches` does not know). Only then may a receipt have left a PO line that no batch touched; a batch
    of receipts never seen before changes only the lines it names."""
    (replacing,) = first_row(
        con,
        """SELECT count(*) FROM pending p LEFT JOIN ingest_batches b USING (batch_id)
        WHERE p.feed = 'receipts' AND coalesce(b.rows_updated, 1) > 0""",
    )
    return replacing > 0


def in_step(con: duckdb.DuckDBPyConnection, receipts_moved: bool) -> bool:
    """Whether `po_line_receipts` holds one row per valid PO line and, when `receipts_moved` (see
    `receipts_may_have_moved`), counts every valid receipt on the line the receipt names: the check after
    redoing only the touched lines.

    A line missing altogether breaks the count. A receipt moved to another PO line by a later version touches
    its new line, not the one it left, which would keep counting it; each line keeps an XOR of its receipts'
    hashes, and a line counting a receipt it should not (or missing one) breaks the equality. That comparison
    reads every receipt (3.5-4.5 s at 20 M receipts), so it is made only when a receipt may have moved.
    """
    lines, valid_lines = first_row(
        con, "SELECT (SELECT count(*) FROM po_line_receipts), (SELECT count(*) FROM valid_purchase_orders)"
    )
    if lines != valid_lines:
        return False
    if not receipts_moved:
        return True
    kept, valid = first_row(
        con,
        """SELECT (SELECT bit_xor(receipts_hash) FROM po_line_receipts),
                  (SELECT bit_xor(hash(receipt_id, line_no, po_id, po_line))
                   FROM valid_receipts SEMI JOIN po_line_receipts USING (po_id, po_line))""",
    )
    return kept == valid


def build_po_line_receipts(
    con: duckdb.DuckDBPyConnection, policy: ReceivingPolicy, now: datetime, only_touched: bool = False
) -> None:
    """Bring table `po_line_receipts` up to date: every PO line with what arrived against it and its receipt
    state. All of it is rebuilt, or with `only_touched` only the lines in temp table `touched`."""
    scope = TOUCHED if only_touched else ""
    select = f"""
        WITH received AS (
            SELECT po_id, po_line, sum(qty_received) AS qty_received, sum(qty_damaged) AS qty_damaged,
                   min(received_at) AS first_received_at, max(received_at) AS last_received_at,
                   bit_xor(hash(receipt_id, line_no, po_id, po_line)) AS receipts_hash  -- see in_step
            FROM valid_receipts {scope} GROUP BY ALL
        ), reasons AS (  -- apart: a distinct sorted list per line costs 5x the sums, and few lines have damage
            SELECT po_id, po_line, string_agg(DISTINCT damage_reason, ', ' ORDER BY damage_reason) AS damage_reasons
            FROM valid_receipts {scope} WHERE damage_reason IS NOT NULL GROUP BY ALL
        )
        SELECT p.po_id, p.po_line, p.sku, p.supplier_id, p.warehouse, p.status AS po_status, p.qty_ordered,
               p.expected_at, coalesce(r.qty_received, 0)::INTEGER AS qty_received,
               coalesce(r.qty_damaged, 0)::INTEGER AS qty_damaged, d.damage_reasons,
               r.first_received_at, r.last_received_at, r.receipts_hash,
               CASE WHEN coalesce(r.qty_received, 0) = 0 THEN 'not_received'
                    WHEN r.qty_received < p.qty_ordered * (1 - $short / 100) THEN 'partial'
                    WHEN r.qty_received > p.qty_ordered * (1 + $over / 100) THEN 'over'
                    ELSE 'full' END AS receipt_state,
               greatest(date_diff('day', p.expected_at + to_days($grace::INTEGER),
                                  coalesce(r.first_received_at, $now::TIMESTAMPTZ)::DATE), 0)::INTEGER AS days_late
        FROM valid_purchase_orders p {scope}
        LEFT JOIN received r USING (po_id, po_line) LEFT JOIN reasons d USING (po_id, po_line)"""
    params = {
        "short": policy.short_tolerance_pct,
        "over": policy.over_allowance_pct,
        "grace": policy.late_grace_days,
        "now": now,
    }
    if only_touched:
        with transaction(con):
            con.execute(
                "DELETE FROM po_line_receipts l USING touched t WHERE l.po_id = t.po_id AND l.po_line = t.po_line"
            )
            con.execute(f"INSERT INTO po_line_receipts {select}", params)
    else:
        con.execute(f"CREATE OR REPLACE TABLE po_line_receipts AS {select}", params)


def reconcile(con: duckdb.DuckDBPyConnection, policy: ReceivingPolicy, now: datetime) -> dict[str, int]:
    """Bring `receipt_discrepancies` up to date with the receipts landed so far; return what moved.

    Only the PO lines that changed are redone (see `touched_po_lines`); the rest keep their state.
    """
    judged = judged_with(con, policy)
    only_touched = touched_po_lines(con, judged)
    if only_touched:
        build_po_line_receipts(con, policy, now, only_touched=True)
        only_touched = in_step(con, receipts_may_have_moved(con))  # else a receipt moved, or a line went missing
    if not only_touched:
        con.execute("DELETE FROM reconciled_with")  # a run that stops before the end redoes everything again
        build_po_line_receipts(con, policy, now)
    scope = TOUCHED if only_touched else ""
    (redone,) = first_row(con, f"SELECT count(*) FROM {'touched' if only_touched else 'po_line_receipts'}")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE found AS
        SELECT po_id, po_line, kind, sku, supplier_id, warehouse, qty_ordered, qty_received, qty_damaged,
               CASE kind WHEN 'short' THEN qty_ordered - qty_received
                         WHEN 'over' THEN qty_received - qty_ordered
                         WHEN 'damaged' THEN qty_ordered - (qty_received - qty_damaged)
                         ELSE 0 END::INTEGER AS qty_gap,
               damage_reasons, expected_at, last_received_at, days_late
        FROM po_line_receipts {scope}
        CROSS JOIN (VALUES ('short'), ('over'), ('damaged'), ('late')) AS k(kind)
        WHERE po_status IN ('open', 'received')  -- a closed PO is settled with the supplier
          AND CASE kind
                WHEN 'short' THEN receipt_state = 'partial'
                WHEN 'over' THEN receipt_state = 'over'
                -- damage matters while it leaves the line short of good units; replacements resolve it
                WHEN 'damaged' THEN qty_damaged > 0
                     AND qty_received - qty_damaged < qty_ordered * (1 - $short / 100)
                WHEN 'late' THEN receipt_state = 'not_received' AND days_late > 0 AND po_status = 'open'
              END""",
        {"short": policy.short_tolerance_pct},
    )
    (opened,) = first_row(
        con,
        """SELECT count(*) FROM found f ANTI JOIN receipt_discrepancies d USING (po_id, po_line, kind)""",
    )
    (reopened,) = first_row(
        con,
        """SELECT count(*) FROM found f JOIN receipt_discrepancies d USING (po_id, po_line, kind)
        WHERE d.status = 'resolved'""",
    )
    (resolved,) = first_row(
        con,
        f"""SELECT count(*) FROM receipt_discrepancies d {scope} ANTI JOIN found f USING (po_id, po_line, kind)
        WHERE d.status <> 'resolved'""",
    )
    with transaction(con):
        # A discrepancy that stops being found is resolved, by what settled it.
        con.execute(
            f"""UPDATE receipt_discrepancies d SET status = 'resolved', resolved_at = $now, updated_at = $now,
                   resolution = CASE l.po_status WHEN 'closed' THEN 'po_closed' WHEN 'cancelled' THEN 'po_cancelled'
                                     ELSE 'later_receipt' END,
                   qty_received = coalesce(l.qty_received, d.qty_received),
                   qty_damaged = coalesce(l.qty_damaged, d.qty_damaged),
                   last_received_at = coalesce(l.last_received_at, d.last_received_at)
            FROM (SELECT d2.po_id, d2.po_line, d2.kind, l2.po_status, l2.qty_received, l2.qty_damaged,
                         l2.last_received_at
                  FROM receipt_discrepancies d2 {scope} LEFT JOIN po_line_receipts l2 USING (po_id, po_line)
                  ANTI JOIN found f USING (po_id, po_line, kind) WHERE d2.status <> 'resolved') l
            WHERE d.po_id = l.po_id AND d.po_line = l.po_line AND d.kind = l.kind""",
            {"now": now},
        )
        # Still (or again) wrong: refresh the figures; a resolved one that comes back is open again.
        con.execute(
            """INSERT INTO receipt_discrepancies BY NAME
            SELECT f.*, coalesce(CASE WHEN d.status = 'resolved' THEN NULL ELSE d.status END, 'open') AS status,
                   CASE WHEN d.status = 'resolved' THEN NULL ELSE d.resolution END AS resolution,
                   coalesce(d.opened_at, $now) AS opened_at, d.notified_at,
                   CASE WHEN d.status = 'resolved' THEN NULL ELSE d.resolved_at END AS resolved_at, $now AS updated_at
            FROM found f LEFT JOIN receipt_discrepancies d USING (po_id, po_line, kind)
            ON CONFLICT (po_id, po_line, kind) DO UPDATE SET
                qty_ordered = EXCLUDED.qty_ordered, qty_received = EXCLUDED.qty_received,
                qty_damaged = EXCLUDED.qty_damaged, qty_gap = EXCLUDED.qty_gap,
                damage_reasons = EXCLUDED.damage_reasons, last_received_at = EXCLUDED.last_received_at,
                days_late = EXCLUDED.days_late, status = EXCLUDED.status, resolution = EXCLUDED.resolution,
                resolved_at = EXCLUDED.resolved_at, updated_at = EXCLUDED.updated_at""",
            {"now": now},
        )
        con.execute("INSERT INTO reconciled SELECT feed, batch_id FROM pending")
        con.execute("DELETE FROM reconciled_with")
        con.execute(
            """INSERT INTO reconciled_with (policy, quarantine, discrepancies, landed_through)
            SELECT ?, ?, (SELECT count(*) FROM receipt_discrepancies), (SELECT through FROM landed)""",
            list(judged),
        )
    return {"opened": opened, "reopened": reopened, "resolved": resolved, "po_lines_redone": redone}


def discrepancy_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Discrepancies by kind and status, with the units involved."""
    return con.sql(
        """SELECT kind, status, count(*) AS po_lines, sum(qty_gap)::BIGINT AS units
        FROM receipt_discrepancies GROUP BY ALL ORDER BY kind, status"""
    ).df()


def newest_open(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """The most recently opened discrepancies still open."""
    return con.sql(
        f"""SELECT po_id, po_line, kind, sku, supplier_id, qty_ordered, qty_received, qty_damaged, qty_gap,
                   damage_reasons, expected_at, days_late
        FROM receipt_discrepancies WHERE status = 'open' ORDER BY opened_at DESC, po_id, po_line LIMIT {int(limit)}"""
    ).df()


def receipt_states(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """PO lines by receipt state (from the last `reconcile`)."""
    return con.sql(
        "SELECT receipt_state, count(*) AS po_lines FROM po_line_receipts GROUP BY ALL ORDER BY po_lines DESC"
    ).df()


def confirm_receipts(con: duckdb.DuckDBPyConnection, now: datetime, run_id: str | None) -> int:
    """Record the confirmation time of every receipt reconciled for the first time; return how many.

    When every receipt landed by the last confirmation was valid then, each was confirmed then, so only those
    landed since are looked at (a receipt's lines landed apart are all valid by then); otherwise (a receipt
    quarantined or in a batch not yet judged, which may since have become valid without a landing, or no
    confirmation yet) all of them are.
    """
    (full_load,) = first_row(
        con,
        """SELECT updated_since IS NULL FROM ingest_batches WHERE feed = 'receipts'
        ORDER BY fetched_at DESC LIMIT 1""",
    )
    mark = first_row(con, "SELECT loaded_at FROM confirmed_through WHERE complete AND loaded_at IS NOT NULL")
    landed, held = first_row(
        con,
        """SELECT (SELECT max(_loaded_at) FROM raw_receipts),
                  (SELECT count(*) FROM quarantine WHERE feed = 'receipts' AND released_at IS NULL)
                  + (SELECT count(*) FROM ingest_batches WHERE feed = 'receipts' AND judged_at IS NULL)""",
    )
    scope, params = ("", {}) if mark is None else ("WHERE _loaded_at >= $mark", {"mark": mark[0]})
    (before,) = first_row(con, "SELECT count(*) FROM receipt_confirmations")
    with transaction(con):
        con.execute(
            f"""INSERT INTO receipt_confirmations
            SELECT receipt_id, any_value(warehouse), min(received_at), $now, $backfill, $run_id
            FROM (SELECT * FROM valid_receipts {scope}) ANTI JOIN receipt_confirmations USING (receipt_id)
            GROUP BY receipt_id""",
            {"now": now, "backfill": bool(full_load), "run_id": run_id, **params},
        )
        con.execute("DELETE FROM confirmed_through")
        con.execute("INSERT INTO confirmed_through VALUES (?, ?)", [landed, held == 0])
    (after,) = first_row(con, "SELECT count(*) FROM receipt_confirmations")
    return after - before


def confirmation_cycle(con: duckdb.DuckDBPyConnection, days: int = 14) -> pd.DataFrame:
    """p50 / p90 hours from arrival to confirmation per arrival day, over the last `days` days."""
    return con.sql(
        f"""SELECT received_at::DATE AS day, count(*) AS receipts,
               round(quantile_cont(hours, 0.5), 2) AS p50_hours, round(quantile_cont(hours, 0.9), 2) AS p90_hours
        FROM (SELECT received_at, epoch(confirmed_at - received_at) / 3600 AS hours
              FROM receipt_confirmations WHERE NOT backfill)
        WHERE received_at >= (SELECT max(received_at) FROM receipt_confirmations) - INTERVAL {int(days)} DAY
        GROUP BY ALL ORDER BY day"""
    ).df()
