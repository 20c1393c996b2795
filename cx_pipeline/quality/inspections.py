"""Segmented inspection results: QA's entries in the app store (one at a time in the form, or a CSV file), the
lots QA may inspect, their import into the warehouse, and defects per hundred units (DHU).

An entry is one lot (a receipt line): per checklist item of the lot's category, the number of defects of each
severity found in the Z1.4 sample. Every entry is checked whole before anything is stored; a CSV file is
checked whole before any of it is stored, and its problems are reported grouped by reason, with their rows.
A lot's first result is an inspection; a later one must be an explicit amendment (with a reason) that supersedes
it: both are kept, and the latest counts. Every form submission carries a one-time token, so a submission sent
twice stores once.
"""

from __future__ import annotations

import io
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO

import duckdb
import numpy as np
import pandas as pd

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, note_publication
from cx_pipeline.core.sql import first_row, row_exists_sql
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.schema import log_import
from cx_pipeline.quality import aql
from cx_pipeline.quality.checklists import Checklists

FEED = "inspections"  # its name in ingest_batches and quarantine
NOT_OFFERED = "lots are offered while received recently and not inspected yet, or inspected recently"
PUBLISH_CHUNK = 50_000  # lots per read from DuckDB and per write to SQLite
CLOCK_SKEW = timedelta(minutes=5)
LOTS_BY_SKU = "CREATE INDEX IF NOT EXISTS inspection_lots_by_sku ON inspection_lots (sku)"
CSV_REQUIRED = ("receipt_id", "line_no", "item", *aql.SEVERITIES)
CSV_OPTIONAL = ("inspected_at", "note")
MAX_NOTE = 1000
CSV_CHUNK_ROWS = 50_000  # rows parsed at a time from an upload
MAX_PROBLEM_ROWS = 10_000  # past this many bad rows, an upload's problems are counted, no longer collected
SHOWN_PROBLEMS, SHOWN_RANGES = 50, 30  # reasons listed, and row ranges per reason
WHOLE_NUMBER = r"[0-9]{1,9}(?:\.0*)?"  # what a spreadsheet writes for a count: 12 or 12.0; never inf, nan, 1e400

DDL = """
CREATE TABLE IF NOT EXISTS inspections (
    inspection_id BIGINT PRIMARY KEY,    -- the app store's id
    receipt_id    VARCHAR,
    line_no       INTEGER,
    sku           VARCHAR,
    category      VARCHAR,
    supplier_id   VARCHAR,
    lot_size      INTEGER,
    sample_size   INTEGER,
    verdict       VARCHAR,
    inspector     VARCHAR,
    inspected_at  TIMESTAMPTZ,
    entered_at    TIMESTAMPTZ,
    source        VARCHAR,
    note          VARCHAR,
    _batch_id     VARCHAR NOT NULL,
    _loaded_at    TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS lot_products (  -- each product's fields as the app's list of lots shows them
    sku         VARCHAR NOT NULL,
    title       VARCHAR,
    category    VARCHAR,
    supplier_id VARCHAR
);
CREATE TABLE IF NOT EXISTS lot_window (    -- the window of the app's list of lots as last published
    pending_days   INTEGER NOT NULL,
    inspected_days INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inspection_defects (
    inspection_id BIGINT NOT NULL,
    item          VARCHAR NOT NULL,
    severity      VARCHAR NOT NULL,
    defects       INTEGER,
    PRIMARY KEY (inspection_id, item, severity)
);
-- each entry's defects per checklist item, its severities added: kept at import (add_item_sums) for the return
-- model's defect rates, which read every entry of three months (at 1 M SKUs 17 M defect rows summed at each fit)
CREATE TABLE IF NOT EXISTS inspection_items (
    inspection_id BIGINT NOT NULL,
    item          VARCHAR NOT NULL,
    defects       BIGINT
);
CREATE TABLE IF NOT EXISTS inspection_verdicts (  -- lots by their latest verdict, as last counted (`by_verdict`)
    inputs  VARCHAR NOT NULL,               -- the inspections counted (`inspection_inputs`)
    verdict VARCHAR,
    source  VARCHAR,
    lots    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dhu_built (      -- what the last DHU build read: one row
    built_on  DATE NOT NULL,                -- its day on the WMS clock (the window moves by days)
    inputs    VARCHAR NOT NULL              -- the inspections it read (`inspection_inputs`)
);
-- every entry that kept its contract, and the latest of them per lot
CREATE OR REPLACE VIEW kept_inspections AS
SELECT * FROM inspections
WHERE inspection_id::VARCHAR NOT IN (
    SELECT row_key FROM quarantine WHERE feed = 'inspections' AND released_at IS NULL AND row_key IS NOT NULL
);
CREATE OR REPLACE VIEW valid_inspections AS
SELECT * FROM kept_inspections
QUALIFY row_number() OVER (PARTITION BY receipt_id, line_no ORDER BY inspection_id DESC) = 1;
-- what the valid inspections depend on, cheaply (one row): the entries imported, and the quarantine holding some
-- back; a step that keeps work built from them (the DHU, the weekly KPIs) compares it with what it built from
CREATE OR REPLACE VIEW inspection_inputs AS
SELECT concat_ws('|', (SELECT max(inspection_id) FROM inspections),
    (SELECT max(judged_at) FROM ingest_batches WHERE feed = 'inspections' AND rows_fetched > 0),
    (SELECT count(*) FILTER (released_at IS NULL) FROM quarantine WHERE feed = 'inspections')) AS inputs;
"""


class InspectionError(ValueError):
    """An entry or a file that cannot be stored; `problems` lists every reason (with row numbers for a file),
    `count` how many problems were found (a file's list groups and caps them)."""

    def __init__(self, problems: list[str], count: int | None = None) -> None:
        self.problems = problems
        self.count = len(problems) if count is None else count
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(shown)


def row_ranges(rows: np.ndarray) -> str:
    """Sorted, distinct row numbers in words: `row 4`, `rows 4, 9, 12-40` (the first SHOWN_RANGES runs)."""
    breaks = np.flatnonzero(np.diff(rows) != 1)
    starts, ends = rows[np.r_[0, breaks + 1]], rows[np.r_[breaks, len(rows) - 1]]
    runs = [str(a) if a == b else f"{a}-{b}" for a, b in zip(starts[:SHOWN_RANGES], ends[:SHOWN_RANGES], strict=True)]
    text = f"{'row' if len(rows) == 1 else 'rows'} {', '.join(runs)}"
    if len(starts) > SHOWN_RANGES:
        text += f" and {int((rows > ends[SHOWN_RANGES - 1]).sum()):,} more"
    return text


