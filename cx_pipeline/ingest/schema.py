"""Ingest's tables: the batches each pull landed, quarantine, snapshot absences, and per feed its raw table
and the `valid_*` view that everything downstream reads."""

from __future__ import annotations

import duckdb

from cx_pipeline.core.sql import exists
from cx_pipeline.ingest.feeds import FEEDS, Feed, row_key_sql

META_DDL = """
CREATE TABLE IF NOT EXISTS ingest_batches (
    batch_id      VARCHAR PRIMARY KEY,
    feed          VARCHAR NOT NULL,
    run_id        VARCHAR,
    fetched_at    TIMESTAMPTZ NOT NULL,
    as_of         TIMESTAMPTZ,          -- the source's clock when the batch was read
    updated_since TIMESTAMPTZ,          -- the window start asked for (null: full load or snapshot)
    cursor        TIMESTAMPTZ,          -- where the next incremental pull starts
    pages         INTEGER NOT NULL,
    rows_fetched  INTEGER NOT NULL,
    rows_new      INTEGER NOT NULL,
    rows_updated  INTEGER NOT NULL,
    rows_unchanged INTEGER NOT NULL,
    rows_duplicate INTEGER NOT NULL     -- exact copies of a row earlier in the same batch
);
CREATE TABLE IF NOT EXISTS quarantine (
    feed           VARCHAR NOT NULL,
    batch_id       VARCHAR NOT NULL,
    expectation    VARCHAR NOT NULL,
    row_key        VARCHAR,             -- natural key joined with '|', null when the key itself is missing
    row_data       JSON NOT NULL,       -- the record exactly as the source sent it
    quarantined_at TIMESTAMPTZ NOT NULL,
    released_at    TIMESTAMPTZ          -- when a newer version landed, or the row passed when judged again
);
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS source_time_zone VARCHAR;  -- for timestamps sent without one
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS keys_previous INTEGER;  -- a snapshot's: keys the last one listed
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS keys_absent INTEGER;    -- ... that this one no longer lists
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS verdict VARCHAR;  -- the contract's: passed, rows_held, blocked
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS source VARCHAR;  -- rest, vendure, shopify, files...: whose cursor
CREATE TABLE IF NOT EXISTS snapshot_absent (  -- keys of a full snapshot feed that its latest snapshot left out
    feed         VARCHAR NOT NULL,
    row_key      VARCHAR NOT NULL,
    row_data     JSON NOT NULL,         -- the key's last values, as landed
    batch_id     VARCHAR NOT NULL,      -- the first snapshot without it
    absent_since TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_files (  -- each export file a file-drop source read, and what became of it
    file_name   VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,       -- a file is the same file only with the same name and content
    size_bytes  BIGINT NOT NULL,
    modified_at TIMESTAMPTZ NOT NULL,   -- the export's clock: when it was written
    feed        VARCHAR NOT NULL,
    batch_id    VARCHAR,                -- loaded: the batch holding its rows (loaded once that batch landed)
    status      VARCHAR NOT NULL,       -- loaded, rejected (malformed, nothing of it landed), superseded (snapshot)
    rows_read   INTEGER,
    problem     VARCHAR,                -- why it was rejected or superseded, naming the lines
    seen_at     TIMESTAMPTZ NOT NULL
);
"""


def feed_ddl(feed: Feed) -> str:
    columns = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in feed.columns.items())
    absent = (
        ""
        if not feed.lists_every_key
        else f"""
ANTI JOIN (  -- keys the latest full read no longer lists
    SELECT row_key FROM snapshot_absent WHERE feed = '{feed.name}'
) a ON a.row_key = {row_key_sql(feed, "r")}"""
    )
    return f"""
CREATE TABLE IF NOT EXISTS {feed.table} (
    {columns},
    _batch_id VARCHAR NOT NULL,
    _loaded_at TIMESTAMPTZ NOT NULL  -- unique by the feed's keys, kept so by `ingest.land` (no index: see there)
);
CREATE OR REPLACE VIEW valid_{feed.name} AS
SELECT r.* FROM {feed.table} r ANTI JOIN (
    SELECT row_key FROM quarantine WHERE feed = '{feed.name}' AND released_at IS NULL AND row_key IS NOT NULL
) q ON q.row_key = {row_key_sql(feed, "r")}
ANTI JOIN (  -- rows of a batch its contract has not judged yet (a run that stopped in between)
    SELECT batch_id FROM ingest_batches WHERE feed = '{feed.name}' AND judged_at IS NULL
) u ON u.batch_id = r._batch_id{absent};
"""


def log_import(con: duckdb.DuckDBPyConnection, batch_id: str, feed: str, run_id: str, now: object, rows: int) -> None:
    """Record a batch copied from the app store (decisions, inspections) in `ingest_batches`, as the HTTP
    feeds' batches are, so its contract can find "the latest batch"."""
    con.execute(
        """INSERT INTO ingest_batches (batch_id, feed, run_id, fetched_at, as_of, pages, rows_fetched, rows_new,
                                       rows_updated, rows_unchanged, rows_duplicate)
        VALUES ($batch, $feed, $run, $now, $now, 0, $n, $n, 0, 0, 0)""",
        {"batch": batch_id, "feed": feed, "run": run_id, "now": now, "n": rows},
    )


def schema_text() -> str:
    """The DDL `create` runs, as text (the warehouse's schema fingerprint is taken over it)."""
    return "\n".join([META_DDL, *(feed_ddl(feed) for feed in FEEDS.values())])


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create ingest's tables and views that are missing (batches, quarantine, and per feed its raw table and
    `valid_*` view); safe to run on every connect."""
    con.execute(META_DDL)
    if not exists(con, "ingest_batches", "judged_at"):
        # Batches landed before contracts recorded their judgement were judged in their own run.
        con.execute("ALTER TABLE ingest_batches ADD COLUMN judged_at TIMESTAMPTZ")
        con.execute("UPDATE ingest_batches SET judged_at = fetched_at")
    for feed in FEEDS.values():
        add_new_columns(con, feed)
        con.execute(feed_ddl(feed))


def add_new_columns(con: duckdb.DuckDBPyConnection, feed: Feed) -> None:
    """Give an existing raw table the columns its feed gained since (null in the rows landed before), in the feed's
    order: the landing inserts by position, and ALTER TABLE ADD COLUMN would put them after `_loaded_at`."""
    have = {
        c
        for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [feed.table]
        ).fetchall()
    }
    if not have or set(feed.columns) <= have:
        return
    con.execute(f"ALTER TABLE {feed.table} RENAME TO {feed.table}_before")
    con.execute(feed_ddl(feed))
    con.execute(f"INSERT INTO {feed.table} BY NAME SELECT * FROM {feed.table}_before")
    con.execute(f"DROP TABLE {feed.table}_before")
