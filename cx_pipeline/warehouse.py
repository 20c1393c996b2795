"""The DuckDB warehouse: one file, its schema, and how to open it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cx_pipeline.feeds import FEEDS, Feed

log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS snapshot_absent (  -- keys of a full snapshot feed that its latest snapshot left out
    feed         VARCHAR NOT NULL,
    row_key      VARCHAR NOT NULL,
    row_data     JSON NOT NULL,         -- the key's last values, as landed
    batch_id     VARCHAR NOT NULL,      -- the first snapshot without it
    absent_since TIMESTAMPTZ NOT NULL
);
"""


def row_key_sql(feed: Feed, alias: str = "") -> str:
    """SQL for a feed's natural key as one string, e.g. `RCV-1|2`."""
    prefix = f"{alias}." if alias else ""
    return "concat_ws('|', " + ", ".join(f"{prefix}{k}" for k in feed.keys) + ")"


def names_a_row_of(
    con: duckdb.DuckDBPyConnection,
    alias: str,
    columns: tuple[str, ...],
    table: str,
    table_columns: tuple[str, ...],
    among: str,
) -> str:
    """SQL: `alias`'s `columns` name a row of `table` (by `table_columns`), for rows `alias` of table `among`.

    The test hashes the smaller side. A correlated EXISTS hashes all of `table`: right for a first load, which
    is larger, but 1.4 s to check 50,000 receipts against 10 M PO lines, where narrowing the table to the keys
    the batch names first takes 0.2 s.
    """
    pairs = list(zip(columns, table_columns, strict=True))
    (batch_is_smaller,) = one(con, f"SELECT (SELECT count(*) FROM {among}) < (SELECT count(*) FROM {table})")
    if not batch_is_smaller:
        return f"EXISTS (SELECT 1 FROM {table} t WHERE {' AND '.join(f't.{tc} = {alias}.{c}' for c, tc in pairs)})"
    key = ", ".join(f"{alias}.{c}" for c in columns)
    on = " AND ".join(f"t.{tc} = b.{c}" for c, tc in pairs)
    named = f"SELECT ({', '.join(f't.{c}' for c in table_columns)}) FROM {table} t SEMI JOIN {among} b ON {on}"
    return f"coalesce(({key}) IN ({named}), false)"  # like EXISTS: false, not null, for a null key


def feed_ddl(feed: Feed) -> str:
    columns = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in feed.columns.items())
    absent = (
        ""
        if feed.incremental
        else f"""
ANTI JOIN (  -- keys the latest snapshot no longer lists
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


def one(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | dict[str, object] | None = None
) -> tuple | None:
    """The first row of a query, or None. Uses fetchall: DuckDB 2 keeps a fetchone() result open."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def log_import(con: duckdb.DuckDBPyConnection, batch_id: str, feed: str, run_id: str, now: object, rows: int) -> None:
    """Record a batch copied from the app store (decisions, inspections) in `ingest_batches`, as the HTTP
    feeds' batches are, so its contract can find "the latest batch"."""
    con.execute(
        """INSERT INTO ingest_batches (batch_id, feed, run_id, fetched_at, as_of, pages, rows_fetched, rows_new,
                                       rows_updated, rows_unchanged, rows_duplicate)
        VALUES ($batch, $feed, $run, $now, $now, 0, $n, $n, 0, 0, 0)""",
        {"batch": batch_id, "feed": feed, "run": run_id, "now": now, "n": rows},
    )


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every warehouse table and view that is missing; safe to run on every connect."""
    # Imported here: the domain modules use this module's helpers, so a top-level import would be circular.
    from cx_pipeline import inspections, notices, push, receiving, returns, review, stock

    con.execute(META_DDL)
    if not one(con, "SELECT 1 FROM duckdb_columns() WHERE table_name = 'ingest_batches' AND column_name = 'judged_at'"):
        # Batches landed before contracts recorded their judgement were judged in their own run.
        con.execute("ALTER TABLE ingest_batches ADD COLUMN judged_at TIMESTAMPTZ")
        con.execute("UPDATE ingest_batches SET judged_at = fetched_at")
    for feed in FEEDS.values():
        con.execute(feed_ddl(feed))
    for ddl in (receiving.DDL, notices.DDL, push.DDL, stock.DDL, review.DDL, inspections.DDL, returns.DDL):
        con.execute(ddl)


DEFAULT_MEMORY_LIMIT = "2GB"
# Several times the longest step of a first load at a million SKUs (125 s); past it, something is stuck, or a
# person has the file open, and saying so beats holding the run queue behind it.
DEFAULT_WAIT_SECONDS = 900.0
FIRST_PAUSE = 0.05


class WarehouseBusyError(RuntimeError):
    """Another process kept the warehouse file open for longer than we were prepared to wait."""


def open_when_free(
    path: Path, read_only: bool, config: dict[str, str], wait_seconds: float
) -> duckdb.DuckDBPyConnection:
    """Open `path`, waiting while another process holds it: DuckDB lets one process write a file and fails
    at once otherwise, but parallel steps (the multiprocess executor) each hold it only for their own work."""
    deadline = time.monotonic() + wait_seconds
    pause = FIRST_PAUSE
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            # only another process's lock is worth waiting for (not, say, a file system without locks)
            if "Conflicting lock is held" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"{path} is still in use by another process after {wait_seconds:.0f} s: {exc}"
                ) from exc
            if pause == FIRST_PAUSE:
                log.warning("%s is in use by another process; waiting up to %.0f s: %s", path, wait_seconds, exc)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


@contextmanager
def connect(
    path: str | Path,
    read_only: bool = False,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file (creating it and its schema on first use) and close it afterwards.

    DuckDB would take up to 80 % of the machine's memory; `memory_limit` caps it (beyond it, large joins and
    sorts spill to `<file>.tmp/`), so a run's footprint is known in advance whatever the catalog's size.
    While another process has the file open, this waits up to `wait_seconds` for it.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = open_when_free(path, read_only, {"memory_limit": memory_limit}, wait_seconds)
    # Day counts and weeks in UTC whatever the host's zone; without the ICU extension DuckDB is in UTC anyway.
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")
    try:
        if not read_only:
            create_schema(con)
        yield con
    finally:
        con.close()