class Problems:
    """A file's problems by reason, each with its rows: `line_no is not a whole number: rows 4, 9, 12-40`.

    Row numbers are kept up to MAX_PROBLEM_ROWS; past that, problems are only counted, so a large file of bad
    rows costs neither the memory nor the time of a line per row."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}
        self.counted: dict[str, int] = {}  # problems per reason among the rows kept
        self.kept = self.count = 0

    @property
    def full(self) -> bool:
        return self.kept >= MAX_PROBLEM_ROWS

    def add(self, reason: str, rows: Iterable[int], count: int | None = None) -> None:
        """`reason` on `rows`: a problem per row, or `count` of them (a lot with a gap is one, over its rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        count = len(rows) if count is None else count
        self.count += count
        room = min(len(rows), MAX_PROBLEM_ROWS - self.kept)
        if room > 0:
            self.rows.setdefault(reason, []).append(rows[:room])
            self.counted[reason] = self.counted.get(reason, 0) + (count if room == len(rows) else room)
            self.kept += room

    def add_each(self, reasons: pd.Series, rows: pd.Series) -> None:
        """Rows with a reason of their own each (`lot RCV-9/1 is not ...`), grouped by reason."""
        room = max(0, MAX_PROBLEM_ROWS - self.kept)
        self.count += max(0, len(rows) - room)
        for reason, group in rows.iloc[:room].groupby(reasons.iloc[:room].to_numpy(), sort=False):
            self.add(str(reason), group.to_numpy())

    def lines(self) -> list[str]:
        """The reasons in the order of their first row, the rest counted in a last line."""
        groups = sorted(
            ((np.unique(np.concatenate(r)), reason) for reason, r in self.rows.items()), key=lambda g: g[0][0]
        )
        shown = groups[:SHOWN_PROBLEMS]
        lines = [f"{reason}: {row_ranges(rows)}" for rows, reason in shown]
        if hidden := self.count - sum(self.counted[reason] for _, reason in shown):
            lines.append(f"and {hidden:,} more problem{'s' if hidden > 1 else ''} not shown")
        return lines

    def error(self) -> InspectionError:
        return InspectionError(self.lines(), self.count)


@dataclass(frozen=True)
class Lot:
    receipt_id: str
    line_no: int
    sku: str
    title: str
    category: str
    supplier_id: str
    warehouse: str
    lot_size: int
    received_at: str


@dataclass
class Entry:
    """What QA enters for one lot: defects per (item, severity), and optionally when it was inspected."""

    receipt_id: str
    line_no: int
    defects: dict[tuple[str, str], int] = field(default_factory=dict)
    inspected_at: datetime | None = None
    note: str = ""


# --- the lots QA may inspect ---

PENDING_DAYS = 7  # incoming inspection happens within days of receipt; a lot left a week is put away and selling
INSPECTED_DAYS = 7  # and an inspected one a week, to amend; its result stays on its inspection's page


@dataclass(frozen=True)
class LotWindow:
    """The lots offered to QA: received within `pending_days` and not inspected yet, or inspected within
    `inspected_days` (to look at and amend). Older lots stay in the warehouse only."""

    pending_days: int = PENDING_DAYS
    inspected_days: int = INSPECTED_DAYS

    def received_since(self, now: datetime) -> datetime:
        return now - timedelta(days=self.pending_days)

    def inspected_since(self, now: datetime) -> datetime:
        return now - timedelta(days=self.inspected_days)


def lot_tuples(lots: pd.DataFrame) -> list[tuple]:
    """Rows for `publish_lots` from a frame with `Lot`'s columns."""
    frame = lots.assign(
        received_at=pd.to_datetime(lots["received_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    )
    return list(frame[list(Lot.__dataclass_fields__)].itertuples(index=False, name=None))


def publish_lots(
    store: sqlite3.Connection,
    chunks: Iterable[list[tuple]],
    now: datetime,
    window: LotWindow = LotWindow(),
    through: datetime | None = None,
    run_id: str = "",
    replace: bool = False,
) -> int:
    """Add or update lots (chunks of tuples in the order of `Lot`'s fields) in the app's list, then withdraw
    those `window` no longer offers (`withdraw_lots`).

    Each chunk is its own transaction, so a publication of many lots never holds the app's writers back for
    long. With `replace`, the chunks are the whole list: it is built aside, without the time index, and swapped
    in with one transaction, so the app shows the old list until the new one is complete (and a first
    publication runs at SQLite's bulk speed, about twice that of upserts into an indexed table; chunks in key
    order keep it so). `through` records, at the end, that every change the warehouse had landed by then is
    published, so the next publication sends only what changed after it (see `lots_to_publish`).
    """
    table = "inspection_lots_next" if replace else "inspection_lots"
    if replace:
        store.execute(f"DROP TABLE IF EXISTS {table}")  # left by a publication that stopped half-way
        store.execute(appstore.LOTS_TABLE.format(name=table))
    published = 0
    for chunk in chunks:
        with appstore.transaction(store):
            store.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * 9)})", chunk)
        published += len(chunk)
    with appstore.transaction(store):
        if replace:
            store.execute("DROP TABLE inspection_lots")
            store.execute(f"ALTER TABLE {table} RENAME TO inspection_lots")
            store.execute(appstore.LOTS_INDEX)
            store.execute(LOTS_BY_SKU)  # QA's search by SKU (migration 4 made it on the first list)
        withdraw_lots(store, now, window)
        if through is not None:
            # assessed to the microsecond, as `_loaded_at`: the next publication starts there
            note_publication(store, "inspection_lots", run_id, through.isoformat(), published)
    return published


def withdraw_lots(store: sqlite3.Connection, now: datetime, window: LotWindow) -> int:
    """Take the lots `window` no longer offers out of the app's list; returns how many. Only the lots that can
    have left are looked at (those received before the window, through the time index), not the whole list."""
    received, inspected = iso(window.received_since(now)), iso(window.inspected_since(now))
    withdrawn = store.execute(
        """DELETE FROM inspection_lots WHERE received_at < ? AND NOT EXISTS (
            SELECT 1 FROM inspections i WHERE i.receipt_id = inspection_lots.receipt_id
                AND i.line_no = inspection_lots.line_no AND i.inspected_at >= ?)""",
        [received, inspected],
    ).rowcount
    if window.inspected_days < window.pending_days:  # received within the window, inspected before `inspected`
        withdrawn += store.execute(
            """DELETE FROM inspection_lots WHERE (receipt_id, line_no) IN (
                SELECT receipt_id, line_no FROM inspections WHERE inspected_at >= ?  -- none before its receipt
                GROUP BY receipt_id, line_no HAVING max(inspected_at) < ?)""",
            [received, inspected],
        ).rowcount
    return withdrawn


def lots_published_through(store: sqlite3.Connection) -> datetime | None:
    """Up to when the warehouse's changes are in the app's list of lots (None: nothing published yet)."""
    row = store.execute("SELECT assessed_at FROM publications WHERE name = 'inspection_lots'").fetchone()
    return datetime.fromisoformat(row[0]) if row else None


def recently_inspected(store: sqlite3.Connection, now: datetime, window: LotWindow, whole: bool = True) -> pd.DataFrame:
    """The lots (receipt_id, line_no) to offer for their inspection within `window` rather than their receipt.
    For a `whole` publication, every lot with an entry inspected within it, from the app's own entries (it has
    them first); otherwise the lots the list holds from before the receipts' window (a few), which include every
    such lot, since a lot is inspected only while offered."""
    sql, since = (
        ("SELECT DISTINCT receipt_id, line_no FROM inspections WHERE inspected_at >= ?", window.inspected_since(now))
        if whole
        else ("SELECT receipt_id, line_no FROM inspection_lots WHERE received_at < ?", window.received_since(now))
    )
    rows = store.execute(sql, [iso(since)]).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=["receipt_id", "line_no"]).astype({"line_no": "int32"})


