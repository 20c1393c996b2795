"""The merchandisers' review: decisions recorded in the app store, imported into the warehouse, and the
queue published back to the app store.

The loop: the app records a decision (`record_decision`, in SQLite) -> the next run imports new decisions
(`import_decisions`, by id) -> `staleness.assess` honours them -> `publish_queue` replaces the app's
queue and notes the last decision id it reflects. Until then the app hides products decided after that id,
so a decision made while a run is going takes effect at once and is picked up by the next run.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import duckdb
import orjson
import pandas as pd

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, utc_now
from cx_pipeline.core.sql import first_row, row_exists_sql
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.schema import log_import
from cx_pipeline.review import staleness
from cx_pipeline.review.staleness import DECISIONS, REASON_CODES

FEED = "review_decisions"  # its name in ingest_batches and quarantine
MAX_NOTE = 1000
PAGE_SIZE = 50

DDL = """
CREATE TABLE IF NOT EXISTS review_decisions (
    decision_id BIGINT PRIMARY KEY,  -- the app store's id: decisions are append-only
    sku         VARCHAR,
    decision    VARCHAR,
    note        VARCHAR,
    reviewer    VARCHAR,
    decided_at  TIMESTAMPTZ,         -- null when the stored text does not parse (the contract catches it)
    _batch_id   VARCHAR NOT NULL,
    _raw        JSON NOT NULL,       -- the row exactly as stored by the app
    _loaded_at  TIMESTAMPTZ NOT NULL
);
CREATE OR REPLACE VIEW valid_review_decisions AS
SELECT * FROM review_decisions
WHERE decision_id::VARCHAR NOT IN (
    SELECT row_key FROM quarantine WHERE feed = 'review_decisions' AND released_at IS NULL AND row_key IS NOT NULL
);
"""


class DecisionError(ValueError):
    """A decision that cannot be recorded; the message is meant for the reviewer."""


# --- the pipeline's side ---


def import_decisions(store: sqlite3.Connection, con: duckdb.DuckDBPyConnection, run_id: str, now: datetime) -> int:
    """Copy decisions recorded since the last import into the warehouse as one batch; returns how many."""
    batch_id = uuid.uuid4().hex
    (through,) = first_row(con, "SELECT coalesce(max(decision_id), 0) FROM review_decisions")
    rows = store.execute(
        "SELECT id, sku, decision, note, reviewer, decided_at FROM review_decisions WHERE id > ? ORDER BY id",
        [through],
    ).fetchall()
    frame = pd.DataFrame(
        [tuple(r) for r in rows], columns=["id", "sku", "decision", "note", "reviewer", "decided_at"], dtype=object
    )
    con.register("new_decisions", frame)
    try:
        with transaction(con):
            con.execute(
                """INSERT INTO review_decisions
                SELECT id, sku, decision, note, reviewer, TRY_CAST(decided_at AS TIMESTAMPTZ), $batch,
                       to_json(struct_pack(id, sku, decision, note, reviewer, decided_at)), $now
                FROM new_decisions""",
                {"batch": batch_id, "now": now},
            )
            log_import(con, batch_id, FEED, run_id, now, len(frame))
    finally:
        con.unregister("new_decisions")
    return len(frame)


def latest_import(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The decisions of the latest import, with `_known_sku` (the SKU is in the catalog) and the columns the
    contract runner and the quarantine expect (`_row`, `_row_key`, `_raw`, `_batch_id`)."""
    known = row_exists_sql(con, "d", ("sku",), "raw_catalog", ("sku",), "review_decisions")
    return con.sql(
        f"""SELECT d.*, row_number() OVER (ORDER BY decision_id) AS _row, decision_id::VARCHAR AS _row_key,
                  d.sku IS NULL OR {known} AS _known_sku
        FROM review_decisions d
        WHERE _batch_id = (SELECT arg_max(batch_id, fetched_at) FROM ingest_batches WHERE feed = 'review_decisions')
        ORDER BY decision_id"""
    ).df()


PUBLISH_SQL = f"""
SELECT sku, row_number() OVER (ORDER BY {staleness.QUEUE_ORDER}), title, category, supplier_id, product_status,
       strftime(timezone('UTC', registered_at), '%Y-%m-%d'),
       round(years_registered, 1), score, to_json(reasons)::VARCHAR, ',' || array_to_string(reason_codes, ',') || ',',
       review_state, in_queue::INTEGER, days_since_receipt, days_since_order, days_out_of_stock, cancellations_30d,
       mismatches_30d, round(completeness, 3), strftime(timezone('UTC', next_review_due), '%Y-%m-%d')
FROM stale_products
WHERE long_registered AND product_status <> 'discontinued' AND (flagged OR last_decided_at IS NOT NULL)
"""


