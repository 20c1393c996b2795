"""The review app's own store: one SQLite file for users, sessions, decisions and the published queue.

Why not the warehouse: DuckDB allows one writing process per file, and the web app and a pipeline run are
live at the same time. SQLite in WAL mode lets both read while one writes, and a writer waits (up to
`BUSY_TIMEOUT_MS`) for the other's short transaction instead of failing. The pipeline reads new decisions
from here and publishes the queue back here; the web app never opens the warehouse.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cx_pipeline.core import transactions

log = logging.getLogger(__name__)
BUSY_TIMEOUT_MS = 30_000
ROLES = ("merchandiser", "qa", "admin")

# The lots table is built aside under another name for a full publication (`inspections.publish_lots`).
LOTS_TABLE = """CREATE TABLE IF NOT EXISTS {name} (   -- received lots QA may inspect, as the pipeline published them
    receipt_id  TEXT NOT NULL,
    line_no     INTEGER NOT NULL,
    sku         TEXT NOT NULL,
    title       TEXT,
    category    TEXT NOT NULL,
    supplier_id TEXT,
    warehouse   TEXT,
    lot_size    INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (receipt_id, line_no)
)"""
LOTS_INDEX = "CREATE INDEX IF NOT EXISTS inspection_lots_by_time ON inspection_lots (received_at);"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('merchandiser', 'qa', 'admin')),
    password_hash TEXT NOT NULL,                 -- argon2id
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,                 -- sha256 of the cookie value; the value itself is never stored
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    username  TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_user ON login_failures (username, failed_at);
CREATE TABLE IF NOT EXISTS review_decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the pipeline imports decisions in id order
    sku        TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('keep', 'refresh_listing', 'discontinue')),
    note       TEXT NOT NULL DEFAULT '',
    reviewer   TEXT NOT NULL,
    decided_at TEXT NOT NULL                     -- ISO 8601, UTC
);
CREATE INDEX IF NOT EXISTS review_decisions_by_sku ON review_decisions (sku, id);
CREATE TABLE IF NOT EXISTS review_queue (      -- the cohort as the pipeline last assessed it
    sku                TEXT PRIMARY KEY,
    rank               INTEGER NOT NULL,         -- most urgent first, as the pipeline orders the queue
    title              TEXT,
    category           TEXT,
    supplier_id        TEXT,
    product_status     TEXT,
    registered_at      TEXT,
    years_registered   REAL,
    score              REAL NOT NULL,
    reasons            TEXT NOT NULL,            -- JSON list of reasons in words
    reason_codes       TEXT NOT NULL,            -- ',registered,no_receipt,' for filtering
    review_state       TEXT NOT NULL,
    in_queue           INTEGER NOT NULL,
    days_since_receipt INTEGER,
    days_since_order   INTEGER,
    days_out_of_stock  INTEGER,
    cancellations_30d  INTEGER,
    mismatches_30d     INTEGER,
    completeness       REAL,
    next_review_due    TEXT
);
{LOTS_TABLE.format(name="inspection_lots")};
{LOTS_INDEX}
CREATE TABLE IF NOT EXISTS inspections (       -- one per inspected lot; a later one for the same lot replaces it
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_id   TEXT NOT NULL,
    line_no      INTEGER NOT NULL,
    sku          TEXT NOT NULL,
    category     TEXT NOT NULL,
    supplier_id  TEXT,
    lot_size     INTEGER NOT NULL,
    sample_size  INTEGER NOT NULL,
    verdict      TEXT NOT NULL CHECK (verdict IN ('accept', 'reject')),
    inspector    TEXT NOT NULL,
    inspected_at TEXT NOT NULL,
    entered_at   TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('form', 'csv')),
    note         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS inspections_by_lot ON inspections (receipt_id, line_no);
CREATE TABLE IF NOT EXISTS inspection_defects (
    inspection_id INTEGER NOT NULL REFERENCES inspections (id),
    item          TEXT NOT NULL,
    severity      TEXT NOT NULL CHECK (severity IN ('critical', 'major', 'minor')),
    defects       INTEGER NOT NULL CHECK (defects >= 0),
    PRIMARY KEY (inspection_id, item, severity)
);
CREATE TABLE IF NOT EXISTS return_risk (       -- the ranked risk list, as the pipeline last published it
    rank         INTEGER PRIMARY KEY,
    sku          TEXT NOT NULL,
    title        TEXT,
    category     TEXT,
    supplier_id  TEXT,
    predicted    REAL NOT NULL,              -- return inquiries expected in the next 30 days
    drivers      TEXT NOT NULL               -- JSON list of the segments that raise this SKU's risk most
);
CREATE TABLE IF NOT EXISTS risk_drivers (      -- per category and item: how much 1 DHU raises return inquiries
    category TEXT NOT NULL,
    item     TEXT NOT NULL,
    per_dhu  REAL NOT NULL,                     -- relative change of the return rate per 1 DHU (0.07 = +7 %)
    rank     INTEGER NOT NULL,
    PRIMARY KEY (category, item)
);
CREATE TABLE IF NOT EXISTS publications (      -- what the pipeline published last, per kind
    name              TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL,
    published_at      TEXT NOT NULL,
    assessed_at       TEXT NOT NULL,
    decisions_through INTEGER NOT NULL,          -- decisions up to this id are reflected in the publication
    rows              INTEGER NOT NULL
);
"""

