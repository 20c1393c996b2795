"""The merchandisers' review: decisions recorded in the app store, imported into the warehouse, and the
queue published back to the app store.

The loop: the app records a decision (`record_decision`, in SQLite) -> the next run imports new decisions
(`import_decisions`, by id) -> `staleness.assess` honours them -> `publish_queue` brings the app's queue to the
assessment (sending what changed since the last publication) and notes the last decision id it reflects. Until
then the app hides products decided after that id, so a decision made while a run is going takes effect at once
and is picked up by the next run.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import duckdb
import orjson
import pandas as pd

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, note_publication, utc_now
from cx_pipeline.core.sql import exists, first_row, row_exists_sql
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.schema import log_import
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
-- an 'undo' row takes back the decision it names: the product is assessed as if that decision was never made
ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS undoes BIGINT;
-- the token of the publication whose rows `review_queue_sent` holds (see publish_queue)
CREATE TABLE IF NOT EXISTS review_queue_sent_token (token VARCHAR);
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
        "SELECT id, sku, decision, note, reviewer, decided_at, undoes FROM review_decisions WHERE id > ? ORDER BY id",
        [through],
    ).fetchall()
    columns = ["id", "sku", "decision", "note", "reviewer", "decided_at", "undoes"]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns, dtype=object)
    con.register("new_decisions", frame)
    try:
        with transaction(con):
            con.execute(
                """INSERT INTO review_decisions BY NAME
                SELECT id AS decision_id, sku, decision, note, reviewer,
                       TRY_CAST(decided_at AS TIMESTAMPTZ) AS decided_at, $batch AS _batch_id,
                       to_json(struct_pack(id, sku, decision, note, reviewer, decided_at, undoes)) AS _raw,
                       $now AS _loaded_at, TRY_CAST(undoes AS BIGINT) AS undoes
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


# The app's copy of the cohort, in the columns of its `review_queue` table.
# The cohort: long-registered products in the review's care (flagged, or decided once).
COHORT = "long_registered AND product_status <> 'discontinued' AND (flagged OR last_decided_at IS NOT NULL)"
PUBLISH_SQL = f"""
SELECT sku, title, category, supplier_id, product_status,
       strftime(timezone('UTC', registered_at), '%Y-%m-%d') AS registered_at,
       round(years_registered, 1) AS years_registered,
       score, to_json(reasons)::VARCHAR AS reasons, ',' || array_to_string(reason_codes, ',') || ',' AS reason_codes,
       review_state, in_queue::INTEGER AS in_queue, days_since_receipt, days_since_order, days_out_of_stock,
       cancellations_30d, mismatches_30d, round(completeness, 3) AS completeness,
       strftime(timezone('UTC', next_review_due), '%Y-%m-%d') AS next_review_due,
       assessment  -- kept in the warehouse's copy, not sent
FROM stale_products
WHERE {COHORT}
"""
# The warehouse's copy of the queue as last published (`review_queue_sent`, the publication's token in
# `review_queue_sent_token`): a later publication sends the app only the rows that differ (within a day, the
# products whose signals changed). When the app's publication is not that one (a new or restored app store, a crash
# between the two commits), it sends them all.

COPY_CHUNK = 50_000  # rows per insert into the app store


