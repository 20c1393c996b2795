"""The DuckDB warehouse: every room's schema, gathered here above the rooms, and how to open the file."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cx_pipeline.core import database
from cx_pipeline.core.database import DEFAULT_MEMORY_LIMIT, DEFAULT_WAIT_SECONDS
from cx_pipeline.core.sql import first_row
from cx_pipeline.ingest import schema as ingest_schema
from cx_pipeline.kpis import weekly
from cx_pipeline.quality import inspections, returns
from cx_pipeline.receiving import notices, reconciliation
from cx_pipeline.review import decisions, staleness
from cx_pipeline.storefront import push, shop_state, stock

# Each room's tables, in the order they depend on each other (ingest's raw tables and views first).
ROOM_DDL = (
    reconciliation.DDL,
    notices.DDL,
    push.DDL,
    shop_state.DDL,
    stock.DDL,
    decisions.DDL,
    staleness.DDL,
    inspections.DDL,
    returns.DDL,
    weekly.DDL,
)


# This code's schema as one fingerprint: a file that already has it skips the DDL, about 25 ms of every connect (a
# run connects some 30 times). Changing any DDL changes it, so the next connect creates what is missing.
SCHEMA = hashlib.sha256("\n".join([ingest_schema.schema_text(), *ROOM_DDL]).encode()).hexdigest()


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every warehouse table and view that is missing, unless the file holds this code's schema already
    (`warehouse_schema`); safe to run on every connect."""
    with contextlib.suppress(duckdb.CatalogException):  # no such table yet: a new file, or one from before it
        if first_row(con, "SELECT fingerprint FROM warehouse_schema") == (SCHEMA,):
            return
    ingest_schema.create(con)
    for ddl in ROOM_DDL:
        con.execute(ddl)
    con.execute("CREATE OR REPLACE TABLE warehouse_schema AS SELECT ? AS fingerprint", [SCHEMA])


@contextmanager
def connect(
    path: str | Path,
    read_only: bool = False,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse file (creating it and its schema on first use) and close it afterwards; see
    `core.database.connect` for the memory limit and the wait for another process."""
    with database.connect(path, create_schema, read_only, memory_limit, wait_seconds) as con:
        yield con