def lots_to_publish(
    con: duckdb.DuckDBPyConnection,
    now: datetime,
    window: LotWindow,
    inspected: pd.DataFrame,
    since: datetime | None = None,
) -> tuple[Iterator[list[tuple]], datetime | None]:
    """The received lots `window` offers (received within it, or among `inspected`: `recently_inspected`), with
    their product: those whose receipt landed after `since` or whose product now shows other fields in the list
    (all of them when `since` is None); and the time the warehouse's landings reach, to publish `through`. Call
    `lots_published` once they are. Lots received within the window that were inspected long ago are sent too:
    `publish_lots` withdraws them with the rest.

    Rows stream from DuckDB in chunks: a first publication of a large warehouse is a million lots or more. The
    mark is the warehouse's own landing clock (`_loaded_at`); a lot that only becomes valid again because its
    batch's contract was re-run, without a new landing, is not sent until its receipt changes. Products are
    compared with `lot_products` rather than by landing time: most product updates (prices, attributes) leave
    a lot as it was, and re-sending every lot of each would cost more than the rest of the publication.
    """
    (through,) = first_row(con, "SELECT max(_loaded_at) FROM raw_receipts")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE relabelled AS
        SELECT sku, title, category, supplier_id FROM valid_catalog
        EXCEPT SELECT sku, title, category, supplier_id FROM lot_products"""
    )
    con.register("inspected", inspected)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE inspected_lots AS SELECT receipt_id, line_no FROM inspected")
    finally:
        con.unregister("inspected")
    changed = "valid_receipts" if since is None else "changed"
    cursor = con.execute(
        f"""WITH changed AS (  -- landed since, or of a product relabelled since: apart, as an OR with a subquery
                               -- is applied only after the join with the catalog, to every lot offered
            SELECT * FROM valid_receipts WHERE _loaded_at > $since
            UNION ALL
            SELECT * FROM valid_receipts WHERE _loaded_at <= $since AND sku IN (SELECT sku FROM relabelled)
        )
        SELECT r.receipt_id, r.line_no, r.sku, c.title, c.category, c.supplier_id, r.warehouse,
               r.qty_received AS lot_size, strftime(timezone('UTC', r.received_at), '%Y-%m-%dT%H:%M:%S+00:00')
        FROM (SELECT * FROM {changed} WHERE received_at >= $received_since  -- two parts: an OR scans all
              UNION ALL
              SELECT * FROM {changed} r SEMI JOIN inspected_lots i USING (receipt_id, line_no)
              WHERE r.received_at < $received_since) r
        JOIN valid_catalog c USING (sku)
        WHERE r.qty_received > 0
        ORDER BY r.receipt_id, r.line_no  -- the app's key: SQLite appends instead of splitting pages""",
        {"received_since": window.received_since(now), "since": since},
    )

    def chunks() -> Iterator[list[tuple]]:
        while chunk := cursor.fetchmany(PUBLISH_CHUNK):
            yield chunk

    return chunks(), through


def publication_recorded(con: duckdb.DuckDBPyConnection, window: LotWindow) -> bool:
    """Whether the warehouse records what the app's list of lots shows, under `window`. When it does not (a
    warehouse from before, one whose catalog was empty, or a window changed since), the list is published whole:
    no change can be told from the ones it shows, and a wider window offers lots that never changed."""
    return first_row(
        con,
        """SELECT EXISTS (SELECT 1 FROM lot_products)
            AND EXISTS (SELECT 1 FROM lot_window WHERE pending_days = ? AND inspected_days = ?)""",
        [window.pending_days, window.inspected_days],
    )[0]


def lots_published(con: duckdb.DuckDBPyConnection, window: LotWindow) -> None:
    """Record the product fields the lots just published show, and their window (after `lots_to_publish` and
    `publish_lots`). Called only once the app's store has them: a publication that stopped half-way compares
    as before."""
    with transaction(con):
        # a product that left valid_catalog (quarantined) is forgotten, so its lots are sent again once it is back
        con.execute(
            """DELETE FROM lot_products p WHERE sku IN (SELECT sku FROM relabelled)
            OR NOT EXISTS (SELECT 1 FROM valid_catalog c WHERE c.sku = p.sku)"""
        )
        con.execute("INSERT INTO lot_products SELECT * FROM relabelled")
        con.execute("DELETE FROM lot_window")
        con.execute("INSERT INTO lot_window VALUES (?, ?)", [window.pending_days, window.inspected_days])


def refresh_lots(
    con: duckdb.DuckDBPyConnection, store: sqlite3.Connection, now: datetime, window: LotWindow, run_id: str = ""
) -> int:
    """Bring the app's list of lots to what `window` offers at `now`: send the lots new or changed since the last
    publication (all of them on a first one, or when the window changed) and withdraw those that left. Returns
    the lots sent."""
    since = lots_published_through(store) if publication_recorded(con, window) else None
    inspected = recently_inspected(store, now, window, whole=since is None)
    lots, through = lots_to_publish(con, now, window, inspected, since)
    published = publish_lots(store, lots, now, window, through=through, run_id=run_id, replace=since is None)
    lots_published(con, window)
    return published


def lot(store: sqlite3.Connection, receipt_id: str, line_no: int) -> Lot | None:
    row = store.execute(
        "SELECT * FROM inspection_lots WHERE receipt_id = ? AND line_no = ?", [receipt_id, line_no]
    ).fetchone()
    return Lot(**dict(row)) if row else None


@dataclass(frozen=True)
class LotSearch:
    """What QA narrows the list of lots to; empty fields do not narrow it. `sku` and `supplier` match from the
    start (any case); `lot` matches a receipt id from the start, or one lot as `receipt id/line`; the dates are
    days received (UTC), both included."""

    category: str = ""
    sku: str = ""
    lot: str = ""
    supplier: str = ""
    received_from: date | None = None
    received_to: date | None = None
    pending_only: bool = True