HISTORY_DAYS = 90
# Each cohort product's last HISTORY_DAYS days on the WMS's clock, sparse: a row for each day something
# happened (units received, units ordered, a push plan changing what the storefront shows), plus one on the
# first day carrying in the storefront's state from before the window. Each row holds what the storefront was
# last set to by that day's end, so the app fills the days between by carrying the latest row forward
# (`stock_history`). Rows are bounded by the window's events, not by cohort x days.
# Built from `from_day` on: the whole window, or only today for a product `kept` (the app holds its earlier days
# from this day's first publication): millions of rows at a million SKUs, rebuilt once a day, not every run.
# $today is the publication's day (as a UTC timestamp): the receipts before it are read only for the products whose
# window starts earlier (at a million SKUs, 20 M receipt lines are in the window, today's are a few thousand).
HISTORY_SQL = f"""
WITH cohort AS (
    SELECT sku FROM stale_products WHERE {COHORT}
), clock AS (
    SELECT today, CAST(today - INTERVAL {HISTORY_DAYS - 1} DAY AS DATE) AS first_day
    FROM (SELECT CAST(timezone('UTC', assessed_at) AS DATE) AS today FROM stale_assessment)
), wanted AS (
    SELECT sku, CASE WHEN sku IN (SELECT sku FROM kept) THEN today ELSE first_day END AS from_day
    FROM cohort, clock
), earlier AS (   -- the products whose window starts before today: only theirs are read before today
    SELECT sku FROM wanted, clock WHERE from_day < today
), receipts AS (
    SELECT sku, received_at AS moment, qty_received AS units FROM valid_receipts WHERE received_at >= $today
    UNION ALL
    SELECT sku, received_at, qty_received FROM valid_receipts SEMI JOIN earlier USING (sku)
    WHERE received_at >= $today - INTERVAL {HISTORY_DAYS - 1} DAY AND received_at < $today
), orders AS (   -- demand: not cancelled
    SELECT sku, ordered_at AS moment, qty AS units FROM valid_open_orders
    WHERE status <> 'cancelled' AND ordered_at >= $today
    UNION ALL
    SELECT sku, ordered_at, qty FROM valid_open_orders SEMI JOIN earlier USING (sku)
    WHERE status <> 'cancelled' AND ordered_at >= $today - INTERVAL {HISTORY_DAYS - 1} DAY AND ordered_at < $today
), received AS (
    SELECT sku, day, sum(units) AS units
    FROM (SELECT sku, CAST(timezone('UTC', moment) AS DATE) AS day, units FROM receipts)
    JOIN wanted USING (sku) WHERE day >= from_day GROUP BY ALL
), ordered AS (
    SELECT sku, day, sum(units) AS units
    FROM (SELECT sku, CAST(timezone('UTC', moment) AS DATE) AS day, units FROM orders)
    JOIN wanted USING (sku) WHERE day >= from_day GROUP BY ALL
), pushed AS (  -- every push of a wanted product: the state a day ends with may come from before `from_day`
    SELECT c.sku, p.planned_at, CAST(timezone('UTC', p.planned_at) AS DATE) AS day, c.quantity, c.status
    FROM push_changes c JOIN push_plans p USING (plan_id) SEMI JOIN cohort USING (sku)
    WHERE p.status <> 'dry_run'
), event_days AS (
    SELECT sku, greatest(day, first_day) AS day FROM (
        SELECT sku, day FROM received UNION ALL SELECT sku, day FROM ordered UNION ALL SELECT sku, day FROM pushed
    ) JOIN wanted USING (sku), clock
    WHERE day <= today AND greatest(day, first_day) >= from_day
        AND (day >= first_day OR sku IN (SELECT sku FROM pushed, clock WHERE day < first_day))
    GROUP BY ALL
)
SELECT e.sku, strftime(e.day, '%Y-%m-%d') AS day, coalesce(r.units, 0) AS received, coalesce(o.units, 0) AS ordered,
       s.quantity AS shop_quantity, s.status AS shop_status
FROM (SELECT *, timezone('UTC', CAST(day + INTERVAL 1 DAY AS TIMESTAMP)) AS day_end FROM event_days) e
LEFT JOIN received r ON r.sku = e.sku AND r.day = e.day
LEFT JOIN ordered o ON o.sku = e.sku AND o.day = e.day
ASOF LEFT JOIN pushed s ON s.sku = e.sku AND e.day_end > s.planned_at
"""


@dataclass(frozen=True)
class QueuePublication:
    cohort: int  # products the app's queue now holds
    sent: int  # of them, the rows this publication wrote (new or changed)
    withdrawn: int  # products that left the cohort


