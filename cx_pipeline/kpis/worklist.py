"""The operator's work list: what the pipeline could not do on its own and a person should look at (SKUs held
from the push, writes customers do not see, quarantined rows, catalog SKUs the shop does not list, delay
notices the API refused), each with when it was first seen and the run that last saw it. Found in the
warehouse by SQL and published whole to the app store; the web app lists it newest first."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import duckdb

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, note_publication
from cx_pipeline.core.sql import exists

KINDS = {
    "held": "Held from the push",
    "customer_view": "Customers see something else",
    "quarantine": "Rows in quarantine",
    "not_listed": "Not listed by the shop",
    "notice_failed": "Delay notice not sent",
}

# One row per problem: (kind, key, detail, since, run_id). `since` is when the warehouse first recorded it;
# a catalog SKU the shop does not list has no such record, so it starts at the plan that found it and keeps
# its first `since` from one publication to the next (see `publish`).
WORKLIST_SQL = """
WITH latest_plan AS (
    SELECT plan_id, planned_at FROM push_plans ORDER BY planned_at DESC LIMIT 1
), latest_write AS (   -- each SKU's last answer from the shop: a later good write settles an earlier problem
    SELECT sku, plan_id, state, response, pushed_at FROM push_audit
    WHERE state NOT IN ('sent', 'applied', 'not_applied')
    QUALIFY row_number() OVER (PARTITION BY sku ORDER BY pushed_at DESC, batch_no DESC) = 1
), quarantined AS (
    -- on the source's clock, as every other age here: the pull's as_of (quarantined_at is the host's)
    SELECT q.feed, q.expectation, count(*) AS rows, min(coalesce(b.as_of, q.quarantined_at)) AS since,
           arg_max(b.run_id, coalesce(b.as_of, q.quarantined_at)) AS run_id,
           string_agg(DISTINCT coalesce(q.row_key, '(no key)'), ', ' ORDER BY coalesce(q.row_key, '(no key)'))
               AS keys
    FROM quarantine q LEFT JOIN ingest_batches b USING (batch_id)
    WHERE q.released_at IS NULL GROUP BY ALL
)
SELECT 'held', sku, 'held by bad or unjudged input rows: ' || held_by
           || printf(' (%d run%s in a row)', runs, CASE WHEN runs = 1 THEN '' ELSE 's' END), since, last_run
FROM stock_holds
UNION ALL
SELECT 'customer_view', sku, state || ': ' || response, pushed_at, plan_id
FROM latest_write WHERE state IN ('mismatch', 'refused', 'failed')
UNION ALL
SELECT 'quarantine', feed || ': ' || expectation,
       printf('%d row%s: ', rows, CASE WHEN rows = 1 THEN '' ELSE 's' END)
           || CASE WHEN length(keys) > 200 THEN keys[:200] || '…' ELSE keys END,
       since, run_id
FROM quarantined
UNION ALL
SELECT 'notice_failed', notice_key,
       printf('order %s, %d attempt%s: ', order_id, attempts, CASE WHEN attempts = 1 THEN '' ELSE 's' END)
           || last_error,
       planned_at, run_id
FROM notice_ledger WHERE status = 'planned' AND last_error IS NOT NULL
"""
# `stock_position` is rebuilt by each run (not part of the schema): a warehouse without one has no plan either
NOT_LISTED_SQL = """
UNION ALL
SELECT 'not_listed', p.sku, 'in the catalog, but the storefront does not list it: nothing can be pushed for it',
       l.planned_at, l.plan_id
FROM stock_position p CROSS JOIN latest_plan l ANTI JOIN shop_state s USING (sku)
"""


def problems(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str, str | None]]:
    """Every problem on the work list now, its `since` as ISO 8601 UTC text."""
    found = WORKLIST_SQL + (NOT_LISTED_SQL if exists(con, "stock_position") else "")
    # `since` as the app store keeps time: ISO 8601 in UTC, to the second
    return con.execute(
        f"""SELECT kind, key, detail, strftime(timezone('UTC', since), '%Y-%m-%dT%H:%M:%S+00:00'), run_id
        FROM ({found}) AS problems (kind, key, detail, since, run_id)"""
    ).fetchall()


def publish(
    store: sqlite3.Connection, rows: list[tuple[str, str, str, str, str | None]], run_id: str, now: datetime
) -> int:
    """Replace the work list in one transaction. A problem already on it keeps its earlier `since`, so an age
    counts from when the work list first showed it, not from the latest run that found it again."""
    with appstore.transaction(store):
        store.execute("CREATE TEMP TABLE IF NOT EXISTS worklist_next AS SELECT * FROM operator_worklist LIMIT 0")
        store.execute("DELETE FROM temp.worklist_next")
        store.executemany("INSERT INTO temp.worklist_next VALUES (?, ?, ?, ?, ?)", rows)
        store.execute(
            """UPDATE temp.worklist_next SET since = min(worklist_next.since, o.since)
            FROM operator_worklist o WHERE o.kind = worklist_next.kind AND o.key = worklist_next.key"""
        )
        store.execute("DELETE FROM operator_worklist")
        store.execute("INSERT INTO operator_worklist SELECT * FROM temp.worklist_next")
        store.execute("DROP TABLE temp.worklist_next")
        note_publication(store, "operator_worklist", run_id, iso(now), len(rows))
    return len(rows)


# --- the app's side ---

PAGE_SIZE = 100


@dataclass(frozen=True)
class Filter:
    kind: str = ""  # one of KINDS, or every kind

    def where(self) -> tuple[str, list[object]]:
        return ("WHERE kind = ?", [self.kind]) if self.kind in KINDS else ("", [])


def counts(store: sqlite3.Connection) -> dict[str, int]:
    """Problems per kind, every kind listed (0 when it has none)."""
    found = dict(store.execute("SELECT kind, count(*) FROM operator_worklist GROUP BY kind").fetchall())
    return {kind: found.get(kind, 0) for kind in KINDS}


def page(store: sqlite3.Connection, filters: Filter, page_no: int = 1, size: int = PAGE_SIZE) -> appstore.Page:
    """One page of the work list, newest problems first, each with its age in hours at the publication (on
    the pipeline's clock, as the rest of the figures)."""
    where, params = filters.where()
    return appstore.paged(
        store,
        "w.*, round((julianday(p.assessed_at) - julianday(w.since)) * 24, 1) AS age_hours",
        f"FROM operator_worklist w LEFT JOIN publications p ON p.name = 'operator_worklist' {where}",
        params,
        "w.since DESC, w.kind, w.key",
        page_no,
        size,
    )


def publication(store: sqlite3.Connection) -> dict[str, object] | None:
    row = store.execute("SELECT * FROM publications WHERE name = 'operator_worklist'").fetchone()
    return dict(row) if row else None