def like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with `text` (its own % and _ taken literally)."""
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


def lots_page(
    store: sqlite3.Connection, search: LotSearch = LotSearch(), page: int = 1, size: int = 50
) -> appstore.Page:
    """Received lots matching `search`, newest first, with their latest inspection if any."""
    where, params = ["1 = 1"], []
    if search.category:
        where.append("l.category = ?")
        params.append(search.category)
    if search.sku:
        where.append("l.sku LIKE ? ESCAPE '\\'")
        params.append(like_prefix(search.sku))
    if search.supplier:
        where.append("l.supplier_id LIKE ? ESCAPE '\\'")
        params.append(like_prefix(search.supplier))
    if search.lot:
        receipt, _, line = search.lot.rpartition("/")
        one_lot = receipt and line.isascii() and line.isdigit() and len(line) <= 9
        where.append("(l.receipt_id LIKE ? ESCAPE '\\' OR (l.receipt_id = ? AND l.line_no = ?))")
        params += [like_prefix(search.lot), receipt if one_lot else None, int(line) if one_lot else None]
    if search.received_from:
        where.append("l.received_at >= ?")
        params.append(search.received_from.isoformat())
    if search.received_to:
        where.append("l.received_at < ?")
        params.append((search.received_to + timedelta(days=1)).isoformat())
    if search.pending_only:
        where.append("last.id IS NULL")
    source = f"""FROM inspection_lots l
        LEFT JOIN (SELECT receipt_id, line_no, max(id) AS id, count(*) AS entries FROM inspections
                   GROUP BY receipt_id, line_no) last USING (receipt_id, line_no)
        LEFT JOIN inspections i ON i.id = last.id
        WHERE {" AND ".join(where)}"""
    order = "l.received_at DESC, l.receipt_id, l.line_no"
    select = "l.*, i.id AS inspection_id, i.verdict, last.entries"
    return appstore.paged(store, select, source, params, order, page, size)


def lot_history(store: sqlite3.Connection, receipt_id: str, line_no: int) -> list[dict[str, object]]:
    """Every result entered for a lot, latest first, with its defect totals; all but the first are superseded."""
    rows = store.execute(
        """SELECT i.*, sum(d.defects) FILTER (WHERE d.severity = 'critical') AS critical,
                  sum(d.defects) FILTER (WHERE d.severity = 'major') AS major,
                  sum(d.defects) FILTER (WHERE d.severity = 'minor') AS minor
        FROM inspections i JOIN inspection_defects d ON d.inspection_id = i.id
        WHERE i.receipt_id = ? AND i.line_no = ? GROUP BY i.id ORDER BY i.id DESC""",
        [receipt_id, line_no],
    ).fetchall()
    return [dict(r) | {"superseded": n > 0} for n, r in enumerate(rows)]


# --- recording ---


def plan_for(found: Lot, checklists: Checklists) -> aql.LotPlan:
    return aql.lot_plan(found.lot_size, checklists.aql)


def parse_time(text: str) -> datetime:
    """An ISO 8601 date and time as typed (`2026-11-23 14:30`, `...T14:30:00Z`); naive times are UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_entry(found: Lot | None, entry: Entry, checklists: Checklists, now: datetime) -> list[str]:
    """Every reason `entry` cannot be stored (empty when it can)."""
    if found is None:
        return [f"lot {entry.receipt_id}/{entry.line_no} is not a received lot QA can inspect: {NOT_OFFERED}"]
    problems = []
    items = checklists.items(found.category)
    entered = {item for item, _ in entry.defects}
    if unknown := sorted(entered - set(items)):
        problems.append(f"not on the {found.category} checklist: {', '.join(unknown)}")
    if missing := [i for i in items if i not in entered]:
        problems.append(f"items missing: {', '.join(missing)}")
    absent = [f"{i} {s}" for i in items if i in entered for s in aql.SEVERITIES if (i, s) not in entry.defects]
    if absent:
        problems.append(f"counts missing: {', '.join(absent)}")
    sample = plan_for(found, checklists).sample_size
    for (item, severity), count in entry.defects.items():
        if severity not in aql.SEVERITIES:
            problems.append(f"{item}: unknown severity {severity!r}")
        elif not isinstance(count, int) or count < 0:
            problems.append(f"{item} {severity}: defects must be a whole number >= 0")
        elif count > sample:
            problems.append(f"{item} {severity}: {count} defects, more than the {sample} units sampled")
    if entry.inspected_at is not None:
        if entry.inspected_at > now + CLOCK_SKEW:
            problems.append(f"inspected_at {iso(entry.inspected_at)} is in the future")
        elif iso(entry.inspected_at) < found.received_at:
            problems.append(f"inspected_at {iso(entry.inspected_at)} is before the lot was received")
    if len(entry.note) > MAX_NOTE:
        problems.append(f"the note is longer than {MAX_NOTE} characters")
    return problems


def verdict(found: Lot, entry: Entry, checklists: Checklists) -> dict[str, str]:
    totals = {s: sum(n for (_, sev), n in entry.defects.items() if sev == s) for s in aql.SEVERITIES}
    return plan_for(found, checklists).verdict(totals)


@dataclass(frozen=True)
class Stored:
    """What a submission stored: its last inspection's id and how many lots (a repeated submission: the first's)."""

    inspection_id: int
    lots: int