def publish_queue(store: sqlite3.Connection, con: duckdb.DuckDBPyConnection, run_id: str) -> QueuePublication:
    """Bring the app's copy of the cohort (flagged or decided long-registered products) and their history to this
    run's assessment, in one transaction: the app sees the old queue or the new one, never half.

    The queue's rows are sent when they differ from the last publication (all of them when the app's publication
    is not the warehouse's copy); only the products assessed again since then are compared (a row keeps the id of
    the assessment that wrote it), not the whole cohort.

    The history is rebuilt whole at the first publication of a day (of the WMS clock). Later ones that day rebuild
    today's rows of the products already published and the whole window of the products new to the cohort, and drop
    the products that left it; a late receipt for an earlier day shows from the next day's first run."""
    (through,) = first_row(con, "SELECT coalesce(max(decision_id), 0) FROM review_decisions")
    (assessed_at,) = first_row(con, "SELECT assessed_at FROM stale_assessment") or (None,)
    assessed = iso(assessed_at) if assessed_at else utc_now()
    last = publication(store)
    same_day = last is not None and str(last["assessed_at"])[:10] == assessed[:10]
    # (a copy from before each row named its assessment is replaced whole)
    copy = (
        last is not None
        and last["token"] is not None
        and last["token"] == sent_token(con)
        and exists(con, "review_queue_sent", "assessment")
    )
    _app_cohort(con, store, copy, same_day)
    if copy:  # only the products whose row was assessed again since the copy was sent can differ from it
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE queue_candidates AS
            SELECT sku FROM (SELECT sku, assessment FROM stale_products WHERE {COHORT}
                             EXCEPT SELECT sku, assessment FROM review_queue_sent)
            UNION SELECT sku FROM (SELECT sku, assessment FROM review_queue_sent
                                   EXCEPT SELECT sku, assessment FROM stale_products WHERE {COHORT})"""
        )
    among = " AND sku IN (FROM queue_candidates)" if copy else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE queue_now AS {PUBLISH_SQL} {among}")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE queue_changed AS FROM ("
        + (
            """SELECT * EXCLUDE (assessment) FROM queue_now
            EXCEPT SELECT * EXCLUDE (assessment) FROM review_queue_sent WHERE sku IN (FROM queue_candidates)"""
            if copy
            else "SELECT * EXCLUDE (assessment) FROM queue_now"
        )
        + ") ORDER BY sku"
    )
    candidates = "SEMI JOIN queue_candidates USING (sku)" if copy else ""
    gone = _skus(con, f"SELECT sku FROM review_queue_sent {candidates} ANTI JOIN queue_now USING (sku)") if copy else []
    left = _skus(con, f"SELECT sku FROM kept {candidates} ANTI JOIN queue_now USING (sku)")  # leavers, same day
    today = datetime.fromisoformat(assessed[:10]).replace(tzinfo=UTC)
    # in the app's key order: SQLite's B-trees take rows in order twice as fast
    con.execute(f"CREATE OR REPLACE TEMP TABLE history_now AS FROM ({HISTORY_SQL}) ORDER BY sku, day", {"today": today})
    # later the same day, today's rows the app holds as they are now are not sent again (`review_history_sent`)
    history_copy = copy and same_day and exists(con, "review_history_sent")
    changed = "FROM (FROM history_now EXCEPT FROM review_history_sent) ORDER BY sku, day"
    con.execute(f"CREATE OR REPLACE TEMP TABLE history_changed AS {changed if history_copy else 'FROM history_now'}")
    token = uuid.uuid4().hex
    with appstore.transaction(store):
        if not copy:
            store.execute("DELETE FROM review_queue")
        store.execute("DELETE FROM review_queue WHERE sku IN (SELECT value FROM json_each(?))", [_json(gone)])
        sent = _copy_rows(con, "queue_changed", store, "review_queue")
        if same_day:  # today's rows replaced, earlier days kept; a product that left the cohort leaves the history
            store.execute("DELETE FROM review_history WHERE sku IN (SELECT value FROM json_each(?))", [_json(left)])
        else:
            store.execute("DELETE FROM review_history")
        _copy_rows(con, "history_changed", store, "review_history")
        (rows,) = store.execute("SELECT count(*) FROM review_queue").fetchone()
        note_publication(store, "review_queue", run_id, assessed, rows, decisions_through=through, token=token)
    _keep_copy(con, token, whole=not copy, today=assessed[:10], left=left if history_copy else None)
    return QueuePublication(rows, sent, len(gone))


def sent_token(con: duckdb.DuckDBPyConnection) -> str | None:
    """The token of the publication the warehouse's copy of the queue holds (None: no copy)."""
    row = first_row(con, "SELECT token FROM review_queue_sent_token")
    return row[0] if row else None


def _app_cohort(con: duckdb.DuckDBPyConnection, store: sqlite3.Connection, copy: bool, same_day: bool) -> None:
    """Temp table `kept`: the products whose history the app holds from this day's first publication (none on a
    new day); read from the warehouse's copy when it is the app's, else from the app."""
    if not same_day:
        con.execute("CREATE OR REPLACE TEMP TABLE kept (sku VARCHAR)")
    elif copy:
        con.execute("CREATE OR REPLACE TEMP TABLE kept AS SELECT sku FROM review_queue_sent")
    else:
        frame = pd.DataFrame({"sku": [sku for (sku,) in store.execute("SELECT sku FROM review_queue")]}, dtype=str)
        con.register("app_cohort", frame)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE kept AS SELECT sku FROM app_cohort")
        finally:
            con.unregister("app_cohort")


