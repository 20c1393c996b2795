"""Segmented inspection results: QA's entries in the app store (one at a time in the form, or a CSV file), the
lots QA may inspect, their import into the warehouse, and defects per hundred units (DHU).

An entry is one lot (a receipt line): per checklist item of the lot's category, the number of defects of each
severity found in the Z1.4 sample. Every entry is checked whole before anything is stored; a CSV file is
checked whole before any of it is stored, and every bad row is reported with its row number.
"""

from __future__ import annotations

import io
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd

from cx_pipeline.core import appstore
from cx_pipeline.core.appstore import iso, utc_now
from cx_pipeline.core.sql import first_row, row_exists_sql
from cx_pipeline.core.transactions import transaction
from cx_pipeline.ingest.schema import log_import
from cx_pipeline.quality import aql
from cx_pipeline.quality.checklists import Checklists

FEED = "inspections"  # its name in ingest_batches and quarantine
LOT_WINDOW_DAYS = 60  # received lots offered to QA, and accepted in an entry
PUBLISH_CHUNK = 50_000  # lots per read from DuckDB and per write to SQLite
CLOCK_SKEW = timedelta(minutes=5)
CSV_REQUIRED = ("receipt_id", "line_no", "item", *aql.SEVERITIES)
CSV_OPTIONAL = ("inspected_at", "note")
MAX_NOTE = 1000

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
CREATE TABLE IF NOT EXISTS inspection_defects (
    inspection_id BIGINT NOT NULL,
    item          VARCHAR NOT NULL,
    severity      VARCHAR NOT NULL,
    defects       INTEGER,
    PRIMARY KEY (inspection_id, item, severity)
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
"""


class InspectionError(ValueError):
    """An entry or a file that cannot be stored; `problems` lists every reason (with row numbers for a file)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(shown)


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
    window_days: int = LOT_WINDOW_DAYS,
    through: datetime | None = None,
    run_id: str = "",
    replace: bool = False,
) -> int:
    """Add or update received lots (chunks of tuples in the order of `Lot`'s fields) in the app's list and
    drop those received more than `window_days` ago (a longer window serves a one-off load of older results).

    Each chunk is its own transaction, so a publication of millions of lots never holds the app's writers back
    for long. With `replace`, the chunks are the whole list: it is built aside, without the time index, and
    swapped in with one transaction, so the app shows the old list until the new one is complete (and a
    first publication runs at SQLite's bulk speed, about twice that of upserts into an indexed table; chunks
    in key order keep it so). `through` records, at the end, that every change the warehouse had landed by then
    is published, so the next publication sends only what changed after it (see `lots_to_publish`).
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
        store.execute("DELETE FROM inspection_lots WHERE received_at < ?", [iso(now - timedelta(days=window_days))])
        if through is not None:
            store.execute(
                "INSERT OR REPLACE INTO publications VALUES ('inspection_lots', ?, ?, ?, 0, ?)",
                [run_id, utc_now(), through.isoformat(), published],  # to the microsecond, as `_loaded_at`
            )
    return published


def lots_published_through(store: sqlite3.Connection) -> datetime | None:
    """Up to when the warehouse's changes are in the app's list of lots (None: nothing published yet)."""
    row = store.execute("SELECT assessed_at FROM publications WHERE name = 'inspection_lots'").fetchone()
    return datetime.fromisoformat(row[0]) if row else None


def lots_to_publish(
    con: duckdb.DuckDBPyConnection, now: datetime, since: datetime | None = None
) -> tuple[Iterator[list[tuple]], datetime | None]:
    """Receipt lines received within the window, with their product: those whose receipt landed after `since`
    or whose product now shows other fields in the list (all of them when `since` is None); and the time the
    warehouse's landings reach, to publish `through`. Call `products_published` once they are.

    Rows stream from DuckDB in chunks: a first publication of a large warehouse is millions of lots. The mark
    is the warehouse's own landing clock (`_loaded_at`); a lot that only becomes valid again because its
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
    cursor = con.execute(
        """SELECT r.receipt_id, r.line_no, r.sku, c.title, c.category, c.supplier_id, r.warehouse,
                  r.qty_received AS lot_size, strftime(timezone('UTC', r.received_at), '%Y-%m-%dT%H:%M:%S+00:00')
        FROM valid_receipts r JOIN valid_catalog c USING (sku)
        WHERE r.received_at > $now::TIMESTAMPTZ - to_days($days) AND r.qty_received > 0
          AND ($since::TIMESTAMPTZ IS NULL OR r._loaded_at > $since OR r.sku IN (SELECT sku FROM relabelled))
        ORDER BY r.receipt_id, r.line_no  -- the app's key: SQLite appends instead of splitting pages""",
        {"now": now, "days": LOT_WINDOW_DAYS, "since": since},
    )

    def chunks() -> Iterator[list[tuple]]:
        while chunk := cursor.fetchmany(PUBLISH_CHUNK):
            yield chunk

    return chunks(), through