# Changes to a store already in use, by the version they bring it to. `SCHEMA` is version 2 (2: inspections,
# lots and return risk) and always runs first (it only creates what is missing); then each migration above
# the store's version, in order, in the same transaction. Add a new one at the end; never edit a shipped one.
MIGRATIONS: dict[int, str] = {
    3: """
    -- the merchandisers' pages: one-time form submissions, undo and bulk decisions. review_submissions is
    -- created first and without IF NOT EXISTS on purpose: a second process re-running this step fails here
    -- (and finds the store migrated) instead of rebuilding review_decisions again.
    CREATE TABLE review_submissions (            -- each form sent once: a replay gets the first answer
        token        TEXT PRIMARY KEY,
        username     TEXT NOT NULL,
        answer       TEXT NOT NULL,              -- where the first submission was sent on (a local URL)
        submitted_at TEXT NOT NULL
    );
    -- review_decisions rebuilt to admit 'undo' rows (SQLite cannot change a CHECK in place); ids are kept
    CREATE TABLE review_decisions_v3 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- the pipeline imports decisions in id order
        sku        TEXT NOT NULL,
        decision   TEXT NOT NULL CHECK (decision IN ('keep', 'refresh_listing', 'discontinue', 'undo')),
        note       TEXT NOT NULL DEFAULT '',
        reviewer   TEXT NOT NULL,
        decided_at TEXT NOT NULL,                      -- ISO 8601, UTC
        undoes     INTEGER REFERENCES review_decisions_v3 (id),  -- an undo row names the decision it takes back
        submission TEXT,                               -- the form that recorded it; one for a whole bulk decision
        CHECK ((decision = 'undo') = (undoes IS NOT NULL))
    );
    INSERT INTO review_decisions_v3 (id, sku, decision, note, reviewer, decided_at)
        SELECT id, sku, decision, note, reviewer, decided_at FROM review_decisions;
    -- and AUTOINCREMENT's memory: an id once given (even to a decision since deleted) is never given again, as the
    -- pipeline imports decisions by id
    INSERT INTO sqlite_sequence (name, seq) SELECT 'review_decisions_v3', seq FROM sqlite_sequence
        WHERE name = 'review_decisions'
            AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'review_decisions_v3');
    UPDATE sqlite_sequence SET seq = (SELECT max(seq) FROM sqlite_sequence
        WHERE name IN ('review_decisions', 'review_decisions_v3')) WHERE name = 'review_decisions_v3';
    DROP TABLE review_decisions;
    ALTER TABLE review_decisions_v3 RENAME TO review_decisions;
    CREATE INDEX IF NOT EXISTS review_decisions_by_sku ON review_decisions (sku, id);
    CREATE INDEX IF NOT EXISTS review_decisions_by_submission ON review_decisions (submission);
    CREATE UNIQUE INDEX IF NOT EXISTS review_decisions_undone_once ON review_decisions (undoes);
    CREATE VIEW IF NOT EXISTS effective_review_decisions AS  -- decisions in force: neither undos nor undone
        SELECT * FROM review_decisions d
        WHERE d.decision <> 'undo' AND NOT EXISTS (SELECT 1 FROM review_decisions u WHERE u.undoes = d.id);
    CREATE TABLE IF NOT EXISTS review_history (  -- cohort products' last 90 days: the days something happened
        sku           TEXT NOT NULL,
        day           TEXT NOT NULL,             -- YYYY-MM-DD, UTC
        received      INTEGER NOT NULL,          -- units received that day
        ordered       INTEGER NOT NULL,          -- units customers ordered that day
        shop_quantity INTEGER,                   -- the storefront's quantity at the day's end (null: unknown)
        shop_status   TEXT,
        PRIMARY KEY (sku, day)
    ) WITHOUT ROWID
    """,
    4: """
    -- QA's pages: an entry that amends the lot's result on record names it and says why (the latest counts)
    ALTER TABLE inspections ADD COLUMN amends INTEGER;
    ALTER TABLE inspections ADD COLUMN amend_reason TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS qa_submissions (   -- one per QA form sent: the same one sent again stores nothing
        token         TEXT PRIMARY KEY,
        inspection_id INTEGER NOT NULL,           -- the last inspection it stored
        lots          INTEGER NOT NULL,
        username      TEXT NOT NULL,
        submitted_at  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS dhu_segments (     -- defects per hundred units per category and item, as published
        category TEXT NOT NULL,
        item     TEXT NOT NULL,
        lots     INTEGER NOT NULL,
        units    INTEGER NOT NULL,
        defects  INTEGER NOT NULL,
        dhu      REAL NOT NULL,
        PRIMARY KEY (category, item)
    );
    CREATE INDEX IF NOT EXISTS inspection_lots_by_sku ON inspection_lots (sku);
    """,
    5: """
    -- the KPI and operator pages
    CREATE TABLE IF NOT EXISTS kpi_weeks (       -- the KPI page's weekly series, as the pipeline last published them
        week   TEXT NOT NULL,                    -- ISO week, 2026-W46 (complete weeks only)
        metric TEXT NOT NULL,                    -- kpis.weekly.METRICS
        value  REAL,                             -- null: nothing to measure that week
        PRIMARY KEY (week, metric)
    );
    CREATE TABLE IF NOT EXISTS operator_worklist ( -- the problems an operator should look at, refreshed whole
        kind   TEXT NOT NULL,                    -- held, customer_view, quarantine, not_listed, notice_failed
        key    TEXT NOT NULL,                    -- what it is about: a SKU, a feed and rule, a notice
        detail TEXT NOT NULL,
        since  TEXT NOT NULL,                    -- ISO 8601 UTC: first seen (kept while it stays on the list)
        run_id TEXT,                             -- the Dagster run that last saw it
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX IF NOT EXISTS operator_worklist_by_age ON operator_worklist (since DESC);
    """,
    6: """
    -- sign-in and uploads: failed logins by client address, for the per-client throttle
    CREATE TABLE IF NOT EXISTS login_client_failures (
        client    TEXT NOT NULL,                     -- the client's address (a trusted proxy's forwarded one)
        failed_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS login_client_failures_by_client ON login_client_failures (client, failed_at);
    """,
    7: """
    -- the review queue ordered by its own columns, not a stored rank (a rank moved for every product below one
    -- whose score changed, so each publication rewrote the whole queue); a publication may send only what changed
    DROP INDEX IF EXISTS review_queue_rank;
    ALTER TABLE review_queue DROP COLUMN rank;
    CREATE INDEX IF NOT EXISTS review_queue_order ON review_queue (in_queue, score DESC, registered_at, sku);
    ALTER TABLE publications ADD COLUMN token TEXT;  -- names one publication, for the pipeline's copy of it
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)


def note_publication(
    store: sqlite3.Connection,
    name: str,
    run_id: str,
    assessed_at: str,
    rows: int,
    decisions_through: int = 0,
    token: str | None = None,
) -> None:
    """Record what the pipeline last published as `name` (the pages say when, and from which run): inside the
    transaction that replaced it, so the note and the rows it describes change together."""
    store.execute(
        """INSERT OR REPLACE INTO publications (name, run_id, published_at, assessed_at, decisions_through, rows, token)
        VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [name, run_id, utc_now(), assessed_at, decisions_through, rows, token],
    )