def _keep_copy(con: duckdb.DuckDBPyConnection, token: str, whole: bool, today: str, left: list[str] | None) -> None:
    """Make the warehouse's copy what the app now holds (after the app's commit: a crash in between leaves the
    tokens apart, and the next publication sends the whole queue): the queue, and today's history rows (`left`:
    the products whose history the app dropped, when the copy is kept; None: today's rows are the copy)."""
    with transaction(con):
        if whole:
            con.execute("CREATE OR REPLACE TABLE review_queue_sent AS SELECT * FROM queue_now")
        else:  # the candidates' rows replaced by what they are now (none for a product gone)
            con.execute("DELETE FROM review_queue_sent WHERE sku IN (FROM queue_candidates)")
            con.execute("INSERT INTO review_queue_sent SELECT * FROM queue_now")
        if left is None:
            con.execute("CREATE OR REPLACE TABLE review_history_sent AS FROM history_now WHERE day = ?", [today])
        else:
            con.execute("DELETE FROM review_history_sent WHERE sku IN (SELECT unnest(?::VARCHAR[]))", [left])
            con.execute(
                "DELETE FROM review_history_sent s USING history_changed c WHERE s.sku = c.sku AND s.day = c.day"
            )
            con.execute("INSERT INTO review_history_sent FROM history_changed WHERE day = ?", [today])
        con.execute("DELETE FROM review_queue_sent_token")
        con.execute("INSERT INTO review_queue_sent_token VALUES (?)", [token])


def _copy_rows(con: duckdb.DuckDBPyConnection, source: str, store: sqlite3.Connection, table: str) -> int:
    """Insert (or replace) the rows of the warehouse's temp table `source` into the app store's `table` (the same
    column names), COPY_CHUNK rows at a time in `source`'s order; returns how many.

    Each chunk goes over as one JSON text that DuckDB writes and SQLite takes apart: the rows never become Python
    objects, and DuckDB writes the next text while SQLite takes the current one in (both let go of the GIL; one text
    ahead, not all of them in memory). A day's first publication at a million SKUs is 6.6 M history rows: 19.6 s
    through `executemany` (held in Python at once, they had taken the process past 4 GB), 9.5 s as JSON texts in key
    order one after the other (2.0 s to write them, 7.6 s to insert), 7.7 s with the next one written meanwhile."""
    columns = [name for (name,) in con.execute(f"SELECT name FROM pragma_table_info('{source}')").fetchall()]
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    insert = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) SELECT {values} FROM json_each(?)"
    chunk = f"""SELECT to_json(list(json_array({", ".join(columns)}) ORDER BY rowid))::VARCHAR FROM {source}
        WHERE rowid >= $start AND rowid < $start + {COPY_CHUNK}"""
    (rows,) = first_row(con, f"SELECT count(*) FROM {source}")
    if not rows:
        return 0
    with ThreadPoolExecutor(1) as writer:
        ahead = writer.submit(first_row, con, chunk, {"start": 0})
        for start in range(0, rows, COPY_CHUNK):  # a fresh temp table's rowids are 0, 1, ... in its order
            (text,) = ahead.result()
            if start + COPY_CHUNK < rows:
                ahead = writer.submit(first_row, con, chunk, {"start": start + COPY_CHUNK})
            store.execute(insert, [text])
    return int(rows)