def products_recorded(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `lot_products` says what the app's list shows. When it does not (a warehouse from before it, or
    one whose catalog was empty), the list is published whole: no change can be told from the ones it shows."""
    return first_row(con, "SELECT EXISTS (SELECT 1 FROM lot_products)")[0]


def products_published(con: duckdb.DuckDBPyConnection) -> None:
    """Record the product fields the lots just published show (after `lots_to_publish` and `publish_lots`).
    Called only once the app's store has them: a publication that stopped half-way compares as before."""
    with transaction(con):
        # a product that left valid_catalog (quarantined) is forgotten, so its lots are sent again once it is back
        con.execute(
            """DELETE FROM lot_products p WHERE sku IN (SELECT sku FROM relabelled)
            OR NOT EXISTS (SELECT 1 FROM valid_catalog c WHERE c.sku = p.sku)"""
        )
        con.execute("INSERT INTO lot_products SELECT * FROM relabelled")


def lot(store: sqlite3.Connection, receipt_id: str, line_no: int) -> Lot | None:
    row = store.execute(
        "SELECT * FROM inspection_lots WHERE receipt_id = ? AND line_no = ?", [receipt_id, line_no]
    ).fetchone()
    return Lot(**dict(row)) if row else None


def lots_page(
    store: sqlite3.Connection, category: str = "", pending_only: bool = True, page: int = 1, size: int = 50
) -> appstore.Page:
    """Received lots, newest first, with their latest inspection if any."""
    where = ["(? = '' OR l.category = ?)"]
    if pending_only:
        where.append("i.id IS NULL")
    source = f"""FROM inspection_lots l
        LEFT JOIN (SELECT receipt_id, line_no, max(id) AS id FROM inspections GROUP BY receipt_id, line_no) last
            USING (receipt_id, line_no)
        LEFT JOIN inspections i ON i.id = last.id
        WHERE {" AND ".join(where)}"""
    order = "l.received_at DESC, l.receipt_id, l.line_no"
    return appstore.paged(store, "l.*, i.id AS inspection_id, i.verdict", source, [category] * 2, order, page, size)


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
        return [f"lot {entry.receipt_id}/{entry.line_no} is not a received lot QA can inspect"]
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


def _store(
    store: sqlite3.Connection, lots: pd.DataFrame, defects: pd.DataFrame, checklists: Checklists, now: datetime
) -> int:
    """Insert checked lots (one row each: Lot columns, inspected_at, note, inspector, source) and their defects
    (receipt_id, line_no, item, severity, defects) in one transaction, with each lot's sample size and
    verdict; returns the id of the last inspection stored."""
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
    )
    with appstore.transaction(store):
        (last,) = store.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'inspections'), 0),"
            " coalesce((SELECT max(id) FROM inspections), 0))"
        ).fetchone()
        lots["id"] = range(last + 1, last + 1 + len(lots))  # ids given here, so the defects can name them
        columns = ["id", "receipt_id", "line_no", "sku", "category", "supplier_id", "lot_size", "sample_size",
                   "verdict", "inspector", "inspected_at", "entered_at", "source", "note"]  # fmt: skip
        store.executemany(
            f"INSERT INTO inspections ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            lots[columns].astype(object).itertuples(index=False, name=None),
        )
        rows = defects.merge(lots[["receipt_id", "line_no", "id"]], on=["receipt_id", "line_no"])
        store.executemany(
            "INSERT INTO inspection_defects VALUES (?, ?, ?, ?)",
            rows[["id", "item", "severity", "defects"]].astype(object).itertuples(index=False, name=None),
        )
    return int(lots["id"].iat[-1])


def record(
    store: sqlite3.Connection, entry: Entry, checklists: Checklists, inspector: str, now: datetime | None = None
) -> int:
    """Store one lot's results entered in the form; returns the inspection id. `now` is the app's clock."""
    now = now or datetime.now(UTC)
    found = lot(store, entry.receipt_id, entry.line_no)
    if problems := check_entry(found, entry, checklists, now):
        raise InspectionError(problems)
    lots = pd.DataFrame([vars(found) | {"inspected_at": entry.inspected_at, "note": entry.note.strip()}])
    defects = pd.DataFrame(
        [(found.receipt_id, found.line_no, item, severity, n) for (item, severity), n in entry.defects.items()],
        columns=["receipt_id", "line_no", "item", "severity", "defects"],
    )
    return _store(store, lots.assign(inspector=inspector, source="form"), defects, checklists, now)