def utc_now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """Timestamps are stored as ISO 8601 text in UTC, so they sort and compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def open_store(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the store in WAL mode with a busy timeout; rows come back as `sqlite3.Row`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _owner_only(path)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across application crashes
    (version,) = con.execute("PRAGMA user_version").fetchone()
    if version < SCHEMA_VERSION:
        _migrate(con, version)
    return con


def _owner_only(path: Path) -> None:
    """The store holds password hashes: create it readable by its owner only (SQLite gives its -wal and -shm
    files the database file's mode), and take group and other access off a store (and those files) found
    wider, with a warning. A file of another user's is left as it is."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
                log.warning("%s was readable by other users (mode %o); now %o", file, mode, mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            log.warning("could not make %s owner-only: %s", file, exc)


def _migrate(con: sqlite3.Connection, version: int) -> None:
    """Bring the store from `version` to `SCHEMA_VERSION` in one transaction. Two processes opening an old
    store at once: the second one's migration fails (the columns exist) and finds the store up to date."""
    steps = [MIGRATIONS[v] for v in sorted(MIGRATIONS) if v > version]
    try:
        con.executescript(
            f"BEGIN IMMEDIATE; {SCHEMA}; {';'.join(steps)}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )
    except sqlite3.Error:
        if con.in_transaction:
            con.execute("ROLLBACK")
        if con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            raise


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, object]]
    total: int  # rows on all pages
    page: int  # this one, 1-based, within 1..pages
    pages: int


def paged(
    store: sqlite3.Connection, select: str, source: str, params: list[object], order: str, page: int, size: int
) -> Page:
    """Page `page` (clamped to the pages there are) of `SELECT {select} {source} ORDER BY {order}`."""
    (total,) = store.execute(f"SELECT count(*) {source}", params).fetchone()
    pages = max(1, math.ceil(total / size))
    page = min(max(1, page), pages)
    rows = store.execute(
        f"SELECT {select} {source} ORDER BY {order} LIMIT ? OFFSET ?", [*params, size, (page - 1) * size]
    ).fetchall()
    return Page([dict(r) for r in rows], total, page, pages)


def transaction(con: sqlite3.Connection) -> AbstractContextManager[sqlite3.Connection]:
    """A transaction that takes the write lock up front (IMMEDIATE), so it waits for another writer at the
    start instead of failing half-way with 'database is locked'."""
    return transactions.transaction(con, "BEGIN IMMEDIATE")


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """The store for the length of a `with` block."""
    con = open_store(path)
    try:
        yield con
    finally:
        con.close()