def _skus(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [sku for (sku,) in con.execute(sql).fetchall()]


def _json(values: list[str]) -> str:
    return orjson.dumps(values).decode()


# --- the app's side ---

# The pipeline's order (staleness.QUEUE_ORDER) on the app's columns, as (column, direction).
PIPELINE_ORDER = (("q.score", "DESC"), ("q.registered_at", "ASC"), ("q.sku", "ASC"))
# Columns the queue sorts by (the key is the `sort` parameter; "rank" is the pipeline's order); ties keep the
# pipeline's order.
SORTS = {
    "rank": "",
    "sku": "q.sku",
    "title": "q.title COLLATE NOCASE",
    "category": "q.category",
    "supplier": "q.supplier_id",
    "score": "q.score",
    "registered": "q.registered_at",
}
# Every cohort product is long-registered, so filtering by "registered" would filter nothing.
FILTER_REASONS = tuple(code for code in REASON_CODES if code != "registered")
THROUGH = "coalesce((SELECT decisions_through FROM publications WHERE name = 'review_queue'), 0)"


@dataclass(frozen=True)
class QueueFilter:
    category: str = ""
    supplier: str = ""
    reason: str = ""
    search: str = ""  # a part of the SKU or the title; searches the whole cohort, decided products included

    def where(self) -> tuple[str, list[object]]:
        """SQL conditions on `review_queue q` and their parameters. Without a search: the queue, less the
        products decided after the publication (the pipeline has not seen their decision yet, but the
        reviewer has made it). A search finds any product of the cohort, so a decided one can be found again."""
        clauses: list[str] = []
        params: list[object] = []
        if self.search:
            pattern = "%" + self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(q.sku LIKE ? ESCAPE '\\' OR q.title LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        else:
            clauses += [
                "q.in_queue = 1",
                f"NOT EXISTS (SELECT 1 FROM effective_review_decisions d WHERE d.sku = q.sku AND d.id > {THROUGH})",
            ]
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

    @property
    def active(self) -> bool:
        return bool(self.category or self.supplier or self.reason or self.search)


@dataclass(frozen=True)
class QueueOrder:
    sort: str = "rank"
    descending: bool = False

    def sql(self) -> str:
        """ORDER BY for the queue: the chosen column, then the pipeline's order (which ends with the SKU, so pages
        never overlap); by "rank", the pipeline's order, reversed when descending."""
        column = SORTS.get(self.sort, "")
        direction = "DESC" if self.descending else "ASC"
        pipeline = ", ".join(f"{c} {d}" for c, d in PIPELINE_ORDER)
        if column:
            return f"{column} {direction}, {pipeline}"
        if self.descending:
            return ", ".join(f"{c} {'ASC' if d == 'DESC' else 'DESC'}" for c, d in PIPELINE_ORDER)
        return pipeline


# The decision a product got after the publication (in force, not undone), shown next to a searched product.
PENDING_DECISION = f"""(SELECT d.decision FROM effective_review_decisions d WHERE d.sku = q.sku AND d.id > {THROUGH}
    ORDER BY d.id DESC LIMIT 1) AS pending_decision"""


def _product(row: sqlite3.Row | dict[str, object]) -> dict[str, object]:
    product = dict(row)
    product["reasons"] = orjson.loads(product["reasons"])
    return product


def queue_page(
    store: sqlite3.Connection,
    filters: QueueFilter,
    page: int = 1,
    size: int = PAGE_SIZE,
    order: QueueOrder = QueueOrder(),
) -> appstore.Page:
    """One page of the queue (or of a search), most urgent first unless sorted otherwise."""
    where, params = filters.where()
    found = appstore.paged(
        store, f"q.*, {PENDING_DECISION}", f"FROM review_queue q WHERE {where}", params, order.sql(), page, size
    )
    return replace(found, rows=[_product(r) for r in found.rows])


def queue_rows(store: sqlite3.Connection, filters: QueueFilter, order: QueueOrder = QueueOrder()) -> list[dict]:
    """The whole (filtered) queue, for the CSV export."""
    where, params = filters.where()
    rows = store.execute(f"SELECT q.* FROM review_queue q WHERE {where} ORDER BY {order.sql()}", params).fetchall()
    return [_product(r) for r in rows]


def count_matching(store: sqlite3.Connection, filters: QueueFilter) -> int:
    where, params = filters.where()
    (total,) = store.execute(f"SELECT count(*) FROM review_queue q WHERE {where}", params).fetchone()
    return int(total)


def facets(store: sqlite3.Connection) -> dict[str, list[str]]:
    """The values each filter offers: categories and suppliers in the queue, and the reasons that tell
    products apart (not "registered": every product of the cohort has it)."""
    where, params = QueueFilter().where()

    def distinct(column: str) -> list[str]:
        sql = f"SELECT DISTINCT q.{column} FROM review_queue q WHERE {where} ORDER BY 1"
        return [v for (v,) in store.execute(sql, params).fetchall() if v]

    return {"category": distinct("category"), "supplier": distinct("supplier_id"), "reason": list(FILTER_REASONS)}


def product(store: sqlite3.Connection, sku: str) -> dict[str, object] | None:
    row = store.execute("SELECT * FROM review_queue WHERE sku = ?", [sku]).fetchone()
    return _product(row) if row else None


def history(store: sqlite3.Connection, sku: str) -> list[dict[str, object]]:
    """Every decision on `sku`, newest first, undos included: an undo names the decision it took back
    (`undone_decision`), and a decision taken back says so (`undone`)."""
    rows = store.execute(
        """SELECT d.id, d.decision, d.note, d.reviewer, d.decided_at, d.undoes, d.submission,
                  u.decision AS undone_decision,
                  EXISTS (SELECT 1 FROM review_decisions x WHERE x.undoes = d.id) AS undone
        FROM review_decisions d LEFT JOIN review_decisions u ON u.id = d.undoes
        WHERE d.sku = ? ORDER BY d.id DESC""",
        [sku],
    ).fetchall()
    return [dict(r) for r in rows]


def pending(store: sqlite3.Connection, sku: str) -> dict[str, object] | None:
    """The newest change to `sku`'s review since the publication (a decision in force or an undo), if any:
    the published state does not show it yet."""
    row = store.execute(
        f"""SELECT d.id, d.decision, u.decision AS undone_decision FROM review_decisions d
        LEFT JOIN review_decisions u ON u.id = d.undoes
        WHERE d.sku = ? AND d.id > {THROUGH} AND d.id NOT IN (SELECT undoes FROM review_decisions
            WHERE undoes IS NOT NULL)
        ORDER BY d.id DESC LIMIT 1""",
        [sku],
    ).fetchone()
    return dict(row) if row else None


def stock_history(store: sqlite3.Connection, sku: str) -> list[dict[str, object]]:
    """`sku`'s last HISTORY_DAYS days up to the publication's day, oldest first, one row a day: units received
    and ordered (0 on a day without a published row) and the storefront's quantity and status carried
    forward from the latest published row. Empty before the first publication."""
    rows = store.execute(
        f"""WITH RECURSIVE days (day) AS (
            SELECT date(substr(assessed_at, 1, 10), '-{HISTORY_DAYS - 1} days') FROM publications
            WHERE name = 'review_queue'
            UNION ALL
            SELECT date(day, '+1 day') FROM days
            WHERE day < (SELECT substr(assessed_at, 1, 10) FROM publications WHERE name = 'review_queue')
        )
        SELECT d.day, coalesce(h.received, 0) AS received, coalesce(h.ordered, 0) AS ordered, s.shop_quantity,
               s.shop_status
        FROM days d
        LEFT JOIN review_history h ON h.sku = :sku AND h.day = d.day
        LEFT JOIN review_history s ON s.sku = :sku AND s.day = (
            SELECT max(x.day) FROM review_history x WHERE x.sku = :sku AND x.day <= d.day)
        ORDER BY d.day""",
        {"sku": sku},
    ).fetchall()
    return [dict(r) for r in rows]


def publication(store: sqlite3.Connection) -> dict[str, object] | None:
    row = store.execute("SELECT * FROM publications WHERE name = 'review_queue'").fetchone()
    return dict(row) if row else None


def _check(decision: str, note: str) -> None:
    if decision not in DECISIONS:
        raise DecisionError(f"choose a decision: {', '.join(DECISIONS)}")
    if len(note) > MAX_NOTE:
        raise DecisionError(f"the note is {len(note)} characters long; at most {MAX_NOTE}, please")


def _insert(
    store: sqlite3.Connection,
    chosen: str,
    params: list[object],
    decision: str,
    note: str,
    reviewer: str,
    submission: str | None,
) -> int:
    """Record `decision` for the cohort products `chosen` (a condition on `review_queue q`); returns how many.
    The caller holds the transaction."""
    cursor = store.execute(
        f"""INSERT INTO review_decisions (sku, decision, note, reviewer, decided_at, submission)
        SELECT q.sku, ?, ?, ?, ?, ? FROM review_queue q WHERE {chosen} ORDER BY {QueueOrder().sql()}""",
        [decision, note, reviewer, utc_now(), submission, *params],
    )
    return cursor.rowcount


def record_for_skus(
    store: sqlite3.Connection, skus: list[str], decision: str, note: str, reviewer: str, submission: str | None = None
) -> int:
    """Record one decision for each of `skus` (all in the cohort, or none is recorded); in the caller's
    transaction. Returns how many."""
    skus = sorted({s.strip() for s in skus if s.strip()})
    note = note.strip()
    _check(decision, note)
    if not skus:
        raise DecisionError("choose at least one product")
    recorded = _insert(
        store, "q.sku IN (SELECT value FROM json_each(?))", [orjson.dumps(skus).decode()], decision, note, reviewer,
        submission,
    )  # fmt: skip
    if recorded < len(skus):
        missing = len(skus) - recorded
        raise DecisionError(
            f"product {skus[0]!r} is not in the review cohort"
            if len(skus) == 1
            else f"{missing} of the {len(skus)} products are not in the review cohort"
        )
    return recorded


def record_for_filter(
    store: sqlite3.Connection,
    filters: QueueFilter,
    expected: int,
    decision: str,
    note: str,
    reviewer: str,
    submission: str | None,
) -> int:
    """Record one decision for every product matching `filters`, if they are still the `expected` number the
    reviewer was shown; in the caller's transaction. Returns how many."""
    note = note.strip()
    _check(decision, note)
    where, params = filters.where()
    recorded = _insert(store, where, params, decision, note, reviewer, submission)
    if recorded != expected:
        raise DecisionError(f"the queue changed: {recorded} products match now, not {expected}; please look again")
    return recorded


def record_decision(store: sqlite3.Connection, sku: str, decision: str, note: str, reviewer: str) -> int:
    """Store a reviewer's decision on a product the pipeline published; returns its id."""
    with appstore.transaction(store):
        record_for_skus(store, [sku], decision, note, reviewer)
        (decision_id,) = store.execute("SELECT last_insert_rowid()").fetchone()
    return int(decision_id)


def undo(
    store: sqlite3.Connection, reviewer: str, submission: str | None, batch: str = "", decision_id: int = 0
) -> int:
    """Take back `reviewer`'s own decisions in force: every one of the submission `batch`, or the one
    `decision_id`. Each gets an undo row (the history keeps both); in the caller's transaction."""
    cursor = store.execute(
        """INSERT INTO review_decisions (sku, decision, note, reviewer, decided_at, undoes, submission)
        SELECT d.sku, 'undo', '', ?, ?, d.id, ? FROM effective_review_decisions d
        WHERE d.reviewer = ? AND ((? <> '' AND d.submission = ?) OR d.id = ?) ORDER BY d.id""",
        [reviewer, utc_now(), submission, reviewer, batch, batch, decision_id],
    )
    if cursor.rowcount == 0:
        raise DecisionError("there is no decision of yours in force to undo there")
    return cursor.rowcount


def outcome(store: sqlite3.Connection, submission: str, reviewer: str) -> dict[str, object] | None:
    """What `reviewer`'s submission stored, for the banner after it: the decision (for an undo, the one
    taken back), how many products, the SKU when only one, and whether any of it can still be undone."""
    row = store.execute(
        """SELECT max(d.decision = 'undo') AS undo, coalesce(max(u.decision), max(d.decision)) AS decision,
                  count(*) AS products, min(d.sku) AS sku,
                  count(*) FILTER (WHERE d.decision <> 'undo' AND NOT EXISTS
                      (SELECT 1 FROM review_decisions x WHERE x.undoes = d.id)) AS in_force
        FROM review_decisions d LEFT JOIN review_decisions u ON u.id = d.undoes
        WHERE d.submission = ? AND d.reviewer = ?""",
        [submission, reviewer],
    ).fetchone()
    return dict(row) if row and row["products"] else None


def submit_once(store: sqlite3.Connection, token: str, username: str, record: Callable[[], str]) -> str:
    """Run `record` (it writes and returns where to send the reviewer) once per form submission `token`: a
    replay, or a duplicate sent in parallel (it waits for the first's transaction), writes nothing and gets
    the first one's answer."""
    with appstore.transaction(store):
        first = store.execute("SELECT username, answer FROM review_submissions WHERE token = ?", [token]).fetchone()
        if first is not None:
            if first["username"] != username:
                raise DecisionError("this form was sent by someone else; please reload the page")
            return str(first["answer"])
        answer = record()
        store.execute("INSERT INTO review_submissions VALUES (?, ?, ?, ?)", [token, username, answer, utc_now()])
    return answer


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