def import_csv(
    store: sqlite3.Connection, text: str, checklists: Checklists, inspector: str, now: datetime | None = None
) -> int:
    """Store every lot of a CSV file (`receipt_id,line_no,item,critical,major,minor[,inspected_at,note]`, one
    row per lot and item), or none: any bad row raises InspectionError naming each row and its reason. `now`
    is the app's clock (an entry after it is in the future)."""
    now = now or datetime.now(UTC)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InspectionError([f"not a CSV file: {exc}"]) from exc
    columns = [c.strip() for c in frame.columns]
    frame.columns = columns
    if problems := [f"missing column {c!r}" for c in CSV_REQUIRED if c not in columns] + [
        f"unknown column {c!r} (allowed: {', '.join(CSV_REQUIRED + CSV_OPTIONAL)})"
        for c in columns
        if c not in CSV_REQUIRED + CSV_OPTIONAL
    ]:
        raise InspectionError(problems)
    if frame.empty:
        raise InspectionError(["the file has no rows"])
    frame = frame.apply(lambda c: c.str.strip())
    frame["row"] = frame.index + 2  # the header is row 1
    problems = []

    def bad(mask: pd.Series, reason: str | pd.Series) -> None:
        reasons = reason[mask] if isinstance(reason, pd.Series) else pd.Series(reason, index=frame.index)[mask]
        problems.extend(f"row {r}: {why}" for r, why in zip(frame.loc[mask, "row"], reasons, strict=True))

    line_no = pd.to_numeric(frame["line_no"], errors="coerce")
    bad(line_no.isna() | (line_no % 1 != 0), "line_no must be a whole number")
    frame["line_no"] = line_no.fillna(-1).astype(int)
    for severity in aql.SEVERITIES:
        count = pd.to_numeric(frame[severity].replace("", "0"), errors="coerce")
        bad(count.isna() | (count < 0) | (count % 1 != 0) | (count >= 1e9), f"{severity} must be a whole number >= 0")
        frame[severity] = count.where(count < 1e9).fillna(0).clip(lower=0).astype(int)
    bad(frame.duplicated(["receipt_id", "line_no", "item"], keep="first"), "the same lot and item again")

    lots = _lots_of(store, frame[["receipt_id", "line_no"]].drop_duplicates())
    frame = frame.merge(lots, on=["receipt_id", "line_no"], how="left")
    bad(frame["category"].isna(), "lot " + frame["receipt_id"] + "/" + frame["line_no"].astype(str)
        + " is not a received lot QA can inspect")  # fmt: skip
    known = frame["category"].notna()
    listed = frame[["category", "item"]].merge(checklist_items(checklists), how="left", indicator=True)
    on_list = listed["_merge"].eq("both").to_numpy()
    bad(known & ~on_list, "item " + frame["item"] + " is not on the " + frame["category"].fillna("") + " checklist")
    sizes = {s: aql.lot_plan(int(s), checklists.aql).sample_size for s in frame["lot_size"].dropna().unique()}
    frame["sample_size"] = frame["lot_size"].map(sizes).fillna(0)
    for severity in aql.SEVERITIES:
        bad(known & (frame[severity] > frame["sample_size"]), f"more {severity} defects than units sampled")
    if "inspected_at" in frame:
        when = pd.to_datetime(frame["inspected_at"].replace("", None), utc=True, errors="coerce", format="ISO8601")
        bad(frame["inspected_at"].ne("") & when.isna(), "inspected_at is not an ISO 8601 time")
        bad(when > now + CLOCK_SKEW, "inspected_at is in the future")
        bad(when < pd.to_datetime(frame["received_at"], utc=True), "inspected_at is before the lot was received")
        frame["inspected_at"] = when
    if "note" in frame:
        bad(frame["note"].str.len() > MAX_NOTE, f"the note is longer than {MAX_NOTE} characters")

    lots = frame[known].groupby(["receipt_id", "line_no"], sort=False)
    for column in [c for c in CSV_OPTIONAL if c in frame]:  # one inspection per lot: one time, one note
        differs = lots[column].transform("nunique", dropna=False) > 1
        bad(known & differs.reindex(frame.index, fill_value=False), f"the lot's rows give different {column} values")
    # Every checklist item of a lot's category needs its row: an anti-join, then words for the lots with gaps.
    spans = lots.agg(category=("category", "first"), first=("row", "min"), last=("row", "max")).reset_index()
    expected = spans.merge(checklist_items(checklists), on="category")
    present = frame.loc[known, ["receipt_id", "line_no", "item"]].assign(present=True)
    gaps = expected.merge(present, on=["receipt_id", "line_no", "item"], how="left")
    gaps = gaps[gaps["present"].isna()]
    for (receipt_id, line, first, last), missing in gaps.groupby(
        ["receipt_id", "line_no", "first", "last"], sort=False
    )["item"]:
        span = f"rows {first}-{last}" if first != last else f"row {first}"
        problems.append(f"{span}: lot {receipt_id}/{line} has no row for {', '.join(missing)}")
    if problems:
        raise InspectionError(sorted(problems, key=lambda p: int(p.split()[1].split("-")[0].rstrip(":"))))
    header = lots.first()[[f for f in Lot.__dataclass_fields__ if f not in ("receipt_id", "line_no")]].reset_index()
    header["inspected_at"] = lots["inspected_at"].first().to_numpy() if "inspected_at" in frame else None
    header["note"] = lots["note"].first().to_numpy() if "note" in frame else ""
    header["lot_size"] = header["lot_size"].astype(int)
    defects = frame.melt(
        id_vars=["receipt_id", "line_no", "item"], value_vars=list(aql.SEVERITIES), var_name="severity",
        value_name="defects",
    )  # fmt: skip
    _store(store, header.assign(inspector=inspector, source="csv"), defects, checklists, now)
    return len(header)


