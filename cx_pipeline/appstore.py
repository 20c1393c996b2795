"""The review app's own store: one SQLite file for users, sessions, decisions and the published queue.

Why not the warehouse: DuckDB allows one writing process per file, and the web app and a pipeline run are
live at the same time. SQLite in WAL mode lets both read while one writes, and a writer waits (up to
`BUSY_TIMEOUT_MS`) for the other's short transaction instead of failing. The pipeline reads new decisions
from here and publishes the queue back here; the web app never opens the warehouse.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1
ROLES = ("merchandiser", "qa", "admin")

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS review_queue_rank ON review_queue (in_queue, rank);
CREATE TABLE IF NOT EXISTS publications (      -- what the pipeline published last, per kind
    name              TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL,
    published_at      TEXT NOT NULL,
    assessed_at       TEXT NOT NULL,
    decisions_through INTEGER NOT NULL,          -- decisions up to this id are reflected in the publication
    rows              INTEGER NOT NULL
);
"""


def utc_now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """Timestamps are stored as ISO 8601 text in UTC, so they sort and compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def open_store(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the store in WAL mode with a busy timeout; rows come back as `sqlite3.Row`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across application crashes
    (version,) = con.execute("PRAGMA user_version").fetchone()
    if version < SCHEMA_VERSION:
        try:  # one transaction: two processes creating the store at once both end with the full schema
            con.executescript(f"BEGIN IMMEDIATE; {SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        except sqlite3.Error:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
    return con


@contextmanager
def transaction(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """A transaction that takes the write lock up front (IMMEDIATE), so it waits for another writer at the
    start instead of failing half-way with 'database is locked'."""
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """The store for the length of a `with` block."""
    con = open_store(path)
    try:
        yield con
    finally:
        con.close()