def _store(
    store: sqlite3.Connection,
    lots: pd.DataFrame,
    defects: pd.DataFrame,
    checklists: Checklists,
    now: datetime,
    inspector: str,
    submission: str | None = None,
) -> Stored:
    """Insert checked lots (one row each: Lot columns, inspected_at, note, source, amends, amend_reason) and their
    defects (receipt_id, line_no, item, severity, defects) in one transaction, with each lot's sample size and
    verdict. `amends` is the inspection each lot's entry supersedes as the user saw it (None: a first one);
    when another entry came in meanwhile, nothing is stored. A `submission` token already used stores nothing
    and answers what its first use stored."""
    plans = {size: aql.lot_plan(int(size), checklists.aql) for size in lots["lot_size"].unique()}
    totals = defects.pivot_table(
        index=["receipt_id", "line_no"], columns="severity", values="defects", aggfunc="sum", fill_value=0
    ).reindex(columns=list(aql.SEVERITIES), fill_value=0)
    lots = lots.join(totals, on=["receipt_id", "line_no"])
    rejected = pd.concat(
        [lots[s] >= lots["lot_size"].map({k: p.plans[s].reject for k, p in plans.items()}) for s in aql.SEVERITIES],
        axis=1,
    ).any(axis=1)
    lots = lots.assign(
        sample_size=lots["lot_size"].map({k: p.sample_size for k, p in plans.items()}),
        verdict=rejected.map({True: "reject", False: "accept"}),
        inspected_at=[iso(pd.Timestamp(t)) if pd.notna(t) else iso(now) for t in lots["inspected_at"]],
        entered_at=iso(now),
        inspector=inspector,
    )
    with appstore.transaction(store):
        if submission and (first := _submitted(store, submission)):
            return first
        current = _on_record(store, lots[["receipt_id", "line_no"]])
        seen = lots.merge(current, on=["receipt_id", "line_no"], how="left")
        moved = seen["on_record"].fillna(0).to_numpy() != seen["amends"].astype("Int64").fillna(0).to_numpy()
        if moved.any():
            raise InspectionError(
                [f"lot {r}/{n} was inspected or amended meanwhile: reload it, look at its result on record and "
                 "amend that if it still needs it" for r, n in seen.loc[moved, ["receipt_id", "line_no"]].head(20)
                 .itertuples(index=False)]
            )  # fmt: skip
        (last,) = store.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'inspections'), 0),"
            " coalesce((SELECT max(id) FROM inspections), 0))"
        ).fetchone()
        lots["id"] = range(last + 1, last + 1 + len(lots))  # ids given here, so the defects can name them
        columns = ["id", "receipt_id", "line_no", "sku", "category", "supplier_id", "lot_size", "sample_size",
                   "verdict", "inspector", "inspected_at", "entered_at", "source", "note", "amends",
                   "amend_reason"]  # fmt: skip
        store.executemany(
            f"INSERT INTO inspections ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            lots[columns].astype(object).where(lots[columns].notna(), None).itertuples(index=False, name=None),
        )
        rows = defects.merge(lots[["receipt_id", "line_no", "id"]], on=["receipt_id", "line_no"])
        store.executemany(
            "INSERT INTO inspection_defects VALUES (?, ?, ?, ?)",
            rows[["id", "item", "severity", "defects"]].astype(object).itertuples(index=False, name=None),
        )
        stored = Stored(int(lots["id"].iat[-1]), len(lots))
        if submission:
            store.execute(
                "INSERT INTO qa_submissions VALUES (?, ?, ?, ?, ?)",
                [submission, stored.inspection_id, stored.lots, inspector, iso(now)],
            )
    return stored


def _submitted(store: sqlite3.Connection, submission: str) -> Stored | None:
    row = store.execute("SELECT inspection_id, lots FROM qa_submissions WHERE token = ?", [submission]).fetchone()
    return Stored(*row) if row else None


def _on_record(store: sqlite3.Connection, keys: pd.DataFrame) -> pd.DataFrame:
    """The latest inspection (`on_record`, its `on_record_at`) of each lot of `keys` that has one."""
    _wanted(store, keys)
    rows = store.execute(
        """SELECT i.receipt_id, i.line_no, i.id, i.inspected_at FROM inspections i
        JOIN (SELECT receipt_id, line_no, max(id) AS id FROM inspections JOIN wanted USING (receipt_id, line_no)
              GROUP BY receipt_id, line_no) last ON last.id = i.id"""
    ).fetchall()
    return pd.DataFrame(
        [tuple(r) for r in rows], columns=["receipt_id", "line_no", "on_record", "on_record_at"]
    ).astype({"line_no": int, "on_record": "Int64"})


def _wanted(store: sqlite3.Connection, keys: pd.DataFrame) -> None:
    """Lots (receipt_id, line_no) in a temporary table to join."""
    store.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (receipt_id TEXT, line_no INTEGER)")
    store.execute("DELETE FROM wanted")
    store.executemany("INSERT INTO wanted VALUES (?, ?)", keys.drop_duplicates().itertuples(index=False, name=None))


def record(
    store: sqlite3.Connection,
    entry: Entry,
    checklists: Checklists,
    inspector: str,
    now: datetime | None = None,
    amends: int | None = None,
    amend_reason: str = "",
    submission: str | None = None,
) -> int:
    """Store one lot's results entered in the form; returns the inspection id. A lot with a result on record
    takes only an amendment: `amends` names that result (as the user saw it) and `amend_reason` says why; the
    amendment keeps its time of inspection unless another is given. `now` is the app's clock."""
    now = now or datetime.now(UTC)
    try:
        return _record(store, entry, checklists, inspector, now, amends, amend_reason, submission)
    except InspectionError:
        if submission and (first := _submitted(store, submission)):  # the same form, stored by a parallel request
            return first.inspection_id
        raise


def _record(
    store: sqlite3.Connection,
    entry: Entry,
    checklists: Checklists,
    inspector: str,
    now: datetime,
    amends: int | None,
    amend_reason: str,
    submission: str | None,
) -> int:
    if submission and (first := _submitted(store, submission)):
        return first.inspection_id
    found = lot(store, entry.receipt_id, entry.line_no)
    problems = check_entry(found, entry, checklists, now)
    on_record = _on_record(store, pd.DataFrame([(entry.receipt_id, entry.line_no)], columns=["receipt_id", "line_no"]))
    latest = None if on_record.empty else int(on_record["on_record"].iat[0])
    if latest is not None and amends is None:
        problems.append(
            f"lot {entry.receipt_id}/{entry.line_no} already has a result on record (inspection {latest}): to change"
            " it, save an amendment with its reason"
        )
    elif amends is not None and not amend_reason.strip():
        problems.append("say why you amend the result on record")
    elif amends is not None and amends != latest:
        problems.append(f"inspection {amends} is not the result on record of lot {entry.receipt_id}/{entry.line_no}")
    if problems:
        raise InspectionError(problems)
    inspected_at = entry.inspected_at or (on_record["on_record_at"].iat[0] if amends is not None else None)
    lots = pd.DataFrame(
        [vars(found) | {"inspected_at": inspected_at, "note": entry.note.strip(), "amends": amends,
                        "amend_reason": amend_reason.strip(), "source": "form"}]
    )  # fmt: skip
    defects = pd.DataFrame(
        [(found.receipt_id, found.line_no, item, severity, n) for (item, severity), n in entry.defects.items()],
        columns=["receipt_id", "line_no", "item", "severity", "defects"],
    )
    return _store(store, lots, defects, checklists, now, inspector, submission).inspection_id


def import_csv(
    store: sqlite3.Connection,
    source: str | IO[str],
    checklists: Checklists,
    inspector: str,
    now: datetime | None = None,
    amend_reason: str = "",
    submission: str | None = None,
) -> int:
    """Store every lot of a CSV file (`receipt_id,line_no,item,critical,major,minor[,inspected_at,note]`, one
    row per lot and item), or none: any bad row raises InspectionError naming its problems, grouped by reason
    with their rows. Lots with a result on record are amended only with an `amend_reason`. The file (text or
    a text stream) is parsed CSV_CHUNK_ROWS rows at a time, and once MAX_PROBLEM_ROWS rows are bad, the rest
    is only counted. `now` is the app's clock (an entry after it is in the future). Returns the lots stored."""
    now = now or datetime.now(UTC)
    if submission and (first := _submitted(store, submission)):
        return first.lots
    try:
        return _import_csv(store, source, checklists, inspector, now, amend_reason, submission)
    except InspectionError:
        if submission and (first := _submitted(store, submission)):  # the same upload, stored by a parallel request
            return first.lots
        raise