def _lots_of(store: sqlite3.Connection, keys: pd.DataFrame) -> pd.DataFrame:
    """The published lots among `keys` (receipt_id, line_no), looked up in the store."""
    store.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (receipt_id TEXT, line_no INTEGER)")
    store.execute("DELETE FROM wanted")
    store.executemany("INSERT INTO wanted VALUES (?, ?)", keys.itertuples(index=False, name=None))
    rows = store.execute("SELECT l.* FROM inspection_lots l JOIN wanted USING (receipt_id, line_no)").fetchall()
    columns = list(Lot.__dataclass_fields__)
    return pd.DataFrame([tuple(r) for r in rows], columns=columns).astype({"line_no": int})


def recent(store: sqlite3.Connection, limit: int = 20) -> list[dict[str, object]]:
    rows = store.execute(
        """SELECT i.*, sum(d.defects) FILTER (WHERE d.severity = 'critical') AS critical,
                  sum(d.defects) FILTER (WHERE d.severity = 'major') AS major,
                  sum(d.defects) FILTER (WHERE d.severity = 'minor') AS minor
        FROM inspections i JOIN inspection_defects d ON d.inspection_id = i.id
        GROUP BY i.id ORDER BY i.id DESC LIMIT ?""",
        [limit],
    ).fetchall()
    return [dict(r) for r in rows]


def inspection(store: sqlite3.Connection, inspection_id: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    header = store.execute("SELECT * FROM inspections WHERE id = ?", [inspection_id]).fetchone()
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
            log_import(con, batch_id, FEED, run_id, now, len(headers))
    finally:
        con.unregister("new_inspections")
        con.unregister("new_defects")
    return len(headers)


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
    known_lot = row_exists_sql(con, "i", lot_key, "raw_receipts", lot_key, "inspections")
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
            FROM inspections i JOIN inspection_defects d USING (inspection_id)
            WHERE i._batch_id = (SELECT arg_max(batch_id, fetched_at) FROM ingest_batches WHERE feed = 'inspections')
            ORDER BY _row"""
        ).df()
    finally:
        con.unregister("checklist_items")
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
    window, from the latest valid entry of each lot."""
    con.execute(DHU_SQL, {"now": now, "window_days": window_days})


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


def by_verdict(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Inspected lots in the warehouse by verdict and how they were entered (form or CSV)."""
    return con.sql(
        "SELECT verdict, source, count(*) AS lots FROM inspections GROUP BY ALL ORDER BY verdict, source"
    ).df()


def latest(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """The most recent inspections in the warehouse."""
    return con.sql(
        f"""SELECT inspection_id, receipt_id, line_no, sku, category, supplier_id, sample_size, verdict, inspector,
                   inspected_at FROM inspections ORDER BY inspection_id DESC LIMIT {int(limit)}"""
    ).df()