def publish_queue(store: sqlite3.Connection, con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Replace the app's copy of the cohort (flagged or decided long-registered products) with this run's
    assessment, in one transaction: the app sees the old queue or the new one, never half of it."""
    rows = con.execute(PUBLISH_SQL).fetchall()
    (through,) = first_row(con, "SELECT coalesce(max(decision_id), 0) FROM review_decisions")
    (assessed_at,) = first_row(con, "SELECT max(assessed_at) FROM stale_products") or (None,)
    with appstore.transaction(store):
        store.execute("DELETE FROM review_queue")
        store.executemany(f"INSERT INTO review_queue VALUES ({', '.join('?' * 20)})", rows)
        store.execute(
            "INSERT OR REPLACE INTO publications VALUES ('review_queue', ?, ?, ?, ?, ?)",
            [run_id, utc_now(), iso(assessed_at) if assessed_at else utc_now(), through, len(rows)],
        )
    return len(rows)


# --- the app's side ---


@dataclass(frozen=True)
class QueueFilter:
    category: str = ""
    supplier: str = ""
    reason: str = ""

    def where(self) -> tuple[str, list[object]]:
        """SQL conditions on `review_queue q` and their parameters. Products decided after the publication
        are left out: the pipeline has not seen their decision yet, but the reviewer has made it."""
        clauses = [
            "q.in_queue = 1",
            """NOT EXISTS (SELECT 1 FROM review_decisions d WHERE d.sku = q.sku AND d.id > coalesce(
                (SELECT decisions_through FROM publications WHERE name = 'review_queue'), 0))""",
        ]
        params: list[object] = []
        if self.category:
            clauses.append("q.category = ?")
            params.append(self.category)
        if self.supplier:
            clauses.append("q.supplier_id = ?")
            params.append(self.supplier)
        if self.reason:
            clauses.append("q.reason_codes LIKE ?")
            params.append(f"%,{self.reason},%")
        return " AND ".join(clauses), params


def _product(row: sqlite3.Row | dict[str, object]) -> dict[str, object]:
    product = dict(row)
    product["reasons"] = orjson.loads(product["reasons"])
    return product


def queue_page(store: sqlite3.Connection, filters: QueueFilter, page: int = 1, size: int = PAGE_SIZE) -> appstore.Page:
    """One page of the queue, most urgent first."""
    where, params = filters.where()
    found = appstore.paged(store, "q.*", f"FROM review_queue q WHERE {where}", params, "q.rank", page, size)
    return replace(found, rows=[_product(r) for r in found.rows])


def queue_rows(store: sqlite3.Connection, filters: QueueFilter) -> list[dict[str, object]]:
    """The whole (filtered) queue, for the CSV export."""
    where, params = filters.where()
    rows = store.execute(f"SELECT q.* FROM review_queue q WHERE {where} ORDER BY q.rank", params).fetchall()
    return [_product(r) for r in rows]


def facets(store: sqlite3.Connection) -> dict[str, list[str]]:
    """The values each filter offers: categories and suppliers in the queue, and every reason."""
    where, params = QueueFilter().where()

    def distinct(column: str) -> list[str]:
        sql = f"SELECT DISTINCT q.{column} FROM review_queue q WHERE {where} ORDER BY 1"
        return [v for (v,) in store.execute(sql, params).fetchall() if v]

    return {"category": distinct("category"), "supplier": distinct("supplier_id"), "reason": list(REASON_CODES)}


def product(store: sqlite3.Connection, sku: str) -> dict[str, object] | None:
    row = store.execute("SELECT * FROM review_queue WHERE sku = ?", [sku]).fetchone()
    return _product(row) if row else None


def history(store: sqlite3.Connection, sku: str) -> list[dict[str, object]]:
    """Every decision on `sku`, newest first."""
    rows = store.execute(
        "SELECT id, decision, note, reviewer, decided_at FROM review_decisions WHERE sku = ? ORDER BY id DESC", [sku]
    ).fetchall()
    return [dict(r) for r in rows]


def publication(store: sqlite3.Connection) -> dict[str, object] | None:
    row = store.execute("SELECT * FROM publications WHERE name = 'review_queue'").fetchone()
    return dict(row) if row else None


def record_decision(store: sqlite3.Connection, sku: str, decision: str, note: str, reviewer: str) -> int:
    """Store a reviewer's decision on a product the pipeline published; returns its id."""
    sku, note = sku.strip(), note.strip()
    if decision not in DECISIONS:
        raise DecisionError(f"choose a decision: {', '.join(DECISIONS)}")
    if len(note) > MAX_NOTE:
        raise DecisionError(f"the note is {len(note)} characters long; at most {MAX_NOTE}, please")
    with appstore.transaction(store):
        if store.execute("SELECT 1 FROM review_queue WHERE sku = ?", [sku]).fetchone() is None:
            raise DecisionError(f"product {sku!r} is not in the review cohort")
        cursor = store.execute(
            "INSERT INTO review_decisions (sku, decision, note, reviewer, decided_at) VALUES (?, ?, ?, ?, ?)",
            [sku, decision, note, reviewer, utc_now()],
        )
    return int(cursor.lastrowid)


def latest(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """The most recent decisions in the warehouse."""
    return con.sql(
        f"""SELECT decision_id, sku, decision, reviewer, decided_at, note FROM review_decisions
        ORDER BY decision_id DESC LIMIT {int(limit)}"""
    ).df()


def count(con: duckdb.DuckDBPyConnection) -> int:
    """Decisions in the warehouse, all time."""
    (total,) = first_row(con, "SELECT count(*) FROM review_decisions")
    return int(total)