def _import_csv(
    store: sqlite3.Connection,
    source: str | IO[str],
    checklists: Checklists,
    inspector: str,
    now: datetime,
    amend_reason: str,
    submission: str | None,
) -> int:
    stream = io.StringIO(source) if isinstance(source, str) else source
    problems = Problems()
    chunks = []
    try:
        with pd.read_csv(
            stream, dtype=str, keep_default_na=False, skipinitialspace=True, chunksize=CSV_CHUNK_ROWS
        ) as reader:
            for chunk in reader:
                if not chunks:
                    _check_columns(chunk)
                checked = _checked_rows(chunk, problems, now)
                if not problems.full:  # past the cap, the rows are only counted
                    chunks.append(checked)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InspectionError([f"not a CSV file: {exc}"]) from exc
    if problems.full:
        raise problems.error()
    if not chunks or not sum(len(c) for c in chunks):
        raise InspectionError(["the file has no rows"])
    frame = pd.concat(chunks, ignore_index=True)
    lots = _checked_lots(store, frame, checklists, problems, amend_reason)
    if problems.count:
        raise problems.error()
    return _store(store, lots, frame_defects(frame), checklists, now, inspector, submission).lots


def _check_columns(chunk: pd.DataFrame) -> None:
    if not isinstance(chunk.index, pd.RangeIndex):  # pandas reads a first row longer than the header as an index
        raise InspectionError(["row 2 has more fields than the header"])
    columns = [c.strip() for c in chunk.columns]
    if problems := [f"missing column {c!r}" for c in CSV_REQUIRED if c not in columns] + [
        f"unknown column {c!r} (allowed: {', '.join(CSV_REQUIRED + CSV_OPTIONAL)})"
        for c in columns
        if c not in CSV_REQUIRED + CSV_OPTIONAL
    ]:
        raise InspectionError(problems)


def _checked_rows(chunk: pd.DataFrame, problems: Problems, now: datetime) -> pd.DataFrame:
    """One chunk's rows with their numbers as numbers and times as times; each cell that is not what its column
    takes is a problem of its row (a bad line_no becomes -1, a bad count 0)."""
    frame = chunk.rename(columns=str.strip).fillna("").apply(lambda c: c.str.strip())  # missing fields are ""
    frame["row"] = frame.index + 2  # the header is row 1; chunks keep counting
    line_ok = frame["line_no"].str.fullmatch(WHOLE_NUMBER)
    problems.add("line_no is not a whole number", frame.loc[~line_ok, "row"])
    frame["line_no"] = pd.to_numeric(frame["line_no"].where(line_ok, "-1")).astype("int64")
    for severity in aql.SEVERITIES:
        text = frame[severity].replace("", "0")
        ok = text.str.fullmatch(WHOLE_NUMBER)
        problems.add(f"{severity} is not a whole number >= 0", frame.loc[~ok, "row"])
        frame[severity] = pd.to_numeric(text.where(ok, "0")).astype("int64")
    if "inspected_at" in frame:
        given = frame["inspected_at"].ne("")
        when = pd.to_datetime(frame["inspected_at"].where(given, None), utc=True, errors="coerce", format="ISO8601")
        problems.add("inspected_at is not an ISO 8601 time", frame.loc[given & when.isna(), "row"])
        problems.add("inspected_at is in the future", frame.loc[when > now + CLOCK_SKEW, "row"])
        frame["inspected_at"] = when
    if "note" in frame:
        problems.add(
            f"the note is longer than {MAX_NOTE} characters", frame.loc[frame["note"].str.len() > MAX_NOTE, "row"]
        )
    return frame


def _checked_lots(
    store: sqlite3.Connection, frame: pd.DataFrame, checklists: Checklists, problems: Problems, amend_reason: str
) -> pd.DataFrame:
    """The checks across rows (the lots, their checklists and samples, one time and note per lot, every item
    present, results on record), adding the lot's columns to `frame`; returns one header row per lot."""
    repeated = frame.duplicated(["receipt_id", "line_no", "item"]) & (frame["line_no"] >= 0)  # -1: a bad line_no
    problems.add("the same lot and item again", frame.loc[repeated, "row"])
    found = _lots_of(store, frame.loc[frame["line_no"] >= 0, ["receipt_id", "line_no"]])
    frame[list(found.columns.drop(["receipt_id", "line_no"]))] = frame.merge(
        found, on=["receipt_id", "line_no"], how="left"
    )[list(found.columns.drop(["receipt_id", "line_no"]))].to_numpy()
    unknown = frame["category"].isna() & (frame["line_no"] >= 0)
    lot_names = "lot " + frame["receipt_id"] + "/" + frame["line_no"].astype(str)
    problems.add_each(lot_names[unknown] + " is not a received lot QA can inspect", frame.loc[unknown, "row"])
    known = frame["category"].notna()
    listed = frame[["category", "item"]].merge(checklist_items(checklists), how="left", indicator=True)
    off_list = known & ~listed["_merge"].eq("both").to_numpy()
    problems.add_each(
        "item " + frame["item"][off_list] + " is not on the " + frame["category"][off_list] + " checklist",
        frame.loc[off_list, "row"],
    )
    sizes = {s: aql.lot_plan(int(s), checklists.aql).sample_size for s in frame["lot_size"].dropna().unique()}
    sample = frame["lot_size"].map(sizes).fillna(0)
    for severity in aql.SEVERITIES:
        problems.add(
            f"more {severity} defects than units sampled", frame.loc[known & (frame[severity] > sample), "row"]
        )
    if "inspected_at" in frame:
        early = frame["inspected_at"] < pd.to_datetime(frame["received_at"], utc=True)
        problems.add("inspected_at is before the lot was received", frame.loc[early, "row"])
    lots = frame[known].groupby(["receipt_id", "line_no"], sort=False)
    for column in [c for c in CSV_OPTIONAL if c in frame]:  # one inspection per lot: one time, one note
        differs = (lots[column].transform("nunique", dropna=False) > 1).reindex(frame.index, fill_value=False)
        problems.add(f"the lot's rows give different {column} values", frame.loc[known & differs, "row"])
    if not amend_reason.strip():
        inspected = known & frame["on_record"].notna()
        problems.add_each(
            lot_names[inspected] + " already has a result on record (inspection "
            + frame["on_record"][inspected].astype("Int64").astype(str) + "): tick “amend” and say why to replace it",
            frame.loc[inspected, "row"],
        )  # fmt: skip
    # Every checklist item of a lot's category needs its row: an anti-join, then words for the lots with gaps.
    spans = lots.agg(category=("category", "first"), first=("row", "min"), last=("row", "max")).reset_index()
    expected = spans.merge(checklist_items(checklists), on="category")
    present = frame.loc[known, ["receipt_id", "line_no", "item"]].assign(present=True)
    gaps = expected.merge(present, on=["receipt_id", "line_no", "item"], how="left")
    gaps = gaps[gaps["present"].isna()]
    for (receipt_id, line, first, last), missing in gaps.groupby(
        ["receipt_id", "line_no", "first", "last"], sort=False
    )["item"]:
        problems.add(f"lot {receipt_id}/{line} has no row for {', '.join(missing)}", range(first, last + 1), 1)
    firsts = lots.first().reset_index()
    header = firsts[list(Lot.__dataclass_fields__)].astype({"lot_size": int})
    header["note"] = firsts["note"] if "note" in frame else ""
    header["amends"] = firsts["on_record"]
    given = firsts.get("inspected_at", pd.Series(pd.NaT, index=firsts.index, dtype="datetime64[ns, UTC]"))
    # an amendment keeps the time of the inspection it amends unless the file gives one
    header["inspected_at"] = given.fillna(pd.to_datetime(firsts["on_record_at"], utc=True))
    return header.assign(source="csv", amend_reason=amend_reason.strip())


def frame_defects(frame: pd.DataFrame) -> pd.DataFrame:
    """A checked file's counts, one row per lot, item and severity."""
    return frame.melt(
        id_vars=["receipt_id", "line_no", "item"], value_vars=list(aql.SEVERITIES), var_name="severity",
        value_name="defects",
    )  # fmt: skip


def _lots_of(store: sqlite3.Connection, keys: pd.DataFrame) -> pd.DataFrame:
    """The published lots among `keys` (receipt_id, line_no), looked up in the store, with their result on record."""
    _wanted(store, keys)
    rows = store.execute(
        """SELECT l.*, last.id, i.inspected_at FROM inspection_lots l JOIN wanted USING (receipt_id, line_no)
        LEFT JOIN (SELECT receipt_id, line_no, max(id) AS id FROM inspections JOIN wanted USING (receipt_id, line_no)
                   GROUP BY receipt_id, line_no) last USING (receipt_id, line_no)
        LEFT JOIN inspections i ON i.id = last.id"""
    ).fetchall()
    columns = [*Lot.__dataclass_fields__, "on_record", "on_record_at"]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns).astype({"line_no": int, "on_record": "Int64"})


def recent(store: sqlite3.Connection, limit: int = 20) -> list[dict[str, object]]:
    """The latest entries, each marked superseded when a later one of its lot exists."""
    rows = store.execute(
        """SELECT i.*, sum(d.defects) FILTER (WHERE d.severity = 'critical') AS critical,
                  sum(d.defects) FILTER (WHERE d.severity = 'major') AS major,
                  sum(d.defects) FILTER (WHERE d.severity = 'minor') AS minor,
                  EXISTS (SELECT 1 FROM inspections later WHERE later.receipt_id = i.receipt_id
                          AND later.line_no = i.line_no AND later.id > i.id) AS superseded
        FROM inspections i JOIN inspection_defects d ON d.inspection_id = i.id
        GROUP BY i.id ORDER BY i.id DESC LIMIT ?""",
        [limit],
    ).fetchall()
    return [dict(r) for r in rows]


def inspection(store: sqlite3.Connection, inspection_id: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """An inspection (with `superseded_by`: the next entry of its lot, if any) and its defects."""
    header = store.execute(
        """SELECT i.*, (SELECT min(later.id) FROM inspections later WHERE later.receipt_id = i.receipt_id
                        AND later.line_no = i.line_no AND later.id > i.id) AS superseded_by
        FROM inspections i WHERE id = ?""",
        [inspection_id],
    ).fetchone()
    if header is None:
        raise LookupError(f"no inspection {inspection_id}")
    defects = store.execute(
        "SELECT item, severity, defects FROM inspection_defects WHERE inspection_id = ? ORDER BY item, severity",
        [inspection_id],
    ).fetchall()
    return dict(header), [dict(d) for d in defects]


# --- the warehouse ---


def import_inspections(store: sqlite3.Connection, con: duckdb.DuckDBPyConnection, run_id: str, now: datetime) -> int:
    """Copy entries stored since the last import into the warehouse as one batch; returns how many."""
    (through,) = first_row(con, "SELECT coalesce(max(inspection_id), 0) FROM inspections")
    # One read transaction: an entry saved meanwhile comes with both its header and its defects, or not at all.
    store.execute("BEGIN")
    try:
        headers = pd.read_sql_query("SELECT * FROM inspections WHERE id > ? ORDER BY id", store, params=[through])
        defects = pd.read_sql_query(
            "SELECT d.* FROM inspection_defects d JOIN inspections i ON i.id = d.inspection_id WHERE i.id > ?",
            store,
            params=[through],
        )
    finally:
        store.execute("COMMIT")
    batch_id = uuid.uuid4().hex
    con.register("new_inspections", headers)
    con.register("new_defects", defects)
    try:
        with transaction(con):
            con.execute(
                """INSERT INTO inspections
                SELECT id, receipt_id, line_no, sku, category, supplier_id, lot_size, sample_size, verdict, inspector,
                       TRY_CAST(inspected_at AS TIMESTAMPTZ), TRY_CAST(entered_at AS TIMESTAMPTZ), source, note,
                       $batch, $now
                FROM new_inspections""",
                {"batch": batch_id, "now": now},
            )
            con.execute("INSERT INTO inspection_defects SELECT inspection_id, item, severity, defects FROM new_defects")
            add_item_sums(con)
            log_import(con, batch_id, FEED, run_id, now, len(headers))
    finally:
        con.unregister("new_inspections")
        con.unregister("new_defects")
    return len(headers)


def add_item_sums(con: duckdb.DuckDBPyConnection) -> None:
    """Sum the defects per item of the entries newer than `inspection_items` holds (ids only grow): this import's,
    or the whole history the first time (a warehouse from before the table, or one whose history was loaded
    without an import)."""
    con.execute(
        """INSERT INTO inspection_items
        SELECT inspection_id, item, sum(defects) FROM inspection_defects
        WHERE inspection_id > (SELECT coalesce(max(inspection_id), 0) FROM inspection_items)
        GROUP BY ALL"""
    )


def checklist_items(checklists: Checklists) -> pd.DataFrame:
    """Every (category, item) of the checklists, as a frame to join."""
    return pd.DataFrame(
        [(c, i) for c, items in checklists.categories.items() for i in items], columns=["category", "item"]
    )


def latest_import(con: duckdb.DuckDBPyConnection, checklists: Checklists) -> pd.DataFrame:
    """The latest import, one row per (inspection, item, severity), with the flags the contract checks:
    `_known_lot` (a received receipt line), `_known_item` (on the category's checklist), `_sample_as_planned`
    (the Z1.4 sample size of the lot size) and `_defects_within_sample`."""
    lot_key = ("receipt_id", "line_no")
    # the import's entries first: judged against the whole history, a small or empty import hashed millions of
    # entries against the receipts (1.2 s for none at 1 M SKUs)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE latest_inspections AS FROM inspections
        WHERE _batch_id = (SELECT arg_max(batch_id, fetched_at) FROM ingest_batches WHERE feed = 'inspections')"""
    )
    known_lot = row_exists_sql(con, "i", lot_key, "raw_receipts", lot_key, "latest_inspections")
    con.register("checklist_items", checklist_items(checklists))
    try:
        frame = con.sql(
            f"""SELECT i.*, d.item, d.severity, d.defects,
                      row_number() OVER (ORDER BY i.inspection_id, d.item, d.severity) AS _row,
                      i.inspection_id::VARCHAR AS _row_key,
                      concat_ws('|', i.inspection_id, d.item, d.severity) AS _item_key,
                      to_json(struct_pack(i.inspection_id, i.receipt_id, i.line_no, i.inspector, i.inspected_at,
                                          d.item, d.severity, d.defects))::VARCHAR AS _raw,
                      {known_lot} AS _known_lot,
                      EXISTS (SELECT 1 FROM checklist_items c WHERE c.category = i.category
                              AND c.item = d.item) AS _known_item,
                      coalesce(d.defects <= i.sample_size, false) AS _defects_within_sample
            FROM latest_inspections i JOIN inspection_defects d USING (inspection_id)
            ORDER BY _row"""
        ).df()
    finally:
        con.unregister("checklist_items")
        con.execute("DROP TABLE IF EXISTS latest_inspections")
    planned = {
        int(size): aql.lot_plan(int(size), checklists.aql).sample_size
        for size in frame["lot_size"].dropna().unique()
        if size >= 1
    }
    frame["_sample_as_planned"] = frame["lot_size"].map(planned).eq(frame["sample_size"])
    return frame


DHU_SQL = """
CREATE OR REPLACE TABLE inspection_dhu AS
WITH checked AS (   -- one row per inspected lot and item
    SELECT i.inspection_id, i.category, i.supplier_id, d.item, any_value(i.sample_size) AS units,
           sum(d.defects) FILTER (d.severity = 'critical') AS critical,
           sum(d.defects) FILTER (d.severity = 'major') AS major,
           sum(d.defects) FILTER (d.severity = 'minor') AS minor, sum(d.defects) AS defects
    FROM valid_inspections i JOIN inspection_defects d USING (inspection_id)
    WHERE i.inspected_at > $now - to_days($window_days)
    GROUP BY ALL
)
SELECT category, supplier_id, item, count(*) AS lots, sum(units)::BIGINT AS units,
       sum(critical)::BIGINT AS critical, sum(major)::BIGINT AS major, sum(minor)::BIGINT AS minor,
       sum(defects)::BIGINT AS defects, round(100 * sum(defects) / sum(units), 3) AS dhu
FROM checked GROUP BY ALL ORDER BY category, supplier_id, item
"""
DHU_WINDOW_DAYS = 90


def build_dhu(con: duckdb.DuckDBPyConnection, now: datetime, window_days: int = DHU_WINDOW_DAYS) -> None:
    """(Re)build `inspection_dhu`: defects per hundred units by category, supplier and item (segment) over the
    window, from the latest valid entry of each lot; and note what it read (`dhu_built`)."""
    with transaction(con):
        con.execute(DHU_SQL, {"now": now, "window_days": window_days})
        con.execute("DELETE FROM dhu_built")
        day = now.astimezone(UTC).date()
        con.execute("INSERT INTO dhu_built SELECT $day, inputs FROM inspection_inputs", {"day": day})


def dhu_is_current(con: duckdb.DuckDBPyConnection, now: datetime) -> bool:
    """Whether `inspection_dhu` was built on `now`'s day (UTC) from the same inspections as there are now: then
    a rebuild would give the same segments."""
    row = first_row(con, "SELECT built_on, inputs = (SELECT inputs FROM inspection_inputs) FROM dhu_built")
    return bool(row) and row[0] == now.astimezone(UTC).date() and bool(row[1])


def dhu_by(con: duckdb.DuckDBPyConnection, *dimensions: str) -> pd.DataFrame:
    """DHU rolled up to `dimensions` (from "category", "supplier_id", "item"), highest first. Without "item",
    a lot's sampled units count once, not once per checklist item: every item is checked on the same units."""
    keys = ", ".join(dimensions)
    source = (
        "inspection_dhu"
        if "item" in dimensions
        else """(SELECT category, supplier_id, max(lots) AS lots, max(units) AS units, sum(defects) AS defects
                FROM inspection_dhu GROUP BY category, supplier_id)"""
    )
    return con.sql(
        f"""SELECT {keys}, sum(lots)::BIGINT AS lots, sum(units)::BIGINT AS units, sum(defects)::BIGINT AS defects,
                  round(100 * sum(defects) / sum(units), 2) AS dhu
        FROM {source} GROUP BY {keys} ORDER BY dhu DESC, {keys}"""
    ).df()


def publish_dhu(store: sqlite3.Connection, segments: pd.DataFrame, run_id: str, now: datetime) -> int:
    """Replace the DHU per category and item in the app store (QA's segments page) with `segments`
    (`dhu_by(con, "category", "item")`)."""
    rows = segments[["category", "item", "lots", "units", "defects", "dhu"]].astype(object)
    with appstore.transaction(store):
        store.execute("DELETE FROM dhu_segments")
        store.executemany("INSERT INTO dhu_segments VALUES (?, ?, ?, ?, ?, ?)", rows.itertuples(index=False, name=None))
        note_publication(store, "inspection_dhu", run_id, iso(now), len(rows))
    return len(rows)


def by_verdict(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Inspected lots in the warehouse by the verdict of their latest entry and how it was entered (form or CSV):
    an amended lot counts once. Counted again only when the inspections changed (`inspection_inputs`): every run
    asks, and at 1 M SKUs the count groups 3.6 M entries (0.7 s)."""
    (inputs,) = first_row(con, "SELECT inputs FROM inspection_inputs")
    with transaction(con):
        (current,) = first_row(con, "SELECT count(*) > 0 FROM inspection_verdicts WHERE inputs = ?", [inputs])
        if not current:
            con.execute("DELETE FROM inspection_verdicts")
            con.execute(
                """INSERT INTO inspection_verdicts
                SELECT ?, verdict, source, count(*) FROM (
                    SELECT * FROM inspections
                    QUALIFY row_number() OVER (PARTITION BY receipt_id, line_no ORDER BY inspection_id DESC) = 1)
                GROUP BY ALL""",
                [inputs],
            )
    return con.sql("SELECT verdict, source, lots FROM inspection_verdicts ORDER BY verdict, source").df()


def latest(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """The most recent inspections in the warehouse."""
    return con.sql(
        f"""SELECT inspection_id, receipt_id, line_no, sku, category, supplier_id, sample_size, verdict, inspector,
                   inspected_at FROM inspections ORDER BY inspection_id DESC LIMIT {int(limit)}"""
    ).df()
